"""Files a reader never sees half-written."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | Path, text: str) -> Path:
    """Write to a temporary name beside `path`, then rename over it: a crash or a concurrent reader sees the
    whole new file or the whole old one. The temporary name carries the pid, so parallel writers never collide."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
