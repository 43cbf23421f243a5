"""Three PyTorch baselines for bench_tta.py, one training run per process, one JSON line on stdout at the end:
{"accuracy", "import", "data", "train", "eval", "epoch_seconds", "train_images", ...} (seconds).

  --mode raw       the best hand-written script for the target: every image preloaded as a uint8 tensor,
                   batched augmentation on tensors (flip by mask, shift by pad + gather, erasing by box masks),
                   fused AdamW, OneCycleLR, label smoothing, bf16 autocast + channels_last where the CPU has
                   native bf16, EMA and test-time views as the recipe says
  --mode loader    the recipe (model, optimizer, schedule, augmentation) through a Dataset returning one sample
                   with per-sample transforms, DataLoader(batch_size, shuffle=True) with num_workers=0, fp32 NCHW:
                   what the data path alone costs
  --mode tutorial  the PyTorch MNIST example as it is written (pytorch/examples mnist/main.py): its two-conv CNN
                   (cnnfit's simplecnn with hidden=128), per-sample ToTensor + Normalize, batch 64, Adadelta at
                   lr 1.0 with StepLR(gamma 0.7) per epoch, fp32, the test set scored after every epoch. It stops
                   at the first epoch that reaches spec["target"] (a user would not know when to stop: this favours
                   it), after 14 epochs (the example's default), or at spec["cap_s"] seconds, and says which

raw and loader build the recipe's model with cnnfit.models.create, so the architecture is the one cnnfit trains;
importing cnnfit.models costs what defining the model here would (torch and the model classes, not cnnfit's pipeline).
All read the official idx files from CNNFIT_DATA/<data>/ with numpy. The spec comes from bench_tta.py:

    python benchmarks/tta_torch.py --mode raw --spec '{"data": "fashion-mnist", "model": "fastnet", ...}'
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # import phase: everything below up to IMPORT_SECONDS

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from cnnfit import models  # noqa: E402  (the model classes only: cnnfit's __init__ loads its pipeline on first use)
from idx_data import load_split  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _T0
SIDE = 28  # px, MNIST and Fashion-MNIST
ERASE_AREA = (0.02, 0.33)  # share of the image, Zhong et al. 2017 / torchvision defaults, as cnnfit
ERASE_ASPECT = (0.3, 3.3)  # h/w, log-uniform
EVAL_BATCH = 1000  # images per forward pass at test time


# ---------------------------------------------------------------- data

def subsample(n: int, fraction: float, seed: int) -> np.ndarray:
    """A seeded random share of n indices, sorted (smoke checks only)."""
    keep = np.random.default_rng(seed).permutation(n)[: max(1, round(n * fraction))]
    return np.sort(keep)


def load_data(spec: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Train and test arrays, and the train images' mean and std in [0, 1] units (the normalization)."""
    x, y = load_split(spec["data"], "train")
    if spec["fraction"] < 1:
        keep = subsample(len(y), spec["fraction"], spec["seed"])
        x, y = x[keep], y[keep]
    xt, yt = load_split(spec["data"], "t10k")
    scaled = x.astype(np.float32) / 255
    return x, y, xt, yt, float(scaled.mean()), float(scaled.std())


# ---------------------------------------------------------------- the same model, optimizer, schedule

def build_model(spec: dict) -> nn.Module:
    options = {k: spec[k] for k in ("width", "crop", "blocks") if spec.get(k)}
    return models.create(spec["model"], num_classes=10, in_chans=1, **options)


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No decay on biases and norm weights (1-d tensors), as cnnfit does."""
    params = list(model.parameters())
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def one_cycle(opt: torch.optim.Optimizer, spec: dict, steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """Rise from lr/25 to lr over 30% of the steps, cosine down to lr * 1e-4, momentum left alone (cnnfit's shape)."""
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec["lr"], total_steps=max(steps, 1), pct_start=0.3,
                                               anneal_strategy="cos", cycle_momentum=False, div_factor=25,
                                               final_div_factor=400)


def make_ema(model: nn.Module, spec: dict) -> AveragedModel | None:
    if not spec["ema"]:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(spec["ema"]), use_buffers=True)


# ---------------------------------------------------------------- test-time views (cnnfit's eval.tta)

def shift_replicate(x: torch.Tensor, d: int) -> torch.Tensor:
    """Translate (B, C, H, W) by d px down and right (negative: up and left), edges repeated."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (abs(d),) * 4, mode="replicate")
    start = abs(d) - d
    return padded[..., start:start + h, start:start + w]


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The image, its mirror (flip), and both shifted by 1/16 of the side each way (flip+shift)."""
    views = [x]
    if mode in ("flip", "flip+shift"):
        views.append(x.flip(-1))
    if mode == "flip+shift":
        s = max(1, round(x.shape[-1] / 16))  # 2 px at 28 px
        views += [shift_replicate(v, d) for v in views[:2] for d in (s, -s)]
    return views


def averaged_probs(model: nn.Module, x: torch.Tensor, mode: str, fmt: torch.memory_format) -> torch.Tensor:
    """Mean softmax over the test-time views of one normalized batch."""
    outs = [model(v.contiguous(memory_format=fmt)).float().softmax(-1) for v in tta_views(x, mode)]
    return torch.stack(outs).mean(0)


# ---------------------------------------------------------------- raw: batched, on tensors

def augment_batch(x: torch.Tensor, spec: dict, g: torch.Generator) -> torch.Tensor:
    """Per-sample flip, shift (zero pad + random crop) and erasing for a whole (B, 1, H, W) batch in [0, 1]."""
    b, _, h, w = x.shape
    if spec["hflip"]:
        x = torch.where(torch.rand(b, 1, 1, 1, generator=g) < 0.5, x.flip(-1), x)
    pad = round(spec["shift"] * SIDE)  # px
    if pad:
        padded = F.pad(x, (pad,) * 4)  # (B, 1, H + 2 pad, W + 2 pad)
        rows = torch.arange(h) + torch.randint(0, 2 * pad + 1, (b, 1), generator=g)  # (B, H)
        cols = torch.arange(w) + torch.randint(0, 2 * pad + 1, (b, 1), generator=g)  # (B, W)
        x = padded[torch.arange(b)[:, None, None], 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)
    if spec["erasing"]:
        x = erase_batch(x, spec["erasing"], g)
    return x


def erase_batch(x: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """With probability p per sample, a box of 2-33% of the image filled with uniform noise (box masks)."""
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(*ERASE_AREA, generator=g) * h * w  # px
    ratio = torch.empty(b).uniform_(math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1]), generator=g).exp()
    eh, ew = (area * ratio).sqrt().round().clamp(1, h), (area / ratio).sqrt().round().clamp(1, w)
    y0 = (torch.rand(b, generator=g) * (h - eh + 1)).floor()
    x0 = (torch.rand(b, generator=g) * (w - ew + 1)).floor()
    rows, cols = torch.arange(h), torch.arange(w)
    in_rows = (rows >= y0[:, None]) & (rows < (y0 + eh)[:, None])  # (B, H)
    in_cols = (cols >= x0[:, None]) & (cols < (x0 + ew)[:, None])  # (B, W)
    box = in_rows[:, None, :, None] & in_cols[:, None, None, :] & (torch.rand(b, 1, 1, 1, generator=g) < p)
    return torch.where(box, torch.rand(x.shape, generator=g), x)


def train_raw(spec: dict, data: tuple, timings: dict) -> float:
    """Preloaded tensors, batched augmentation, fused AdamW, bf16 + channels_last where native."""
    x_np, y_np, xt_np, yt_np, mean, std = data
    x, y = torch.from_numpy(x_np).unsqueeze(1), torch.from_numpy(y_np)  # (N, 1, 28, 28) uint8, (N,)
    bf16 = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    model = build_model(spec).to(memory_format=fmt)
    opt = torch.optim.AdamW(decay_groups(model, spec["weight_decay"]), lr=spec["lr"], fused=True)
    sched = one_cycle(opt, spec, spec["epochs"] * math.ceil(len(x) / spec["batch"]))
    ema = make_ema(model, spec)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=spec["label_smoothing"])
    g = torch.Generator().manual_seed(spec["seed"])
    timings["data"] = time.perf_counter() - timings["start"]
    t0 = time.perf_counter()
    for _ in range(spec["epochs"]):
        e0 = time.perf_counter()
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), spec["batch"]):
            idx = order[i:i + spec["batch"]]
            if len(idx) < 2:
                continue  # batch norm needs two samples
            xb = augment_batch(x[idx].float().div_(255), spec, g)
            xb = ((xb - mean) / std).contiguous(memory_format=fmt)
            with autocast():
                loss = loss_fn(model(xb), y[idx])
            loss.backward()
            _step(opt, sched, ema, model)
            opt.zero_grad(set_to_none=True)
        timings["epoch_seconds"].append(time.perf_counter() - e0)
    final, t0 = _trained(model, ema, timings, t0)
    xt, yt = torch.from_numpy(xt_np).unsqueeze(1), torch.from_numpy(yt_np)
    correct = 0
    with torch.no_grad(), autocast():
        for i in range(0, len(xt), EVAL_BATCH):
            xb = (xt[i:i + EVAL_BATCH].float() / 255 - mean) / std
            correct += (averaged_probs(final, xb, spec["tta"], fmt).argmax(1) == yt[i:i + EVAL_BATCH]).sum().item()
    timings["eval"] = time.perf_counter() - t0
    return correct / len(xt)


def _step(opt: torch.optim.Optimizer, sched, ema, model: nn.Module) -> None:
    """The optimizer and LR steps and the EMA update that end every training step, in both ways."""
    opt.step()
    sched.step()
    if ema is not None:
        ema.update_parameters(model)


def _trained(model: nn.Module, ema, timings: dict, t0: float) -> tuple[nn.Module, float]:
    """The weights to test (the EMA's when there is one) in eval mode, with the train time recorded."""
    timings["train"] = time.perf_counter() - t0
    return (ema.module if ema is not None else model).eval(), time.perf_counter()


# ---------------------------------------------------------------- tutorial: one sample at a time

class ImageDataset(Dataset):
    """One (1, 28, 28) float sample per __getitem__, transforms written in torch, as the tutorials do."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, mean: float, std: float, spec: dict | None) -> None:
        self.images, self.labels, self.mean, self.std, self.spec = images, labels, mean, std, spec

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.images[i].astype(np.float32) / 255).unsqueeze(0)  # (1, 28, 28) in [0, 1]
        if self.spec is not None:
            x = self.transform(x)
        return (x - self.mean) / self.std, int(self.labels[i])

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        if self.spec["hflip"] and torch.rand(()) < 0.5:
            x = x.flip(-1)
        pad = round(self.spec["shift"] * SIDE)  # px
        if pad:
            x = F.pad(x, (pad,) * 4)
            dy, dx = torch.randint(0, 2 * pad + 1, (2,)).tolist()
            x = x[:, dy:dy + SIDE, dx:dx + SIDE]
        if self.spec["erasing"] and torch.rand(()) < self.spec["erasing"]:
            x = erase_one(x)
        return x


def erase_one(x: torch.Tensor) -> torch.Tensor:
    """torchvision's RandomErasing for one image: up to 10 tries at a box that fits, filled with noise."""
    _, h, w = x.shape
    for _ in range(10):
        area = h * w * torch.empty(()).uniform_(*ERASE_AREA).item()
        ratio = math.exp(torch.empty(()).uniform_(math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])).item())
        eh, ew = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if eh < h and ew < w:
            i, j = torch.randint(0, h - eh + 1, ()).item(), torch.randint(0, w - ew + 1, ()).item()
            x = x.clone()
            x[:, i:i + eh, j:j + ew] = torch.rand(x.shape[0], eh, ew)
            return x
    return x


def train_loader(spec: dict, data: tuple, timings: dict) -> float:
    """Dataset + DataLoader (num_workers=0), fp32 NCHW, AdamW over all parameters, OneCycleLR."""
    x_np, y_np, xt_np, yt_np, mean, std = data
    loader = DataLoader(ImageDataset(x_np, y_np, mean, std, spec), batch_size=spec["batch"], shuffle=True)
    test_loader = DataLoader(ImageDataset(xt_np, yt_np, mean, std, None), batch_size=EVAL_BATCH)
    model = build_model(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    sched = one_cycle(opt, spec, spec["epochs"] * len(loader))
    ema = make_ema(model, spec)
    criterion = nn.CrossEntropyLoss(label_smoothing=spec["label_smoothing"])
    timings["data"] = time.perf_counter() - timings["start"]
    t0 = time.perf_counter()
    for _ in range(spec["epochs"]):
        e0 = time.perf_counter()
        model.train()
        for xb, yb in loader:
            if len(yb) < 2:
                continue  # batch norm needs two samples
            opt.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            _step(opt, sched, ema, model)
        timings["epoch_seconds"].append(time.perf_counter() - e0)
    final, t0 = _trained(model, ema, timings, t0)
    correct = 0
    with torch.no_grad():
        for xb, yb in test_loader:
            correct += (averaged_probs(final, xb, spec["tta"], torch.contiguous_format).argmax(1) == yb).sum().item()
    timings["eval"] = time.perf_counter() - t0
    return correct / len(test_loader.dataset)


EXAMPLE_EPOCHS = 14  # pytorch/examples mnist/main.py: --epochs 14 --batch-size 64 --lr 1.0 --gamma 0.7


def train_tutorial(spec: dict, data: tuple, timings: dict) -> float:
    """The PyTorch MNIST example, epoch by epoch until the target, the epoch limit or the time cap."""
    x_np, y_np, xt_np, yt_np, mean, std = data
    loader = DataLoader(ImageDataset(x_np, y_np, mean, std, None), batch_size=64, shuffle=True)
    test_loader = DataLoader(ImageDataset(xt_np, yt_np, mean, std, None), batch_size=EVAL_BATCH)
    model = models.create("simplecnn", num_classes=10, in_chans=1, hidden=128)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    cap = spec.get("cap_s") or math.inf  # seconds from process start
    timings["data"] = time.perf_counter() - timings["start"]
    timings["train"] = timings["eval"] = 0.0
    accuracy, timings["stop"] = 0.0, f"{EXAMPLE_EPOCHS} epochs"
    for epoch in range(EXAMPLE_EPOCHS):
        t0 = time.perf_counter()
        model.train()
        for xb, yb in loader:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            if time.perf_counter() - _T0 > cap:
                break
        sched.step()
        timings["epoch_seconds"].append(time.perf_counter() - t0)
        timings["train"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        model.eval()
        correct = 0
        with torch.no_grad():
            for xb, yb in test_loader:
                correct += (model(xb).argmax(1) == yb).sum().item()
        timings["eval"] += time.perf_counter() - t0
        accuracy = correct / len(test_loader.dataset)
        print(f"epoch {epoch + 1}: test accuracy {accuracy:.4f} at {time.perf_counter() - _T0:.1f} s", flush=True,
              file=sys.stderr)
        if accuracy >= spec["target"]:
            timings["stop"] = f"target after {epoch + 1} epochs"
            break
        if time.perf_counter() - _T0 > cap:
            timings["stop"] = f"time cap {cap:.0f} s in epoch {epoch + 1}"
            break
    timings["reached"] = accuracy >= spec["target"]
    return accuracy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("raw", "loader", "tutorial"), required=True)
    p.add_argument("--spec", required=True, help="the recipe's settings as JSON (bench_tta.py writes it)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    spec = json.loads(args.spec)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(spec["seed"])
    np.random.seed(spec["seed"])
    timings = {"start": time.perf_counter(), "epoch_seconds": []}
    data = load_data(spec)
    accuracy = {"raw": train_raw, "loader": train_loader, "tutorial": train_tutorial}[args.mode](spec, data, timings)
    print(json.dumps({"way": args.mode, "accuracy": accuracy, "reached": timings.get("reached"),
                      "stop": timings.get("stop"), "import": IMPORT_SECONDS, "data": timings["data"],
                      "train": timings["train"], "eval": timings["eval"], "epoch_seconds": timings["epoch_seconds"],
                      "train_images": len(data[1]), "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "bf16": args.mode == "raw" and torch.ops.mkldnn._is_mkldnn_bf16_supported()}))


if __name__ == "__main__":
    main()
