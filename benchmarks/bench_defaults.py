"""Is a default run as good as what a careful user would try? For each dataset, cnnfit's default (only `data=`, the
dataset's size limits and the time budget) against a grid of the configurations a careful user would try, every run
with the same time budget (`time=`, minutes: the run ends cleanly when spent), back to back in one process.

    python benchmarks/bench_defaults.py [--datasets digits,fashion-mnist,cifar10,hymenoptera] [--seeds 1]
                                        [--minutes M] [--threads N] [--project DIR]
    python benchmarks/bench_defaults.py --datasets digits --minutes 0.05   # a smoke run, about 35 s

The grid: model x augmentation x peak LR (AdamW, cnnfit's default optimizer):
  models        simplecnn; resnet20 at 32 px and smaller, else resnet18 (both init=none); for photos also
                efficientnet_lite0 with init=imagenet ("lite0 imagenet recipe": its batch, label smoothing and
                head-first phase, filled where unset)
  augmentation  none (aug=none); light: aug.shift=0.1 aug.rotation=10 for glyphs (digits, fashion-mnist),
                aug.hflip=true aug.shift=0.1 for photos (cifar10, hymenoptera), and nothing else
  lr            1e-3 (cnnfit's AdamW default), 3e-3
Every grid run gets epochs=200 so that the time budget, not the epochs, ends it; with a time budget the LR schedule
runs over the budget (whichever of epochs and budget ends first), so every run, the default's included, ends its
decay. "before" is cnnfit's one fixed recipe from before the defaults read the data: simplecnn, no augmentation,
10 epochs, no early stopping (imgsz: the images' own, 64 px when mixed).

Datasets, under cnnfit.data.data_root() ($CNNFIT_DATA) except digits (scikit-learn's, 8x8 grayscale):
  digits         data="digits"                                                     0.25 min a run
  fashion-mnist  fashion-mnist/, 500 per class in train and val (5,000 training)   1 min
  cifar10        cifar10-jpeg/cifar10-jpeg.zip at 32 px, 500 per class             1.5 min
  hymenoptera    hymenoptera_data/ (its own train/val; test is val there)          1.5 min
A missing folder is named in one line and its dataset skipped. Test accuracy is run.metrics["accuracy"] on the
whole test split; "s" is the wall seconds of cnnfit.train, data preparation and test evaluation included; with
--seeds N each configuration runs seeds 0..N-1 and shows mean ± std (5 seeds where the spread needs it).
The default's rank counts the configurations strictly better than it (1 = best, ties share a rank). The first run of
a dataset (the default) also pays for decoding and caching it in its seconds, not in its accuracy: the budget starts
at the first training step.

Measured with the defaults that read the data (2 CPU cores, seed 0; `python benchmarks/bench_defaults.py`, about
75 minutes; one seed is noisy: on digits one test image is 0.37 points, on hymenoptera 0.65, and a time-budgeted
run is not bit-reproducible, since where the budget cuts depends on the machine's speed). "default" on digits and
fashion-mnist is the run after the glyph augmentation was settled at 5% shifts and 5 degrees (with 10% and 10
degrees, the first measurement: 0.9814 and 0.8578); no grid row depends on it, since each sets its augmentation.
    digits (0.25 min)                      acc  rank     fashion-mnist (1 min)                  acc  rank
    default                             0.9777     4     default                             0.8902     1
    before                              0.9703     6     before                              0.8845     4
    simplecnn none lr 0.001             0.9628     8     simplecnn none lr 0.001             0.8879     2
    simplecnn none lr 0.003             0.9814     2     simplecnn none lr 0.003             0.8840     5
    simplecnn light lr 0.001            0.9851     1     simplecnn light lr 0.001            0.8591     7
    simplecnn light lr 0.003            0.9628     8     simplecnn light lr 0.003            0.8579     9
    resnet20 none lr 0.001              0.9703     6     resnet20 none lr 0.001              0.8580     8
    resnet20 none lr 0.003              0.9628     8     resnet20 none lr 0.003              0.8859     3
    resnet20 light lr 0.001             0.9740     5     resnet20 light lr 0.001             0.8467    10
    resnet20 light lr 0.003             0.9814     2     resnet20 light lr 0.003             0.8705     6

    cifar10 (1.5 min)                      acc  rank     hymenoptera (1.5 min)                  acc  rank
    default                             0.6716     1     default                             0.9542     1
    before                              0.5953    10     before                              0.7255     6
    simplecnn none lr 0.001             0.6093     9     simplecnn none lr 0.001             0.6863     7
    simplecnn none lr 0.003             0.4825    14     simplecnn none lr 0.003             0.5425    13
    simplecnn light lr 0.001            0.6301     4     simplecnn light lr 0.001            0.6732     9
    simplecnn light lr 0.003            0.5000    13     simplecnn light lr 0.003            0.5425    13
    resnet20 none lr 0.001              0.5476    12     resnet18 none lr 0.001              0.6667    10
    resnet20 none lr 0.003              0.6106     8     resnet18 none lr 0.003              0.6667    10
    resnet20 light lr 0.001             0.5909    11     resnet18 light lr 0.001             0.6797     8
    resnet20 light lr 0.003             0.6138     7     resnet18 light lr 0.003             0.6667    10
    lite0 imagenet recipe none lr 0.001 0.6436     2     lite0 imagenet recipe none lr 0.001 0.9477     3
    lite0 imagenet recipe none lr 0.003 0.6379     3     lite0 imagenet recipe none lr 0.003 0.9542     1
    lite0 imagenet recipe light lr 0.001 0.6219    5     lite0 imagenet recipe light lr 0.001 0.9477    3
    lite0 imagenet recipe light lr 0.003 0.6160    6     lite0 imagenet recipe light lr 0.003 0.9477    3
The default against the grid's best: digits -0.7 points (two test images), fashion-mnist +0.2, cifar10 +2.8,
hymenoptera 0.0; against the defaults before: +0.7, +0.6, +7.6 and +22.9 points. The defaults the data chose:
digits and fashion-mnist simplecnn with shifts and rotations; cifar10 (32 px colour) fastnet with flips and 4 px
shifts; hymenoptera (photos) efficientnet_lite0 from ImageNet with its fine-tuning recipe and photo augmentation.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import cnnfit
from cnnfit.data import data_root

GRID_EPOCHS = 200  # far more than any budget below allows: the time budget ends every grid run
LRS = (1e-3, 3e-3)  # AdamW's default peak LR in cnnfit, and 3x it
SAME = 1e-9  # accuracies closer than this share a rank: k/n in float64 vs float32, far below one test image
LIGHT_GLYPHS = {"aug.shift": 0.1, "aug.rotation": 10}  # a glyph is not mirror-symmetric: no flips
LIGHT_PHOTOS = {"aug.hflip": True, "aug.shift": 0.1}  # a mirrored photo shows the same class
# cnnfit's defaults before they read the data: one fixed recipe for every dataset (imgsz stays the images' own, or
# 64 px for mixed sizes, as it was)
BEFORE = {"model": "simplecnn", "init": "none", "aug": "none", "epochs": 10, "patience": 0}


@dataclass(frozen=True)
class Dataset:
    name: str
    source: Callable[[Path], Path | None]  # data root -> the path to pass as data= (None: no root needed)
    minutes: float  # time budget of each run
    limits: dict[str, Any] = field(default_factory=dict)  # size limits, the same for the default and the grid
    photos: bool = False  # adds lite0 and the photo augmentation
    small: bool = True  # 32 px or less: resnet20 (CIFAR's ResNet) instead of resnet18's ImageNet stem


DATASETS = {d.name: d for d in (
    Dataset("digits", lambda root: None, 0.25),
    Dataset("fashion-mnist", lambda root: root / "fashion-mnist", 1.0, {"data.per_class": 500}),
    Dataset("cifar10", lambda root: root / "cifar10-jpeg" / "cifar10-jpeg.zip", 1.5,
            {"imgsz": 32, "data.per_class": 500}, photos=True),
    Dataset("hymenoptera", lambda root: root / "hymenoptera_data", 1.5, photos=True, small=False),
)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated; default: all four")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 for every configuration")
    p.add_argument("--minutes", type=float, help="time budget of every run; default: per dataset (see above)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads; default: all")
    p.add_argument("--project", help="where cnnfit's runs go; default: a temporary folder, removed at the end")
    args = p.parse_args()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        p.error(f"unknown dataset {', '.join(unknown)}; choose from: {', '.join(DATASETS)}")
    torch.set_num_threads(args.threads)  # the same threads for the default and every grid run
    with tempfile.TemporaryDirectory() as tmp:
        project = args.project or tmp
        for name in names:
            ds = DATASETS[name]
            data = _data(ds)
            if data is None:
                continue
            minutes = args.minutes or ds.minutes
            results = {label: _runs(ds, data, label, over, minutes, args.seeds, project)
                       for label, over in configurations(ds)}
            report(ds, results, minutes, args.seeds)


def _data(ds: Dataset) -> str | None:
    """The data= of a dataset, or None (with one line saying where to put it) when its folder is missing."""
    root = data_root()
    path = ds.source(root)
    if path is None:
        return ds.name
    if not path.exists():
        print(f"{ds.name}: skipped, {path} not found; put it there or point CNNFIT_DATA at the datasets folder",
              flush=True)
        return None
    return str(path)


def configurations(ds: Dataset) -> list[tuple[str, dict[str, Any]]]:
    """(label, overrides) of the default, of the defaults before they read the data, then the grid: models x
    augmentation x lr. Every grid run sets its augmentation whole (aug=none under it) and its weights (init), so
    no default the data would choose enters it."""
    small = "resnet20" if ds.small else "resnet18"
    models: list[tuple[str, dict[str, Any]]] = [("simplecnn", {"model": "simplecnn", "init": "none"}),
                                                 (small, {"model": small, "init": "none"})]
    if ds.photos:
        models.append(("lite0 imagenet recipe", {"model": "efficientnet_lite0", "init": "imagenet"}))
    light = LIGHT_PHOTOS if ds.photos else LIGHT_GLYPHS
    grid = [(f"{model} {aug} lr {lr:g}", {**over, "aug": "none", **augs, "lr": lr, "epochs": GRID_EPOCHS})
            for model, over in models for aug, augs in (("none", {}), ("light", light)) for lr in LRS]
    return [("default", {}), ("before", BEFORE), *grid]


@dataclass(frozen=True)
class Result:
    accuracy: float  # test split
    seconds: float  # wall seconds of cnnfit.train
    epochs: int  # epochs run (a partial last one counts)


def _runs(ds: Dataset, data: str, label: str, overrides: dict[str, Any], minutes: float, seeds: int,
          project: str) -> list[Result]:
    """One configuration over seeds 0..seeds-1, each run printed as it ends."""
    out = []
    for seed in range(seeds):
        name = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{ds.name}-{label}-s{seed}")
        t0 = time.perf_counter()
        run = cnnfit.train(data=data, time=minutes, seed=seed, project=project, name=name,
                           **{"eval.report": False}, **ds.limits, **overrides)
        r = Result(run.metrics["accuracy"], time.perf_counter() - t0, len(run.history))
        out.append(r)
        print(f"  {ds.name:<13} {label:<38} seed {seed}  acc {r.accuracy:.4f}  {r.seconds:6.1f} s  "
              f"{r.epochs} epochs", flush=True)
    return out


def _mean_std(values: list[float], digits: int) -> str:
    text = f"{statistics.mean(values):.{digits}f}"
    return text + (f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else "")


def report(ds: Dataset, results: dict[str, list[Result]], minutes: float, seeds: int) -> None:
    """Every configuration side by side with the default: accuracy, seconds, epochs, rank, gap to the best."""
    mean = {label: statistics.mean(r.accuracy for r in rs) for label, rs in results.items()}
    rank = {label: 1 + sum(other > acc + SAME for other in mean.values()) for label, acc in mean.items()}
    best = max((label for label in mean if label not in ("default", "before")), key=mean.__getitem__)  # the grid's
    print(f"\n{ds.name}: {minutes:g} min a run, grid epochs={GRID_EPOCHS}, {seeds} seed{'s' * (seeds > 1)} each, "
          f"{torch.get_num_threads()} threads")
    width = 16 if seeds > 1 else 7
    print(f"  {'configuration':<38} {'acc':>{width}} {'s':>{width - 1}}  epochs  rank")
    for label, rs in results.items():
        acc = _mean_std([r.accuracy for r in rs], 4)
        secs = _mean_std([r.seconds for r in rs], 1)
        epochs = statistics.mean(r.epochs for r in rs)
        print(f"  {label:<38} {acc:>{width}} {secs:>{width - 1}}  {epochs:6.1f}  {rank[label]:>4}")
    gap = 100 * (mean[best] - mean["default"])  # points; negative: the default beats every grid configuration
    gain = 100 * (mean["default"] - mean["before"])
    print(f"default: rank {rank['default']} of {len(results)}, {gap:+.1f} points to the grid's best ({best}), "
          f"{gain:+.1f} points over the defaults before\n", flush=True)


if __name__ == "__main__":
    main()
