"""Mixed precision and memory layout on this machine: seconds per epoch of `engine.fit` with amp off/bf16
and NCHW/channels_last, everything else equal, measured interleaved in one run so drift hits all alike.
The defaults in `cnnfit.device` (resolve_amp, resolve_channels_last) come from this measurement.

    python benchmarks/bench_precision.py [--models simplecnn,resnet20] [--batch 64] [--steps 30] [--rounds 3]

Each measurement trains `--steps` steps of Fashion-MNIST (the data root's copy, else digits upscaled to 28 px)
and is scaled to a full epoch of the 51,000-image train split; the median of the rounds is reported.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch

from cnnfit import models
from cnnfit.data import DeviceLoader, resolve
from cnnfit.data.cache import load_imageset
from cnnfit.data.loader import channel_stats
from cnnfit.device import cpu_has_bf16
from cnnfit.engine import StepOptions, build_optimizer, fit
from cnnfit.errors import CnnfitError

EPOCH_IMAGES = 51_000  # Fashion-MNIST's train split after cnnfit's 15% validation carve-out


def _data() -> tuple[np.ndarray, np.ndarray, str]:
    try:
        ds, _ = load_imageset(resolve("fashion-mnist"))
        return ds.images, ds.labels, "fashion-mnist"
    except CnnfitError:
        ds, _ = load_imageset(resolve("digits"), 28)
        return ds.images, ds.labels, "digits at 28 px"


def _seconds(name: str, images, labels, batch: int, steps: int, amp: torch.dtype | None, nhwc: bool) -> float:
    """Train seconds of `steps` steps with fit, after one warm-up pass that builds the kernels."""
    torch.manual_seed(0)
    n = batch * steps
    mean, std = channel_stats(images[:n])
    loader = DeviceLoader(images[:n], labels[:n], batch=batch, device=torch.device("cpu"), mean=mean, std=std,
                          shuffle=True, channels_last=nhwc)
    model = models.create(name, num_classes=10, in_chans=images.shape[1], imgsz=images.shape[2])
    model = model.to(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    opt = build_optimizer("adamw", model, lr=1e-3, weight_decay=0.05)
    state = fit(model, loader, [], optimizer=opt, epochs=2, device=torch.device("cpu"), step=StepOptions(amp_dtype=amp))
    return state.history[-1]["train_seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="simplecnn,resnet20")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    images, labels, source = _data()
    print(f"{source}, batch {args.batch}, {torch.get_num_threads()} threads, native bf16: {cpu_has_bf16()}")
    ways = {"fp32 NCHW": (None, False), "fp32 channels_last": (None, True),
            "bf16 NCHW": (torch.bfloat16, False), "bf16 channels_last": (torch.bfloat16, True)}
    scale = EPOCH_IMAGES / (args.batch * args.steps)
    for name in args.models.split(","):
        times: dict[str, list[float]] = {w: [] for w in ways}
        for _ in range(args.rounds):
            for way, (amp, nhwc) in ways.items():
                times[way].append(_seconds(name, images, labels, args.batch, args.steps, amp, nhwc) * scale)
        base = statistics.median(times["fp32 NCHW"])
        print(f"\n{name}: seconds per epoch (median of {args.rounds})")
        for way, values in times.items():
            med = statistics.median(values)
            print(f"  {way:<20} {med:7.1f} s   {base / med:4.2f}x fp32 NCHW")


if __name__ == "__main__":
    main()
