"""Decode once, memory-map afterwards: one uint8 .npy per (source content, size, channels, resize).

Entries are written into a temporary folder and renamed into place, so a crash never leaves a
half-written entry that a later run would trust; a checksum written with each entry is verified on
every load, and an entry that fails it (truncated, overwritten) is decoded again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cnnfit.data.imageset import ImageSet, check_task
from cnnfit.data.loader import channel_stats
from cnnfit.data.sources import SourceRef, read, resolve
from cnnfit.errors import CnnfitError
from cnnfit.files import atomic_path, write_atomic

CACHE_VERSION = 4  # bump when decoding or the entry format changes, so old entries are never reused (2: task,
#                   3: native size, 4: checksum)
# bytes of images.npy read for the checksum on each load: all of a cache up to 8 MB, an even sample of rows
# beyond (every 7th of Fashion-MNIST's 55 MB), so a cache hit stays ~0.08 s to the first step: all 55 MB took
# +25 ms (CRC32 at ~2 GB/s on 2 cores). A zeroed, truncated or swapped file still reads as another checksum
CHECK_BYTES = 8 << 20
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]  # temp names: whose process made them
_KEY = re.compile(r"[0-9a-f]{24}")
log = logging.getLogger(__name__)


def cache_root() -> Path:
    return Path(os.environ.get("CNNFIT_CACHE", Path.home() / ".cache" / "cnnfit" / "cache")).expanduser()


def cache_key(ref: SourceRef, size: int | None, channels: int | None, resize: str, task: str = "auto",
              fingerprint: str | None = None) -> str:
    """A forced task is part of the key: the same CSV read as classes and as targets are two entries.
    `fingerprint`: the source's, taken before decoding (default: now)."""
    text = f"v{CACHE_VERSION}|{fingerprint or ref.fingerprint()}|{size or 'auto'}|{channels or 'auto'}|{resize}"
    text += f"|{task}" if task != "auto" else ""
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def checksum(images: np.ndarray, labels: np.ndarray, origin: np.ndarray | None) -> str:
    """CRC32 of the labels, the split and the images' rows (every row up to CHECK_BYTES, else every k-th and
    the last): a truncated, zeroed or swapped images.npy reads as another checksum. Give it a memmap of its
    own: the pages it maps go when it does."""
    n, row = len(images), max(1, int(np.prod(images.shape[1:])))
    step = max(1, -(-n * row // CHECK_BYTES))
    crc = zlib.crc32(repr((images.shape, str(labels.dtype), labels.shape)).encode())
    for part in (labels, origin if origin is not None else np.zeros(0)):
        crc = zlib.crc32(np.ascontiguousarray(part).tobytes(), crc)
    span = max(1, (32 << 20) // row) * step  # rows covered per 32 MB hashed
    for start in range(0, n, span):
        crc = zlib.crc32(np.ascontiguousarray(images[start: start + span: step]), crc)  # (R, C, H, W)
    if n and (n - 1) % step:  # the last row: where a truncated file ends
        crc = zlib.crc32(np.ascontiguousarray(images[n - 1]), crc)
    return f"crc32/{step}:{crc:08x}"


def _load(entry: Path) -> tuple[ImageSet | None, str]:
    """The entry's ImageSet, or None and why it cannot be trusted (a file missing or damaged, a checksum off)."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        images = np.load(entry / "images.npy", mmap_mode="r")
        labels = np.load(entry / "labels.npy")
        origin = np.load(entry / "origin.npy") if (entry / "origin.npy").exists() else None
        if (got := checksum(np.load(entry / "images.npy", mmap_mode="r"), labels, origin)) != meta.get("checksum"):
            return None, f"checksum {got}, written as {meta.get('checksum')}"
        return ImageSet(images, labels, meta["classes"], meta["files"], origin, [tuple(s) for s in meta["skipped"]],
                        task=meta["task"], native=meta.get("native")), ""
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _cache_error(exc: OSError) -> CnnfitError:
    """A failed cache write as one line that names the fix."""
    why = "is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "cannot be written"
    return CnnfitError(f"the cache folder {cache_root()} {why} ({exc.strerror or exc}); free space there, point "
                       "CNNFIT_CACHE at another disk, or set data.cache=false")


class NpyWriter:
    """A .npy file filled by slices with pwrite: written pages stay in the page cache, out of this
    process's resident memory, so decoding a dataset larger than RAM needs only one chunk of it."""

    def __init__(self, path: Path, shape: tuple[int, ...]) -> None:
        try:
            header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)  # header + sparse body
        except OSError as exc:
            raise _cache_error(exc) from None
        self.path, self.shape, self.offset = Path(path), tuple(shape), header.offset
        del header
        self.row = int(np.prod(shape[1:]))

    def __setitem__(self, rows: slice, value: np.ndarray) -> None:
        data = np.ascontiguousarray(value, dtype=np.uint8)
        start = self.offset + (rows.start or 0) * self.row
        try:
            with open(self.path, "r+b", buffering=0) as f:
                os.pwrite(f.fileno(), memoryview(data.reshape(-1)), start)
                # written back and dropped now: dirty pages of a huge file would otherwise count against
                # a memory-limited process (cgroups charge the page cache) until the kernel flushes them
                os.fdatasync(f.fileno())
                os.posix_fadvise(f.fileno(), start, data.nbytes, os.POSIX_FADV_DONTNEED)
        except OSError as exc:
            raise _cache_error(exc) from None

    def __len__(self) -> int:
        return self.shape[0]

    def reader(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")


def _store(entry: Path, tmp: Path, ds: ImageSet) -> None:
    """Finish the entry being built in `tmp`, checksum included, and rename it into place."""
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
                "version": CACHE_VERSION, "checksum": checksum(np.load(target, mmap_mode="r"), ds.labels, ds.origin)}
        (tmp / "meta.json").write_text(json.dumps(meta))
        os.rename(tmp, entry)
    except OSError as exc:
        if not entry.exists():  # else another process won the race
            raise _cache_error(exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _set_aside(key: str) -> str:
    """The start of a hidden name for a decode in progress or a discarded entry: `.key.pid.host.` + a tail."""
    return f".{key}.{os.getpid()}.{_HOST}."


def _clean_leftovers(root: Path) -> None:
    """Remove the temp folders and discarded entries of processes on this machine that were killed."""
    for p in root.glob(f".*.*.{_HOST}.*"):
        pid = p.name.split(".")[2]
        if pid.isdigit() and not _alive(int(pid)):
            log.info("removing %s, left by a killed decode", p)
            shutil.rmtree(p, ignore_errors=True)


def _discard(root: Path, entry: Path) -> None:
    """Move a damaged entry out of the way (one rename: no reader sees it half deleted), then delete it."""
    aside = root / (_set_aside(entry.name) + "old")
    try:
        os.rename(entry, aside)
    except OSError:
        return  # another process moved it first
    shutil.rmtree(aside, ignore_errors=True)


def _alias_target(alias: Path, key: str) -> str:
    """The entry name an alias file holds, or `key` when there is none or it holds anything but a key."""
    try:
        target = alias.read_text().strip() if alias.is_file() else key
    except (OSError, ValueError):
        return key
    return target if _KEY.fullmatch(target) else key


def _decode_into(root: Path, key: str, ref: SourceRef, read_args: dict) -> tuple[ImageSet, Path]:
    """read() straight into a temp folder in `root`; the folder is removed if anything fails."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        _clean_leftovers(root)
        tmp = Path(tempfile.mkdtemp(prefix=_set_aside(key), dir=root))
    except OSError as exc:
        raise _cache_error(exc) from None
    try:
        return read(ref, **read_args, alloc=lambda shape, name: NpyWriter(tmp / name, shape)), tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_imageset(ref: SourceRef, size: int | None = None, channels: int | None = None, resize: str = "squash",
                  workers: int | None = None, use_cache: bool = True, *, task: str = "auto") -> tuple[ImageSet, bool]:
    """The ImageSet for a source, and whether it came from the cache. `task` as in `sources.read`."""
    check_task(task)
    if not use_cache:
        return read(ref, size, channels, resize, workers, task=task), False
    root = cache_root()
    before = ref.fingerprint()  # taken before decoding: a file edited meanwhile misses next time
    key = cache_key(ref, size, channels, resize, task, before)
    alias = root / f"{key}.alias"  # auto size/channels: points at the entry of the resolved values
    entry = root / _alias_target(alias, key)
    if entry.is_dir():
        ds, why = _load(entry)
        if ds is not None:
            return ds, True
        log.warning("cache entry %s is damaged (%s); decoding %s again", entry, why, ref.name)
        _discard(root, entry)
    ds, tmp = _decode_into(root, key, ref, dict(size=size, channels=channels, resize=resize, workers=workers,
                                                 task=task))
    if ref.fingerprint() != before:
        log.warning("%s changed while it was decoded; this run uses what was read, the next decodes it again",
                    ref.name)
    c, h = ds.images.shape[1:3]
    resolved = cache_key(ref, h, c, resize, task, before)
    if resolved != entry.name and (root / resolved).is_dir() and _load(root / resolved)[0] is None:
        _discard(root, root / resolved)  # the entry of the resolved values, damaged
    _store(root / resolved, tmp, ds)
    if resolved != key:
        try:
            write_atomic(alias, resolved)
        except OSError:
            pass  # the next run with auto values decodes again, then finds the entry in place
    loaded, why = _load(root / resolved)
    if loaded is None:
        raise CnnfitError(f"the cache entry {root / resolved} cannot be read back ({why}); delete it, or set "
                          "data.cache=false")
    return loaded, False


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
                 exclude: str | list[str] = (), allow_outside: bool = False,
                 arrays: tuple[str, str] = ("", "")) -> tuple[ImageSet, bool, Path | None]:
    """The dataset a run's `data.*` settings name, decoded (or memory-mapped from the cache): the ImageSet,
    whether the cache had it, and the folder, zip or file it came from. `arrays`: an HDF5 file's images and
    labels datasets (data.h5_images, data.h5_labels)."""
    ref = resolve(source, download=download, exclude=exclude_patterns(exclude), allow_outside=allow_outside,
                  arrays=arrays)
    return *load_imageset(ref, imgsz, channels, resize, workers, cache, task=task), ref.path


def _beside(ds: ImageSet, key: np.ndarray | str, kind: str, suffix: str) -> Path | None:
    """The file for (kind, key) next to the dataset's cache entry; None for data that has no entry."""
    entry = Path(ds.images.filename).parent if isinstance(ds.images, np.memmap) and ds.images.filename else None
    raw = key.encode() if isinstance(key, str) else np.ascontiguousarray(key, dtype=np.int64).tobytes()
    return entry / f"{kind}-{hashlib.sha256(raw).hexdigest()[:24]}{suffix}" if entry is not None else None


def remembered(ds: ImageSet, key: np.ndarray | str, kind: str, compute: Callable[[], Any]) -> Any:
    """compute(), kept as JSON next to the dataset's cache entry under (kind, key): a second run of
    the same data and split reuses it. Without a cache entry it is simply computed."""
    path = _beside(ds, key, kind, ".json")
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


def remembered_array(ds: ImageSet, key: str, kind: str, compute: Callable[[], np.ndarray]) -> tuple[np.ndarray, bool]:
    """compute(), an array kept as .npy next to the dataset's cache entry (read without pickle), and whether it
    came from there: a frozen backbone's features, computed once per data, split and weights."""
    path = _beside(ds, key, kind, ".npy")
    if path is not None and path.exists():
        try:
            return np.load(path, allow_pickle=False), True
        except (OSError, ValueError):
            pass  # damaged: computed again and rewritten
    value = np.ascontiguousarray(compute())
    if path is not None:
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, value, allow_pickle=False)
        except OSError:
            pass
    return value, False


def split_stats(ds: ImageSet, idx: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of ds.images[idx]; remembered, so a second run of the same data and split
    skips the pass over the pixels (0.1 s for Fashion-MNIST)."""
    saved = remembered(ds, idx, "stats", lambda: dict(zip(("mean", "std"), channel_stats(ds.images, idx))))
    return saved["mean"], saved["std"]
