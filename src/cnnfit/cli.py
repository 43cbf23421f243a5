"""`cnnfit COMMAND key=value ...`: one typed table of commands and their keys, from which come the parsing, every
`--help` and README.md's command sections (scripts/readme_sections.py). The library logs; `ConsoleHandler` renders
its records with rich, the only printing in cnnfit. Bad input -> one line on stderr, exit 2."""

from __future__ import annotations

import gc
import importlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, create_model, field_validator
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cnnfit.config import NOT_OPTIONS, EvalConfig, ModelConfig, TrainConfig, load_config, recipes
from cnnfit.errors import CnnfitError, suggest

_RUNS = "the run's"  # unset: what the run was trained (or last evaluated) with
_Tta = EvalConfig.model_fields["tta"].annotation  # none, flip, flip+shift: the choices live in config.py
_Amp = TrainConfig.model_fields["amp"].annotation
_Export = Literal["onnx", "torchscript", "safetensors"]
_TRUST = "true: import the pkg.mod:Class model the run's best.pt names (runs its code; only for runs you trust)"


def _key(default: Any, meaning: str, unset: str | None = None) -> Any:
    """A command key: its default, written once, its meaning, and what a None default means (for --help)."""
    return Field(default, description=meaning, json_schema_extra={"unset": unset} if unset else None)


class _Options(BaseModel, frozen=True, extra="forbid"):
    """A command's keys; unknown ones are refused before validation, with a suggestion."""


class EvalOptions(_Options):
    data: str | None = _key(None, "another dataset with the same class names (its test split, else all of it)", _RUNS)
    tta: _Tta | None = _key(None, "none, flip or flip+shift: average over flipped (and shifted) copies", _RUNS)
    calibrate: bool | None = _key(None, "true: fit temperature scaling on the val split (stored in best.pt)", _RUNS)
    report: bool | None = _key(None, "false: metrics.json and predictions.csv only, no plots or report.html", _RUNS)
    amp: _Amp | None = _key(None, "auto, bf16, fp16 or off (fp32): the precision to score in", _RUNS)
    device: str = _key("auto", "auto, cpu, cuda, cuda:N or mps")
    trust_code: bool = _key(False, _TRUST)


_Score = Literal["maxprob", "energy"]
_DOTTED = ("reject_",)  # keys typed with a dot, as the run config's are: reject.precision=0.99


class PredictOptions(_Options):
    topk: int = _key(5, "classes per image")
    out: str | None = _key(None, "file to write", "RUN/predict.csv")
    format: Literal["csv", "json"] = _key("csv", "csv, or json: a list of objects")
    tta: _Tta | None = _key(None, "none, flip or flip+shift (run directories only)", _RUNS)
    explain: bool = _key(False, "true: a Grad-CAM heatmap over each image, explain/<name>.png (run directories only)")
    reject: bool = _key(False, "true: answer \"unknown\" under the threshold fitted on val for precision 0.99")
    reject_precision: float | None = _key(None, "answer \"unknown\" so that the answers given reach this precision "
                                          "on val (refitted from the val scores best.pt keeps)", "none")
    reject_coverage: float | None = _key(None, "instead: answer this share of the val images", "none")
    reject_score: _Score = _key("maxprob", "maxprob (calibrated top probability) or energy (logsumexp of the logits)")
    device: str = _key("auto", "auto, cpu, cuda, cuda:N or mps")
    trust_code: bool = _key(False, _TRUST)


class EmbedOptions(_Options):
    out: str | None = _key(None, "folder for embeddings.npy and embeddings.csv", "RUN/embeddings")
    normalize: bool = _key(True, "unit-length vectors, so a dot product is the cosine similarity")
    device: str = _key("auto", "auto, cpu, cuda, cuda:N or mps")
    trust_code: bool = _key(False, _TRUST)


class ExportOptions(_Options):
    format: _Export = _key("onnx", "onnx, torchscript or safetensors (+ model.json)")
    out: str | None = _key(None, "file to write (.onnx, .pt or .safetensors)", "RUN/model.<ext>")
    layout: Literal["nchw", "nhwc"] = _key("nchw", "onnx/torchscript input: nchw or nhwc, uint8 either way")
    check_images: int | None = _key(2000, "val images for the parity check; all for the whole split")
    trust_code: bool = _key(False, _TRUST)
    quantize: Literal["int8", "dynamic"] | None = _key(None, "onnx with int8 weights: int8 (static, calibrated on "
                                                       "training images; RUN/model.int8.onnx) or dynamic (activations "
                                                       "scaled per call; RUN/model.dynamic.onnx)", "none")
    calibration_images: int = _key(256, "quantize=int8: training images that set the activation ranges")
    int8_agreement: float = _key(0.97, "quantize=: least top-1 agreement with torch on the val images checked")
    int8_drop: float = _key(1.0, "quantize=: most val accuracy lost against torch, in percentage points")

    @field_validator("check_images", mode="before")
    @classmethod
    def _all(cls, value: Any) -> Any:
        return None if value == "all" else value  # export's None: every val image


class ServeOptions(_Options):  # the key is never an argument: a command line is visible to every local user
    host: str = _key("127.0.0.1", "address to bind; anything beyond loopback wants a key (CNNFIT_API_KEY or "
                     "api_key_file=)")
    port: int = _key(8000, "TCP port")
    api_key_file: str | None = _key(None, "file whose first line is the X-API-Key that /predict and /model require; "
                                    "else $CNNFIT_API_KEY", "none")
    allowed_hosts: str | None = _key(None, "more Host names to answer, comma-separated (*: any)", "loopback names")
    timeout: float = _key(30.0, "seconds a client has to send a request's headers, and again its body")
    max_batch: int = _key(64, "images per model call when requests are grouped (1: no grouping)")
    reject: bool = _key(False, "true: answer \"unknown\" under the threshold fitted on val for precision 0.99")
    reject_precision: float | None = _key(None, "answer \"unknown\" so that the answers given reach this precision "
                                          "on val (run directories: refitted from best.pt's val scores)", "none")
    reject_coverage: float | None = _key(None, "instead: answer this share of the val images", "none")
    tta: _Tta | None = _key(None, "none, flip or flip+shift (run directories only)", _RUNS)
    device: str = _key("cpu", "cpu, cuda, cuda:N or mps")
    trust_code: bool = _key(False, _TRUST)


class CompareOptions(_Options):
    out: str | None = _key(None, "folder for compare.html, compare.png, compare.csv", "beside the first run")


class ModelsOptions(_Options):
    imgsz: int = _key(32, "input side in pixels")
    in_chans: int = _key(3, "input channels")
    classes: int = _key(10, "number of classes")


_MODEL_KEYS = [k for k in ModelConfig.model_fields if k not in NOT_OPTIONS]
SummaryOptions = create_model(  # ModelsOptions, the model, and its model.* keys typed and described as in config.py
    "SummaryOptions", __base__=ModelsOptions,
    model=(str, _key("simplecnn", "a registered model, a layers .yaml or pkg.mod:Class")),
    **{k: (ModelConfig.model_fields[k].annotation, ModelConfig.model_fields[k]) for k in _MODEL_KEYS})


@dataclass(frozen=True)
class Command:
    usage: str  # what follows `cnnfit NAME`
    options: type[BaseModel] | None  # None: the run config's keys, through load_config (`cnnfit train --help`)
    call: str  # "module:function", the module imported with the collector paused; a bare module: the CLI's own table
    summary: str


_CONFIG = "[key=value ...] [recipe=NAME] [config=file.yaml]"
COMMANDS: dict[str, Command] = {
    "train": Command(_CONFIG, None, "cnnfit.pipeline:train", "train, then evaluate on the test split; resume=RUN "
                     "continues a run exactly where its last.pt stopped"),
    "lr-find": Command(_CONFIG, None, "cnnfit.pipeline:lr_find", "LR range test: lr_find.png and a suggested lr"),
    "tune": Command("space.KEY=DIST ... [key=value ...]", None, "cnnfit.tune:tune", "hyperparameter search (trials=, "
                    "sampler=, pruner=, workers=, storage=, resume=, refit=); each trial a cnnfit run"),
    "cv": Command("[key=value ...] [folds=5] [workers=1]", None, "cnnfit.pipeline:cv", "k-fold cross-validation: "
                  "each fold an ordinary run in runs/cv/fold<k>, out-of-fold probabilities in oof.csv, the folds' "
                  "mean and std in cv.json; resume=runs/cv continues a killed one; devices=N: each fold "
                  "data-parallel"),
    "eval": Command("RUN [key=value ...]", EvalOptions, "cnnfit.pipeline:evaluate",
                    "test-split metrics, plots and report.html of a run's best.pt"),
    "compare": Command("RUN RUN ... [key=value ...]", CompareOptions, "cnnfit.report:compare",
                       "the runs' metrics and config differences side by side, their curves overlaid"),
    "predict": Command("RUN PATHS... [key=value ...]", PredictOptions, "cnnfit.pipeline:predict", "top-k classes "
                       "(label sets, values) for files, folders, globs; RUN is a run directory, an exported .onnx, "
                       "or imagenet:MODEL (a zoo model's ImageNet head, untrained)"),
    "embed": Command("RUN PATHS... [key=value ...]", EmbedOptions, "cnnfit.pipeline:embed", "penultimate-layer "
                     "features of files, folders, globs (embeddings.npy + embeddings.csv), to search similar images"),
    "export": Command("RUN [key=value ...]", ExportOptions, "cnnfit.export:export",
                      "a model that takes uint8 pixels (checked against torch on val)"),
    "serve": Command("RUN|model.onnx [key=value ...]", ServeOptions, "cnnfit.serve:serve",
                     "web API (POST /predict, /health, /model, /docs) and an upload page"),
    "inspect": Command(_CONFIG, None, "cnnfit.pipeline:inspect", "data report: counts, bad files, duplicates, leaks"),
    "models": Command("[key=value ...]", ModelsOptions, "cnnfit.models",
                      "the zoo: parameters and forward FLOPs at that input"),
    "summary": Command("model=NAME [key=value ...]", SummaryOptions, "cnnfit.models",
                       "one model layer by layer: output shapes, parameters"),
}


def _shown(field: Any) -> str:
    """A key's default as --help shows it: a None default shows what it means, "auto" unless the key says."""
    return str(field.default) if field.default is not None else (field.json_schema_extra or {}).get("unset", "auto")


def key_rows(options: type[BaseModel]) -> list[tuple[str, str, str]]:
    """(key, default as --help shows it, meaning) for each key of a command's options."""
    return [(_typed(key), _shown(field), field.description or "") for key, field in options.model_fields.items()]


def _typed(key: str) -> str:
    """A key as the command line takes it: reject_precision is typed reject.precision."""
    return key.replace("_", ".", 1) if key.startswith(_DOTTED) else key


def _help(console: Console, name: str = "") -> None:
    """`cnnfit --help`: every command and recipe; `cnnfit NAME --help`: its keys, defaults and meanings."""
    if name:
        command = COMMANDS[name]
        lines = [f"cnnfit {name} {command.usage}", f"  {command.summary}"]
        lines += [f"  {k + '=' + v:<22} {meaning}" for k, v, meaning in key_rows(command.options or _Options)]
    else:
        lines = ["usage: cnnfit COMMAND [ARGS] [key=value ...]", "", "commands:"]
        for cmd, command in COMMANDS.items():
            lines += [f"  {cmd:<8} {command.usage}", f"{'':<11}{command.summary}"]
        lines += ["", f"recipes (recipe=NAME): {', '.join(recipes())}", "",
                  "`cnnfit COMMAND --help` lists that command's keys and defaults."]
    console.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
    if name and COMMANDS[name].options is None:
        from cnnfit.pipeline.resolve import help_text  # the auto rules' own table: their help cannot drift

        console.print(_table(help_text(), title=f"recipe < config file < command line; recipes: "
                             f"{', '.join(recipes())}", columns=["key", "default", "meaning"]))


def _invalid(options: type[BaseModel], err: Any, values: dict[str, Any]) -> str:
    """pydantic's first complaint as one line that names the key and what it takes."""
    key = str(err["loc"][0])
    field = options.model_fields[key]  # Literal[...] or Literal[...] | None: the choices are one level down at most
    choices = [str(v) for a in (field.annotation, *get_args(field.annotation)) if get_origin(a) is Literal
               for v in get_args(a)]
    hints = {"literal_error": f"choose from: {', '.join(choices)}", "bool_parsing": f"use {key}=true or {key}=false",
             "int_parsing": "use a whole number" + (f" such as {key}={field.default}" if field.default else "")}
    return f"{key}={values[key]!r} is invalid; {hints.get(err['type'], err['msg'][0].lower() + err['msg'][1:])}"


def _parse(name: str, args: list[str]) -> tuple[tuple[Any, ...], BaseModel]:
    """`cnnfit NAME args...` as the library function takes it: its paths ((run,), (run, images) or (runs,)) and
    its validated options."""
    options, paths, values = COMMANDS[name].options or _Options, [], {}
    for arg in args:
        key, eq, value = arg.partition("=")
        key = key.replace(".", "_", 1) if key.replace(".", "_", 1).startswith(_DOTTED) else key
        if eq and key in options.model_fields:  # the default --help shows for an unset key (width=auto) unsets it
            field = options.model_fields[key]
            values[key] = None if field.default is None and value == _shown(field) else value
        elif eq and "/" not in key and "*" not in key:  # a path may hold '='; a key never holds '/' or '*'
            raise CnnfitError(f"unknown key '{key}' for cnnfit {name}; {suggest(key, options.model_fields)}"
                              f"valid keys: {', '.join(options.model_fields)}")
        else:
            paths.append(arg)
    try:
        parsed = options.model_validate(values)
    except ValidationError as exc:
        raise CnnfitError(_invalid(options, exc.errors()[0], values)) from None
    run = COMMANDS[name].usage.startswith("RUN")
    if paths and not run:
        raise CnnfitError(f"cnnfit {name} takes key=value arguments only, got '{paths[0]}'")
    if run and not paths:
        raise CnnfitError(f"cnnfit {name} needs a run directory, e.g. cnnfit {name} runs/train")
    if name in ("predict", "embed") and len(paths) < 2:
        raise CnnfitError(f"cnnfit {name} needs image files, folders or globs after the run directory")
    if name in ("eval", "export", "serve") and len(paths) > 1:
        what = "run directory or .onnx file" if name == "serve" else "run directory"
        raise CnnfitError(f"cnnfit {name} takes one {what}, got {len(paths)} paths")
    if name in ("predict", "embed"):
        return (paths[0], paths[1:]), parsed
    return ((paths,) if name == "compare" else tuple(paths)), parsed


class ConsoleHandler(logging.Handler):
    """Renders the library's log records on the command line: the message as a plain line (in `record.style`),
    `record.table` as a rich Table, and `record.progress` as a live bar, on terminals only."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.DEBUG if console.is_terminal else logging.INFO)  # the bar's records are DEBUG
        self.console, self.bar, self.task = console, None, None

    def emit(self, record: logging.LogRecord) -> None:
        if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the job
            return
        try:
            if hasattr(record, "progress"):
                self._progress(record.progress)
            elif hasattr(record, "table"):
                self.console.print(_table(**record.table))
            elif record.levelno >= logging.INFO:
                self.console.print(record.getMessage(), style=getattr(record, "style", None), markup=False,
                                   highlight=False, soft_wrap=True)
        except Exception:
            self.handleError(record)

    def _progress(self, p: dict[str, Any]) -> None:
        if not self.console.is_terminal:
            return
        if p.get("stop"):
            self.close()
            return
        if self.bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console,
                                transient=True)
            self.bar.start()
        if self.task is None:  # one task at a time: an epoch's bar
            self.task = self.bar.add_task(p["task"], total=p.get("total"), info="")
        self.bar.update(self.task, description=p["task"], completed=p.get("completed", 0), total=p.get("total"),
                        info=p.get("info", ""))
        if p.get("done"):
            self.bar.remove_task(self.task)
            self.task = None

    def close(self) -> None:
        """Ends the bar (a `stop` record, or the command's end); a later progress record starts a new one."""
        if self.bar is not None:
            self.bar.stop()
        self.bar, self.task = None, None
        super().close()


def _table(rows: list[list[str]], title: str | None = None, columns: list[str] | None = None,
           styles: list[str] | None = None, justify: list[str] | None = None) -> Table:
    """A table record as rich draws it; every text is escaped, so brackets in names and paths are no markup."""
    table = Table(title=escape(title) if title else None, show_header=columns is not None,
                  box=box.HEAVY_HEAD if columns else None, pad_edge=columns is not None)
    for i in range(len(columns or (rows[0] if rows else []))):
        table.add_column(escape(columns[i]) if columns else "", style=styles[i] if styles else None,
                         justify=justify[i] if justify else "left")  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))
    return table


def _run(argv: list[str], console: Console, process: bool = False) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        _help(console)
        return 0
    name, args = argv[0], argv[1:]
    if name not in COMMANDS:
        raise CnnfitError(f"unknown command '{name}'; {suggest(name, COMMANDS)}choose from: {', '.join(COMMANDS)}")
    if "-h" in args or "--help" in args:
        _help(console, name)
        return 0
    command = COMMANDS[name]
    if command.options is None:
        # for tune, resume=true continues the search and sampler= picks the search's sampler; for train they
        # name a run directory and the batch sampler (train.sampler= still reaches that one here)
        options = _cv_options(args) if name == "cv" else {}  # folds= and workers= are cv's, not a run's
        cfg = load_config([f"tune.{a}" if name == "tune" and a.startswith(("resume=", "sampler=")) else a
                           for a in args if not (name == "cv" and a.startswith(_CV_KEYS))])
        if name in ("train", "cv") and cfg.train.devices > 1 and "WORLD_SIZE" not in os.environ:
            from cnnfit.distributed import launch  # devices=N: torchrun, started for the user

            return launch(cfg.train.devices, args, name)
        positional = (cfg,)
    else:
        positional, parsed = _parse(name, args)
        options = dict(parsed)
    module, _, function = command.call.partition(":")
    # importing torch and sklearn makes ~400k objects that live until exit, and the collector sweeps them again and
    # again as they pile up (~0.7 s of a 3.5 s start on 2 cores): a command pauses it for its imports, then freezes
    # what they made, so no later collection scans them; a caller's own process (argv given) is left alone
    pause = process and gc.isenabled()
    if pause:
        gc.disable()
    try:
        library = importlib.import_module(module)
    finally:
        if pause:
            gc.freeze()
            gc.enable()
    if function:
        getattr(library, function)(*positional, **options)
    else:
        _show_models(console, name, parsed)
    return 0


_CV_KEYS = ("folds=", "workers=")


def _cv_options(args: list[str]) -> dict[str, int]:
    """`cnnfit cv`'s own keys, whole numbers: folds=K and workers=N."""
    options = {}
    for arg in args:
        if arg.startswith(_CV_KEYS):
            key, _, value = arg.partition("=")
            if not value.strip().isdigit():
                raise CnnfitError(f"{key}={value!r} is invalid; use a whole number such as {key}="
                                  f"{5 if key == 'folds' else 2}")
            options[key] = int(value)
    return options


def _show_models(console: Console, name: str, o: Any) -> None:
    """`cnnfit models` (the zoo) and `cnnfit summary` (one model, layer by layer): the CLI's own tables."""
    from cnnfit import models
    from cnnfit.models import summary

    shape = f"{o.in_chans}x{o.imgsz}x{o.imgsz}, {o.classes} classes"
    if name == "models":
        rows = [[r["name"], f"{r['params']:,}", f"{r['flops'] / 1e6:,.1f}" if r["flops"] is not None else r["note"],
                 f"{r['min_size']} px", ", ".join(r["options"])]
                for r in summary.zoo_table(imgsz=o.imgsz, in_chans=o.in_chans, num_classes=o.classes)]
        console.print(_table(rows, f"cnnfit models at {shape}", ["name", "parameters", "MFLOPs", "min size", "options"],
                             justify=["left", "right", "right", "right", "left"]))
        console.print("forward FLOPs of one image (2 per multiply-add; convolutions and linear layers). "
                      "Also: a layers .yaml file, or pkg.module:Class; `cnnfit summary model=NAME` per layer.",
                      highlight=False)
        return
    options = {k: getattr(o, k) for k in _MODEL_KEYS if getattr(o, k) is not None}
    model = models.create(o.model, num_classes=o.classes, in_chans=o.in_chans, imgsz=o.imgsz, **options)
    info = summary.layer_table(model, in_chans=o.in_chans, imgsz=o.imgsz)
    rows = [[r["name"], r["type"], str(r["shape"]), f"{r['params']:,}" if r["params"] else ""] for r in info["rows"]]
    console.print(_table(rows, f"{o.model} at {shape}", ["layer", "type", "output", "parameters"],
                         justify=["left", "left", "left", "right"]))
    flops = summary.count_flops(model, in_chans=o.in_chans, imgsz=o.imgsz)
    console.print(f"{info['params']:,} parameters ({info['trainable']:,} trainable), {flops / 1e6:,.1f} MFLOPs "
                  f"per image, output {info['output']}", highlight=False)


# columns for output to a file or pipe: rich would wrap the summary's rows at 80, as for a terminal; a table is only
# as wide as its longest row, so this is a ceiling no row of a run summary reaches (the longest is ~300)
FILE_WIDTH = 1000


def main(argv: list[str] | None = None) -> int:
    console = Console()
    if not console.is_terminal:  # logs and pipes: one line per row, however long
        console = Console(width=FILE_WIDTH)
    logger, handler = logging.getLogger("cnnfit"), ConsoleHandler(console)  # for this command only
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(handler.level)
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
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
        if argv is None:  # a command, about to exit: Python's shutdown would sweep the ~400k objects torch, sklearn
            gc.freeze()  # and matplotlib leave several times over (0.9 s on 2 cores); frozen, they are skipped


if __name__ == "__main__":
    sys.exit(main())
