"""The predictor behind predict and serve: uint8 in, probabilities out, calibration honoured, bad input refused,
safe under threads; and `cnnfit predict` on top of it (json output, a corrupt file as a row with its reason)."""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

import cnnfit
from cnnfit.cli import main
from cnnfit.data import DecodeError
from cnnfit.engine import load_checkpoint, save_checkpoint
from cnnfit.predictor import BATCH, load_predictor

QUIET: dict = {}  # the API logs; nothing to silence


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return cnnfit.train(data="digits", epochs=3, project=str(tmp_path_factory.mktemp("runs")), **QUIET)


@pytest.fixture(scope="module")
def pixels():
    """300 random 1x8x8 uint8 images: more than one BATCH."""
    return np.random.default_rng(0).integers(0, 256, (300, 1, 8, 8), dtype=np.uint8)


def _png(path, value=128):
    Image.fromarray(np.full((20, 12), value, dtype=np.uint8)).save(path)
    return path


def test_a_run_predicts_probabilities_for_any_batch(run, pixels, tmp_path):
    p = load_predictor(run.dir)
    assert (p.backend, p.task, p.imgsz, p.channels, p.resize) == ("torch", "classify", 8, 1, "squash")
    assert p.classes == [str(d) for d in range(10)] and p.source == str(run.dir)
    assert p.info["model"] == "simplecnn" and p.info["params"] > 0 and p.info["accuracy"] == pytest.approx(run.accuracy)
    probs = p.predict(pixels)
    assert probs.shape == (300, 10) and probs.dtype == np.float32 and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.allclose(p.predict(pixels[:1]), probs[:1], atol=1e-6)  # N=1 and a row inside a 300-batch agree
    assert len(pixels) > BATCH
    x = p.decode(_png(tmp_path / "a.png"))
    assert x.shape == (1, 8, 8) and x.dtype == np.uint8 and (x == 128).all()
    assert np.array_equal(p.decode((tmp_path / "a.png").read_bytes()), x)


def test_bad_input_is_refused_with_the_fix(run):
    p = load_predictor(run.dir)
    with pytest.raises(DecodeError):
        p.decode(b"not an image")
    with pytest.raises(cnnfit.CnnfitError, match=r"\(N, 1, 8, 8\) uint8"):
        p.predict(np.zeros((2, 3, 8, 8), dtype=np.uint8))
    with pytest.raises(cnnfit.CnnfitError, match="uint8"):
        p.predict(np.zeros((2, 1, 8, 8), dtype=np.float32))
    with pytest.raises(cnnfit.CnnfitError, match="not a finished run directory"):
        load_predictor(run.dir.parent)


def test_calibration_temperature_is_applied(run, pixels, tmp_path):
    copy = tmp_path / "cal"
    shutil.copytree(run.dir, copy)
    ckpt = load_checkpoint(copy / "best.pt")
    save_checkpoint({**ckpt, "calibration": {"temperature": 2.0}}, copy / "best.pt")
    plain, hot = load_predictor(run.dir).predict(pixels), load_predictor(copy).predict(pixels)
    want = np.sqrt(plain.astype(np.float64))  # softmax(z / 2) is proportional to softmax(z) ** (1 / 2)
    assert np.allclose(hot, want / want.sum(1, keepdims=True), atol=1e-5)
    assert load_predictor(copy).info["temperature"] == 2.0


def test_tta_default_comes_from_the_run_and_can_be_overridden(run, pixels):
    flip = load_predictor(run.dir, tta="flip")
    assert flip.info["tta"] == "flip" and load_predictor(run.dir).info["tta"] == "none"
    x = torch.from_numpy(pixels[:4])
    mirrored = load_predictor(run.dir).predict(x.flip(-1).numpy())
    averaged = (load_predictor(run.dir).predict(pixels[:4]) + mirrored) / 2
    assert np.allclose(flip.predict(pixels[:4]), averaged, atol=1e-5)
    with pytest.raises(cnnfit.CnnfitError, match="choose from"):
        load_predictor(run.dir, tta="spin")


def test_concurrent_calls_from_threads_agree(run, pixels):
    p = load_predictor(run.dir)
    want = p.predict(pixels[:64])
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: p.predict(pixels[:64]), range(16)))
    assert all(np.array_equal(r, want) for r in results)


def test_onnx_predictor_reads_its_metadata_and_refuses_tta(run, pixels):
    from cnnfit.export import export

    export(run.dir, check_images=100, **QUIET)
    p = load_predictor(run.dir / "model.onnx")
    assert (p.backend, p.classes, p.imgsz, p.channels, p.task) == ("onnx", load_predictor(run.dir).classes, 8, 1,
                                                                   "classify")
    assert p.info["model"] == "simplecnn" and p.info["accuracy"] == pytest.approx(run.accuracy)
    assert np.allclose(p.predict(pixels), load_predictor(run.dir).predict(pixels), atol=1e-5)
    with pytest.raises(cnnfit.CnnfitError, match="run directory for TTA"):
        load_predictor(run.dir / "model.onnx", tta="flip")


def test_predict_writes_json_and_names_a_corrupt_file(run, tmp_path, caplog):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for v in (0, 100, 200):
        _png(folder / f"{v}.png", v)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    caplog.set_level("INFO", logger="cnnfit")
    result = cnnfit.predict(run.dir, [str(folder)], topk=2, format="json", out=tmp_path / "p.json")
    rows = json.loads((tmp_path / "p.json").read_text())
    assert rows == list(result.rows()) and len(rows) == 4 and result.skipped == 1
    assert list(rows[0]) == ["file", "top1", "prob1", "top2", "prob2", "status"] and rows[0]["status"] == "ok"
    assert rows[3]["file"].endswith("broken.jpg") and rows[3]["status"] != "ok" and rows[3]["top1"] is None
    assert "skipped" in caplog.text and "broken.jpg" in caplog.text
    assert main(["predict", str(run.dir), str(folder), "format=json", f"out={tmp_path / 'c.json'}"]) == 0
    assert len(json.loads((tmp_path / "c.json").read_text())) == 4
    assert main(["predict", str(run.dir), str(folder), "format=xml"]) == 2
