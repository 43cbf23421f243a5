"""The training loop: one flat function a reader can hold in their head, plus batched inference."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from cnnfit import distributed
from cnnfit.device import synchronize
from cnnfit.distributed import Dist
from cnnfit.engine import losses, scores
from cnnfit.engine.callbacks import HOOKS, Callback
from cnnfit.engine.ema import make_ema
from cnnfit.engine.resume import restore
from cnnfit.engine.state import Batches, State

AUX_WEIGHT = 0.3  # auxiliary classifier losses, as in GoogLeNet (Szegedy et al., 2015)


@dataclass(frozen=True)
class StepOptions:
    """How each optimizer step is taken; the defaults take a plain full-precision step."""

    amp_dtype: torch.dtype | None = None  # autocast dtype; float16 also scales the loss (GradScaler)
    accumulate: int = 1  # micro-batches per optimizer step, each weighted by its share of the step's images
    clip_norm: float | None = None  # clip the global gradient norm to this
    clip_value: float | None = None  # clip every gradient element to [-v, v]
    l1: float = 0.0  # L1 penalty on the weights (not biases or norms)
    ema: float | None = None  # decay of an average of the weights that is validated and saved as best.pt
    mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None  # mixup/cutmix


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """Mixed precision in `dtype` on `device`; None: full precision (the context is switched off)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _call(callbacks: Sequence[Callback], hook: str, state: State) -> None:
    assert hook in HOOKS
    for cb in callbacks:
        getattr(cb, hook)(state)


@torch.no_grad()
def infer(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
          amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs (float32, on CPU) and targets for every batch, in order, with the model in eval mode."""
    was_training = model.training
    model.eval()
    outputs, targets = [], []
    for x, y in batches:
        with autocast(x.device, amp_dtype):
            outputs.append(model(x).float())
        targets.append(y)
    model.train(was_training)
    if not outputs:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(outputs).cpu(), torch.cat(targets).cpu()


def _settle(state: State, dist: Dist, device: torch.device) -> str | None:
    """After each optimizer step: turn a caught signal into `state.interrupted` and, on CPU, stop at a
    non-finite loss (a CPU step is synchronous anyway; accelerators check at epoch end). Under data
    parallelism all ranks agree first, so they save, stop and leave at the same step. Returns the stop
    reason the loop may act on now."""
    if not dist.active:
        state.interrupted = state.interrupted or state.signal
        if device.type == "cpu":
            state.check_finite()
        return state.stop
    signalled, stopped, state.bad_step = distributed.agree(dist, signal_seen=state.signal is not None,
                                                           stop=state.stop is not None, bad_step=state.bad_step)
    if signalled:
        state.interrupted = state.interrupted or state.signal or "a signal to another rank"
    if stopped and state.stop is None:
        state.stop = "another rank ended the run"
    state.check_finite()
    return state.stop


def _new_state(model: nn.Module, train: Batches, optimizer: torch.optim.Optimizer, epochs: int,
               device: torch.device, callbacks: Sequence[Callback], step: StepOptions, resume: dict | None,
               dist: Dist) -> State:
    state = State(model, optimizer, epochs, -(-len(train) // step.accumulate), loader=train,
                  callbacks=list(callbacks), dist=dist, ema=make_ema(model, step.ema) if step.ema else None,
                  scaler=torch.amp.GradScaler(device.type, enabled=step.amp_dtype == torch.float16))
    if resume is not None:
        restore(state, resume, device)
    state.bad_step = torch.full((), -1, device=device, dtype=torch.long)
    return state


def _backward(state: State, forward: Callable, loss_fn: losses.Loss, step: StepOptions, task: str, x: torch.Tensor,
              y: torch.Tensor, weight: float, sync: bool) -> None:
    """One micro-batch: forward, backward of its `weight`ed share of the step's loss, and the running sums.
    Gradients are averaged over ranks (`sync`) once per optimizer step, not after every micro-batch."""
    x, target = step.mix(x, y) if step.mix is not None else (x, y)  # mixup/cutmix: soft targets (B, classes)
    if x.device.type == "cuda" and forward is not state.model:  # compiled: perhaps CUDA graphs (reduce-overhead)
        torch.compiler.cudagraph_mark_step_begin()  # a new step: the last replay's outputs may be reused
    with contextlib.nullcontext() if sync else forward.no_sync():
        with autocast(x.device, step.amp_dtype):
            out = forward(x)  # (B, outputs), or a tuple (logits, *auxiliary logits) from models with aux heads
            logits, aux = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
            loss = loss_fn(logits, target)
            total = loss
            for extra in aux:
                total = total + AUX_WEIGHT * loss_fn(extra, target)
            if step.l1:  # weights, not biases or norms
                total = total + step.l1 * sum(p.abs().sum() for p in state.model.parameters() if p.ndim > 1)
        state.bad_step = torch.where((state.bad_step < 0) & ~torch.isfinite(loss.detach()),
                                     state.step + 1, state.bad_step)
        state.scaler.scale(total * weight).backward()  # the scaler passes the loss through unless fp16
    state.seen += len(y)
    state.loss_sum += loss.detach().float() * len(y)  # stays on device: no host sync per step
    if (hit := scores.train_correct(task, logits.detach(), y)) is not None:
        state.correct += hit


def _update(state: State, step: StepOptions) -> None:
    """One optimizer step from the accumulated gradients, then the weight average."""
    optimizer = state.optimizer
    if step.clip_norm or step.clip_value:
        state.scaler.unscale_(optimizer)  # clip true gradients; without clipping fused optimizers unscale inside
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if step.clip_norm:
            torch.nn.utils.clip_grad_norm_(params, step.clip_norm, foreach=True)
        if step.clip_value:
            torch.nn.utils.clip_grad_value_(params, step.clip_value, foreach=True)
    state.scaler.step(optimizer)  # skips a step whose fp16 gradients overflowed
    state.scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if state.ema is not None:
        state.ema.update_parameters(state.model)
    state.step += 1
    state.epoch_step += 1


def _validate(state: State, val: Iterable, score_fn: Callable, task: str, amp_dtype: torch.dtype | None,
              t0: float, train_seconds: float) -> dict[str, float]:
    """The epoch's row of history: training sums and validation scores over all ranks."""
    dist = state.dist
    outputs, targets = distributed.gather(dist, *infer(state.eval_model, val, amp_dtype=amp_dtype))
    loss_sum, correct, seen = distributed.sum_(dist, state.loss_sum, state.correct,
                                               torch.tensor(float(state.seen), device=state.loss_sum.device))
    seen = max(float(seen), 1.0)
    return {
        "epoch": state.epoch + 1,
        "train_loss": float(loss_sum) / seen,
        **({"train_acc": float(correct) / seen} if task == "classify" else {}),
        **score_fn(outputs, targets),
        "lr": state.optimizer.param_groups[0]["lr"],
        "seconds": time.perf_counter() - t0,
        "train_seconds": train_seconds,
    }


def fit(model: nn.Module, train: Batches, val: Iterable, *, optimizer: torch.optim.Optimizer, epochs: int,
        device: torch.device, task: str = "classify", loss_fn: losses.Loss | None = None,
        score_fn: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] | None = None,
        callbacks: Sequence[Callback] = (), step: StepOptions = StepOptions(),
        forward: Callable[[torch.Tensor], Any] | None = None, resume: dict | None = None,
        dist: Dist | None = None) -> State:
    """Train for `epochs` (or until a callback sets `state.stop`); per-epoch metrics land in state.history.

    `step.accumulate` micro-batches make one optimizer step, so `accumulate=4 batch=16` is `batch=64` (models
    without batch norm). `forward` is a compiled model to train through; `model` stays the module whose weights
    are saved. `resume` is a last.pt dict: the run continues at its exact step. `loss_fn` and `score_fn`
    default to the task's own (cross-entropy and accuracy for classify).

    With `dist.world` > 1, `forward` is the DistributedDataParallel wrapper, `train` serves this rank's share of
    every global batch and `val` this rank's shard of the val split: losses are weighted so the averaged
    gradient is the global batch's, and sums and outputs are combined so every rank computes the numbers a
    single process would."""
    dist = dist or distributed.SINGLE
    forward = forward if forward is not None else model  # a compiled module has no truth value
    loss_fn = loss_fn or losses.make_loss(task)
    score_fn = score_fn or partial(scores.epoch_scores, task, loss=loss_fn)
    state = _new_state(model, train, optimizer, epochs, device, callbacks, step, resume, dist)
    step_images, micro_batches = step.accumulate * train.batch, len(train)

    _call(callbacks, "on_fit_start", state)
    for epoch in range(state.epoch, epochs):
        state.epoch = epoch
        if state.order is None and state.epoch_step == 0:  # a new epoch, not one resumed midway
            state.order = train.new_order()
            state.loss_sum, state.correct = torch.zeros((), device=device), torch.zeros((), device=device).long()
        model.train()
        if hasattr(model, "set_epoch"):  # a model whose trainable parts change with the epoch (airnet)
            model.set_epoch(epoch)
        _call(callbacks, "on_epoch_start", state)
        synchronize(device)  # the epoch's clock starts on an idle device and stops on one (GPU work is queued)
        t0 = time.perf_counter()
        interrupted = None
        first = state.epoch_step * step.accumulate  # micro-batch to start from (non-zero only when resuming)
        for i, (x, y) in enumerate(train.iterate(state.order, first, epoch), start=first):
            in_step = min(step_images, train.num_images - i // step.accumulate * step_images)  # the step's images
            last_micro = not ((i + 1) % step.accumulate and i + 1 < micro_batches)
            # this micro-batch's share of the step's mean loss; x world because DDP averages over ranks
            _backward(state, forward, loss_fn, step, task, x, y, len(y) / in_step * dist.world,
                      sync=last_micro or not dist.active)
            if not last_micro:
                continue  # more micro-batches before this step
            _update(state, step)
            stopping = _settle(state, dist, device)
            interrupted = state.interrupted  # a signal seen now is saved by Checkpointing in these hooks; one
            _call(callbacks, "on_step_end", state)  # arriving during them waits for the next step's end
            if (stopping if dist.active else state.stop) or interrupted:
                break  # ranks leave together: a stop a hook sets on one rank is agreed at the next step
        if interrupted or not state.check_finite():
            break  # interrupted mid-epoch (last.pt holds the exact step) or diverged: no validation
        synchronize(device)
        state.metrics = _validate(state, val, score_fn, task, step.amp_dtype, t0, time.perf_counter() - t0)
        state.history.append(state.metrics)
        _call(callbacks, "on_epoch_end", state)
        state.order, state.epoch_step, state.seen = None, 0, 0
        if _settle(state, dist, device) or state.interrupted:
            break
    _call(callbacks, "on_fit_end", state)
    return state
