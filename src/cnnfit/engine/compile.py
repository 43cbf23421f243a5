"""torch.compile, trusted only after it agrees with eager mode on this model and device.

On torch 2.13's CPU backend a small CNN in NCHW layout compiled to zero gradients for both conv layers,
silently: one batch's gradients, eager against compiled, catch that before hours are spent."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from cnnfit.engine.loop import autocast

TOLERANCE = 0.05  # worst relative gradient difference allowed; bf16 autocast alone gives up to ~1e-2


def _grads(forward: Callable, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable,
           amp_dtype: torch.dtype | None, saved: dict) -> list[torch.Tensor]:
    """One batch's gradients through `forward`; then the model's `saved` state is put back."""
    with torch.random.fork_rng(devices=[]):  # the same dropout masks for both, and the run's RNG untouched
        torch.manual_seed(0)
        with autocast(x.device, amp_dtype):
            out = forward(x)
            loss = loss_fn(out[0] if isinstance(out, tuple) else out, y)
        loss.backward()
    grads = [p.grad.detach().float().clone() if p.grad is not None else torch.zeros_like(p, dtype=torch.float)
             for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    model.load_state_dict(saved)
    return grads


def _worst(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """The largest relative difference between two sets of gradients, parameter by parameter."""
    return max((((p - q).norm() / p.norm().clamp(min=1e-12)).item() for p, q in zip(a, b) if p.norm() > 0),
               default=0.0)


def compile_checked(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable,
                    amp_dtype: torch.dtype | None = None, mode: str | None = None) -> tuple[Any, str]:
    """(the compiled model, or the model itself if compiled gradients differ; a sentence saying which).

    Under autocast, eager and compiled code round differently, and by as much as bf16 itself moves the gradients
    from fp32 (airnet, H100: 8% on its smallest ones): the allowance is then twice that eager fp32-to-amp gap."""
    saved = copy.deepcopy(model.state_dict())  # batch-norm statistics move in train mode: put them back
    compiled = torch.compile(model, mode=mode)
    eager = _grads(model, model, x, y, loss_fn, amp_dtype, saved)
    tolerance = TOLERANCE
    if amp_dtype is not None:
        tolerance = max(TOLERANCE, 2 * _worst(_grads(model, model, x, y, loss_fn, None, saved), eager))
    worst = _worst(eager, _grads(compiled, model, x, y, loss_fn, amp_dtype, saved))
    if worst > tolerance:
        return model, (f"compile: torch.compile gave different gradients from eager mode on this model and device "
                       f"(relative difference {worst:.2g}, allowed {tolerance:.2g}); training in eager mode")
    return compiled, f"compile: gradients match eager mode (relative difference {worst:.1g}, allowed {tolerance:.1g})"
