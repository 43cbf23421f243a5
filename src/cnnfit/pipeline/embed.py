"""Embeddings of image files from a run directory: each file decoded exactly as training decoded it, through the
run's model as `predictor.Pixels`, to the vector its classifier reads (`cnnfit.eval.embed.features`).

    folder = embed("runs/train3", ["photos/"])  # runs/train3/embeddings/: embeddings.npy (N, D), embeddings.csv
    f = np.load(folder / "embeddings.npy")       # row i is the file on the CSV's row with index i"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnfit.data import DecodeError, decode_image, map_images
from cnnfit.device import pick_device
from cnnfit.engine import load_checkpoint
from cnnfit.errors import CnnfitError
from cnnfit.eval.embed import features
from cnnfit.files import free_name, write_atomic, write_csv
from cnnfit.pipeline import rundir
from cnnfit.pipeline.predict import _expand
from cnnfit.predictor import BATCH, Pixels, pixels_module

log = logging.getLogger(__name__)


def embed_images(model: nn.Module | Any, images: np.ndarray, *, normalize: bool = True) -> np.ndarray:
    """(N, C, H, W) uint8 -> (N, D) float32 embeddings, L2-normalised unless `normalize=False`: what the server
    calls. `model`: a `predictor.Pixels` module, or a torch Predictor that carries one as `.module`."""
    module = getattr(model, "module", model)
    if not isinstance(module, nn.Module):
        raise CnnfitError("embeddings need the run's torch model (an exported .onnx has no features layer); "
                          "load the run directory")
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or not len(images):
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise CnnfitError(f"embeddings take (N, C, H, W) uint8 images with N >= 1, got {got}")
    return features(module, images, batch=BATCH, normalize=normalize)


def embed(run: str | Path, paths: list[str], *, out: str | Path | None = None, device: str = "auto",
          normalize: bool = True, trust_code: bool = False) -> Path:
    """Embeddings for image files from a run directory, decoded exactly as training decoded them: writes
    embeddings.npy, (N, D) float32 (L2-normalised unless `normalize=False`, so dot products are cosines), and
    embeddings.csv (index, file, and the model's answer: top1, prob1 for classify and multilabel, value for
    regress; probabilities at the run's calibration temperature) into `out`, by default a new `embeddings` folder
    in the run directory. Files that cannot be decoded are logged and skipped. Returns the folder. `trust_code`:
    import the pkg.mod:Class model a best.pt names (it runs that module's code)."""
    if Path(run).suffix.lower() == ".onnx":
        raise CnnfitError(f"'{run}' is an exported model; embeddings need the run directory (e.g. runs/train): "
                          "an .onnx graph ends in probabilities, without the features layer")
    run_dir = rundir.finished(run)
    ckpt = load_checkpoint(run_dir / "best.pt")
    dev = pick_device(device)
    # no TTA: an embedding is of the image as it is (the run's eval.tta averages answers, not features)
    module = pixels_module(ckpt, dev, trust_code=trust_code, source=str(run_dir / "best.pt"))
    files = _expand(paths)
    if not files:
        raise CnnfitError("no image files found in the given paths")
    size, channels, resize = int(ckpt["imgsz"]), int(ckpt["channels"]), ckpt["resize"]
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    feats: list[np.ndarray] = []
    answers: list[np.ndarray] = []
    for i in range(0, len(files), BATCH):  # decode and embed BATCH files at a time: memory stays flat
        part = files[i:i + BATCH]
        arrays = map_images(lambda src: decode_image(src, size, channels, resize), part)
        good = [(f, a) for f, a in zip(part, arrays) if not isinstance(a, DecodeError)]
        skipped += [(f, str(a)) for f, a in zip(part, arrays) if isinstance(a, DecodeError)]
        if good:
            kept += [f for f, _ in good]
            x = np.stack([a for _, a in good])  # (n, C, H, W) uint8
            feats.append(embed_images(module, x, normalize=normalize))  # (n, D)
            answers.append(_answer(module, x, dev))  # (n, K)
    for f, why in skipped:
        log.info(f"skipped {f}: {why}")
    if not kept:
        raise CnnfitError("none of the given files could be decoded as an image")
    folder = Path(out) if out else free_name(run_dir / "embeddings")
    folder.mkdir(parents=True, exist_ok=True)
    vectors = np.concatenate(feats)  # (N, D)
    buf = io.BytesIO()
    np.save(buf, vectors, allow_pickle=False)
    write_atomic(folder / "embeddings.npy", buf.getvalue())
    fields, rows = _rows(kept, np.concatenate(answers), module.task, list(ckpt["classes"]))
    write_csv(folder / "embeddings.csv", fields, rows)
    log.info(f"{len(kept)} embeddings of {vectors.shape[1]} dims -> {folder}"
             + (f" ({len(skipped)} skipped)" if skipped else ""))
    return folder


def _answer(module: Pixels, x: np.ndarray, dev: torch.device) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(x).to(dev)).cpu().numpy()  # (n, K) probabilities, or (n, 1) values


def _rows(files: list[Path], outputs: np.ndarray, task: str, classes: list[str]) -> tuple[list[str], list[list]]:
    """The CSV's header and rows: a row per embedding, in the .npy's order."""
    if task == "regress":
        return ["index", "file", "value"], [[i, str(f), float(v)] for i, (f, v) in enumerate(zip(files, outputs[:, 0]))]
    top = outputs.argmax(1)  # (N,) the most probable class, or label for multilabel
    return ["index", "file", "top1", "prob1"], [[i, str(f), classes[k], round(float(outputs[i, k]), 6)]
                                               for i, (f, k) in enumerate(zip(files, top))]


__all__ = ["embed", "embed_images"]
