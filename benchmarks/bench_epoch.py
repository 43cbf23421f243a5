"""Seconds per training epoch, three ways, in one run, on the same data, model, batch and augmentation:

  cnnfit     cnnfit's DeviceLoader + engine.fit with the callbacks `cnnfit train` uses, its measured defaults
  raw        a minimal hand-written PyTorch loop over preloaded tensors, with cnnfit's settings
             (same amp / channels_last / fused optimizer), so only the framework overhead differs
  tutorial   the tutorial way: a Dataset returning one augmented sample, a DataLoader, fp32 NCHW,
             torch's default Adam

Data: Fashion-MNIST from the data root (CNNFIT_DATA), else a generated 10-class set.

    python benchmarks/bench_epoch.py [--epochs 3] [--batch 64] [--only cnnfit,raw,tutorial]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


from cnnfit import models
from cnnfit.data import DeviceLoader, augment, resolve, split_indices
from cnnfit.data.cache import load_imageset
from cnnfit.data.loader import channel_stats
from cnnfit.device import resolve_amp, resolve_channels_last
from cnnfit.engine import StepOptions, build_optimizer, fit, make_schedule
from cnnfit.engine.callbacks import Callback, Checkpointing, History, LRSchedule, ProgressBar
from cnnfit.errors import CnnfitError

SHIFT = 0.1  # fraction of the side: 3 px at 28 px
LR = 1e-3  # Adam, cosine decay to zero over the run, the same for all three


def load_data():
    """The ImageSet, its split (the one cnnfit.train makes for the same spec and seed) and the spec."""
    try:
        spec = "fashion-mnist"
        ref = resolve(spec)
    except CnnfitError:
        rng = np.random.default_rng(0)
        templates = rng.integers(0, 256, (10, 1, 28, 28))
        labels = rng.integers(0, 10, 14000)
        images = np.clip(templates[labels] * 0.6 + rng.normal(0, 60, (14000, 1, 28, 28)), 0, 255).astype(np.uint8)
        spec = str(Path(tempfile.mkdtemp()) / "generated.npz")
        np.savez(spec, x_train=images[:12000], y_train=labels[:12000], x_test=images[12000:], y_test=labels[12000:])
        ref = resolve(spec)
    ds, _ = load_imageset(ref)
    parts, _ = split_indices(ds, 0.15, 0.15, seed=0)
    return ds, parts["train"], parts["val"], parts["test"], spec


def _autocast(dtype):
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def evaluate(model, x, y, mean, std, memory_format):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 500):
            xb = ((x[i:i + 500].float() / 255 - mean) / std).contiguous(memory_format=memory_format)
            correct += (model(xb).argmax(1) == y[i:i + 500]).sum().item()
    model.train()
    return correct / len(x)


def cosine_lambda(total: int):
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(step / total, 1.0)))


def raw_loop(ds, train_idx, args, amp_dtype, channels_last, out):
    """What a careful user writes by hand: tensors preloaded, batched augmentation, no framework.
    A generator: it runs one epoch per next() so the three ways interleave and share the machine's noise."""
    torch.manual_seed(0)
    x = torch.from_numpy(np.asarray(ds.images[train_idx]))
    y = torch.from_numpy(ds.labels[train_idx])
    mean, std = channel_stats(ds.images[train_idx])
    mean, std = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = models.create("simplecnn", num_classes=10, in_chans=1).to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(args.epochs * math.ceil(len(x) / args.batch)))
    pad = round(SHIFT * 28)
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(x))
        for i in range(0, len(x), args.batch):
            idx = order[i:i + args.batch]
            xb, yb = x[idx].float() / 255, y[idx]
            b = len(xb)
            flip = torch.rand(b, 1, 1, 1) < 0.5
            xb = torch.where(flip, xb.flip(-1), xb)
            padded = F.pad(xb, (pad, pad, pad, pad))
            rows = torch.arange(28) + torch.randint(0, 2 * pad + 1, (b, 1))
            cols = torch.arange(28) + torch.randint(0, 2 * pad + 1, (b, 1))
            xb = padded.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
            xb = ((xb.permute(0, 3, 1, 2) - mean) / std).contiguous(memory_format=fmt)
            with _autocast(amp_dtype):
                loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
        out["times"].append(time.perf_counter() - t0)
        yield
    out["model"], out["mean"], out["std"], out["fmt"] = model, mean, std, fmt


class TutorialDataset(torch.utils.data.Dataset):
    """One sample at a time, transforms in Python, as the tutorials write it."""

    def __init__(self, images, labels, mean, std):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = torch.from_numpy(np.asarray(self.images[i], dtype=np.float32) / 255)  # (C, H, W)
        if torch.rand(()) < 0.5:
            x = x.flip(-1)
        pad = round(SHIFT * x.shape[-1])
        x = F.pad(x, (pad, pad, pad, pad))
        dy, dx = torch.randint(0, 2 * pad + 1, (2,)).tolist()
        x = x[:, dy:dy + 28, dx:dx + 28]
        return (x - self.mean) / self.std, int(self.labels[i])


def tutorial_loop(ds, train_idx, args, out):
    torch.manual_seed(0)
    mean, std = channel_stats(ds.images[train_idx])
    mean_t, std_t = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    data = TutorialDataset(np.asarray(ds.images[train_idx]), ds.labels[train_idx], mean_t, std_t)
    loader = torch.utils.data.DataLoader(data, batch_size=args.batch, shuffle=True)
    model = models.create("simplecnn", num_classes=10, in_chans=1)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(args.epochs * len(loader)))
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        out["times"].append(time.perf_counter() - t0)
        yield
    out["model"], out["mean"], out["std"], out["fmt"] = model, mean_t[None], std_t[None], torch.contiguous_format


class Interleave(Callback):
    """After each cnnfit epoch, one epoch of every other way: slow phases of a shared machine hit all."""

    def __init__(self, others) -> None:
        self.others = others

    def on_epoch_end(self, state) -> None:
        for gen in self.others:
            next(gen, None)

    def on_fit_end(self, state) -> None:
        for gen in self.others:
            for _ in gen:
                pass


def run_all(ds, parts, args, amp_dtype, channels_last, ways):
    """cnnfit: its DeviceLoader, engine.fit and the callbacks `cnnfit train` uses, with the same recipe."""
    results = {w: {"times": []} for w in ways}
    others = []
    if "raw" in ways:
        others.append(raw_loop(ds, parts["train"], args, amp_dtype, channels_last, results["raw"]))
    if "tutorial" in ways:
        others.append(tutorial_loop(ds, parts["train"], args, results["tutorial"]))
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = models.create("simplecnn", num_classes=10, in_chans=1).to(memory_format=fmt)
    mean, std = channel_stats(ds.images[parts["train"]])
    common = dict(batch=args.batch, device=torch.device("cpu"), mean=mean, std=std, channels_last=channels_last)
    train = DeviceLoader(ds.images[parts["train"]], ds.labels[parts["train"]], shuffle=True,
                         augment=augment.build(hflip=True, shift=SHIFT), **common)
    val = DeviceLoader(ds.images[parts["val"]], ds.labels[parts["val"]], **common)
    opt = build_optimizer("adam", model, lr=LR, weight_decay=0.0)
    with tempfile.TemporaryDirectory() as run_dir:
        callbacks = [LRSchedule(make_schedule("cosine", total=args.epochs * len(train))),
                     Checkpointing(Path(run_dir), {"model": "simplecnn"}), History(Path(run_dir) / "history.csv"),
                     ProgressBar()]
        if "cnnfit" in ways:
            state = fit(model, train, val, optimizer=opt, epochs=args.epochs, device=torch.device("cpu"),
                        callbacks=callbacks + [Interleave(others)], step=StepOptions(amp_dtype=amp_dtype))
            results["cnnfit"].update(times=[h["train_seconds"] for h in state.history], model=model,
                                     mean=torch.tensor(mean).view(1, -1, 1, 1), std=torch.tensor(std).view(1, -1, 1, 1),
                                     fmt=fmt)
        else:
            Interleave(others).on_fit_end(None)
    xt, yt = torch.from_numpy(np.asarray(ds.images[parts["test"]])), torch.from_numpy(ds.labels[parts["test"]])
    return {w: (r["times"], evaluate(r["model"], xt, yt, r["mean"], r["std"], r["fmt"])) for w, r in results.items()}


def warm_up(amp_dtype, channels_last, batch) -> None:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for dtype, layout in ((amp_dtype, fmt), (None, torch.contiguous_format)):
        model = models.create("simplecnn", num_classes=10, in_chans=1).to(memory_format=layout)
        x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=layout)
        for _ in range(10):
            with _autocast(dtype):
                F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long)).backward()


def steady(times: list[float]) -> float:
    """Median epoch time, leaving out the first epoch when there are three or more."""
    return statistics.median(times[1:] if len(times) >= 3 else times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--only", default="cnnfit,raw,tutorial")
    args = p.parse_args()
    ds, train_idx, val_idx, test_idx, spec = load_data()
    amp_dtype, _ = resolve_amp("auto", torch.device("cpu"))
    channels_last, _ = resolve_channels_last(None, torch.device("cpu"))
    print(f"data: {spec}, {len(train_idx)} train / {len(test_idx)} test images; simplecnn, batch {args.batch}, "
          f"{args.epochs} epochs, Adam lr {LR} cosine, hflip + shift {SHIFT}; {torch.get_num_threads()} threads; "
          f"cnnfit settings: amp {amp_dtype}, channels_last {channels_last}, fused Adam")
    warm_up(amp_dtype, channels_last, args.batch)  # one-time kernel set-up must not favour whoever runs second
    ways = args.only.split(",")
    results = run_all(ds, {"train": train_idx, "val": val_idx, "test": test_idx}, args, amp_dtype, channels_last,
                      ways)
    for way in ways:
        times, acc = results[way]
        print(f"{way:>9}: epochs {' '.join(f'{t:.1f}' for t in times)} s  steady {steady(times):.1f} s/epoch  "
              f"test acc {acc:.4f}", flush=True)
    mean = {k: steady(v[0]) for k, v in results.items()}
    if {"cnnfit", "raw"} <= mean.keys():
        print(f"cnnfit / raw      = {mean['cnnfit'] / mean['raw']:.3f}  (goal <= 1.10)")
    if {"cnnfit", "tutorial"} <= mean.keys():
        print(f"tutorial / cnnfit = {mean['tutorial'] / mean['cnnfit']:.2f}x faster (goal >= 1.5)")
        print(f"accuracy cnnfit - tutorial = {100 * (results['cnnfit'][1] - results['tutorial'][1]):+.2f} points "
              "(goal within 0.5)")
    print(json.dumps({"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
                      "sec_per_epoch": mean, "test_acc": {k: v[1] for k, v in results.items()}}))


if __name__ == "__main__":
    main()
