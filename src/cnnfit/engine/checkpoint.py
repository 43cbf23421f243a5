"""Checkpoints are plain, self-describing dicts; written to a temporary file, fsynced, then renamed,
so a crash or a full disk never leaves a broken file where a good one was. Each write gets a temporary name of
its own (128 random bits, created exclusively), so two writers of one checkpoint, threads or processes, never
write into the same file: the last rename wins, and either way the file is whole."""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Any

import torch

from cnnfit.errors import CnnfitError

FORMAT_VERSION = 1


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    f = open(tmp, "xb")  # x: fail rather than share a file, however unlikely a repeated name
    try:
        with f:
            try:
                torch.save({"format_version": FORMAT_VERSION, **ckpt}, f)
            except RuntimeError as exc:  # torch's zip writer reports a failed write (a full disk) this way
                cause = exc.__context__ if isinstance(exc.__context__, OSError) else None
                raise OSError(cause.errno if cause else errno.EIO,
                              cause.strerror if cause else str(exc).splitlines()[0]) from exc
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable: without it a power cut can bring the old directory entry back."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the data itself is already synced
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CnnfitError(f"checkpoint '{path}' not found; pass a run directory that holds best.pt")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise CnnfitError(f"checkpoint '{path}' cannot be read ({type(exc).__name__}); it may be damaged") from None
    if not isinstance(ckpt, dict):
        raise CnnfitError(f"checkpoint '{path}' holds a {type(ckpt).__name__}, not a cnnfit checkpoint; pass a run "
                          "directory written by cnnfit train")
    version = ckpt.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CnnfitError(f"checkpoint '{path}' has format_version={version!r}, not a number; it is damaged or "
                          "not written by cnnfit")
    if version > FORMAT_VERSION:
        raise CnnfitError(f"checkpoint '{path}' was written by a newer cnnfit; upgrade cnnfit to read it")
    return ckpt
