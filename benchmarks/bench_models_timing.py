"""Seconds per Fashion-MNIST epoch for every model, measured on an otherwise idle machine, apart from the
accuracy runs of bench_models.py (those take hours and may share the CPU; their timings would not be clean).

    python benchmarks/bench_models_timing.py [--models ...] [--steps 20] [--rounds 2] [--batch 128]
                                             [--out benchmarks/results/models_fmnist_timing.csv]

For each model, `engine.fit` trains `--steps` steps of the bench_models recipe (AdamW, batch 128, bf16 autocast
and channels_last where they are the measured defaults) after a warm-up pass; the median of `--rounds` is scaled
to the 399 steps of a full epoch (51,000 images), and one timed validation pass over 9,000 images is added.
Rows are appended per model; models already in --out are skipped.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from cnnfit import models
from cnnfit.data import DeviceLoader, resolve
from cnnfit.data.cache import load_imageset
from cnnfit.data.loader import channel_stats
from cnnfit.device import resolve_amp, resolve_channels_last
from cnnfit.engine import StepOptions, build_optimizer, fit, infer
from results_csv import append_row, read_rows

TRAIN_IMAGES, VAL_IMAGES = 51_000, 9_000  # cnnfit's split of Fashion-MNIST's 60,000 training images
FIELDS = ["model", "step_seconds", "val_seconds", "seconds_per_epoch", "steps_timed", "rounds", "batch", "threads",
          "amp", "channels_last", "when"]


def _time_model(name: str, images, labels, batch: int, steps: int, rounds: int) -> tuple[float, float]:
    cpu = torch.device("cpu")
    amp, _ = resolve_amp("auto", cpu)
    nhwc, _ = resolve_channels_last(None, cpu)
    n = batch * steps
    mean, std = channel_stats(images[:n])
    common = dict(device=cpu, mean=mean, std=std, channels_last=nhwc)
    loader = DeviceLoader(images[:n], labels[:n], batch=batch, shuffle=True, **common)
    torch.manual_seed(0)
    model = models.create(name, num_classes=10, in_chans=1, imgsz=images.shape[2])
    model = model.to(memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    opt = build_optimizer("adamw", model, lr=1e-3, weight_decay=0.05)
    state = fit(model, loader, [], optimizer=opt, epochs=1 + rounds, device=cpu, step=StepOptions(amp_dtype=amp))
    step = statistics.median(h["train_seconds"] for h in state.history[1:]) / steps
    val = DeviceLoader(images[-VAL_IMAGES:], labels[-VAL_IMAGES:], batch=batch, **common)
    t0 = time.perf_counter()
    infer(model, val, amp_dtype=amp)
    return step, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(models.list_models()))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", default="benchmarks/results/models_fmnist_timing.csv")
    args = p.parse_args()
    out = Path(args.out)
    done = {r["model"] for r in read_rows(out)}
    ds, _ = load_imageset(resolve("fashion-mnist"))
    amp, _ = resolve_amp("auto", torch.device("cpu"))
    nhwc, _ = resolve_channels_last(None, torch.device("cpu"))
    for name in args.models.split(","):
        if name in done:
            print(f"{name}: already in {out}")
            continue
        step, val = _time_model(name, ds.images, ds.labels, args.batch, args.steps, args.rounds)
        epoch = step * -(-TRAIN_IMAGES // args.batch) + val
        row = {"model": name, "step_seconds": round(step, 4), "val_seconds": round(val, 1),
               "seconds_per_epoch": round(epoch, 1), "steps_timed": args.steps, "rounds": args.rounds,
               "batch": args.batch, "threads": torch.get_num_threads(), "amp": str(amp).replace("torch.", ""),
               "channels_last": nhwc, "when": time.strftime("%Y-%m-%d")}
        append_row(out, FIELDS, row)
        print(f"{name:>14}  {step:7.3f} s/step  val {val:6.1f} s  -> {epoch:8.1f} s/epoch", flush=True)


if __name__ == "__main__":
    main()
