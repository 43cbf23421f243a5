"""CSV manifests: rows `path,label[,split]` read into entries, the task their labels hold, and the label
arrays; and the header that writes a manifest back so it reads as the same task.

A label cell is a class ('cat'), several labels ('cat;outdoor', ';' alone for none) or a number ('3.25').
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from cnnfit.data.imageset import ImageSet
from cnnfit.errors import CnnfitError

SPLIT_NAMES = {"train": 0, "training": 0, "val": 1, "valid": 1, "validation": 1, "test": 2, "testing": 2}
TARGET_COLUMNS = ("target", "value")  # a header naming the label column so makes a regression manifest

Entry = tuple[str, int, str, int]  # (file, split index or -1, label cell, line in the manifest)


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line, cells) of every non-blank row of a UTF-8 CSV (a BOM is allowed), or a one-line error naming the line."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise CnnfitError(f"{path} line {line} is not UTF-8 (byte 0x{raw[exc.start]:02x}); save the manifest as "
                          "UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    except csv.Error as exc:
        raise CnnfitError(f"{path} line {reader.line_num}: {exc}; fix the row (a path with a comma needs "
                          "quotes)") from None


class _Inside:
    """Whether files lie inside `top` once links are followed; a folder's real path is looked up once."""

    def __init__(self, top: Path) -> None:
        self.top, self.folders = os.path.realpath(top), {}

    def __call__(self, file: str) -> bool:
        folder, name = os.path.split(file)
        if folder not in self.folders:
            self.folders[folder] = os.path.realpath(folder)
        real = os.path.join(self.folders[folder], name)
        real = os.path.realpath(real) if os.path.islink(real) else real
        return os.path.commonpath((self.top, real)) == self.top


def read_manifest(path: Path, allow_outside: bool = False) -> tuple[list[Entry], list[tuple[str, str]], str]:
    """Rows `path,label[,split]` (a header row is optional); paths relative to the CSV's folder, which they may
    not leave (`..`, absolute paths, links out of it) unless `allow_outside`.
    Returns the entries, the rows that cannot be used with why, and the header's name for the label
    column ('' without a header)."""
    rows = _rows(path)
    column = ""
    if rows and rows[0][1][0].strip().lower() in ("path", "file", "filename"):
        column = rows[0][1][1].strip() if len(rows[0][1]) > 1 else ""
        rows = rows[1:]
    entries, bad = [], []
    inside = _Inside(path.parent)
    for line, row in rows:
        if len(row) < 2 or not row[1].strip():
            bad.append((f"{path.name} line {line}", "needs path,label[,split]"))
            continue
        split = row[2].strip().lower() if len(row) > 2 and row[2].strip() else ""
        if split and split not in SPLIT_NAMES:
            bad.append((f"{path.name} line {line}", f"unknown split '{row[2]}' (use train, val or test)"))
            continue
        file = str(path.parent / Path(row[0].strip()).expanduser())  # an absolute path stays as it is
        if not allow_outside and not inside(file):
            raise CnnfitError(f"{path} line {line}: '{row[0].strip()}' is outside the manifest's folder "
                              f"{path.parent}; move the CSV above its images, or set data.allow_outside=true")
        entries.append((file, SPLIT_NAMES.get(split, -1), row[1].strip(), line))
    if entries and len({e[1] < 0 for e in entries}) > 1:
        raise CnnfitError(f"{path}: give a split for every row or for none")
    return entries, bad, column


def label_names(cell: str) -> list[str]:
    """The labels of a multi-label cell 'cat;outdoor', in order, without repeats; ';' alone means none."""
    return list(dict.fromkeys(p.strip() for p in cell.split(";") if p.strip()))


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def manifest_task(entries: list[Entry], task: str, column: str, name: str) -> str:
    """The manifest's task: the one asked for, checked against every row, or detected from the rows.
    Detected: a header column 'target'/'value', or numbers not all integers -> regress (so classes
    '0', '1', '2' stay classes); any cell with a ';' ('cat;outdoor', 'cat;', ';') -> multilabel; else classify."""
    cells = [(e[2], e[3]) for e in entries]
    by_header = column.lower() in TARGET_COLUMNS
    if task == "regress" or (task == "auto" and by_header):
        for cell, line in cells:
            if _number(cell) is None:
                why = (f"the header names the label column '{column}', so every row needs a number; rename the "
                       "column to 'label' for classes" if task == "auto" else
                       "task=regress needs a finite number in every row; fix the row, or use task=classify for classes")
                raise CnnfitError(f"{name} line {line}: target '{cell}' is not a number; {why}")
        return "regress"
    several = next(((c, line) for c, line in cells if len(label_names(c)) > 1), None)
    if task == "classify" and several is not None:
        raise CnnfitError(f"{name} line {several[1]}: '{several[0]}' holds {len(label_names(several[0]))} labels "
                          "but task=classify takes one per row; use task=multilabel (or auto), or one label per row")
    if task != "auto":
        return task
    if any(";" in c for c, _ in cells):
        return "multilabel"
    numbers = [_number(c) for c, _ in cells]
    if cells and all(v is not None for v in numbers) and any(not v.is_integer() for v in numbers):
        return "regress"
    return "classify"


def encode_labels(cells: list[str], task: str, column: str) -> tuple[np.ndarray, list[str]]:
    """Label cells as the task's label array and its class names (see ImageSet)."""
    if task == "regress":
        return np.array([float(c) for c in cells], dtype=np.float32), [column or "target"]  # (N,)
    if task == "multilabel":
        rows = [label_names(c) for c in cells]
        classes = sorted({n for r in rows for n in r})
        index = {c: i for i, c in enumerate(classes)}
        hot = np.zeros((len(rows), len(classes)), dtype=np.uint8)  # (N, L) multi-hot
        for i, r in enumerate(rows):
            hot[i, [index[n] for n in r]] = 1
        return hot, classes
    classes = sorted(set(cells))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[c] for c in cells], dtype=np.int64), classes


def one_hot(ds: ImageSet) -> ImageSet:
    """A class-labelled set as multilabel: one label per image, so a model learns independent sigmoids."""
    ds.labels, ds.task = np.eye(len(ds.classes), dtype=np.uint8)[ds.labels], "multilabel"  # (N, K)
    return ds


def manifest_header(task: str) -> list[str]:
    """The header row of a manifest of `task`: 'target' makes read_manifest's rows numbers again."""
    return ["path", "target" if task == "regress" else "label", "split"]


def manifest_cell(text: str, task: str) -> str:
    """A label as written to a manifest: multilabel cells of fewer than two labels end in ';' ('cat;', ';'),
    so the manifest still reads back as multilabel when no row has two."""
    return text + ";" if task == "multilabel" and ";" not in text else text


__all__ = ["SPLIT_NAMES", "TARGET_COLUMNS", "encode_labels", "label_names", "manifest_cell", "manifest_header",
           "manifest_task", "one_hot", "read_manifest"]
