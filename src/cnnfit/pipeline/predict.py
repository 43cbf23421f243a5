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
from cnnfit.eval.explain import UNLOCALISED, gradcam, save_overlay
from cnnfit.eval.reject import SCORES, answered, fit_reject, scores
from cnnfit.predictor import BATCH, IMAGENET, Predictor, load_predictor, pixels_module

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


def reject_rule(predictor: Predictor, *, reject: bool = False, precision: float | None = None,
                coverage: float | None = None, score: str = "maxprob") -> dict[str, Any] | None:
    """When predict and serve answer "unknown": the threshold evaluate fitted on val (best.pt's "reject", or an
    export's metadata), or one fitted here for another target or score from the val scores best.pt keeps.
    None when nothing asks for it."""
    if not (reject or precision is not None or coverage is not None or score != "maxprob"):
        return None
    src = predictor.source
    if predictor.task != "classify":
        raise CnnfitError(f"reject answers \"unknown\" for classifiers; {src} is a {predictor.task} run")
    saved = predictor.info.get("reject")
    if not saved:
        raise CnnfitError(f"{src} has no reject threshold: evaluate fits one on the val split; run cnnfit eval "
                          "RUN (a run without a val split cannot have one)")
    if score == "energy" and (predictor.module is None or predictor.info.get("tta") not in (None, "none")):
        raise CnnfitError("reject.score=energy reads the logits: it needs the run directory and tta=none")
    if precision is None and coverage is None and score == saved["score"]:
        return saved
    if "val" not in saved:
        raise CnnfitError(f"{src} carries the threshold for precision {saved['precision_target']} only; another "
                          "target or score needs the run directory (its best.pt keeps the val scores)")
    if precision is None and coverage is None:
        precision = saved["precision_target"]
    if score not in SCORES:
        raise CnnfitError(f"reject.score={score!r} is not a score; choose from: {', '.join(SCORES)}")
    val = saved["val"]
    rule = {"score": score, "temperature": saved["temperature"],
            **fit_reject(np.asarray(val[score]), np.asarray(val["correct"]), precision=precision, coverage=coverage)}
    log.info(f"unknown below {score} {rule['threshold']:.4g}: on val, precision {rule['val_precision'] or 0:.3f} "
             f"at coverage {rule['val_coverage']:.3f} ({rule['val_images']} images)")
    return rule


def _answers(predictor: Predictor, images: np.ndarray, rule: dict[str, Any] | None) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) probabilities and (N,) reject scores (NaN without a rule); energy from the logits, one pass."""
    if rule is None or rule["score"] == "maxprob":
        probs = predictor.predict(images)
        return probs, probs.max(1) if rule else np.full(len(probs), np.nan)
    z = predictor.logits(images)  # (N, K)
    t = predictor.info["temperature"]
    probs = np.exp(z / t - z.max(1, keepdims=True) / t)
    return (probs / probs.sum(1, keepdims=True)).astype(np.float32), scores(z, t, "energy")


def _rows(predictor: Predictor, kept: list[Path], probs: np.ndarray, score: np.ndarray, rule: dict[str, Any] | None,
          topk: int, home: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """predict's rows and columns by the run's task, from (N, K) outputs and (N,) reject scores."""
    classes, task = predictor.classes, predictor.task
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
        if rule:  # the best guess stays in top1; `answer` is what a caller should act on
            known = answered(score, rule["threshold"])
            rows = [{**r, "answer": r["top1"] if ok else "unknown", "score": round(float(v), 6)}
                    for r, ok, v in zip(rows, known, score)]
            fields += ["answer", "score"]
            log.info(f"{int((~known).sum())} of {len(rows)} images answered \"unknown\"")
    return rows, fields


def predict(run: str | Path, paths: list[str], *, topk: int = 5, out: str | Path | None = None,
            device: str = "auto", tta: str | None = None, format: str = "csv",
            trust_code: bool = False, explain: bool = False, reject: bool = False,
            reject_precision: float | None = None, reject_coverage: float | None = None,
            reject_score: str = "maxprob") -> list[dict[str, Any]]:
    """Predictions for image files, decoded exactly as training decoded them, from a run directory or an exported
    .onnx (both through `load_predictor`); writes a CSV, or with format=json a list of objects. By the run's task:
    top-k classes (file, top1, prob1, ...), label sets at the fitted thresholds (file, labels 'a;b',
    prob_<label> ...) or the target in its own units (file, value). Probabilities use the run's calibration
    temperature when eval fitted one; `tta` defaults to the run's eval.tta (an .onnx graph has none).
    Files that cannot be decoded are listed and skipped. `trust_code`: import the pkg.mod:Class model a best.pt
    names (it runs that module's code). `explain`: a Grad-CAM overlay of the top-1 class (the label or output,
    for other tasks) per image, <out folder>/explain/<file stem>.png, named in an `explain` column; torch only.
    `reject` (or a `reject_precision`, `reject_coverage` or `reject_score` of its own): an `answer` column, the
    top-1 class or "unknown" under the threshold fitted on val (see `reject_rule`), and the `score` it compared."""
    if format not in ("csv", "json"):
        raise CnnfitError(f"format={format!r} is not an output format; choose from: csv, json")
    if explain and (str(run).startswith(IMAGENET) or Path(run).suffix.lower() == ".onnx"):
        raise CnnfitError(f"explanations need the run directory (best.pt): pass runs/NAME, not {run}")
    predictor = load_predictor(run, device=device, tta=tta, trust_code=trust_code)
    rule = reject_rule(predictor, reject=reject, precision=reject_precision, coverage=reject_coverage,
                       score=reject_score)
    files = _expand(paths)
    if not files:
        raise CnnfitError("no image files found in the given paths")
    if predictor.source.startswith(IMAGENET):  # no run directory: the output goes to the working directory
        home = Path.cwd()
    else:
        home = Path(predictor.source) if predictor.backend == "torch" else Path(predictor.source).parent
    out_path = Path(out) if out else free_name(home / f"predict.{format}")
    explainer = _Explainer(Path(run), out_path.parent / "explain", device, trust_code) if explain else None
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    chunks: list[np.ndarray] = []
    rated: list[np.ndarray] = []  # (n,) reject scores per chunk
    for i in range(0, len(files), BATCH):  # decode and infer BATCH files at a time: memory stays flat
        part = files[i:i + BATCH]
        arrays = map_images(predictor.decode, part)
        good = [(f, a) for f, a in zip(part, arrays) if not isinstance(a, DecodeError)]
        skipped += [(f, str(a)) for f, a in zip(part, arrays) if isinstance(a, DecodeError)]
        if good:
            kept += [f for f, _ in good]
            images = np.stack([a for _, a in good])  # (n, C, H, W) uint8
            probs, score = _answers(predictor, images, rule)  # (n, K), (n,)
            chunks.append(probs), rated.append(score)
            if explainer:
                explainer.write([f for f, _ in good], images, chunks[-1].argmax(1))
    for f, why in skipped:
        log.info(f"skipped {f}: {why}")
    if not kept:
        raise CnnfitError("none of the given files could be decoded as an image")
    probs, score = np.concatenate(chunks), np.concatenate(rated)  # (N, K), (N,)
    rows, fields = _rows(predictor, kept, probs, score, rule, topk, home)
    if explainer:
        rows = [{**r, "explain": str(png)} for r, png in zip(rows, explainer.written)]
        fields.append("explain")
    if format == "json":
        write_atomic(out_path, json.dumps(rows, indent=2))
    else:
        write_csv(out_path, fields, [[r[f] for f in fields] for r in rows])
    log.info(f"{len(rows)} predictions -> {out_path}" + (f" ({len(skipped)} skipped)" if skipped else ""))
    return rows


class _Explainer:
    """Grad-CAM overlays for predict, a batch at a time: the run's `Pixels` module without TTA (Grad-CAM reads
    one view), loaded beside the predictor's, and the PNG paths written so far, in order."""

    def __init__(self, run_dir: Path, folder: Path, device: str, trust_code: bool) -> None:
        from cnnfit.device import pick_device
        from cnnfit.engine import load_checkpoint

        ckpt = load_checkpoint(run_dir / "best.pt")
        if ckpt["model"] in UNLOCALISED:
            log.warning(f"{ckpt['model']}'s heatmaps do not show where it looked (its global max pooling spreads "
                        "them); train simplecnn, a resnet or efficientnet_lite0 for explanations that do")
        self.module = pixels_module(ckpt, pick_device(device), trust_code=trust_code, source=str(run_dir / "best.pt"))
        self.folder, self.written, self.taken = folder, [], set()
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, files: list[Path], images: np.ndarray, top1: np.ndarray) -> None:
        """One PNG per image, the heatmap of its `top1` class (N,); a stem seen before gets -2, -3 ..."""
        heat = gradcam(self.module, images, target=top1)  # (n, H, W) in [0, 1]
        for f, image, h in zip(files, images, heat):
            name, i = f.stem, 2
            while name in self.taken:
                name, i = f"{f.stem}-{i}", i + 1
            self.taken.add(name)
            self.written.append(save_overlay(self.folder / f"{name}.png", image, h))


__all__ = ["label_sets", "predict", "reject_rule"]
