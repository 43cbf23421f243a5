"""Decode once, memory-map afterwards: one uint8 .npy per (source content, size, channels, resize).

Entries are written into a temporary folder and renamed into place, so a crash never leaves a
half-written entry that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cnnfit.data.imageset import ImageSet, check_task
from cnnfit.data.loader import channel_stats
from cnnfit.data.sources import SourceRef, read, resolve
from cnnfit.errors import CnnfitError
from cnnfit.files import write_atomic

CACHE_VERSION = 3  # bump when decoding or the entry format changes, so old entries are never reused (2: task,
#                   3: native size)


def cache_root() -> Path:
    return Path(os.environ.get("CNNFIT_CACHE", Path.home() / ".cache" / "cnnfit" / "cache")).expanduser()


def cache_key(ref: SourceRef, size: int | None, channels: int | None, resize: str, task: str = "auto") -> str:
    """A forced task is part of the key: the same CSV read as classes and as targets are two entries."""
    text = f"v{CACHE_VERSION}|{ref.fingerprint()}|{size or 'auto'}|{channels or 'auto'}|{resize}"
    text += f"|{task}" if task != "auto" else ""
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _load(entry: Path) -> ImageSet | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
        images = np.load(entry / "images.npy", mmap_mode="r")
        labels = np.load(entry / "labels.npy")
        origin = np.load(entry / "origin.npy") if (entry / "origin.npy").exists() else None
    except (OSError, ValueError, KeyError):
        return None
    return ImageSet(images, labels, meta["classes"], meta["files"], origin, [tuple(s) for s in meta["skipped"]],
                    task=meta["task"], native=meta.get("native"))


class NpyWriter:
    """A .npy file filled by slices with pwrite: written pages stay in the page cache, out of this
    process's resident memory, so decoding a dataset larger than RAM needs only one chunk of it."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)  # header + sparse body
        self.path, self.shape, self.offset = Path(path), tuple(shape), header.offset
        del header
        self.row = int(np.prod(shape[1:]))

    def __setitem__(self, rows: slice, value: np.ndarray) -> None:
        data = np.ascontiguousarray(value, dtype=np.uint8)
        start = self.offset + (rows.start or 0) * self.row
        with open(self.path, "r+b", buffering=0) as f:
            os.pwrite(f.fileno(), memoryview(data.reshape(-1)), start)
            # written back and dropped now: dirty pages of a huge file would otherwise count against
            # a memory-limited process (cgroups charge the page cache) until the kernel flushes them
            os.fdatasync(f.fileno())
            os.posix_fadvise(f.fileno(), start, data.nbytes, os.POSIX_FADV_DONTNEED)

    def __len__(self) -> int:
        return self.shape[0]

    def reader(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")


def _store(entry: Path, tmp: Path, ds: ImageSet) -> None:
    """Finish the entry being built in `tmp` and rename it into place."""
    try:
        target = tmp / "images.npy"
        if not isinstance(ds.images, NpyWriter):
            np.save(target, np.ascontiguousarray(ds.images))
        elif ds.images.path != target:  # rows of failed files were dropped into a second file
            os.replace(ds.images.path, target)
        np.save(tmp / "labels.npy", ds.labels)  # dtype and shape travel with the array: int64, uint8 (N, L), float32
        if ds.origin is not None:
            np.save(tmp / "origin.npy", ds.origin)
        meta = {"classes": ds.classes, "files": ds.files, "skipped": ds.skipped, "task": ds.task, "native": ds.native,
                "version": CACHE_VERSION}
        (tmp / "meta.json").write_text(json.dumps(meta))
        os.rename(tmp, entry)
    except OSError:
        if not entry.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race, or the disk is full


def load_imageset(ref: SourceRef, size: int | None = None, channels: int | None = None, resize: str = "squash",
                  workers: int | None = None, use_cache: bool = True, *, task: str = "auto") -> tuple[ImageSet, bool]:
    """The ImageSet for a source, and whether it came from the cache. `task` as in `sources.read`."""
    check_task(task)
    if not use_cache:
        return read(ref, size, channels, resize, workers, task=task), False
    root = cache_root()
    key = cache_key(ref, size, channels, resize, task)
    alias = root / f"{key}.alias"  # auto size/channels: points at the entry of the resolved values
    entry = root / (alias.read_text().strip() if alias.exists() else key)
    if entry.is_dir() and (ds := _load(entry)) is not None:
        return ds, True
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    try:
        ds = read(ref, size, channels, resize, workers, task=task,
                  alloc=lambda shape, name: NpyWriter(tmp / name, shape))  # decoded straight into the entry's files
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    c, h = ds.images.shape[1:3]
    resolved = cache_key(ref, h, c, resize, task)
    _store(root / resolved, tmp, ds)
    if resolved != key:
        alias.write_text(resolved)
    loaded = _load(root / resolved)
    return (loaded if loaded is not None else ds), False


def exclude_patterns(spec: str | list[str]) -> tuple[str, ...]:
    """`exclude=` as patterns: a .txt file contributes one per line (blank lines and # comments skipped)."""
    items = [spec] if isinstance(spec, str) else list(spec)
    patterns: list[str] = []
    for item in items:
        if item.endswith(".txt"):
            if not Path(item).is_file():
                raise CnnfitError(f"exclude file '{item}' not found; give a .txt with one path per line, or patterns")
            patterns += [ln.strip() for ln in Path(item).read_text().splitlines() if ln.strip()[:1] not in ("", "#")]
        else:
            patterns.append(item)
    return tuple(patterns)


def open_dataset(source: str, *, imgsz: int | None, channels: int | None, resize: str, workers: int | None = None,
                 cache: bool = True, task: str = "auto", download: bool = False,
                 exclude: str | list[str] = ()) -> tuple[ImageSet, bool, Path | None]:
    """The dataset a run's `data.*` settings name, decoded (or memory-mapped from the cache): the ImageSet,
    whether the cache had it, and the folder, zip or file it came from."""
    ref = resolve(source, download=download, exclude=exclude_patterns(exclude))
    return *load_imageset(ref, imgsz, channels, resize, workers, cache, task=task), ref.path


def remembered(ds: ImageSet, key: np.ndarray | str, kind: str, compute: Callable[[], Any]) -> Any:
    """compute(), kept as JSON next to the dataset's cache entry under (kind, key): a second run of
    the same data and split reuses it. Without a cache entry it is simply computed."""
    entry = Path(ds.images.filename).parent if isinstance(ds.images, np.memmap) and ds.images.filename else None
    raw = key.encode() if isinstance(key, str) else np.ascontiguousarray(key, dtype=np.int64).tobytes()
    path = entry / f"{kind}-{hashlib.sha256(raw).hexdigest()[:24]}.json" if entry is not None else None
    if path is not None and path.exists():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    value = compute()
    if path is not None:
        try:
            write_atomic(path, json.dumps(value))
        except OSError:
            pass  # a read-only cache still trains; it just recomputes next time
    return value


def split_stats(ds: ImageSet, idx: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of ds.images[idx]; remembered, so a second run of the same data and split
    skips the pass over the pixels (0.1 s for Fashion-MNIST)."""
    saved = remembered(ds, idx, "stats", lambda: dict(zip(("mean", "std"), channel_stats(ds.images, idx))))
    return saved["mean"], saved["std"]
