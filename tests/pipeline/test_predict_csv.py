"""`predict` streams: one row per file in input order, bad files as rows with their reason, written batch by batch to
a temporary name that takes the output's name only when complete; the rows match the predictor's probabilities."""

import csv
import importlib
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import cnnfit
from cnnfit.engine import load_checkpoint
from cnnfit.errors import CnnfitError
from cnnfit.pipeline.predict import OK, Predictions, predict
from cnnfit.predictor import BATCH, load_predictor

predict_module = importlib.import_module("cnnfit.pipeline.predict")  # the package's `predict` is the function

N = 300  # more than one BATCH (256): the rows of two batches meet in one file
BAD = {"d0000_empty.jpg": "empty file", "d0150_text.png": "not an image (Pillow cannot identify it)",
       "d0290_trunc.png": "truncated or corrupt (image file is truncated)"}  # first batch, both ends of the second


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 1-epoch digits run: its evaluation fits the reject threshold on val."""
    return cnnfit.train(data="digits", epochs=1, seed=0, project=str(tmp_path_factory.mktemp("runs")),
                        **{"eval.report": False})


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """N digits as 8x8 PNG files, plus a zero-byte .jpg, a text file named .png and a PNG cut in half."""
    root = tmp_path_factory.mktemp("imgs")
    digits = load_digits().images
    for i in range(N):
        Image.fromarray(np.round(digits[i] * 255 / 16).astype(np.uint8)).save(root / f"d{i:04d}.png")
    (root / "d0000_empty.jpg").write_bytes(b"")
    (root / "d0150_text.png").write_text("a note, not a picture\n")
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(png, format="PNG")
    (root / "d0290_trunc.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    return root


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_has_a_row_per_file_bad_ones_with_their_reason_and_the_predictors_probabilities(run, folder, tmp_path,
                                                                                            caplog):
    caplog.set_level(logging.INFO, logger="cnnfit")
    result = predict(run.dir, [str(folder)], topk=3, out=tmp_path / "p.csv", device="cpu")
    rows = _csv(tmp_path / "p.csv")
    assert list(rows[0]) == ["file", "top1", "prob1", "top2", "prob2", "top3", "prob3", "status"]
    files = sorted(folder.iterdir())
    assert [r["file"] for r in rows] == [str(f) for f in files] and len(rows) == N + len(BAD)
    bad = [r for r in rows if r["status"] != OK]
    assert {r["file"].rsplit("/", 1)[1]: r["status"] for r in bad} == BAD
    assert all(r[c] == "" for r in bad for c in rows[0] if c not in ("file", "status"))
    assert all(f"skipped {folder / name}: {why}" in caplog.text for name, why in BAD.items())
    # the same images decoded and predicted in one call, without streaming: the same classes and probabilities
    p = load_predictor(run.dir, device="cpu")
    good = [f for f in files if f.name not in BAD]
    probs = p.predict(np.stack([p.decode(f) for f in good]))  # (N, 10)
    ok = [r for r in rows if r["status"] == OK]
    assert [r["top1"] for r in ok] == [p.classes[k] for k in probs.argmax(1)]
    got = np.array([[float(r[f"prob{j}"]) for j in (1, 2, 3)] for r in ok])  # (N, 3)
    assert np.allclose(got, -np.sort(-probs, axis=1)[:, :3], atol=2e-6)  # 6 decimals, and batches of 256 vs 300
    # the result is small: counts, the columns and the first rows, the rest read back from the file on demand
    assert isinstance(result, Predictions) and result.path == tmp_path / "p.csv" and result.format == "csv"
    assert (result.rows_written, result.skipped, result.columns) == (N + len(BAD), len(BAD), list(rows[0]))
    back = list(result.rows())
    assert result.head == back[:5] and [r["file"] for r in back] == [r["file"] for r in rows]
    assert back[0]["prob1"] == float(rows[0]["prob1"]) and back[1]["top2"] is None  # d0000.png, d0000_empty.jpg
    assert [f.name for f in tmp_path.iterdir()] == ["p.csv"]  # no temporary file left beside it


def test_json_holds_the_same_rows_and_reject_adds_its_columns(run, folder, tmp_path):
    csv_rows = list(predict(run.dir, [str(folder)], topk=2, out=tmp_path / "p.csv", device="cpu").rows())
    result = predict(run.dir, [str(folder)], topk=2, out=tmp_path / "p.json", device="cpu", format="json")
    assert json.loads((tmp_path / "p.json").read_text()) == csv_rows == list(result.rows())
    assert list(csv_rows[1]) == ["file", "top1", "prob1", "top2", "prob2", "status"]  # json keys in column order

    threshold = load_checkpoint(run.dir / "best.pt")["reject"]["threshold"]
    rejected = predict(run.dir, [str(folder)], topk=2, out=tmp_path / "r.csv", device="cpu", reject=True)
    assert rejected.columns == ["file", "top1", "prob1", "top2", "prob2", "answer", "score", "status"]
    rows = list(rejected.rows())
    ok = [r for r in rows if r["status"] == OK]
    assert len(ok) == N and all(r["score"] == r["prob1"] for r in ok)  # maxprob: the calibrated top probability
    assert all(r["answer"] == (r["top1"] if r["score"] >= round(threshold, 6) - 1e-6 else "unknown") for r in ok)
    assert [r["top1"] for r in ok] == [r["top1"] for r in csv_rows if r["status"] == OK]
    assert all(r["answer"] is None and r["score"] is None for r in rows if r["status"] != OK)


def test_the_output_takes_its_name_only_when_complete(run, folder, tmp_path, monkeypatch):
    out = tmp_path / "p.csv"
    out.write_text("an earlier output\n")
    seen, answers = [], predict_module._answers

    def second_batch_fails(predictor, images, rule):
        seen.append(sorted(f.name for f in tmp_path.iterdir()))  # what a reader of the folder sees meanwhile
        if len(seen) == 2:
            raise RuntimeError("killed in the second batch")
        return answers(predictor, images, rule)

    monkeypatch.setattr(predict_module, "_answers", second_batch_fails)
    with pytest.raises(RuntimeError, match="killed"):
        predict(run.dir, [str(folder)], out=out, device="cpu")
    assert len(seen[1]) == 2 and seen[1][1] == "p.csv" and seen[1][0].startswith(".p.")  # rows go to a temp name
    assert out.read_text() == "an earlier output\n" and [f.name for f in tmp_path.iterdir()] == ["p.csv"]
    monkeypatch.setattr(predict_module, "_answers", answers)
    assert predict(run.dir, [str(folder)], out=out, device="cpu").rows_written == N + len(BAD) > BATCH
    assert [f.name for f in tmp_path.iterdir()] == ["p.csv"] and len(_csv(out)) == N + len(BAD)


def test_only_input_with_no_decodable_file_raises_in_one_line(run, folder, tmp_path):
    with pytest.raises(CnnfitError, match="none of the given files could be decoded as an image") as err:
        predict(run.dir, [str(folder / name) for name in sorted(BAD)], out=tmp_path / "p.csv", device="cpu")
    assert "\n" not in str(err.value) and "d0000_empty.jpg: empty file" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file
    one = predict(run.dir, [str(folder / name) for name in [*sorted(BAD), "d0007.png"]], out=tmp_path / "p.csv",
                  device="cpu")
    assert (one.rows_written, one.skipped) == (4, 3) and [r["status"] for r in one.head] == [*BAD.values(), OK]
