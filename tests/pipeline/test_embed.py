"""Embeddings of image files from a run directory: an .npy that reloads without pickle, a CSV row per vector that
agrees with predict, undecodable files skipped and named, an exported .onnx refused in one line."""

import csv
import json
import logging

import numpy as np
import pytest
from PIL import Image

import cnnfit
from cnnfit.data import load_imageset, resolve
from cnnfit.engine import load_checkpoint
from cnnfit.errors import CnnfitError
from cnnfit.pipeline.embed import embed, embed_images
from cnnfit.pipeline.predict import predict
from cnnfit.predictor import load_predictor, pixels_module


@pytest.fixture(scope="module")
def run_and_pngs(tmp_path_factory):
    """A 1-epoch digits run and a folder of 6 of its test images as PNG files, plus one file that is not an image."""
    run = cnnfit.train(data="digits", epochs=1, seed=0, project=str(tmp_path_factory.mktemp("runs")),
                       **{"eval.report": False})
    ds = load_imageset(resolve("digits"), None, None, "squash", None, True)[0]
    folder = tmp_path_factory.mktemp("pngs")
    for i in json.loads((run.dir / "split.json").read_text())["test"][:6]:
        Image.fromarray(ds.images[i][0]).save(folder / f"{i:04d}.png")  # (H, W) grayscale
    (folder / "broken.png").write_bytes(b"not a png at all")
    return run.dir, folder


def test_embed_writes_vectors_that_reload_and_a_csv_that_agrees_with_predict(run_and_pngs, caplog, tmp_path):
    run_dir, pngs = run_and_pngs
    with caplog.at_level(logging.INFO, logger="cnnfit.pipeline.embed"):
        out = embed(run_dir, [str(pngs)], device="cpu")
    assert out == run_dir / "embeddings"
    vectors = np.load(out / "embeddings.npy", allow_pickle=False)
    ckpt = load_checkpoint(run_dir / "best.pt")
    module = pixels_module(ckpt)
    assert vectors.dtype == np.float32 and vectors.shape == (6, module.model.head.in_features)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert "broken.png" in caplog.text and "6 embeddings" in caplog.text
    with open(out / "embeddings.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    good = sorted(p for p in pngs.iterdir() if p.name != "broken.png")
    assert [r["index"] for r in rows] == [str(i) for i in range(6)]
    assert [r["file"] for r in rows] == list(map(str, good))
    # row i of the .npy is the file on row i: recomputed from the decoded file, and top1 is what predict says
    p = load_predictor(run_dir)
    assert np.allclose(embed_images(module, np.stack([p.decode(f) for f in good])), vectors, atol=1e-6)
    preds = list(predict(run_dir, [str(f) for f in good], topk=1, out=tmp_path / "p.csv", device="cpu").rows())
    assert [(r["top1"], float(r["prob1"])) for r in rows] == [(q["top1"], q["prob1"]) for q in preds]
    assert embed(run_dir, [str(good[0])], device="cpu") == run_dir / "embeddings2"  # a second call keeps the first


def test_an_exported_model_and_undecodable_input_are_refused_in_one_line(run_and_pngs, tmp_path):
    run_dir, pngs = run_and_pngs
    with pytest.raises(CnnfitError, match="embeddings need the run directory") as err:
        embed(run_dir / "model.onnx", [str(pngs)])
    assert "\n" not in str(err.value)
    with pytest.raises(CnnfitError, match="none of the given files could be decoded"):
        embed(run_dir, [str(pngs / "broken.png")], out=tmp_path / "e")
    assert not (tmp_path / "e").exists()
    with pytest.raises(CnnfitError, match="uint8 images"):
        embed_images(pixels_module(load_checkpoint(run_dir / "best.pt")), np.zeros((1, 1, 8, 8), np.float32))
