"""Answering "unknown": the threshold evaluate fits on val, applied by predict (run directory and .onnx), refitted
for another target or score from the val scores best.pt keeps, and refused where it cannot hold."""

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import cnnfit
from cnnfit.cli import main
from cnnfit.engine import load_checkpoint


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return cnnfit.train(data="digits", epochs=3, calibrate=True, project=str(tmp_path_factory.mktemp("runs")))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """60 real digits and 20 images of no digit (noise), as 8x8 PNG files."""
    folder = tmp_path_factory.mktemp("imgs")
    d = load_digits()
    for i in range(60):
        Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8)).save(folder / f"digit{i}.png")
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"noise{i}.png")
    return folder


def test_predict_answers_unknown_under_the_threshold_fitted_on_val(run, images, tmp_path):
    saved = load_checkpoint(run.dir / "best.pt")["reject"]
    rows = list(cnnfit.predict(run.dir, [str(images)], reject=True, out=tmp_path / "p.csv").rows())
    assert all(r["answer"] == (r["top1"] if r["score"] >= round(saved["threshold"], 6) - 1e-6 else "unknown")
               for r in rows)
    assert all(r["score"] == r["prob1"] for r in rows)  # maxprob: the calibrated top probability
    unknown = {r["file"].rsplit("/", 1)[1][:5] for r in rows if r["answer"] == "unknown"}
    share = {kind: np.mean([r["answer"] == "unknown" for r in rows if kind in r["file"]]) for kind in ("digit", "noise")}
    assert share["noise"] > share["digit"] and unknown  # what is no digit is refused more often than digits
    half = list(cnnfit.predict(run.dir, [str(images)], reject_coverage=0.5, out=tmp_path / "h.csv").rows())
    assert 0.25 < np.mean([r["answer"] != "unknown" for r in half]) < 0.75
    energy = list(cnnfit.predict(run.dir, [str(images)], reject_score="energy", out=tmp_path / "e.csv").rows())
    assert [r["top1"] for r in energy] == [r["top1"] for r in rows]  # the same classes from the logits
    assert main(["predict", str(run.dir), str(images), "reject.precision=0.9", f"out={tmp_path / 'c.csv'}"]) == 0
    assert "answer" in (tmp_path / "c.csv").read_text().splitlines()[0]


def test_an_export_carries_the_threshold_and_refuses_other_targets(run, images, tmp_path):
    from cnnfit.export import export

    onnx = tmp_path / "m.onnx"
    export(run.dir, check_images=50, out=onnx)
    saved = load_checkpoint(run.dir / "best.pt")["reject"]
    rows = list(cnnfit.predict(onnx, [str(images)], reject=True, out=tmp_path / "o.csv").rows())
    direct = list(cnnfit.predict(run.dir, [str(images)], reject=True, out=tmp_path / "d.csv").rows())
    assert [r["answer"] for r in rows] == [r["answer"] for r in direct]
    import onnx as onnx_lib

    meta = {p.key: p.value for p in onnx_lib.load(str(onnx)).metadata_props}
    assert json.loads(meta["reject"])["threshold"] == saved["threshold"] and "val" not in json.loads(meta["reject"])
    for kwargs, why in (({"reject_precision": 0.9}, "needs the run directory"),
                        ({"reject_score": "energy"}, "needs the run directory")):
        with pytest.raises(cnnfit.CnnfitError, match=why) as err:
            cnnfit.predict(onnx, [str(images)], out=tmp_path / "x.csv", **kwargs)
        assert "\n" not in str(err.value)
