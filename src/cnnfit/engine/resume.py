"""Exact resume: everything that decides the rest of a run, captured at a step boundary and put back.

Besides weights and optimizer moments that is the step within the epoch, the epoch's sample order, the
loader's generator (it draws orders, augmentations and mixup), the global RNGs (dropout), the grad scaler,
the EMA, the LR scale ReduceLROnPlateau has reached, the running sums and every callback's own state. Other
tools restart the epoch or skip batches, which changes the data the model sees and so the result.

Under data parallelism every rank has its own augmentation and dropout streams: all of them are saved, and
the running sums are saved as totals over the ranks, so the same world size resumes exactly."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from cnnfit import distributed
from cnnfit.engine.state import State


def rng_states() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(), "python": random.getstate(),
              "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)}  # loadable weights_only
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if "python" in states:
        random.setstate(states["python"])
    if "numpy" in states:
        name, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def snapshot(state: State) -> dict[str, Any]:
    """The resumable part of last.pt; taken after a whole optimizer step or after an epoch's end hooks."""
    done = state.epoch_done
    loader, ctx = state.loader, state.dist
    own = {"loader_rng": loader.generator.get_state(), "rng": rng_states()}
    ranks = distributed.gather_objects(ctx, own)  # a collective: every rank snapshots at the same step
    running = None
    if not done:
        seen = torch.tensor(float(state.seen), device=state.loss_sum.device)
        loss_sum, correct, seen = distributed.sum_(ctx, state.loss_sum, state.correct, seen)
        running = {"loss_sum": float(loss_sum), "correct": int(correct), "seen": int(seen)}
    return {
        "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict() or None,  # {} from a disabled scaler (no fp16)
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "train_state": {
            "next_epoch": state.epoch + 1 if done else state.epoch,
            "next_step": 0 if done else state.epoch_step,
            "step": state.step,
            "order": None if done or state.order is None else state.order.cpu(),
            "loader_rng": own["loader_rng"],
            "order_rng": loader.order_generator.get_state(),
            "rng": own["rng"],
            "world": ctx.world,
            "ranks": ranks if ctx.active else None,
            "running": running,
            "lr_scale": state.lr_scale,
            "history": list(state.history),
            "metrics": dict(state.metrics),
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in state.callbacks},
        },
    }


def restore(state: State, ckpt: dict[str, Any], device: torch.device) -> None:
    """Put a snapshot back into a freshly built State (the model's weights are already loaded)."""
    ts = ckpt["train_state"]
    ctx = state.dist
    own = ts["ranks"][ctx.rank] if ts.get("ranks") else {"loader_rng": ts["loader_rng"], "rng": ts["rng"]}
    state.optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt.get("scaler"):  # a disabled scaler (no fp16 now) ignores it
        state.scaler.load_state_dict(ckpt["scaler"])
    if state.ema is not None and ckpt.get("ema"):
        state.ema.load_state_dict(ckpt["ema"])
    state.epoch, state.epoch_step, state.step = ts["next_epoch"], ts["next_step"], ts["step"]
    state.order = ts["order"].to(device) if ts["order"] is not None else None
    state.lr_scale = ts["lr_scale"]
    state.history, state.metrics = list(ts["history"]), dict(ts["metrics"])
    if ts["running"] is not None:  # totals over the ranks: rank 0 carries them, the others start from zero
        run = ts["running"] if ctx.main else {"loss_sum": 0.0, "correct": 0, "seen": 0}
        state.loss_sum = torch.tensor(run["loss_sum"], device=device)
        state.correct = torch.tensor(run["correct"], device=device)
        state.seen = run["seen"]
    state.loader.generator.set_state(own["loader_rng"])
    if ts.get("order_rng") is not None:  # absent from older last.pt files
        state.loader.order_generator.set_state(ts["order_rng"])
    set_rng_states(own["rng"])
    saved = ts["callbacks"]
    for cb in state.callbacks:
        if type(cb).__name__ in saved:
            cb.load_state_dict(saved[type(cb).__name__])
