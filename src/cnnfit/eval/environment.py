"""What a run ran on: package versions, OS, CPU and GPU, as one flat dict of strings and numbers, cheap to take and
never raising (a probe that fails leaves its key None), so every metrics.json can carry it."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# distribution names as pip knows them, in the order a reader scans them
_PACKAGES = ("cnnfit", "torch", "numpy", "scikit-learn", "pillow", "matplotlib")


def _probe(fn, *args):
    """fn(*args), or None when it raises."""
    try:
        return fn(*args)
    except Exception:  # not installed, broken metadata, no /proc (macOS, Windows): the report says n/a
        return None


def _cpu_name() -> str | None:
    """The CPU model from /proc/cpuinfo (Linux: 'model name' on x86, 'Model' or 'Hardware' on ARM), else what
    platform.processor() says (macOS, Windows)."""
    lines = _probe(lambda: Path("/proc/cpuinfo").read_text().splitlines()) or []
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}
    return (next((fields[k] for k in ("model name", "Model", "Hardware", "cpu model") if fields.get(k)), None)
            or _probe(platform.processor) or None)


def environment(device: str | None = None) -> dict[str, str | int | None]:
    """Versions (cnnfit, python, torch, numpy, scikit-learn, pillow, matplotlib), platform, cpu, cpu_count,
    torch_threads, device (as given), and gpu and cuda (None without CUDA)."""
    env: dict[str, str | int | None] = {
        "cnnfit": _probe(metadata.version, "cnnfit"), "python": platform.python_version(),
        **{dist: _probe(metadata.version, dist) for dist in _PACKAGES[1:]},
        "platform": _probe(platform.platform), "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
        "torch_threads": None, "device": device, "gpu": None, "cuda": None}
    try:
        import torch

        env["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["cuda"] = torch.version.cuda
    except Exception:  # a broken CUDA driver must not stop a run from being written
        pass
    return env


__all__ = ["environment"]
