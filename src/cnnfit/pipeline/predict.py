"""Predictions for image files from a run directory or an exported .onnx, decoded exactly as training decoded
them, through the one inference path (`cnnfit.predictor`)."""

from __future__ import annotations

import glob
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from cnnfit.data import DecodeError, is_image_name, map_images
from cnnfit.errors import CnnfitError
from cnnfit.files import free_name, write_atomic, write_csv
from cnnfit.predictor import BATCH, IMAGENET, load_predictor

log = logging.getLogger(__name__)


def label_sets(hits: np.ndarray, names: list[str]) -> list[str]:
    """(N, L) bool -> 'a;b' per row, the manifest's own syntax ('' for none)."""
    return [";".join(names[k] for k in np.flatnonzero(row)) for row in hits]


def _expand(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for p in paths:
        hits = [Path(h) for h in sorted(glob.glob(p, recursive=True))] or [Path(p)]
        for hit in hits:
            if hit.is_dir():
                found += sorted(f for f in hit.rglob("*") if f.is_file() and is_image_name(f.name)
                                and not any(part.startswith(".") for part in f.relative_to(hit).parts))
            elif hit.is_file():
                found.append(hit)
            else:
                raise CnnfitError(f"'{p}' matches no file or folder; pass image files, folders or globs")
    return found


def predict(run: str | Path, paths: list[str], *, topk: int = 5, out: str | Path | None = None,
            device: str = "auto", tta: str | None = None, format: str = "csv",
            trust_code: bool = False) -> list[dict[str, Any]]:
    """Predictions for image files, decoded exactly as training decoded them, from a run directory or an exported
    .onnx (both through `load_predictor`); writes a CSV, or with format=json a list of objects. By the run's task:
    top-k classes (file, top1, prob1, ...), label sets at the fitted thresholds (file, labels 'a;b',
    prob_<label> ...) or the target in its own units (file, value). Probabilities use the run's calibration
    temperature when eval fitted one; `tta` defaults to the run's eval.tta (an .onnx graph has none).
    Files that cannot be decoded are listed and skipped. `trust_code`: import the pkg.mod:Class model a best.pt
    names (it runs that module's code)."""
    if format not in ("csv", "json"):
        raise CnnfitError(f"format={format!r} is not an output format; choose from: csv, json")
    predictor = load_predictor(run, device=device, tta=tta, trust_code=trust_code)
    classes, task = predictor.classes, predictor.task
    files = _expand(paths)
    if not files:
        raise CnnfitError("no image files found in the given paths")
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    chunks: list[np.ndarray] = []
    for i in range(0, len(files), BATCH):  # decode and infer BATCH files at a time: memory stays flat
        part = files[i:i + BATCH]
        arrays = map_images(predictor.decode, part)
        good = [(f, a) for f, a in zip(part, arrays) if not isinstance(a, DecodeError)]
        skipped += [(f, str(a)) for f, a in zip(part, arrays) if isinstance(a, DecodeError)]
        if good:
            kept += [f for f, _ in good]
            chunks.append(predictor.predict(np.stack([a for _, a in good])))  # (n, K)
    for f, why in skipped:
        log.info(f"skipped {f}: {why}")
    if not kept:
        raise CnnfitError("none of the given files could be decoded as an image")
    probs = np.concatenate(chunks)  # (N, K)
    if predictor.source.startswith(IMAGENET):  # no run directory: the output goes to the working directory
        home = Path.cwd()
    else:
        home = Path(predictor.source) if predictor.backend == "torch" else Path(predictor.source).parent
    if task == "multilabel":  # each label on its own, at the thresholds evaluate fitted on val
        saved = home / "thresholds.json"
        fitted = json.loads(saved.read_text()) if saved.is_file() else {}
        cut = np.array([fitted.get(c, 0.5) for c in classes])
        rows = [{"file": str(f), "labels": sets, **{f"prob_{c}": round(float(q), 6) for c, q in zip(classes, p)}}
                for f, sets, p in zip(kept, label_sets(probs >= cut, classes), probs)]
        fields = ["file", "labels", *(f"prob_{c}" for c in classes)]
    elif task == "regress":
        rows = [{"file": str(f), "value": float(v)} for f, v in zip(kept, probs[:, 0].tolist())]
        fields = ["file", "value"]
    else:
        k = min(topk, len(classes))
        ids = np.argsort(-probs, axis=1, kind="stable")[:, :k]  # (N, k), most probable first
        top = np.take_along_axis(probs, ids, axis=1)
        rows = [{"file": str(f), **{f"top{j + 1}": classes[ids[i, j]] for j in range(k)},
                 **{f"prob{j + 1}": round(float(top[i, j]), 6) for j in range(k)}} for i, f in enumerate(kept)]
        fields = ["file"] + [x for j in range(k) for x in (f"top{j + 1}", f"prob{j + 1}")]
    out_path = Path(out) if out else free_name(home / f"predict.{format}")
    if format == "json":
        write_atomic(out_path, json.dumps(rows, indent=2))
    else:
        write_csv(out_path, fields, [[r[f] for f in fields] for r in rows])
    log.info(f"{len(rows)} predictions -> {out_path}" + (f" ({len(skipped)} skipped)" if skipped else ""))
    return rows


__all__ = ["label_sets", "predict"]
