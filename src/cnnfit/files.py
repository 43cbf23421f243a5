"""Files a reader never sees half-written, and run names that never overwrite: every file write goes through here,
and so does every download, which lands only once its checksum holds."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import http.client
import io
import os
import secrets
import urllib.request
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


_BLOCK = 1 << 20  # 1 MiB reads: a 500 MB file in 500 calls, and little memory held per download


def digest(path: str | Path, algorithm: str) -> str:
    """The hex digest of a file under hashlib's `algorithm` ("sha256", "md5"), read in 1 MiB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, target: str | Path, *, algorithm: str, expected: str, fix: str,
             max_bytes: int | None = None, timeout: float = 60) -> Path:
    """Stream `url` into `target`, hashing as it arrives. The file takes its name only when the body is as long
    as the server announced and its `algorithm` hex digest starts with `expected` (a full digest, or the 8+ digit
    prefix torchvision puts in its file names); otherwise a one-line CnnfitError, and neither `target` nor a
    temporary file is left. A failed connection or read raises "cannot download URL (why); `fix`"."""
    target = Path(target)
    if len(expected) < 8 or expected.strip("0123456789abcdef"):  # a shorter prefix would prove little
        raise ValueError(f"expected must be 8 or more lowercase hex digits, not {expected!r}")
    try:
        with atomic_path(target) as tmp:  # checked before it takes the name
            got, size, announced = _stream(url, tmp, algorithm, max_bytes, timeout)
            if announced is not None and size != announced:
                raise CnnfitError(f"download of {url} is incomplete ({size:,} of {announced:,} bytes); "
                                  "try again later")
            if not got.startswith(expected):
                raise CnnfitError(f"download of {url} is corrupt ({algorithm} {got}, expected {expected}); "
                                  "try again later")
    except (OSError, http.client.HTTPException) as exc:  # URLError and HTTPError are OSErrors; IncompleteRead not
        raise CnnfitError(f"cannot download {url} ({exc}); {fix}") from None
    return target


def _stream(url: str, tmp: Path, algorithm: str, max_bytes: int | None,
            timeout: float) -> tuple[str, int, int | None]:
    """Hex digest and size of what `url` sent into `tmp`, and the size its Content-Length announced (or None)."""
    h, size = hashlib.new(algorithm), 0
    with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
        length = response.headers.get("Content-Length", "")
        announced = int(length) if length.isdigit() else None
        for block in iter(lambda: response.read(_BLOCK), b""):
            size += len(block)
            if max_bytes is not None and max(size, announced or 0) > max_bytes:  # before the disk fills
                raise CnnfitError(f"download of {url} is over {max_bytes:,} bytes, more than the file it should "
                                  "be; check the address")
            h.update(block)
            out.write(block)
    return h.hexdigest(), size, announced


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
