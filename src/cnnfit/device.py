"""Device choice, seeding and the mixed-precision / memory-layout defaults measured per device."""

from __future__ import annotations

import ctypes
import os
import random
import sys

import numpy as np
import torch

from cnnfit.errors import CnnfitError


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise CnnfitError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CnnfitError(f"device '{name}' requested but CUDA is not available; use device=cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise CnnfitError(f"device '{name}' requested but MPS is not available; use device=cpu")
    return dev


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Have glibc keep freed blocks for reuse instead of handing them back to the kernel. By default blocks over
    128 KiB are mmap'ed and unmapped again, so every CPU training step faults its activations back in page by
    page: 3,700 minor faults and 6-7 ms of kernel time per fastnet step at batch 256, a tenth of the step. The
    price is a resident size that stays at its peak, as with jemalloc or tcmalloc. True when glibc took it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1))
    except (OSError, AttributeError):  # another C library (musl): its allocator as it is
        return False


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a host clock measures what the device did (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(flag: bool) -> None:
    """Deterministic kernels (slower on GPU) or the fastest ones. cuBLAS needs its workspace pinned before
    the first matmul; ops without a deterministic kernel warn instead of failing the run."""
    if flag:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(flag, warn_only=True)
    torch.backends.cudnn.deterministic = flag
    torch.backends.cudnn.benchmark = not flag


def cpu_has_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX); without them bf16 autocast is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_amp(amp: str, device: torch.device, deterministic: bool = False) -> tuple[torch.dtype | None, str]:
    """Autocast dtype (None = fp32) and why it was chosen. `deterministic` keeps auto at fp32: bf16 rounds
    differently when a batch is split differently (2 processes against 1: losses 1e-5 apart after an epoch,
    3e-7 in fp32), and a deterministic run should not depend on how its work is divided."""
    if amp == "off":
        return None, "set"
    if amp == "auto" and deterministic:
        return None, "auto: fp32 for deterministic=true (bf16 rounding depends on how batches are split)"
    if amp == "bf16":
        return torch.bfloat16, "set"
    if amp == "fp16":
        if device.type == "cpu":
            raise CnnfitError("amp=fp16 needs a GPU; on CPU use amp=bf16 or amp=off")
        return torch.float16, "set"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "auto: GPU supports bf16"
        return torch.float16, "auto: GPU lacks bf16, fp16 with a grad scaler"
    if device.type == "cpu" and cpu_has_bf16():
        # benchmarks/bench_precision.py, Fashion-MNIST, batch 64, 2 cores with AVX512-BF16, channels_last:
        # bf16 28.8 s/epoch vs fp32 48.5 (simplecnn), 49.2 vs 66.6 (resnet20)
        return torch.bfloat16, "auto: native bf16 CPU (measured 1.35-1.7x faster)"
    return None, f"auto: fp32 on {device.type}"


def amp_name(dtype: torch.dtype | None) -> str:
    """An autocast dtype as train.amp spells it: what checkpoints and metrics.json record."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16", None: "off"}[dtype]


def resolve_channels_last(flag: bool | None, device: torch.device) -> tuple[bool, str]:
    if flag is not None:
        return flag, "set"
    if device.type in ("cuda", "cpu"):
        # bench_precision.py, 2 CPU cores, bf16: 1.09x (simplecnn) and 1.18x (resnet20) faster than NCHW
        return True, "auto: NHWC convolution kernels"
    return False, f"auto: contiguous on {device.type}"
