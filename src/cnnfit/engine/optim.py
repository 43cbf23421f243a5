"""Optimizers (fused kernels where torch has them) and LR schedules as pure functions of the step."""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch
import torch._dynamo  # noqa: F401  torch.optim imports it on the first optimizer (1.6 s): pay it at import, not mid-run
import torch.nn as nn


_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def param_groups(model: nn.Module, weight_decay: float, *, backbone: set[int] | None = None,
                 backbone_lr_mult: float = 1.0, head_lr_mult: float = 1.0, norm_lr_mult: float = 1.0) -> list[dict]:
    """No decay on biases and norm weights (1-d tensors): decaying them only hurts (Goyal et al., 2017).
    With `backbone` (parameter ids), backbone and head get their own LR multipliers, as fine-tuning wants.
    `norm_lr_mult` != 1 gives normalization layers' parameters their own LR, and decays them by
    weight_decay / norm_lr_mult, so each step shrinks them as much as the weights (airbench's BN biases: x64).
    Frozen parameters are included: without gradients the optimizer skips them until they are unfrozen."""
    backbone = backbone or set()
    norms = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    norms = norms if norm_lr_mult != 1.0 else set()
    groups = []
    for part, mult in (("backbone", backbone_lr_mult), ("head", head_lr_mult)):
        params = [p for p in model.parameters() if (id(p) in backbone) == (part == "backbone")]
        for decayed in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == decayed and id(p) not in norms]
            if chosen:
                groups.append({"params": chosen, "weight_decay": weight_decay if decayed else 0.0, "lr_mult": mult})
        chosen = [p for p in params if id(p) in norms]
        if chosen:
            groups.append({"params": chosen, "weight_decay": weight_decay / norm_lr_mult,
                           "lr_mult": mult * norm_lr_mult})
    return groups


def build_optimizer(name: str, model: nn.Module, *, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
                    nesterov: bool = False, groups: list[dict] | None = None) -> torch.optim.Optimizer:
    """`groups` from `param_groups` (default: one LR for all); each group's LR is `lr` times its `lr_mult`."""
    groups = groups if groups is not None else param_groups(model, weight_decay)
    for g in groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
    kinds = {
        "sgd": partial(torch.optim.SGD, momentum=momentum, nesterov=nesterov and momentum > 0),
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": partial(torch.optim.RMSprop, momentum=momentum),
    }
    make = kinds[name]
    if name != "rmsprop":
        try:
            # fused update: on 2 CPU cores the unfused Adam step took ~30% of a simplecnn step
            return make(groups, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return make(groups, lr=lr, foreach=True)


def constant(step: int, *, total: int) -> float:
    return 1.0


def cosine(step: int, *, total: int, floor: float = 0.0) -> float:
    t = min(step / max(total, 1), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def step_decay(step: int, *, total: int, every: int, gamma: float = 0.1) -> float:
    return gamma ** (step // max(every, 1))


def multistep(step: int, *, total: int, milestones: tuple[int, ...], gamma: float = 0.1) -> float:
    """gamma once more at each milestone step."""
    return gamma ** sum(step >= m for m in milestones)


def exponential(step: int, *, total: int, every: int, gamma: float = 0.95) -> float:
    """gamma per `every` steps (an epoch), applied smoothly at every step."""
    return gamma ** (step / max(every, 1))


def triangle(step: int, *, total: int, rise: float = 0.3, start: float = 0.04, end: float = 0.0) -> float:
    """Linear from `start` up to the peak at `rise` of the run, then linear down to `end` (airbench)."""
    top = max(int(rise * total), 1)
    if step < top:
        return start + (1 - start) * step / top
    return 1 + (end - 1) * min((step - top) / max(total - top, 1), 1.0)


def one_cycle(step: int, *, total: int, rise: float = 0.3, start: float = 0.04, end: float = 1e-4) -> float:
    """Linear rise to the peak over `rise` of the run, then cosine down to `end` (Smith, 2018)."""
    top = max(int(rise * total), 1)
    if step < top:
        return start + (1 - start) * step / top
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min((step - top) / max(total - top, 1), 1.0)))


def with_warmup(fn: Callable[..., float], warmup: int, total: int, **kw) -> Callable[[int], float]:
    """Linear warmup over `warmup` steps, then `fn` over the remaining steps."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return fn(step - warmup, total=max(total - warmup, 1), **kw)

    return factor


def make_schedule(name: str, *, total: int, warmup: int = 0, every: int = 1, gamma: float = 0.1,
                  milestones: tuple[int, ...] = (), start: float | None = None,
                  end: float | None = None) -> Callable[[int], float]:
    """The LR factor as a pure function of the optimizer step. `every` is the step decay period (step) or the
    steps per epoch (exponential); `milestones` are steps (multistep); `start` and `end` the factors at the ends
    of onecycle and triangle. "plateau" is constant here: the ReduceLROnPlateau callback scales it."""
    if name in ("onecycle", "triangle"):
        fn = one_cycle if name == "onecycle" else triangle
        ends = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
        return partial(fn, total=total, rise=warmup / total if warmup else 0.3, **ends)
    fns = {"cosine": (cosine, {}), "constant": (constant, {}), "plateau": (constant, {}),
           "step": (step_decay, {"every": every, "gamma": gamma}),
           "multistep": (multistep, {"milestones": tuple(milestones), "gamma": gamma}),
           "exponential": (exponential, {"every": every, "gamma": gamma})}
    fn, kw = fns[name]
    return with_warmup(fn, warmup, total, **kw)


def decoupled_sgd(lr: float, weight_decay: float, *, momentum: float, batch: int) -> tuple[float, float]:
    """torch SGD's (lr, weight_decay) for hyperparameters given per 1024 images and free of momentum (airbench,
    after Page, 2019): with steady gradients Nesterov momentum m makes each step 1 + 1/(1 - m) times the
    gradient, so that factor is divided out; the decay is the fraction of a weight removed per 1024 images,
    whatever the LR. Changing momentum, batch or lr then leaves the others' meaning alone."""
    per_image = batch / (1024 * (1 + 1 / (1 - momentum)))
    return lr * per_image, weight_decay / lr


def scale_lr(lr: float, batch: int, rule: str, ref_batch: int) -> float:
    """The LR for `batch` images per step given one tuned at `ref_batch`: linear (Goyal et al., 2017, for
    SGD) or square-root (Malladi et al., 2022, for Adam-family optimizers)."""
    if rule == "linear":
        return lr * batch / ref_batch
    if rule == "sqrt":
        return lr * math.sqrt(batch / ref_batch)
    return lr
