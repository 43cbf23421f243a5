"""The command line as a user meets it: exit codes, one-line errors, nothing left behind."""

import subprocess
import sys

import pytest

from cnnfit.cli import main


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
    code, out, _ = _run(["train", "--help"], capsys)
    assert code == 0 and "optim.lr" in out and "epochs" in out and "simplecnn" in out


def test_models_command(capsys):
    code, out, _ = _run(["models"], capsys)
    assert code == 0 and "resnet18" in out and "lenet5" in out


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
