"""Predictions for image files from a run directory or an exported .onnx, decoded exactly as training decoded
them, through the one inference path (`cnnfit.predictor`)."""

from __future__ import annotations

import csv
import glob
import json
import logging
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from cnnfit.data import DecodeError, is_image_name, map_images
from cnnfit.errors import CnnfitError
from cnnfit.files import atomic_path, free_name
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


OK = "ok"  # a decoded image's status; any other status is the reason its file could not be decoded
HEAD = 5  # rows `Predictions.head` keeps: a glance at the output, not the output


@dataclass(frozen=True)
class Predictions:
    """What `predict` wrote: `path` holds one row per input file, in input order, under `columns`; `skipped` of the
    `rows_written` are files that could not be decoded (their status is the reason); `head` is the first HEAD rows.
    `rows()` reads the file back a row at a time, so no caller needs all of them in memory."""

    path: Path
    format: str  # csv or json
    columns: list[str]
    rows_written: int  # one per input file, decoded or not
    skipped: int
    head: list[dict[str, Any]]

    def rows(self) -> Iterator[dict[str, Any]]:
        """The rows as predict made them, csv or json alike: numbers as floats, a bad file's empty cells as None."""
        if self.format == "json":
            yield from json.loads(self.path.read_text(encoding="utf-8"))
            return
        with open(self.path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if row["status"] != OK:  # a bad file: its name and reason, every other cell None
                    yield {**dict.fromkeys(row), "file": row["file"], "status": row["status"]}
                else:
                    yield {c: float(v) if _is_number(c) else v for c, v in row.items()}


def _is_number(column: str) -> bool:
    """Whether predict writes numbers in `column`: prob1, prob_<label>, score, value."""
    return column.startswith("prob") or column in ("score", "value")


class _Table:
    """predict's columns by the run's task, fixed before the first row, and the rows of one batch from its (n, K)
    outputs and (n,) reject scores."""

    def __init__(self, predictor: Predictor, rule: dict[str, Any] | None, topk: int, home: Path,
                 explain: bool) -> None:
        self.classes, self.task, self.rule = predictor.classes, predictor.task, rule
        if self.task == "multilabel":  # each label on its own, at the thresholds evaluate fitted on val
            saved = home / "thresholds.json"
            fitted = json.loads(saved.read_text()) if saved.is_file() else {}
            self.cut = np.array([fitted.get(c, 0.5) for c in self.classes])
            own = ["labels", *(f"prob_{c}" for c in self.classes)]
        elif self.task == "regress":
            own = ["value"]
        else:
            self.k = min(topk, len(self.classes))
            own = [x for j in range(self.k) for x in (f"top{j + 1}", f"prob{j + 1}")]
            own += ["answer", "score"] if rule else []
        # status last: every other column keeps the place it had before bad files became rows
        self.columns = ["file", *own, *(["explain"] if explain else []), "status"]

    def rows(self, files: list[Path], probs: np.ndarray, score: np.ndarray) -> list[dict[str, Any]]:
        """One row per decoded file, without its `explain` and `status` cells."""
        classes = self.classes
        if self.task == "multilabel":
            return [{"file": str(f), "labels": sets, **{f"prob_{c}": round(float(q), 6) for c, q in zip(classes, p)}}
                    for f, sets, p in zip(files, label_sets(probs >= self.cut, classes), probs)]
        if self.task == "regress":
            return [{"file": str(f), "value": float(v)} for f, v in zip(files, probs[:, 0].tolist())]
        ids = np.argsort(-probs, axis=1, kind="stable")[:, :self.k]  # (n, k), most probable first
        top = np.take_along_axis(probs, ids, axis=1)  # (n, k)
        rows = [{"file": str(f), **{f"top{j + 1}": classes[ids[i, j]] for j in range(self.k)},
                 **{f"prob{j + 1}": round(float(top[i, j]), 6) for j in range(self.k)}} for i, f in enumerate(files)]
        if self.rule:  # the best guess stays in top1; `answer` is what a caller should act on
            known = answered(score, self.rule["threshold"])
            rows = [{**r, "answer": r["top1"] if ok else "unknown", "score": round(float(v), 6)}
                    for r, ok, v in zip(rows, known, score)]
        return rows

    def bad(self, file: Path, why: str) -> dict[str, Any]:
        """The row of a file that could not be decoded: its name and reason, every other cell empty."""
        return {**dict.fromkeys(self.columns), "file": str(file), "status": why}


class _Sink:
    """Rows to an open text file as they come: csv rows under the header, or the items of one json list, laid out
    as json.dumps(rows, indent=2) would lay them out."""

    def __init__(self, fh: TextIO, format: str, columns: list[str]) -> None:
        self.fh, self.format, self.columns, self.count = fh, format, columns, 0
        self.csv = csv.writer(fh, lineterminator="\r\n")  # write_csv's line end, as RFC 4180 has it
        if format == "csv":
            self.csv.writerow(columns)
        else:
            fh.write("[")

    def write(self, rows: list[dict[str, Any]]) -> None:
        if self.format == "csv":
            self.csv.writerows([[r[c] for c in self.columns] for r in rows])  # None: an empty cell
        else:
            for i, r in enumerate(rows, self.count):
                self.fh.write(("\n" if i == 0 else ",\n") + textwrap.indent(json.dumps(r, indent=2), "  "))
        self.count += len(rows)

    def close(self) -> None:
        if self.format == "json":
            self.fh.write("\n]")


def predict(run: str | Path, paths: list[str], *, topk: int = 5, out: str | Path | None = None,
            device: str = "auto", tta: str | None = None, format: str = "csv",
            trust_code: bool = False, explain: bool = False, reject: bool = False,
            reject_precision: float | None = None, reject_coverage: float | None = None,
            reject_score: str = "maxprob") -> Predictions:
    """Predictions for image files, decoded exactly as training decoded them, from a run directory or an exported
    .onnx (both through `load_predictor`), one row per file in input order. csv is the streaming format: the rows of
    each BATCH files are written as they are computed, so memory stays flat however many files; json is one list
    (written the same way, but a reader loads it whole). Either is written to a temporary name beside `out` and
    renamed into place when complete (`atomic_path`): a crash leaves no half file under that name.
    Columns by the run's task: top-k classes (file, top1, prob1, ...), label sets at the fitted thresholds (file,
    labels 'a;b', prob_<label> ...) or the target in its own units (file, value); then `status`, last: "ok", or the
    reason a file could not be decoded (its other cells empty; it is logged too). Only when no file decodes does
    predict raise. Probabilities use the run's calibration temperature when eval fitted one; `tta` defaults to
    the run's eval.tta (an .onnx graph has none). `trust_code`: import the pkg.mod:Class model a best.pt names
    (it runs that module's code). `explain`: a Grad-CAM overlay of the top-1 class (the label or output, for other
    tasks) per image, <out folder>/explain/<file stem>.png, named in an `explain` column; torch only.
    `reject` (or a `reject_precision`, `reject_coverage` or `reject_score` of its own): an `answer` column, the
    top-1 class or "unknown" under the threshold fitted on val (see `reject_rule`), and the `score` it compared.
    Returns a `Predictions`: the file, its columns, the counts and the first rows (`.rows()` reads all back)."""
    if format not in ("csv", "json"):
        raise CnnfitError(f"format={format!r} is not an output format; choose from: csv, json")
    if explain and (str(run).startswith(IMAGENET) or Path(run).suffix.lower() == ".onnx"):
        raise CnnfitError(f"explanations need the run directory (best.pt): pass runs/NAME, not {run}")
    predictor = load_predictor(run, device=device, tta=tta, trust_code=trust_code)
    rule = reject_rule(predictor, reject=reject, precision=reject_precision, coverage=reject_coverage,
                       score=reject_score)
    files = _expand(paths)  # the one list that grows with the input: ~350 bytes a Path, 7 MB for 20,000 files
    if not files:
        raise CnnfitError("no image files found in the given paths")
    if predictor.source.startswith(IMAGENET):  # no run directory: the output goes to the working directory
        home = Path.cwd()
    else:
        home = Path(predictor.source) if predictor.backend == "torch" else Path(predictor.source).parent
    out_path = Path(out) if out else free_name(home / f"predict.{format}")
    table = _Table(predictor, rule, topk, home, explain)
    explainer = _Explainer(Path(run), out_path.parent / "explain", device, trust_code) if explain else None
    head: list[dict[str, Any]] = []
    skipped = unknown = 0
    first_bad = ""
    with atomic_path(out_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        sink = _Sink(fh, format, table.columns)
        for i in range(0, len(files), BATCH):  # decode, infer and write BATCH files at a time: memory stays flat
            rows = _batch(predictor, files[i:i + BATCH], rule, table, explainer)
            sink.write(rows)
            head += rows[:HEAD - len(head)]
            bad = [r for r in rows if r["status"] != OK]
            if bad and not skipped:
                first_bad = f"{bad[0]['file']}: {bad[0]['status']}"
            skipped += len(bad)
            unknown += sum(r.get("answer") == "unknown" for r in rows if r["status"] == OK)
        if skipped == len(files):  # raised inside the block: the temporary file goes, nothing takes the name
            raise CnnfitError(f"none of the given files could be decoded as an image ({len(files)} files; the first: "
                              f"{first_bad}); pass image files (PNG, JPEG, ...) that open in an image viewer")
        sink.close()
    if rule:
        log.info(f"{unknown} of {len(files) - skipped} images answered \"unknown\"")
    log.info(f"{len(files) - skipped} predictions -> {out_path}"
             + (f" ({skipped} skipped: their rows give the reason)" if skipped else ""))
    return Predictions(out_path, format, table.columns, sink.count, skipped, head)


def _batch(predictor: Predictor, part: list[Path], rule: dict[str, Any] | None, table: _Table,
           explainer: _Explainer | None) -> list[dict[str, Any]]:
    """The rows of `part`, in its order: decoded files with their predictions, the others with their reason."""
    arrays = map_images(predictor.decode, part)
    good = [i for i, a in enumerate(arrays) if not isinstance(a, DecodeError)]
    rows: dict[int, dict[str, Any]] = {}
    if good:
        images = np.stack([arrays[i] for i in good])  # (n, C, H, W) uint8
        probs, score = _answers(predictor, images, rule)  # (n, K), (n,)
        kept = [part[i] for i in good]
        made = table.rows(kept, probs, score)
        pngs = explainer.write(kept, images, probs.argmax(1)) if explainer else [None] * len(kept)
        for i, r, png in zip(good, made, pngs):
            rows[i] = {**r, "explain": png, "status": OK}  # no explain column: the cell is left out below
    for i, (f, a) in enumerate(zip(part, arrays)):
        if isinstance(a, DecodeError):
            why = " ".join(str(a).split())  # one line per cell, whatever the decoder said
            log.info(f"skipped {f}: {why}")
            rows[i] = table.bad(f, why)
    return [{c: rows[i][c] for c in table.columns} for i in range(len(part))]  # the columns' order, json too


class _Explainer:
    """Grad-CAM overlays for predict, a batch at a time: the run's `Pixels` module without TTA (Grad-CAM reads
    one view), loaded beside the predictor's."""

    def __init__(self, run_dir: Path, folder: Path, device: str, trust_code: bool) -> None:
        from cnnfit.device import pick_device
        from cnnfit.engine import load_checkpoint

        ckpt = load_checkpoint(run_dir / "best.pt")
        if ckpt["model"] in UNLOCALISED:
            log.warning(f"{ckpt['model']}'s heatmaps do not show where it looked (its global max pooling spreads "
                        "them); train simplecnn, a resnet or efficientnet_lite0 for explanations that do")
        self.module = pixels_module(ckpt, pick_device(device), trust_code=trust_code, source=str(run_dir / "best.pt"))
        self.folder, self.taken = folder, set()  # stems written so far: one short string per image
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, files: list[Path], images: np.ndarray, top1: np.ndarray) -> list[str]:
        """One PNG per image, the heatmap of its `top1` class (N,), and their paths; a stem seen before gets -2,
        -3 ..."""
        heat = gradcam(self.module, images, target=top1)  # (n, H, W) in [0, 1]
        written = []
        for f, image, h in zip(files, images, heat):
            name, i = f.stem, 2
            while name in self.taken:
                name, i = f"{f.stem}-{i}", i + 1
            self.taken.add(name)
            written.append(str(save_overlay(self.folder / f"{name}.png", image, h)))
        return written


__all__ = ["OK", "Predictions", "label_sets", "predict", "reject_rule"]
