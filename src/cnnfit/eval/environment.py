"""What a run ran on: package versions, OS, CPU and GPU, as one flat dict of strings and numbers, cheap to take and
never raising (a probe that fails leaves its key None), so every metrics.json can carry it."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

# distribution names as pip knows them, in the order a reader scans them
_PACKAGES = ("cnnfit", "torch", "numpy", "scikit-learn", "pillow", "matplotlib")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except Exception:  # not installed, or broken metadata: the report says n/a
        return None


def _cpu_name() -> str | None:
    """The CPU model from /proc/cpuinfo (Linux: 'model name' on x86, 'Model' or 'Hardware' on ARM), else what
    platform.processor() says (macOS, Windows)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/cpuinfo").read_text().splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        for key in ("model name", "Model", "Hardware", "cpu model"):
            if fields.get(key):
                return fields[key]
    except Exception:  # no /proc (macOS, Windows) or unreadable
        pass
    try:
        return platform.processor() or None
    except Exception:
        return None


def environment(device: str | None = None) -> dict[str, str | int | None]:
    """Versions (cnnfit, python, torch, numpy, scikit-learn, pillow, matplotlib), platform, cpu, cpu_count,
    torch_threads, device (as given), and gpu and cuda (None without CUDA)."""
    env: dict[str, str | int | None] = {"cnnfit": _version("cnnfit"), "python": platform.python_version()}
    env |= {dist: _version(dist) for dist in _PACKAGES[1:]}
    try:
        env["platform"] = platform.platform()
    except Exception:
        env["platform"] = None
    env["cpu"] = _cpu_name()
    env["cpu_count"] = os.cpu_count()
    env["torch_threads"], env["device"], env["gpu"], env["cuda"] = None, device, None, None
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
