"""The LR range test (Smith, 2017, "Cyclical learning rates"; as fastai and Lightning run it).

Train for a few dozen steps while the LR grows exponentially from `start` to `end`, record the loss,
and suggest the LR where the smoothed loss falls fastest. The model and optimizer are put back exactly
as they were, so training can start right after.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from cnnfit.engine.loop import autocast
from cnnfit.errors import CnnfitError

SKIP_START = 10  # points; the bias-corrected average is still noisy here (Lightning skips 10 as well)
MIN_WINDOW = 3  # points between the skipped start and the minimum; fewer and a slope means little
MIN_DROP = 0.01  # of the starting loss; a smaller fall from start to minimum counts as a flat curve


@dataclass
class LRFind:
    lrs: list[float]  # base LR of each recorded step (each group trains at lr * its lr_mult)
    losses: list[float]  # raw training loss of each step
    smoothed: list[float]  # exponentially smoothed, bias-corrected loss
    suggestion: float
    rule: str  # how `suggestion` was chosen, with the numbers, for the user to read


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, str]:
    """The LR at the steepest fall of the smoothed loss (per unit of log LR), searched between the first
    few points and the minimum; the minimum's LR / 10 when the curve is too short or flat for a slope."""
    if not lrs:
        raise CnnfitError("the LR range test recorded no finite loss; lower start= or check the data and model")
    lr, loss = np.asarray(lrs, dtype=np.float64), np.asarray(smoothed, dtype=np.float64)
    i_min = int(np.argmin(loss))
    skip = min(SKIP_START, len(loss) // 10)
    lo, hi = skip, min(i_min, len(loss) - 2)  # the last point has only a one-sided slope
    drop = loss[skip] - loss[i_min]
    if hi - lo + 1 < MIN_WINDOW:
        return _tenth_of_minimum(lr, loss, i_min, f"only {max(hi - lo + 1, 0)} points before the minimum")
    if drop <= MIN_DROP * abs(loss[skip]):
        return _tenth_of_minimum(lr, loss, i_min, f"the loss fell only {drop:.3g} from {loss[skip]:.4g}")
    slope = np.gradient(loss, np.log(lr))  # d loss / d ln(lr)
    i = lo + int(np.argmin(slope[lo: hi + 1]))
    if slope[i] >= 0:
        return _tenth_of_minimum(lr, loss, i_min, "no falling stretch before the minimum")
    return float(lr[i]), (
        f"steepest descent of the smoothed loss: slope {slope[i]:.3g} per e-fold of LR at lr={lr[i]:.3g}, "
        f"searched {lr[lo]:.3g}..{lr[hi]:.3g} (up to the minimum loss {loss[i_min]:.4g} at {lr[i_min]:.3g})")


def _tenth_of_minimum(lr: np.ndarray, loss: np.ndarray, i_min: int, why: str) -> tuple[float, str]:
    chosen = max(lr[i_min] / 10, lr[0])  # never below the tested range: nothing is known there
    floor = f", raised to the range start {lr[0]:.3g} (try a lower start=)" if chosen > lr[i_min] / 10 else ""
    return float(chosen), (
        f"minimum of the smoothed loss / 10: loss {loss[i_min]:.4g} at lr={lr[i_min]:.3g} -> {chosen:.3g}{floor} "
        f"(the steepest-descent rule needs a clear fall; {why})")


def _cycle(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise CnnfitError("the LR range test got no batches; pass a non-empty training loader")


def _sweep(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, loss_fn: Callable, *,
           start: float, end: float, steps: int, amp_dtype: torch.dtype | None, smooth: float,
           diverge: float) -> tuple[list[float], list[float], list[float]]:
    """The training steps themselves; leaves the model and optimizer changed (the caller restores them)."""
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    device = next(model.parameters()).device  # where `batches` are too
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)  # fp16 gradients underflow unscaled
    model.train()
    for i, (x, y) in zip(range(steps), _cycle(batches)):
        lr = start * (end / start) ** (i / (steps - 1))  # exponential: equal steps in log LR
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        with autocast(device, amp_dtype):
            out = model(x)
            logits = out[0] if isinstance(out, tuple) else out  # (B, classes); aux heads are not scored
            loss = loss_fn(logits, y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        value = loss.item()  # one host sync per step: the stop test needs it, and the sweep is short
        if not math.isfinite(value):
            break
        avg = (1 - smooth) * avg + smooth * value
        smooth_value = avg / (1 - (1 - smooth) ** (i + 1))  # bias correction: avg starts at 0
        lrs.append(lr)
        losses.append(value)
        smoothed.append(smooth_value)
        best = min(best, smooth_value)
        if smooth_value > diverge * best:
            break
    return lrs, losses, smoothed


def lr_range_test(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  optimizer: torch.optim.Optimizer, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
                  start: float = 1e-7, end: float = 10.0, steps: int = 100, amp_dtype: torch.dtype | None = None,
                  smooth: float = 0.05, diverge: float = 4.0) -> LRFind:
    """Sweep the LR from `start` to `end` over `steps` optimizer steps (cycling `batches` as needed), stop
    when the smoothed loss passes `diverge` x its best or is not finite, then restore the model (weights,
    buffers, train/eval mode), the optimizer (state and LRs) and the RNG, and return the curve with a suggestion.

    `batches` yields (x, y) already on the model's device; `smooth` is the weight of each new loss in the
    running average (0.05: about the last 20 steps). Each param group trains at lr * group["lr_mult"] (default 1).
    """
    if not 0 < start < end:
        raise CnnfitError(f"the LR range needs 0 < start < end; got start={start:g}, end={end:g}")
    weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}  # host copy: no GPU memory
    opt_state = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    cuda_devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=cuda_devices):  # dropout draws: training after stays reproducible
            lrs, losses, smoothed = _sweep(model, batches, optimizer, loss_fn, start=start, end=end, steps=steps,
                                           amp_dtype=amp_dtype, smooth=smooth, diverge=diverge)
    finally:
        model.load_state_dict(weights)
        optimizer.load_state_dict(opt_state)
        optimizer.zero_grad(set_to_none=True)
        model.train(was_training)
    suggestion, rule = suggest(lrs, smoothed)
    return LRFind(lrs=lrs, losses=losses, smoothed=smoothed, suggestion=suggestion, rule=rule)
