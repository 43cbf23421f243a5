"""The command line as a user meets it: exit codes, one-line errors, nothing left behind."""

import importlib.util
import io
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import cnnfit
from cnnfit.cli import ConsoleHandler, main

ROOT = Path(__file__).resolve().parent.parent


def _run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("args, fragment", [
    (["data=/no/such/folder"], "not found"),
    (["data={empty}"], "no images found"),
    (["data={one_class}"], "only one class"),
    (["model=resnet81"], "unknown model 'resnet81'"),
    (["epoch=3"], "did you mean 'epochs'"),
    (["epochs=three"], "valid integer"),
    (["epochs=0"], "greater than 0"),
    (["batch=5000"], "larger than the 1259 training images"),
    (["model=resnet18", "model.bn=true"], "resnet18 has no option bn; it takes: "),
    (["model=resnet18", "imgsz=6"], "below resnet18's minimum of 8 px"),
    (["model=resnet18", "init=/no/such/weights.pth"], "init weights '/no/such/weights.pth' not found"),
    (["model=simplecnn", "freeze=9"], "freeze=9 is out of range"),
    (["model=nets/missing.yaml"], "missing.yaml"),
    (["model=no_such_module:Net"], "no_such_module"),
])
def test_bad_input_exits_2_with_one_line_and_no_run_dir(args, fragment, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    one = tmp_path / "one" / "cats"
    one.mkdir(parents=True)
    from PIL import Image
    for i in range(3):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(one / f"{i}.png")
    args = [a.format(empty=tmp_path / "empty", one_class=tmp_path / "one") for a in args]
    code, out, err = _run(["train", *args, f"project={tmp_path / 'runs'}"], capsys)
    assert code == 2
    assert fragment in err and err.strip().count("\n") == 0
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_help_lists_keys_with_defaults(capsys):
    from cnnfit.pipeline.resolve import AUTO_LR

    code, out, _ = _run(["train", "--help"], capsys)
    assert code == 0 and "optim.lr" in out and "epochs" in out and "simplecnn" in out
    # the auto rules' text comes from the table the run itself uses
    assert f"auto: {AUTO_LR['sgd']:g}" in out


def test_models_command(capsys):
    code, out, _ = _run(["models"], capsys)
    assert code == 0 and "resnet18" in out and "lenet5" in out


def test_summary_takes_model_keys_and_auto_unsets_one(capsys):
    code, out, err = _run(["summary", "model=lenet5", "act=tanh", "width=auto", "imgsz=28", "in_chans=1"], capsys)
    assert code == 0, err
    assert "lenet5 at 1x28x28" in out and "Tanh" in out and "parameters" in out


def test_a_command_freezes_the_heap_before_exit_but_a_python_caller_keeps_it():
    """Frozen objects are skipped by the collections Python runs at shutdown; library callers keep collecting."""
    code = ("import gc, sys; from cnnfit.cli import main; sys.argv = ['cnnfit', 'models']; main(); "
            "print('frozen', gc.get_freeze_count() > 0); gc.unfreeze(); main(['models']); "
            "print('frozen', gc.get_freeze_count() > 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert [line for line in out.splitlines() if line.startswith("frozen")] == ["frozen True", "frozen False"]


@pytest.mark.parametrize("as_command", [True, False])
def test_a_command_imports_without_full_collections_and_collects_after(as_command, tmp_path):
    """The imports' ~400k objects are not swept over and over while they pile up; a Python caller is untouched."""
    run = repr(str(tmp_path))
    call = f"sys.argv = ['cnnfit', 'eval', {run}]; main()" if as_command else f"main(['eval', {run}])"
    code = ("import gc, sys; full = []; gc.callbacks.append(lambda phase, info: full.append(info['generation']) "
            "if phase == 'start' and info['generation'] == 2 else None); from cnnfit.cli import main; "
            f"{call}; print('full', len(full), 'enabled', gc.isenabled(), "
            "'pipeline', 'cnnfit.pipeline' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    full = int(out[out.index("full") + 1])
    assert out[-4:] == ["enabled", "True", "pipeline", "True"]  # the command got as far as importing the pipeline
    assert (full == 0) if as_command else (full > 0)


def test_eval_of_a_missing_run_is_a_clear_error(tmp_path, capsys):
    code, _, err = _run(["eval", str(tmp_path)], capsys)
    assert code == 2 and "not a finished run directory" in err


def test_train_eval_predict_via_python_m(tmp_path):
    cmd = [sys.executable, "-m", "cnnfit"]
    env_run = lambda *a: subprocess.run([*cmd, *a], capture_output=True, text=True, cwd=tmp_path)  # noqa: E731
    r = env_run("train", "epochs=2", "name=cli")
    assert r.returncode == 0, r.stderr
    assert "test accuracy" in r.stdout
    r = env_run("eval", "runs/cli")
    assert r.returncode == 0 and "test accuracy" in r.stdout


def test_inspect_reports_without_training(tmp_path, capsys):
    from tests.conftest import make_folder

    folder = make_folder(tmp_path / "photos", per_class=10)
    (folder / "red" / "empty.png").write_bytes(b"")
    code, out, err = _run(["inspect", f"data={folder}", "imgsz=16", f"project={tmp_path / 'runs'}"], capsys)
    assert code == 0, err
    assert (tmp_path / "runs" / "inspect" / "data_report.json").exists()
    assert (tmp_path / "runs" / "inspect" / "samples.png").exists()
    assert "empty.png" in out and not list((tmp_path / "runs").glob("inspect/*.pt"))


@pytest.mark.parametrize("command, fragment", [("predict", "topk=5"), ("eval", "device=auto"), ("", "[key=value ...]")])
def test_each_command_explains_itself(command, fragment, capsys):
    code, out, _ = _run([command, "--help"] if command else ["--help"], capsys)
    assert code == 0 and fragment in out
    if command:
        assert out.startswith(f"cnnfit {command} ")


def test_error_text_with_brackets_is_printed_verbatim(tmp_path, capsys):
    code, _, err = _run(["train", "class_weight={eleven: 2}", f"project={tmp_path}"], capsys)
    assert code == 2 and "unknown classes ['eleven']" in err


YAML_NET = """
layers:
  - conv: {filters: 32, kernel: 3}
  - bn
  - relu
  - pool: {size: 2}
  - residual:
      - conv: {filters: 32}
      - bn
      - relu
  - flatten
  - dense: 64
  - relu
  - dropout: 0.1
"""

OWN_NET = """
import torch.nn as nn


class TinyNet(nn.Module):
    def __init__(self, num_classes, in_chans=1, width=32):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(4),
                                  nn.Flatten())
        self.head = nn.Linear(width * 16, num_classes)

    def forward(self, x):
        return self.head(self.body(x))
"""


def test_yaml_and_own_module_models_train_from_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # where `cnnfit` run from this folder finds mynets.py
    (tmp_path / "net.yaml").write_text(YAML_NET)
    (tmp_path / "mynets.py").write_text(OWN_NET)
    for name, model in (("yaml", "model=net.yaml"), ("own", "model=mynets:TinyNet")):
        code, out, err = _run(["train", model, "epochs=3", "imgsz=16", f"name={name}", "project=runs"], capsys)
        assert code == 0, err
        acc = float(out.split("test accuracy ")[1].split()[0])
        assert acc > 0.8, f"{model}: test accuracy {acc}"
    (tmp_path / "net.yaml").unlink()  # the checkpoint carries the layer list: eval needs no YAML file
    code, out, err = _run(["eval", "runs/yaml"], capsys)
    assert code == 0 and "test accuracy" in out, err


def test_help_lists_every_command_and_every_shipped_recipe(capsys):
    code, out, _ = _run(["--help"], capsys)
    commands = ("train", "lr-find", "tune", "eval", "compare", "predict", "export", "serve", "inspect", "models",
                "summary")
    recipes = [p.stem for p in (Path(cnnfit.__file__).parent / "recipes").glob("*.yaml")]
    assert code == 0 and len(recipes) >= 4
    assert all(f"\n  {c} " in out for c in commands) and all(r in out for r in recipes)


def test_serve_help_shows_each_default_once(capsys):
    code, out, _ = _run(["serve", "--help"], capsys)
    assert code == 0 and "port=8000" in out and out.count("8000") == 1 and "max_batch=64" in out


@pytest.mark.parametrize("args, fragment", [
    (["eval", "runs/x", "tta=rotate"], "tta='rotate' is invalid; choose from: none, flip, flip+shift"),
    (["export", "runs/x", "format=keras"], "choose from: onnx, torchscript, safetensors"),
    (["serve", "runs/x", "port=http"], "port='http' is invalid; use a whole number such as port=8000"),
    (["eval", "runs/x", "calibrate=maybe"], "use calibrate=true or calibrate=false"),
    (["eval", "runs/x", "tpa=flip"], "unknown key 'tpa' for cnnfit eval; did you mean 'tta'?"),
    (["eval", "runs/x", "runs/y"], "cnnfit eval takes one run directory, got 2 paths"),
    (["predict", "runs/x"], "needs image files, folders or globs"),
    (["models", "resnet18"], "takes key=value arguments only"),
    (["summary", "width=9"], "width='9' is invalid"),
    (["evaluate"], "unknown command 'evaluate'; did you mean 'eval'?"),
])
def test_a_bad_option_is_exit_2_and_one_line_before_any_work(args, fragment, capsys):
    code, out, err = _run(args, capsys)
    assert code == 2 and fragment in err and err.strip().count("\n") == 0 and not out


def _logged(handler: ConsoleHandler, level: int, message: str, **extra) -> None:
    """One record through a logger that holds only `handler`, as the CLI attaches it."""
    log = logging.getLogger("cnnfit.test_cli")
    log.addHandler(handler)
    log.setLevel(handler.level)
    try:
        log.log(level, message, extra=extra)
    finally:
        log.removeHandler(handler)


def test_the_handler_draws_tables_and_lines_verbatim_and_no_bar_off_a_terminal():
    out = io.StringIO()
    handler = ConsoleHandler(Console(file=out, width=100))
    assert handler.level == logging.INFO  # not a terminal: the bar's DEBUG records are not even made
    table = {"title": "2 seeds", "columns": ["metric", "mean", "std"], "rows": [["accuracy", "0.9500", "0.0100"]]}
    _logged(handler, logging.INFO, "2 seeds: accuracy 0.9500 +- 0.0100", table=table)  # the plain form
    _logged(handler, logging.INFO, "skipped [bad].png: not an image", style="bold")
    _logged(handler, logging.DEBUG, "epoch 1/2 3/10", progress={"task": "epoch 1/2", "completed": 3, "total": 10,
                                                                "info": "loss 0.5", "done": False})
    handler.handle(logging.makeLogRecord({"msg": "bar", "levelno": logging.DEBUG, "progress": {"task": "epoch 1/2",
                                                                                             "completed": 3}}))
    text = out.getvalue()
    assert "2 seeds" in text and "metric" in text and "0.0100" in text and "+-" not in text
    assert "skipped [bad].png: not an image" in text and "epoch" not in text and handler.bar is None


def test_on_a_terminal_the_handler_runs_a_bar_until_stop():
    handler = ConsoleHandler(Console(file=io.StringIO(), force_terminal=True, width=100))
    assert handler.level == logging.DEBUG
    _logged(handler, logging.DEBUG, "", progress={"task": "epoch 1/2", "completed": 3, "total": 10, "info": "loss 0.5"})
    assert handler.bar is not None and len(handler.bar.tasks) == 1
    _logged(handler, logging.DEBUG, "", progress={"task": "epoch 1/2", "completed": 10, "total": 10, "done": True})
    assert len(handler.bar.tasks) == 0
    _logged(handler, logging.DEBUG, "", progress={"stop": True})
    assert handler.bar is None


def test_each_command_attaches_its_handler_and_takes_it_away(capsys):
    logger = logging.getLogger("cnnfit")
    before = (list(logger.handlers), logger.level)
    assert main(["serve", "--help"]) == 0 and main(["eval", "runs/x", "tta=rotate"]) == 2
    assert (list(logger.handlers), logger.level) == before


def _readme_sections():
    spec = importlib.util.spec_from_file_location("readme_sections", ROOT / "scripts" / "readme_sections.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_sections_are_what_the_tables_generate():
    readme = (ROOT / "README.md").read_text()
    fresh = _readme_sections().update(readme)
    assert fresh == readme, "README.md is out of date: run python scripts/readme_sections.py"


def test_readme_layout_has_a_line_for_every_module_and_package():
    assert _readme_sections().layout_drift() == []


def test_a_log_written_to_a_file_has_one_line_per_summary_row_and_per_epoch(tmp_path, capsys):
    code, out, _ = _run(["train", "epochs=3", "eval.report=false", f"project={tmp_path}"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert sum(line.lstrip().startswith(("1/3", "2/3", "3/3")) for line in lines) == 3  # one row each, none wrapped
    optimizer = next(line for line in lines if line.startswith("optimizer"))
    assert "auto: defaults for adamw" in optimizer  # the row's reason on the row's own line
    wrapped = [line for line in lines if line.startswith(" " * 20) and line.strip() != "cnnfit train"]  # the title
    assert not wrapped  # no continuation lines of a wrapped cell
