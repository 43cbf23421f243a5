"""`cnnfit inspect`: the data report without training; with labels=..., the images whose one label is likely
wrong, found by confident learning (cleanlab) on out-of-fold probabilities, and a page to review them.

    cnnfit inspect data=photos labels=true          # a 5-fold cv first, then the search
    cnnfit inspect data=photos labels=runs/cv       # the out-of-fold probabilities of a cv run already made

Writes label_issues.csv and label_review.html beside the data report; the page's export is a manifest that
`data=` trains on. Nothing is moved or deleted."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cnnfit.config import Config
from cnnfit.data import SPLITS
from cnnfit.data.label_issues import find_label_issues, overlapping_classes, read_oof, write_label_issues
from cnnfit.errors import CnnfitError
from cnnfit.files import new_run_dir
from cnnfit.pipeline.prepare import Prepared, build_augment, look_at, prepare, write_data_report, write_samples
from cnnfit.pipeline.resolve import by_data
from cnnfit.pipeline.rundir import write_json
from cnnfit.report.label_review import write_label_review

log = logging.getLogger(__name__)


def _oof_file(cfg: Config, out: Path) -> Path:
    """The oof.csv data.labels names, or the one a 5-fold cv made for it now."""
    given = cfg.data.labels
    if given is True or str(given).lower() == "true":
        from cnnfit.pipeline.cv import cv

        log.info("label search: a 5-fold cross-validation first, for every train+val image's out-of-fold "
                 "probabilities (give labels=RUN to reuse one)")
        return cv(cfg.model_copy(update={"project": str(out), "name": "cv"})).dir / "oof.csv"
    path = Path(str(given)).expanduser()
    path = path / "oof.csv" if path.is_dir() else path
    if not path.is_file():
        raise CnnfitError(f"labels={given}: no oof.csv there; give a cnnfit cv run's folder, its oof.csv, or "
                          "labels=true to run one")
    return path


def label_search(cfg: Config, prep: Prepared, out: Path) -> dict:
    """label_issues.csv and label_review.html in `out`, and the data report's label section."""
    if prep.ds.task != "classify":
        raise CnnfitError(f"labels= looks for wrong class labels; this data's task is {prep.ds.task}")
    index, files, labels, classes, probs = read_oof(_oof_file(cfg, out))
    if classes != list(prep.ds.classes) or len(index) and index.max() >= len(prep.ds):
        raise CnnfitError("the out-of-fold probabilities are of other data (other classes or images); run cnnfit "
                          "cv on this data, or labels=true")
    issues = find_label_issues(labels, probs, classes=classes, files=files or None, index=index)
    write_label_issues(issues, out / "label_issues.csv")
    split = np.full(len(prep.ds), "", dtype=object)
    for name, idx in prep.parts.items():
        split[idx] = name if name in SPLITS else ""
    rows = None
    if prep.ds.files is not None and all(Path(f).is_file() for f in prep.ds.files[:1]):
        rows = [(str(Path(f).absolute()), prep.ds.classes[y], s)
                for f, y, s in zip(prep.ds.files, prep.ds.labels.tolist(), split)]
    images = prep.ds.images[np.asarray([i["index"] for i in issues], dtype=np.int64)] if issues else []
    page = write_label_review(issues, images, out / "label_review.html", classes=list(classes), manifest_rows=rows)
    then = ("export the manifest, then: cnnfit train data=reviewed_manifest.csv data.allow_outside=true" if rows
            else "its export lists your choices (array data has no files for a manifest)")
    wrong = sum(i["kind"] == "wrong" for i in issues)
    log.info(f"{wrong} of {len(index)} train+val images have a likely wrong label, {len(issues) - wrong} more a "
             f"doubt between overlapping classes -> {out / 'label_issues.csv'}; review them in {page}; {then}")
    return {"flagged": len(issues), "wrong": wrong, "overlap": len(issues) - wrong, "searched": int(len(index)),
            "method": "cleanlab: confident learning's calibrated joint counts the wrong labels outside overlapping "
                      "classes and the doubts between them; each taken lowest self-confidence first",
            "overlapping_classes": overlapping_classes(labels, probs, classes=classes),
            "top": issues[:20], "review": str(page)}


def inspect(cfg: Config) -> Path:
    """`cnnfit inspect`: the data report alone, in runs/inspect*, without training; samples.png shows the
    augmentation a run would get."""
    cfg = by_data(cfg, look_at(cfg))[0]
    prep = prepare(cfg)
    out = new_run_dir(cfg.project, "inspect")
    ds = prep.ds
    what = {"classify": f"{len(ds.classes)} classes", "multilabel": f"{len(ds.classes)} labels",
            "regress": f"target '{ds.classes[0]}'"}[ds.task]
    log.info(f"{cfg.data.source}: {len(ds)} images, {what}, {'x'.join(map(str, ds.shape))}, {len(ds.skipped)} "
             f"skipped; {prep.split_how}")
    report = write_data_report(prep, out, max_lines=60)
    if cfg.data.labels not in (False, "false", ""):
        report["label_issues"] = label_search(cfg, prep, out)
        write_json(out / "data_report.json", report)
    write_samples(prep, out, build_augment(cfg), cfg.train.seed)
    log.info(f"report -> {out / 'data_report.json'}, augmented samples -> {out / 'samples.png'}")
    return out


__all__ = ["inspect", "label_search"]
