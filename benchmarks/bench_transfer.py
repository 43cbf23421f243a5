"""Does transfer learning pay off, and what does cnnfit's fine-tuning cost next to the textbook way? Two sets.

--set hymenoptera (the default): ImageNet transfer learning on the ant/bee photos of PyTorch's "Transfer Learning
for Computer Vision Tutorial" ($CNNFIT_DATA/hymenoptera_data: train/ and val/ class folders, 245 and 153 photos;
the tutorial's ImageFolder skips the one GIF, so it trains on 244).
Three trainings in one process, on the same model and the same ImageNet weights (efficientnet_lite0 by default):

  cnnfit fine-tune  cnnfit.train(data=..., model=..., init="imagenet") and nothing else: its own recipe (head
                    first, then all layers at a lower backbone LR, photo augmentation, label smoothing, 10 epochs)
  tutorial          the tutorial's fine-tuning, written out here because torchvision is not a dependency: a Dataset
                    that opens each JPEG with PIL every epoch, RandomResizedCrop(224) + flip / Resize(256) +
                    CenterCrop(224), DataLoader(batch_size=4, shuffle=True, num_workers=4), fp32,
                    SGD(lr=1e-3, momentum=0.9), StepLR(7, 0.1), 25 epochs, the best val epoch kept
  cnnfit scratch    the same cnnfit call without init: what the ImageNet weights are worth

    python benchmarks/bench_transfer.py [--model efficientnet_lite0] [--seeds 3] [--tutorial-seeds 1]
                                        [--epochs N] [--tutorial-epochs 25] [--threads N] [--project DIR]
    python benchmarks/bench_transfer.py --epochs 1 --tutorial-epochs 1 --seeds 1   # a smoke run, minutes

The figures: val final / best = accuracy on the 153 val photos after the last epoch / at the best epoch (mean ± std
over seeds); test = cnnfit's metrics.json accuracy, measured on best.pt (hymenoptera has no test split, so test is
the val photos again). "s to final val" = wall seconds from the start of the training (weights loaded, data read)
to its last validation; "s total" adds cnnfit's work after training (test evaluation, plots, report). The headline:
the seconds cnnfit's fine-tune needs to reach the tutorial's best val accuracy (an upper bound: its setup, its
epochs' own seconds up to that epoch, and all of the run's time between epochs, i.e. checkpoint writes), divided by
the tutorial's total seconds; the goal is <= 1/3. cnnfit's fine-tune runs 3 seeds by default, the tutorial and
from scratch 1 each: they are the slow ones. The default run takes about 20 minutes on 2 CPU cores.

Measured (2 CPU cores with bf16, idle, efficientnet_lite0, the decoded images cached):
    method             runs  val final        val best         s total
    cnnfit fine-tune      3  0.9564 ± 0.0038  0.9608 ± 0.0000  94.1 ± 8.8
    tutorial              1  0.9281           0.9608           580.6      (23 s an epoch; its best at epoch 2)
    cnnfit scratch        1  0.4575           0.4575           110.4      (one class for every photo)
cnnfit reached the tutorial's best, 0.9608, at epoch 5, 6 and 2 of its seeds: 32.9 ± 23.9 s, 0.057 of the
tutorial's 580.6 s; its whole run took 0.16 of it.

--set mnist: pretrain resnet18 on Fashion-MNIST, then train on 20 images per class of MNIST twice with the same
budget and recipe: from scratch, and from the pretrained weights (`init=`; the head is replaced since the class names
differ, and everything is fine-tuned). Test accuracy on the whole MNIST test set, mean and std over seeds.

    python benchmarks/bench_transfer.py --set mnist [--pretrain-epochs 3] [--pretrain-fraction 1.0] [--per-class 20]
                                        [--epochs 30] [--lr 3e-3] [--freeze-epochs 0] [--seeds 3]
                                        [--pretrained RUN]   # reuse a pretraining run

Measured (2 CPU cores): resnet18 pretrained on all of Fashion-MNIST for 3 epochs (test 0.9157; the run
bench_models.py --keep keeps), then 3 seeds: scratch 0.7524 +- 0.0098, pretrained 0.8130 +- 0.0026: +6.1 points.
With a quarter of Fashion-MNIST for 2 epochs the gain was +4.9.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

import cnnfit
from cnnfit import models
from cnnfit.data import data_root

HYMENOPTERA = "hymenoptera_data"
# the tutorial's settings (pytorch.org/tutorials/beginner/transfer_learning_tutorial.html)
TUTORIAL_EPOCHS = 25
TUTORIAL_BATCH = 4
TUTORIAL_WORKERS = 4  # DataLoader processes
TUTORIAL_LR, TUTORIAL_MOMENTUM = 1e-3, 0.9  # SGD
TUTORIAL_STEP, TUTORIAL_GAMMA = 7, 0.1  # StepLR: LR x0.1 every 7 epochs
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)  # torchvision RandomResizedCrop's defaults
# the files torchvision's ImageFolder reads: it skips train/ants/imageNotFound.gif, so the tutorial trains on 244
IMAGE_FOLDER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
SAME = 1e-6  # accuracies closer than this are equal: float32 vs float64 of k/153, far below one photo (0.0065)
GOAL = 1 / 3  # cnnfit's time to the tutorial's best accuracy, as a fraction of the tutorial's time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", choices=("hymenoptera", "mnist"), default="hymenoptera")
    p.add_argument("--model", help="default: efficientnet_lite0 (hymenoptera), resnet18 (mnist)")
    p.add_argument("--epochs", type=int, help="cnnfit's epochs; default: its own (10) for hymenoptera, 30 for mnist")
    p.add_argument("--seeds", type=int, default=3, help="seeds of each cnnfit training")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads; default: all")
    g = p.add_argument_group("hymenoptera")
    g.add_argument("--tutorial-epochs", type=int, default=TUTORIAL_EPOCHS)
    g.add_argument("--tutorial-seeds", type=int, default=1, help="the tutorial is the slow one")
    g.add_argument("--scratch-seeds", type=int, default=1, help="from scratch: ~8 min a run at 224 px on 2 cores")
    g.add_argument("--project", help="where cnnfit's runs go; default: a temporary folder, removed at the end")
    g = p.add_argument_group("mnist")
    g.add_argument("--pretrain-epochs", type=int, default=3)
    g.add_argument("--pretrain-fraction", type=float, default=1.0)
    g.add_argument("--per-class", type=int, default=20)
    g.add_argument("--batch", type=int, default=32)
    g.add_argument("--lr", type=float, default=3e-3, help="peak AdamW LR, the same for both")
    g.add_argument("--freeze-epochs", type=int, default=0, help="head-only epochs before full fine-tuning")
    g.add_argument("--backbone-lr-mult", type=float, default=1.0)
    g.add_argument("--pretrained", help="a run directory to start from instead of pretraining again")
    args = p.parse_args()
    torch.set_num_threads(args.threads)  # for every training below, cnnfit's and the tutorial's
    if args.set == "mnist":
        run_mnist(args)
    else:
        run_hymenoptera(args)


# --- mnist: Fashion-MNIST pretraining vs scratch -------------------------------------------------------------------

def run_mnist(args: argparse.Namespace) -> None:
    model, epochs = args.model or "resnet18", args.epochs or 30
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if args.pretrained:
            pretrained = args.pretrained
        else:
            pre = cnnfit.train(data="fashion-mnist", model=model, epochs=args.pretrain_epochs, batch=128,
                               schedule="onecycle", data__fraction=args.pretrain_fraction, project=tmp,
                               name="pretrain")
            pretrained = str(pre.dir)
            print(f"pretrained {model} on {args.pretrain_fraction:g} of fashion-mnist for "
                  f"{args.pretrain_epochs} epochs: test acc {pre.accuracy:.4f} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
        common = dict(data="mnist", model=model, data__per_class=args.per_class, epochs=epochs,
                      batch=args.batch, lr=args.lr, project=tmp)
        scores: dict[str, list[float]] = {"scratch": [], "pretrained": []}
        for seed in range(args.seeds):
            scratch = cnnfit.train(seed=seed, name="scratch", **common)
            tuned = cnnfit.train(seed=seed, name="tuned", model__init=pretrained,
                                 finetune__freeze_epochs=args.freeze_epochs,
                                 finetune__backbone_lr_mult=args.backbone_lr_mult, **common)
            scores["scratch"].append(scratch.accuracy)
            scores["pretrained"].append(tuned.accuracy)
            print(f"seed {seed}: scratch {scratch.accuracy:.4f}  pretrained {tuned.accuracy:.4f}", flush=True)
    mean = {k: statistics.mean(v) for k, v in scores.items()}
    std = {k: statistics.stdev(v) if len(v) > 1 else 0.0 for k, v in scores.items()}
    print(f"\nMNIST, {args.per_class} training images per class, {epochs} epochs, {args.seeds} seeds")
    for k in scores:
        print(f"  {k:<10} {mean[k]:.4f} ± {std[k]:.4f}")
    print(f"  gain       {100 * (mean['pretrained'] - mean['scratch']):+.1f} points")


# --- hymenoptera: the tutorial's way, written out --------------------------------------------------------------------

def _random_resized_crop(w: int, h: int) -> tuple[int, int, int, int]:
    """(left, top, width, height) as torchvision's RandomResizedCrop draws it: up to 10 tries at an area of
    CROP_SCALE of the image and a log-uniform aspect ratio in CROP_RATIO, else the centre at the nearest ratio."""
    area, log_lo, log_hi = w * h, math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(10):
        target = area * torch.empty(1).uniform_(*CROP_SCALE).item()
        aspect = math.exp(torch.empty(1).uniform_(log_lo, log_hi).item())
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,)))
            left = int(torch.randint(0, w - cw + 1, (1,)))
            return left, top, cw, ch
    cw, ch = w, h
    if w / h < CROP_RATIO[0]:
        ch = round(w / CROP_RATIO[0])
    elif w / h > CROP_RATIO[1]:
        cw = round(h * CROP_RATIO[1])
    return (w - cw) // 2, (h - ch) // 2, cw, ch


class TutorialPhotos(torch.utils.data.Dataset):
    """ImageFolder with the tutorial's transforms, in PIL: one photo opened, decoded and transformed per item."""

    def __init__(self, folder: Path, train: bool, meta: dict[str, Any]) -> None:
        self.classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
        self.samples = [(f, i) for i, c in enumerate(self.classes) for f in sorted((folder / c).rglob("*"))
                        if f.suffix.lower() in IMAGE_FOLDER_EXTENSIONS]
        self.train, self.size = train, meta["imgsz"]  # 224 for efficientnet_lite0 and the tutorial's resnet18
        self.resize = round(meta["imgsz"] / meta["crop_pct"])  # 256 at 224: the tutorial's Resize(256)
        self.resample = RESAMPLE[meta["interpolation"]]  # the tutorial's bilinear; the Lite weights saw bicubic
        # the weights' own mean/std (0..1 units): the tutorial's ImageNet mean/std are what its resnet18 was
        # trained with; efficientnet_lite0 was trained on (x - 127) / 128 of 0..255 pixels
        self.mean = torch.tensor(meta["mean"]).view(3, 1, 1)
        self.std = torch.tensor(meta["std"]).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        w, h = img.size
        if self.train:  # RandomResizedCrop(size), RandomHorizontalFlip()
            left, top, cw, ch = _random_resized_crop(w, h)
            img = img.crop((left, top, left + cw, top + ch)).resize((self.size, self.size), self.resample)
            if torch.rand(1).item() < 0.5:
                img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        else:  # Resize(resize) of the shorter side, CenterCrop(size)
            scale = self.resize / min(w, h)
            w, h = (self.resize, int(h * scale)) if w <= h else (int(w * scale), self.resize)
            img = img.resize((w, h), self.resample)
            left, top = round((w - self.size) / 2), round((h - self.size) / 2)
            img = img.crop((left, top, left + self.size, top + self.size))
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255  # (3, size, size), ToTensor
        return (x - self.mean) / self.std, label


def run_tutorial(root: Path, model_name: str, epochs: int, seed: int) -> dict[str, Any]:
    """The tutorial's fine-tuning of every layer, timed from loading the weights to the last validation."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    state_dict, meta = models.imagenet_weights(model_name)
    model = models.create(model_name, num_classes=1000, imgsz=meta["imgsz"])
    model.load_state_dict(state_dict)
    data = {phase: TutorialPhotos(root / phase, phase == "train", meta) for phase in ("train", "val")}
    model.head = nn.Linear(model.head.in_features, len(data["train"].classes))  # the tutorial replaces resnet's fc
    loaders = {phase: torch.utils.data.DataLoader(d, batch_size=TUTORIAL_BATCH, shuffle=True,
                                                  num_workers=TUTORIAL_WORKERS) for phase, d in data.items()}
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=TUTORIAL_LR, momentum=TUTORIAL_MOMENTUM)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=TUTORIAL_STEP, gamma=TUTORIAL_GAMMA)
    best_acc, best_weights = 0.0, copy.deepcopy(model.state_dict())
    history = []
    for epoch in range(epochs):
        for phase in ("train", "val"):
            model.train(phase == "train")
            correct = 0
            for x, y in loaders[phase]:
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    out = model(x)
                    out = out[0] if isinstance(out, tuple) else out  # (B, classes); auxiliary heads left out
                    loss = criterion(out, y)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                correct += int((out.argmax(1) == y).sum())
            if phase == "train":
                scheduler.step()
        acc = correct / len(data["val"])
        if acc > best_acc:
            best_acc, best_weights = acc, copy.deepcopy(model.state_dict())
        history.append({"epoch": epoch + 1, "val_acc": acc, "elapsed": time.perf_counter() - t0})
    model.load_state_dict(best_weights)
    seconds = time.perf_counter() - t0
    return {"val": [h["val_acc"] for h in history], "elapsed": [h["elapsed"] for h in history],
            "to_final": seconds, "total": seconds, "images": {k: len(d) for k, d in data.items()}}


# --- hymenoptera: cnnfit, and the table --------------------------------------------------------------------------

def run_cnnfit(root: Path, model_name: str, project: str, name: str, seed: int, epochs: int | None,
               imagenet: bool) -> dict[str, Any]:
    """One cnnfit.train call, timed around the call; the per-epoch clock from its history and metrics.json timings."""
    kwargs: dict[str, Any] = dict(data=str(root), model=model_name, project=project, name=name, seed=seed)
    if imagenet:
        kwargs["init"] = "imagenet"
    if epochs is not None:
        kwargs["epochs"] = epochs
    t0 = time.perf_counter()
    run = cnnfit.train(**kwargs)
    total = time.perf_counter() - t0
    t = run.timings
    epoch_seconds = [h["seconds"] for h in run.history]
    between = max(t["train_seconds"] - sum(epoch_seconds), 0.0)  # callbacks: checkpoints, history, unfreezing
    # reaching epoch k: setup, the epochs' own seconds to k, and all of the run's between-epoch time (upper bound)
    elapsed = [t["setup_seconds"] + between + s for s in np.cumsum(epoch_seconds).tolist()]
    to_final = t["setup_seconds"] + t["train_seconds"]
    return {"val": [h["val_acc"] for h in run.history], "elapsed": elapsed, "to_final": to_final, "total": total,
            "test": run.accuracy, "setup": t["setup_seconds"], "after": total - to_final,
            "cache_hit": t.get("cache_hit"), "dir": run.dir}


def _pm(values: list[float], fmt: str) -> str:
    """mean ± std over seeds; the value alone for one seed."""
    mean = format(statistics.mean(values), fmt)
    return mean if len(values) < 2 else f"{mean} ± {format(statistics.stdev(values), fmt)}"


def _show_run(label: str, seed: int, r: dict[str, Any]) -> None:
    extra = f", test {r['test']:.4f}, cache hit {r['cache_hit']}" if "test" in r else ""
    print(f"{label} seed {seed}: val acc by epoch {' '.join(f'{a:.3f}' for a in r['val'])}; "
          f"reached at {' '.join(f'{s:.0f}' for s in r['elapsed'])} s; to final val {r['to_final']:.1f} s, "
          f"total {r['total']:.1f} s{extra}", flush=True)


def _table(results: dict[str, list[dict[str, Any]]]) -> None:
    print(f"\n{'method':<18} {'runs':>4}  {'val final':<16} {'val best':<16} {'test (best.pt)':<16} "
          f"{'s to final val':<16} {'s total':<14}")
    for label, runs in results.items():
        if not runs:
            continue
        test = _pm([r["test"] for r in runs], ".4f") if "test" in runs[0] else "-"
        print(f"{label:<18} {len(runs):>4}  {_pm([r['val'][-1] for r in runs], '.4f'):<16} "
              f"{_pm([max(r['val']) for r in runs], '.4f'):<16} {test:<16} "
              f"{_pm([r['to_final'] for r in runs], '.1f'):<16} {_pm([r['total'] for r in runs], '.1f'):<14}")
    base = statistics.mean(r["total"] for r in results["tutorial"]) if results["tutorial"] else math.nan
    for label, runs in results.items():
        if runs and label != "tutorial":
            ratio = statistics.mean(r["total"] for r in runs) / base
            print(f"  {label}: total / tutorial's total = {ratio:.3f}; setup {_pm([r['setup'] for r in runs], '.1f')}"
                  f" s; after training (test evaluation, plots, report) {_pm([r['after'] for r in runs], '.1f')} s")


def _headline(tuned: list[dict[str, Any]], tutorial: list[dict[str, Any]]) -> None:
    target = statistics.mean(max(r["val"]) for r in tutorial)
    base = statistics.mean(r["total"] for r in tutorial)
    reached = [next((s for a, s in zip(r["val"], r["elapsed"]) if a >= target - SAME), None) for r in tuned]
    epochs = [next((i + 1 for i, a in enumerate(r["val"]) if a >= target - SAME), None) for r in tuned]
    print(f"\nheadline: the tutorial's best val acc {target:.4f} in {base:.1f} s (its total)")
    print("  cnnfit fine-tune reached it at epoch " + ", ".join(str(e) if e else "never" for e in epochs)
          + " (one per seed); its time there is an upper bound: setup + the epochs' own seconds up to that epoch"
          " + all of the run's between-epoch time")
    if any(s is None for s in reached):
        print(f"  {sum(s is None for s in reached)} of {len(reached)} seeds never reached it: <= 1/3: no")
        return
    ratio = statistics.mean(reached) / base
    print(f"  {_pm(reached, '.1f')} s / {base:.1f} s = {ratio:.3f}  <= 1/3: {'yes' if ratio <= GOAL else 'no'}")


def run_hymenoptera(args: argparse.Namespace) -> None:
    root = data_root() / HYMENOPTERA
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        print(f"{root} not found: put the ants/bees photos (train/ and val/ class folders) there, or point "
              f"CNNFIT_DATA at the folder that holds {HYMENOPTERA}/", file=sys.stderr)
        sys.exit(2)
    model = args.model or "efficientnet_lite0"
    meta = models.imagenet_weights(model)[1]
    print(f"{root}: {model}, ImageNet weights {meta['source']} (top-1 {meta['top1']:g}%), {args.threads} threads; "
          f"cnnfit {args.seeds} seeds x {args.epochs or 'its default'} epochs, tutorial {args.tutorial_seeds} "
          f"seeds x {args.tutorial_epochs} epochs", flush=True)
    results: dict[str, list[dict[str, Any]]] = {"cnnfit fine-tune": [], "tutorial": [], "cnnfit scratch": []}
    with tempfile.TemporaryDirectory() as tmp:
        project = args.project or tmp
        for seed in range(max(args.seeds, args.tutorial_seeds, args.scratch_seeds)):  # interleaved: a busy spell
            # hits every method
            if seed < args.seeds:
                results["cnnfit fine-tune"].append(
                    run_cnnfit(root, model, project, "finetune", seed, args.epochs, imagenet=True))
                _show_run("cnnfit fine-tune", seed, results["cnnfit fine-tune"][-1])
            if seed < args.tutorial_seeds:
                results["tutorial"].append(run_tutorial(root, model, args.tutorial_epochs, seed))
                _show_run("tutorial", seed, results["tutorial"][-1])
            if seed < args.scratch_seeds:
                results["cnnfit scratch"].append(
                    run_cnnfit(root, model, project, "scratch", seed, args.epochs, imagenet=False))
                _show_run("cnnfit scratch", seed, results["cnnfit scratch"][-1])
    images = results["tutorial"][0]["images"] if results["tutorial"] else {}
    print(f"\nhymenoptera, {model}; the tutorial read {images.get('train')} train / {images.get('val')} val photos "
          "(torchvision's ImageFolder extensions)")
    _table(results)
    if results["cnnfit fine-tune"] and results["tutorial"]:
        _headline(results["cnnfit fine-tune"], results["tutorial"])


if __name__ == "__main__":
    main()
