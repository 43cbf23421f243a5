"""Files are data, never code: a checkpoint, model.json, config file or last.pt that names a module runs nothing
unless the user says trust_code=true; damaged checkpoints, racing writers, a full disk and hostile ONNX metadata
each end in one line that says what to do."""

import json
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cnnfit.cli import main
from cnnfit.config import load_config
from cnnfit.engine import load_checkpoint, save_checkpoint
from cnnfit.engine.callbacks.checkpointing import Checkpointing
from cnnfit.errors import CnnfitError
from cnnfit.export import export, load_safetensors
from cnnfit.models import user_module
from cnnfit.pipeline import evaluate, predict
from cnnfit.pipeline.resume import resume_config
from cnnfit.predictor import load_predictor

REFUSED = "runs code from the file; if you trust it, add "
# a module that leaves a marker when imported: importing it is running the file's choice of code
EVIL = "from pathlib import Path\nPath(__file__).with_name('marker').touch()\nclass Net:\n    pass\n"
NETS = '''
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, num_classes, in_chans=3, width=4):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))
'''


def _ckpt(model: str, model_kwargs: dict, state_dict: dict | None = None, **extra) -> dict:
    """What a run's best.pt holds, for a 1x8x8 two-class model."""
    return {"model": model, "model_kwargs": model_kwargs, "classes": ["a", "b"], "channels": 1, "imgsz": 8,
            "resize": "squash", "mean": [0.5], "std": [0.25], "task": "classify", "state_dict": state_dict or {},
            "config": {}, "epoch": 0, "metrics": {}, **extra}


@pytest.fixture
def hostile(tmp_path):
    """A run directory whose best.pt asks for os.system with a command that creates `marker`."""
    run, marker = tmp_path / "run", tmp_path / "marker"
    run.mkdir()
    save_checkpoint(_ckpt("os:system", {"command": f"touch '{marker}'"}), run / "best.pt")
    (run / "split.json").write_text(json.dumps({"train": [], "val": [], "test": []}))
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "x.png")
    return SimpleNamespace(run=run, marker=marker, image=tmp_path / "x.png")


@pytest.mark.parametrize("load", [
    pytest.param(lambda h: predict(h.run, [str(h.image)], device="cpu"), id="predict"),
    pytest.param(lambda h: evaluate(h.run, device="cpu"), id="eval"),
    pytest.param(lambda h: export(h.run, check_images=2), id="export"),
    pytest.param(lambda h: load_predictor(h.run), id="serve-loader"),
])
def test_a_checkpoint_naming_a_module_runs_nothing(hostile, load):
    with pytest.raises(CnnfitError, match=REFUSED + "trust_code=true"):
        load(hostile)
    assert not hostile.marker.exists()


def test_the_command_line_refuses_it_in_one_line_with_exit_2(hostile, capsys):
    assert main(["eval", str(hostile.run), "device=cpu"]) == 2
    err = capsys.readouterr().err
    assert REFUSED + "trust_code=true" in err and len(err.strip().splitlines()) == 1
    assert not hostile.marker.exists()


def test_only_trust_code_lets_the_file_run_its_module(hostile):
    # the same file with the user's opt-in: os.system runs (the marker appears) and returns no model
    with pytest.raises(CnnfitError, match="returned type int, not a torch.nn.Module"):
        load_predictor(hostile.run, trust_code=True)
    assert hostile.marker.exists()


def test_safetensors_description_naming_a_module_runs_nothing(tmp_path):
    from safetensors.torch import save_file

    marker = tmp_path / "marker"
    save_file({"w": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    desc = {k: v for k, v in _ckpt("os:system", {"command": f"touch '{marker}'"}).items() if k != "state_dict"}
    (tmp_path / "model.json").write_text(json.dumps(desc))
    with pytest.raises(CnnfitError, match=REFUSED + "trust_code=true"):
        load_safetensors(tmp_path / "model.safetensors")
    assert not marker.exists()
    (tmp_path / "model.json").write_text("[1, 2]")
    with pytest.raises(CnnfitError, match="holds no model description"):
        load_safetensors(tmp_path)


@pytest.mark.parametrize("model, kwargs, message", [
    ("nets/other.yaml", {"imgsz": 8}, "without its layers list"),  # a layers file is never read on a file's word
    ("resnet81", {}, "which is not a registered model; choose a run trained with one of: "),
    ("simplecnn", {"evil": 1}, "model simplecnn has no option evil"),
    ("simplecnn", {"width": torch.ones(1)}, "model_kwargs must hold plain JSON values"),
    ("simplecnn", {"imgsz": 200_000}, "model_kwargs imgsz must be a size from 4 to 4096 px"),
])
def test_a_checkpoint_describes_only_registered_models_and_plain_options(tmp_path, model, kwargs, message):
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(_ckpt(model, kwargs), run / "best.pt")
    with pytest.raises(CnnfitError, match=message):
        load_predictor(run)


@pytest.fixture
def evil_module(tmp_path, monkeypatch):
    """evilmod.py in the working directory: the place a downloaded run would bring it."""
    (tmp_path / "evilmod.py").write_text(EVIL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "evilmod", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))  # whatever a load adds is undone after the test
    return tmp_path / "marker"


def test_a_trusted_file_never_imports_from_the_working_directory(tmp_path, evil_module):
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(_ckpt("evilmod:Net", {}), run / "best.pt")
    with pytest.raises(CnnfitError, match="no module named 'evilmod' in the installed packages; install it or add "
                                          "its folder to PYTHONPATH"):
        load_predictor(run, trust_code=True)
    assert not evil_module.exists() and str(tmp_path) not in sys.path


def test_a_config_file_naming_a_module_needs_trust_code(tmp_path, evil_module, capsys):
    (tmp_path / "run.yaml").write_text("model:\n  name: evilmod:Net\n")
    assert main(["train", "config=run.yaml", "data=digits", "epochs=1"]) == 2
    assert REFUSED + "trust_code=true" in capsys.readouterr().err
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("tune:\n  space:\n    model.name: [simplecnn, 'evilmod:Net']\n")
    with pytest.raises(CnnfitError, match=REFUSED):
        load_config([f"recipe={recipe}"])
    (tmp_path / "self.yaml").write_text("model:\n  name: evilmod:Net\n  trust_code: true\n")
    with pytest.raises(CnnfitError, match="sets model.trust_code; only you can trust code"):
        load_config(["config=self.yaml"])
    assert not evil_module.exists() and not (tmp_path / "runs").exists()
    # the user's own word: on the command line, or the opt-in beside the file
    assert load_config(["config=run.yaml", "model.trust_code=true"]).model.name == "evilmod:Net"
    assert load_config(["config=run.yaml", "model=simplecnn"]).model.name == "simplecnn"
    assert load_config(["model=evilmod:Net"]).model.name == "evilmod:Net"


def test_resume_of_a_last_pt_naming_a_module_needs_trust_code(tmp_path, evil_module):
    run = tmp_path / "run"
    run.mkdir()
    config = {"model": {"name": "evilmod:Net", "trust_code": True}, "data": {"source": "digits"}}
    save_checkpoint(_ckpt("evilmod:Net", {}, config=config, train_state={"step": 1}), run / "last.pt")
    with pytest.raises(CnnfitError, match=REFUSED + "trust_code=true"):
        resume_config(load_config([f"resume={run}"]))
    assert not evil_module.exists()
    cfg, _, _ = resume_config(load_config([f"resume={run}", "model.trust_code=true"]))
    assert cfg.model.name == "evilmod:Net"


@pytest.fixture
def trustnets(tmp_path, monkeypatch):
    """A genuine user module on sys.path, and a fresh record of the names typed in this process."""
    (tmp_path / "trustnets.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "trustnets", raising=False)
    monkeypatch.setattr(user_module, "_TYPED", set())
    import trustnets

    net = trustnets.Net(num_classes=2, in_chans=1, width=4)
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(_ckpt("trustnets:Net", {"width": 4}, net.state_dict()), run / "best.pt")
    return run


def test_trust_code_lets_a_genuine_user_module_load(trustnets):
    with pytest.raises(CnnfitError, match=REFUSED + "trust_code=true"):
        load_predictor(trustnets)
    p = load_predictor(trustnets, trust_code=True)
    probs = p.predict(np.zeros((3, 1, 8, 8), dtype=np.uint8))
    assert probs.shape == (3, 2) and np.allclose(probs.sum(1), 1)
    assert not user_module.is_typed("trustnets:Net")  # a file's name is never remembered as the user's


def test_a_model_the_user_named_in_this_process_reloads_from_its_checkpoint(trustnets):
    from cnnfit import models

    models.create("trustnets:Net", num_classes=2, in_chans=1, width=4)  # as `cnnfit train model=...` builds it
    assert load_predictor(trustnets).predict(np.zeros((1, 1, 8, 8), dtype=np.uint8)).shape == (1, 2)


@pytest.mark.parametrize("content, message", [
    ([1, 2], "holds a list, not a cnnfit checkpoint"),
    ("text", "holds a str, not a cnnfit checkpoint"),
    ({"format_version": "9"}, "format_version='9', not a number"),
])
def test_a_checkpoint_that_is_not_a_dict_is_one_line(tmp_path, content, message):
    torch.save(content, tmp_path / "best.pt")
    with pytest.raises(CnnfitError, match=message):
        load_checkpoint(tmp_path / "best.pt")
    with pytest.raises(CnnfitError, match=message):
        load_predictor(tmp_path)


def test_two_writers_of_one_checkpoint_never_share_a_temporary_file(tmp_path, monkeypatch):
    from cnnfit.engine import checkpoint

    both_inside = threading.Barrier(2, timeout=10)
    real_save = torch.save

    def save_together(obj, f, *a, **kw):  # both writers hold their file open at the same moment
        both_inside.wait()
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(checkpoint.torch, "save", save_together)
    errors = []

    def write(i):
        try:
            save_checkpoint({"writer": i, "w": torch.full((1000,), float(i))}, tmp_path / "best.pt")
        except Exception as exc:  # what a shared temporary name gives: a rename of a file already moved
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ckpt = load_checkpoint(tmp_path / "best.pt")
    assert torch.equal(ckpt["w"], torch.full((1000,), float(ckpt["writer"])))  # one writer's whole file
    assert not list(tmp_path.glob(".*.tmp"))


def _full_disk(*a, **kw):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("existing, said", [
    ((), "no best.pt was written yet: free space, then train again"),
    (("best.pt",), "the previous best.pt is intact: free space, then train again"),
    (("best.pt", "last.pt"), "the previous best.pt is intact: free space, then resume with cnnfit train resume="),
])
def test_a_full_disk_says_what_is_left(tmp_path, monkeypatch, existing, said):
    from cnnfit.engine.callbacks import checkpointing

    for name in existing:
        save_checkpoint({"name": name}, tmp_path / name)
    before = {name: (tmp_path / name).read_bytes() for name in existing}
    monkeypatch.setattr(checkpointing, "save_checkpoint", _full_disk)
    state = SimpleNamespace(step=7, failed=False, stop=None)
    Checkpointing(tmp_path, meta={})._save(state, {"w": 1}, "best.pt")
    assert state.failed and "No space left on device" in state.stop and said in state.stop
    assert {name: (tmp_path / name).read_bytes() for name in existing} == before


def _onnx(path, **meta):
    """A tiny graph, uint8 (N, 1, 8, 8) -> (N, 2) float, with cnnfit metadata: the defaults describe it truly."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((64, 2), 1e-3, dtype=np.float32), "w")
    nodes = [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Flatten", ["f"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    props = {"classes": json.dumps(["a", "b"]), "imgsz": "8", "channels": "1", "resize": "squash", **meta}
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def test_an_onnx_file_with_true_metadata_predicts(tmp_path):
    p = load_predictor(_onnx(tmp_path / "model.onnx"))
    assert p.predict(np.zeros((2, 1, 8, 8), dtype=np.uint8)).shape == (2, 2)


@pytest.mark.parametrize("meta, message", [
    ({"imgsz": "200000"}, "imgsz=200000 is outside 4..4096 px"),
    ({"imgsz": "many"}, "unreadable cnnfit metadata"),
    ({"channels": "7"}, "channels=7 is not one of"),
    ({"classes": "not json"}, "unreadable cnnfit metadata"),
    ({"classes": json.dumps({"a": 1})}, "classes is not a JSON list of names"),
    ({"classes": json.dumps([1, 2])}, "classes is not a JSON list of names"),
    ({"classes": json.dumps(["a", "b", "c"])}, "not one column per class"),
    ({"resize": "stretch"}, "resize='stretch' is not one of"),
    ({"layout": "nhwc"}, "the input is"),
    ({"temperature": "nan"}, "temperature is not a positive number"),
    ({"quantize": "int4" * 100}, "quantize='int4int4int4int4int4' is not one of none, int8, dynamic"),
])
def test_onnx_metadata_out_of_range_is_refused_in_one_line(tmp_path, meta, message):
    with pytest.raises(CnnfitError, match=message) as err:
        load_predictor(_onnx(tmp_path / "model.onnx", **meta))
    assert "re-export it with: cnnfit export RUN" in str(err.value) and "\n" not in str(err.value)
