"""Export: ONNX that takes raw uint8 pixels agrees with the torch predictor on the whole val split, reloads in a
plain onnxruntime session, and refuses to leave a file behind when it does not agree; TorchScript; safetensors."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import cnnfit
from cnnfit import export as X
from cnnfit.cli import main
from cnnfit.config import Config
from cnnfit.engine import load_checkpoint
from cnnfit.predictor import load_predictor
from cnnfit.models import from_checkpoint
from cnnfit.pipeline.prepare import load_data

QUIET: dict = {}  # the API logs; nothing to silence


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return cnnfit.train(data="digits", epochs=3, project=str(tmp_path_factory.mktemp("runs")), **QUIET)


@pytest.fixture(scope="module")
def onnx_record(run):
    return X.export(run.dir, check_images=None, **QUIET)


def _val(run_dir):
    """(N, C, H, W) uint8 val images of the run and their labels, as training decoded them."""
    ds = load_data(Config.model_validate(load_checkpoint(run_dir / "best.pt")["config"]))[0]
    idx = np.asarray(json.loads((run_dir / "split.json").read_text())["val"])
    return np.asarray(ds.images[idx]), ds.labels[idx]


def test_onnx_agrees_with_torch_on_the_whole_val_split(run, onnx_record):
    images, _ = _val(run.dir)
    parity = onnx_record["parity"]
    assert parity["images"] == len(images) > 200 and parity["split"] == "val"
    assert parity["agreement"] == 1.0 and parity["max_abs_diff"] < 1e-4
    assert json.loads((run.dir / "export.json").read_text())["onnx"]["parity"] == parity
    assert onnx_record["input"] == {"name": "images", "dtype": "uint8", "shape": ["N", 1, 8, 8]}
    assert not list(run.dir.glob(".*tmp*"))


def test_onnx_metadata_describes_the_model(run, onnx_record):
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(run.dir / "model.onnx")).metadata_props}
    assert json.loads(meta["classes"]) == [str(d) for d in range(10)]
    assert (meta["imgsz"], meta["channels"], meta["task"], meta["layout"]) == ("8", "1", "classify", "nchw")
    assert json.loads(meta["parity"])["agreement"] == 1.0 and meta["model"] == "simplecnn"
    assert len(json.loads(meta["mean"])) == 1 and float(meta["temperature"]) == 1.0


def test_plain_onnxruntime_on_raw_pixels_predicts_as_cnnfit_predict(run, onnx_record, tmp_path):
    import onnxruntime as ort

    images, _ = _val(run.dir)
    images = images[:40]
    for i, img in enumerate(images):
        Image.fromarray(img[0]).save(tmp_path / f"{i:03d}.png")  # grayscale PNG: lossless, the same pixels back
    session = ort.InferenceSession(str(run.dir / "model.onnx"), providers=["CPUExecutionProvider"])
    probs = session.run(["probs"], {"images": images})[0]  # (40, 10) from raw uint8, no preprocessing here
    assert probs.shape == (40, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    rows = list(cnnfit.predict(run.dir, [str(tmp_path)], topk=1, out=tmp_path / "p.csv", **QUIET).rows())
    assert [r["top1"] for r in rows] == [str(k) for k in probs.argmax(1)]
    assert np.allclose([r["prob1"] for r in rows], probs.max(1), atol=1e-5)

    from_onnx = list(cnnfit.predict(run.dir / "model.onnx", [str(tmp_path)], topk=3, out=tmp_path / "o.csv",
                                    **QUIET).rows())
    from_run = list(cnnfit.predict(run.dir, [str(tmp_path)], topk=3, out=tmp_path / "r.csv", **QUIET).rows())
    assert [r["top1"] for r in from_onnx] == [r["top1"] for r in from_run]
    assert np.allclose([r["prob2"] for r in from_onnx], [r["prob2"] for r in from_run], atol=1e-5)


def test_a_failing_parity_check_leaves_no_file(run, monkeypatch, tmp_path):
    monkeypatch.setattr(X, "MAX_DIFF", -1.0)  # nothing can pass
    with pytest.raises(cnnfit.CnnfitError, match="differs from torch.*nothing was written"):
        X.export(run.dir, out=tmp_path / "m.onnx", check_images=50, **QUIET)
    assert not list(tmp_path.iterdir())


def test_nhwc_layout_takes_channels_last_pixels(run, tmp_path):
    import onnxruntime as ort

    record = X.export(run.dir, out=tmp_path / "nhwc.onnx", layout="nhwc", check_images=100, **QUIET)
    assert record["input"]["shape"] == ["N", 8, 8, 1] and record["parity"]["agreement"] == 1.0
    images, _ = _val(run.dir)
    got = ort.InferenceSession(str(tmp_path / "nhwc.onnx")).run(None, {"images": images[:8].transpose(0, 2, 3, 1)})[0]
    assert np.allclose(got, load_predictor(run.dir).predict(images[:8]), atol=1e-5)
    assert np.allclose(load_predictor(tmp_path / "nhwc.onnx").predict(images[:8]), got)


def test_torchscript_takes_uint8_pixels(run, tmp_path):
    record = X.export(run.dir, format="torchscript", out=tmp_path / "m.pt", check_images=100, **QUIET)
    assert record["parity"]["agreement"] == 1.0 and record["parity"]["max_abs_diff"] < 1e-6
    images, _ = _val(run.dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated in torch 2.13, still loads
        traced = torch.jit.load(str(tmp_path / "m.pt"))
    got = traced(torch.from_numpy(images[:5])).detach().numpy()
    assert np.allclose(got, load_predictor(run.dir).predict(images[:5]))


def test_safetensors_rebuild_the_checkpoints_logits_exactly(run, tmp_path):
    record = X.export(run.dir, format="safetensors", out=tmp_path / "w.safetensors", **QUIET)
    assert set(record["bytes"]) == {"w.safetensors", "w.json"}
    model, meta = X.load_safetensors(tmp_path / "w.safetensors")
    ckpt = load_checkpoint(run.dir / "best.pt")
    assert meta["classes"] == ckpt["classes"] and meta["mean"] == ckpt["mean"] and meta["imgsz"] == 8
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), from_checkpoint(ckpt, torch.device("cpu"))(x))


def test_export_of_a_folder_without_a_run_is_one_line_exit_2(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a finished run directory" in err and err.strip().count("\n") == 0
    assert main(["export", str(tmp_path), "format=keras"]) == 2
    assert "choose from: onnx, torchscript, safetensors" in capsys.readouterr().err


def test_fashion_mnist_onnx_parity_on_its_whole_val_split(tmp_path):
    from tests.conftest import shared_dataset

    shared_dataset("fashion-mnist")
    run = cnnfit.train(data="fashion-mnist", model="lenet5", epochs=1, batch=128, data__fraction=0.05,
                       project=str(tmp_path), **QUIET)
    parity = X.export(run.dir, check_images=None, **QUIET)["parity"]
    assert parity["split"] == "val" and parity["images"] == len(json.loads((run.dir / "split.json").read_text())["val"])
    assert parity["agreement"] == 1.0 and parity["max_abs_diff"] < 1e-4
