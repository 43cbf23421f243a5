"""`cnnfit COMMAND key=value ...`: parse, call the pipeline, render with rich. Bad input -> one line, exit 2."""

from __future__ import annotations

import contextlib
import gc
import os
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cnnfit.errors import CnnfitError

USAGE = """usage: cnnfit COMMAND [ARGS] [key=value ...]

commands:
  train   [key=value ...] [recipe=NAME] [config=file.yaml]
                                                train, then evaluate on the test split; recipes:
                                                mnist-fast, fmnist-fast, fmnist-best
          resume=RUN [key=value ...]             continue a run exactly where its last.pt stopped
  lr-find [key=value ...]                       LR range test: lr_find.png and a suggested lr
  tune    space.KEY=DIST ... [trials=20] [sampler=tpe] [pruner=median] [workers=1] [storage=URL]
          [resume=true] [refit=true] [key=value ...]  hyperparameter search; each trial a cnnfit run
  eval    RUN [data=OTHER] [tta=flip] [calibrate=true]
                                                test-split metrics, plots and report.html of a run's best.pt
  compare RUN RUN ... [out=DIR]                 the runs' metrics and config differences side by side,
                                                their curves overlaid: compare.html, compare.png
  predict RUN PATHS... [topk=5] [out=file.csv] [format=csv|json]
                                                top-k classes (label sets, values) for files, folders, globs;
                                                RUN is a run directory or an exported .onnx
  export  RUN [format=onnx|torchscript|safetensors] [out=PATH]
                                                a model that takes uint8 pixels (checked against torch on val)
  serve   RUN|model.onnx [host=127.0.0.1] [port=8000] [api_key=KEY]
                                                web API (POST /predict, /health, /model, /docs) and an upload page
  inspect [key=value ...]                       data report: counts, bad files, duplicates, leaks
  models  [imgsz=32] [in_chans=3]               the zoo: parameters and forward FLOPs at that input
  summary model=NAME [imgsz=32] [in_chans=3]    one model layer by layer: output shapes, parameters

`cnnfit COMMAND --help` lists that command's keys and defaults."""

_MODEL_KEYS = ("width", "dropout", "bn", "act", "aux", "crop", "blocks")  # model.* options `summary` takes by short name
_MODEL_OPTIONS = {
    "imgsz": ("32", "input side in pixels"), "in_chans": ("3", "input channels"),
    "classes": ("10", "number of classes"),
}
_OPTIONS = {
    "models": _MODEL_OPTIONS,
    "summary": {"model": ("simplecnn", "a registered model, a layers .yaml or pkg.mod:Class"), **_MODEL_OPTIONS,
                **{k: ("auto", f"model.{k}") for k in _MODEL_KEYS}},
    "eval": {"data": ("the run's", "another dataset with the same class names (its test split, else all of it)"),
             "tta": ("the run's", "none, flip or flip+shift: average over flipped (and shifted) copies"),
             "calibrate": ("the run's", "true: fit temperature scaling on the val split (stored in best.pt)"),
             "report": ("the run's", "false: metrics.json and predictions.csv only, no plots or report.html"),
             "amp": ("the run's", "auto, bf16, fp16 or off (fp32): the precision to score in"),
             "device": ("auto", "auto, cpu, cuda, cuda:N or mps")},
    "predict": {"topk": ("5", "classes per image"), "out": ("RUN/predict.csv", "file to write"),
                "format": ("csv", "csv, or json: a list of objects"),
                "tta": ("the run's", "none, flip or flip+shift (run directories only)"),
                "device": ("auto", "auto, cpu, cuda, cuda:N or mps")},
    "export": {"format": ("onnx", "onnx, torchscript or safetensors (+ model.json)"),
               "out": ("RUN/model.<ext>", "file to write (.onnx, .pt or .safetensors)"),
               "layout": ("nchw", "onnx/torchscript input: nchw or nhwc, uint8 either way"),
               "check_images": ("2000", "val images for the parity check; all for the whole split")},
    "compare": {"out": ("beside the first run", "folder for compare.html, compare.png, compare.csv")},
    "serve": {"host": ("127.0.0.1", "address to bind; anything beyond loopback wants api_key="),
              "port": ("8000", "TCP port"), "api_key": ("none", "require this X-API-Key header on /predict and /model"),
              "max_batch": ("64", "images per model call when requests are grouped (1: no grouping)"),
              "tta": ("the run's", "none, flip or flip+shift (run directories only)"),
              "device": ("cpu", "cpu, cuda, cuda:N or mps")},
}


def _help(console: Console, command: str) -> None:
    if command in ("train", "inspect", "lr-find", "tune"):
        from cnnfit.config import help_text

        table = Table(title=f"cnnfit {command} key=value ...  (also recipe=NAME and config=file.yaml; "
                      "recipe < file < command line)")
        for col in ("key", "default", "meaning"):
            table.add_column(col)
        for row in help_text():
            table.add_row(*row)
        console.print(table)
    elif command in _OPTIONS:
        line = next(ln for ln in USAGE.splitlines() if ln.startswith(f"  {command} "))
        console.print(f"cnnfit {line.strip()}", markup=False, highlight=False, soft_wrap=True)
        for key, (default, meaning) in _OPTIONS[command].items():
            console.print(f"  {key + '=' + default:<22} {meaning}", markup=False, highlight=False)
    else:
        console.print(USAGE, highlight=False, markup=False, soft_wrap=True)


def _split_args(command: str, args: list[str]) -> tuple[list[str], dict[str, str]]:
    positional, options = [], {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq and key in _OPTIONS[command]:
            options[key] = value
        elif eq and "/" not in key and "*" not in key:
            valid = ", ".join(_OPTIONS[command])
            raise CnnfitError(f"unknown key '{key}' for cnnfit {command}; valid keys: {valid}")
        else:
            positional.append(arg)
    return positional, options


@contextlib.contextmanager
def _importing(process: bool) -> Iterator[None]:
    """Importing torch and sklearn makes ~400k objects that live until exit, and the collector sweeps them again and
    again as they pile up (~0.7 s of a 3.5 s start on 2 cores). A command pauses it for its imports, then freezes
    what they made, so no later collection scans them; a caller's own process (argv given) is left alone."""
    if not process or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _run(argv: list[str], console: Console, process: bool = False) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        _help(console, "")
        return 0
    command, args = argv[0], argv[1:]
    commands = ("train", "lr-find", "tune", "eval", "predict", "export", "serve", "compare", "inspect", "models",
                "summary")
    if command not in commands:
        raise CnnfitError(f"unknown command '{command}'; choose from: {', '.join(commands)}")
    if "-h" in args or "--help" in args:
        _help(console, command)
        return 0
    if command == "train":
        from cnnfit.config import load_config

        cfg = load_config(args)
        if cfg.train.devices > 1 and "WORLD_SIZE" not in os.environ:  # devices=N: torchrun, started for the user
            from cnnfit.distributed import launch

            return launch(cfg.train.devices, args)
        with _importing(process):
            from cnnfit.pipeline import train

        train(cfg, console=console)
    elif command == "tune":
        from cnnfit.config import load_config

        with _importing(process):
            from cnnfit.tune import tune

        # for tune, resume=true continues the search and sampler= picks the search's sampler; for train they
        # name a run directory and the batch sampler (train.sampler= still reaches that one here)
        tune(load_config([f"tune.{a}" if a.startswith(("resume=", "sampler=")) else a for a in args]),
             console=console)
    elif command == "lr-find":
        from cnnfit.config import load_config

        with _importing(process):
            from cnnfit.pipeline import lr_find

        lr_find(load_config(args), console=console)
    elif command == "inspect":
        from cnnfit.config import load_config
        from cnnfit.prepare import inspect

        inspect(load_config(args), console=console)
    elif command in ("models", "summary"):
        _show_models(command, args, console)
    else:
        positional, options = _split_args(command, args)
        if not positional:
            raise CnnfitError(f"cnnfit {command} needs a run directory, e.g. cnnfit {command} runs/train")
        with _importing(process):
            from cnnfit import pipeline

        if command == "compare":
            from cnnfit.compare import compare

            compare(positional, out=options.get("out"), console=console)
        elif command == "eval":
            if len(positional) > 1:
                raise CnnfitError(f"cnnfit eval takes one run directory, got {len(positional)} paths")
            pipeline.evaluate(positional[0], console=console, device=options.get("device", "auto"),
                              data=options.get("data"), tta=_tta_option(options),
                              calibrate=_bool_option(options, "calibrate"), report=_bool_option(options, "report"),
                              amp=_amp_option(options))
        elif command == "serve":
            from cnnfit.serve import serve

            if len(positional) > 1:
                raise CnnfitError(f"cnnfit serve takes one run directory or .onnx file, got {len(positional)} paths")
            serve(positional[0], host=options.get("host", "127.0.0.1"), port=_int_option(options, "port", 8000),
                  api_key=options.get("api_key"), max_batch=_int_option(options, "max_batch", 64),
                  tta=_tta_option(options), device=options.get("device", "cpu"))
        elif command == "export":
            from cnnfit.export import export

            if len(positional) > 1:
                raise CnnfitError(f"cnnfit export takes one run directory, got {len(positional)} paths")
            check = options.get("check_images", "2000")
            export(positional[0], format=options.get("format", "onnx"), out=options.get("out"), console=console,
                   layout=options.get("layout", "nchw"),
                   check_images=None if check == "all" else _int_option(options, "check_images", 2000))
        else:
            if len(positional) < 2:
                raise CnnfitError("cnnfit predict needs image files, folders or globs after the run directory")
            try:
                topk = int(options.get("topk", 5))
            except ValueError:
                raise CnnfitError(f"topk={options['topk']!r} is invalid: use a whole number such as topk=3") from None
            pipeline.predict(positional[0], positional[1:], topk=topk, out=options.get("out"),
                             device=options.get("device", "auto"), console=console, tta=_tta_option(options),
                             format=options.get("format", "csv"))
    return 0


def _tta_option(options: dict[str, str]) -> str | None:
    from cnnfit.eval.tta import MODES

    tta = options.get("tta")
    if tta is not None and tta not in MODES:
        raise CnnfitError(f"tta={tta!r} is not a mode; choose from: {', '.join(MODES)}")
    return tta


def _amp_option(options: dict[str, str]) -> str | None:
    value = options.get("amp")
    if value is not None and value not in ("auto", "bf16", "fp16", "off"):
        raise CnnfitError(f"amp={value!r} is invalid: use amp=auto, bf16, fp16 or off")
    return value


def _bool_option(options: dict[str, str], key: str) -> bool | None:
    value = options.get(key)
    if value is None:
        return None
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise CnnfitError(f"{key}={value!r} is invalid: use {key}=true or {key}=false")


def _int_option(options: dict[str, str], key: str, default: int) -> int:
    try:
        return int(options.get(key, default))
    except ValueError:
        raise CnnfitError(f"{key}={options[key]!r} is invalid: use a whole number such as {key}={default}") from None


def _show_models(command: str, args: list[str], console: Console) -> None:
    from cnnfit import models
    from cnnfit.models import summary

    positional, options = _split_args(command, args)
    if positional:
        raise CnnfitError(f"cnnfit {command} takes key=value arguments only, got '{positional[0]}'")
    imgsz, chans = _int_option(options, "imgsz", 32), _int_option(options, "in_chans", 3)
    classes = _int_option(options, "classes", 10)
    if command == "models":
        table = Table(title=f"cnnfit models at {chans}x{imgsz}x{imgsz}, {classes} classes")
        for col in ("name", "parameters", "MFLOPs", "min size", "options"):
            table.add_column(col, justify="right" if col in ("parameters", "MFLOPs", "min size") else "left")
        for row in summary.zoo_table(imgsz=imgsz, in_chans=chans, num_classes=classes):
            flops = f"{row['flops'] / 1e6:,.1f}" if row["flops"] is not None else row["note"]
            table.add_row(row["name"], f"{row['params']:,}", flops, f"{row['min_size']} px", ", ".join(row["options"]))
        console.print(table)
        console.print("forward FLOPs of one image (2 per multiply-add; convolutions and linear layers). "
                      "Also: a layers .yaml file, or pkg.module:Class; `cnnfit summary model=NAME` per layer.",
                      highlight=False)
        return
    from cnnfit.config import load_config

    name = options.pop("model", "simplecnn")
    extra = {k: options[k] for k in _MODEL_KEYS if k in options}
    opts = load_config([f"model.{k}={v}" for k, v in extra.items()]).model.model_dump(exclude={"name", "init"})
    model = models.create(name, num_classes=classes, in_chans=chans, imgsz=imgsz,
                          **{k: v for k, v in opts.items() if v is not None})
    info = summary.layer_table(model, in_chans=chans, imgsz=imgsz)
    table = Table(title=f"{name} at {chans}x{imgsz}x{imgsz}, {classes} classes")
    for col in ("layer", "type", "output", "parameters"):
        table.add_column(col, justify="right" if col == "parameters" else "left")
    for row in info["rows"]:
        table.add_row(escape(row["name"]), row["type"], escape(str(row["shape"])), f"{row['params']:,}" if row["params"] else "")
    console.print(table)
    flops = summary.count_flops(model, in_chans=chans, imgsz=imgsz)
    console.print(f"{info['params']:,} parameters ({info['trainable']:,} trainable), {flops / 1e6:,.1f} MFLOPs "
                  f"per image, output {info['output']}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    console = Console()
    try:
        return _run(list(sys.argv[1:] if argv is None else argv), console, process=argv is None)
    except CnnfitError as exc:
        if os.environ.get("RANK", "0") == "0" or str(exc).startswith("rank "):  # under torchrun: one copy each
            Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return getattr(exc, "code", 2)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        return 130
    finally:
        if argv is None:  # a command, about to exit: Python's shutdown would sweep the ~400k objects torch, sklearn
            gc.freeze()  # and matplotlib leave several times over (0.9 s on 2 cores); frozen, they are skipped


if __name__ == "__main__":
    sys.exit(main())
