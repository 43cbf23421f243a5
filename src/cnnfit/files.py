"""Files a reader never sees half-written, and run names that never overwrite: every file write goes through here."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from cnnfit.errors import CnnfitError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary name beside `path` to write to; renamed over `path` when the block ends without error, removed
    otherwise. A crash or a concurrent reader sees the whole new file or the whole old one. The name is random
    (64 bits) per call, so parallel writers, threads or processes, never collide, and keeps the suffix, for writers
    that choose a format by it (onnx, savefig); fsync before the rename, so a power cut cannot leave an empty file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{secrets.token_hex(8)}.tmp{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, content: str | bytes) -> Path:
    """Write text (UTF-8) or bytes to `path` through `atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return Path(path)


def write_csv(path: str | Path, header: list[str], rows: list[list], line_end: str = "\r\n") -> Path:
    """A header row and rows, as the csv module writes them (None as an empty cell), through `write_atomic`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator=line_end)
    writer.writerow(header)
    writer.writerows(rows)
    return write_atomic(path, buf.getvalue())


def free_name(path: Path) -> Path:
    """`path`, or path2, path3 ... before the suffix: the first name not taken (predict.csv, predict2.csv)."""
    stem, suffix, i = path.stem, path.suffix, 2
    while path.exists():
        path = path.with_name(f"{stem}{i}{suffix}")
        i += 1
    return path


def new_run_dir(project: str | Path, name: str) -> Path:
    """project/name, or name2, name3 ...: created here, so an existing run is never touched, even by a
    concurrent process choosing the same name (mkdir is atomic)."""
    parent = Path(project)
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        candidate = parent / (name if i == 1 else f"{name}{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise CnnfitError(f"no free run name for '{name}' in {parent}; pick another name=")
