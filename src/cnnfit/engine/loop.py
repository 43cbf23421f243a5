"""The training loop: one flat function a reader can hold in their head, plus batched inference."""

from __future__ import annotations

import contextlib
import time
from functools import partial
from collections.abc import Callable, Iterable, Sequence
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
from cnnfit.engine.state import State

AUX_WEIGHT = 0.3  # auxiliary classifier losses, as in GoogLeNet (Szegedy et al., 2015)


def _call(callbacks: Sequence[Callback], hook: str, state: State) -> None:
    assert hook in HOOKS
    for cb in callbacks:
        getattr(cb, hook)(state)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def infer(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
          amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs (float32, on CPU) and targets for every batch, in order, with the model in eval mode."""
    was_training = model.training
    model.eval()
    outputs, targets = [], []
    for x, y in batches:
        with _autocast(x.device, amp_dtype):
            out = model(x)
        outputs.append(out.float())
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


def fit(model: nn.Module, train: Any, val: Iterable, *, optimizer: torch.optim.Optimizer, epochs: int,
        device: torch.device, task: str = "classify",
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        score_fn: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] | None = None,
        callbacks: Sequence[Callback] = (), amp_dtype: torch.dtype | None = None,
        mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
        accumulate: int = 1, clip_norm: float | None = None, clip_value: float | None = None, l1: float = 0.0,
        ema: float | None = None, forward: Callable[[torch.Tensor], Any] | None = None,
        resume: dict | None = None, dist: Dist = distributed.SINGLE) -> State:
    """Train for `epochs` (or until a callback sets `state.stop`); per-epoch metrics land in state.history.

    `train` is a DeviceLoader (it has `new_order`, `iterate` and a `generator`; any re-iterable of batches
    works without exact resume). `accumulate` micro-batches make one optimizer step, each weighted by its
    share of the step's images, so `accumulate=4 batch=16` is `batch=64` (models without batch norm).
    `forward` is a compiled model to train through; `model` stays the module whose weights are saved.
    `resume` is a last.pt dict: the run continues at its exact step. `loss_fn` and `score_fn` default to
    the task's own (cross-entropy and accuracy for classify).

    With `dist.world` > 1, `forward` is the DistributedDataParallel wrapper, `train` serves this rank's share of
    every global batch and `val` this rank's shard of the val split: losses are weighted so the averaged
    gradient is the global batch's, and sums and outputs are combined so every rank computes the numbers a
    single process would."""
    forward = forward if forward is not None else model  # a compiled module has no truth value
    graphs = device.type == "cuda" and forward is not model  # compiled: perhaps CUDA graphs (compile=reduce-overhead)
    loss_fn = loss_fn or losses.make_loss(task)
    score_fn = score_fn or partial(scores.epoch_scores, task, loss=loss_fn)
    correct_fn = partial(scores.train_correct, task) if task == "classify" else None
    exact = hasattr(train, "iterate")
    micro_batches = len(train)
    state = State(model, optimizer, epochs, -(-micro_batches // accumulate), getattr(train, "batch", 0),
                  loader=train if exact else None, callbacks=list(callbacks), dist=dist)
    if amp_dtype == torch.float16:
        state.scaler = torch.amp.GradScaler(device.type)
    if ema:
        state.ema = make_ema(model, ema)
    if resume is not None:
        restore(state, resume, device)
    state.bad_step = torch.full((), -1, device=device, dtype=torch.long)
    penalized = [p for p in model.parameters() if p.ndim > 1] if l1 else []  # weights, not biases or norms
    params = [p for g in optimizer.param_groups for p in g["params"]]
    step_images = accumulate * state.batch
    n_images = getattr(train, "num_images", None)

    _call(callbacks, "on_fit_start", state)
    for epoch in range(state.epoch, epochs):
        state.epoch, state.epoch_done = epoch, False
        fresh = state.order is None and state.epoch_step == 0 and state.seen == 0
        if fresh:
            state.loss_sum = torch.zeros((), device=device)
            state.correct = torch.zeros((), device=device, dtype=torch.long)
            state.seen = 0
            state.order = train.new_order() if exact else None
        model.train()
        if hasattr(model, "set_epoch"):  # a model whose trainable parts change with the epoch (airnet)
            model.set_epoch(epoch)
        _call(callbacks, "on_epoch_start", state)
        synchronize(device)  # the epoch's clock starts on an idle device and stops on one (GPU work is queued)
        t0 = time.perf_counter()
        interrupted = None
        first = state.epoch_step * accumulate  # micro-batch to start from (non-zero only when resuming)
        batches = train.iterate(state.order, first, epoch) if exact else iter(train)
        for i, (x, y) in enumerate(batches, start=first):
            group = i // accumulate  # the optimizer step this micro-batch belongs to
            in_group = min(step_images, n_images - group * step_images) if n_images else len(y) * accumulate
            x, target = mix(x, y) if mix is not None else (x, y)  # mixup/cutmix: soft targets (B, classes)
            last_micro = not ((i + 1) % accumulate and i + 1 < micro_batches)
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()  # a new step: the last replay's outputs may be reused
            # gradients are averaged over ranks once per optimizer step, not after every micro-batch
            with forward.no_sync() if dist.active and not last_micro else contextlib.nullcontext():
                with _autocast(device, amp_dtype):
                    out = forward(x)  # (B, outputs), or a tuple (logits, *auxiliary logits) from models with aux heads
                    logits, aux = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
                    loss = loss_fn(logits, target)
                    total = loss
                    for extra in aux:
                        total = total + AUX_WEIGHT * loss_fn(extra, target)
                    if l1:
                        total = total + l1 * sum(p.abs().sum() for p in penalized)
                # this micro-batch's share of the step's mean loss; x world because DDP averages over ranks
                weight = len(y) / in_group * dist.world
                state.bad_step = torch.where((state.bad_step < 0) & ~torch.isfinite(loss.detach()),
                                             state.step + 1, state.bad_step)
                if state.scaler is not None:
                    state.scaler.scale(total * weight).backward()
                else:
                    (total * weight).backward()
            state.seen += len(y)
            state.loss_sum += loss.detach().float() * len(y)  # stays on device: no host sync per step
            if correct_fn is not None and (hit := correct_fn(logits.detach(), y)) is not None:
                state.correct += hit
            if not last_micro:
                continue  # more micro-batches before this step
            if clip_norm or clip_value:
                if state.scaler is not None:
                    state.scaler.unscale_(optimizer)
                if clip_norm:
                    torch.nn.utils.clip_grad_norm_(params, clip_norm, foreach=True)
                if clip_value:
                    torch.nn.utils.clip_grad_value_(params, clip_value, foreach=True)
            if state.scaler is not None:
                state.scaler.step(optimizer)
                state.scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if state.ema is not None:
                state.ema.update_parameters(model)
            state.step += 1
            state.epoch_step += 1
            stopping = _settle(state, dist, device)
            interrupted = state.interrupted  # a signal seen now is saved by Checkpointing in these hooks; one
            _call(callbacks, "on_step_end", state)  # arriving during them waits for the next step's end
            if (stopping if dist.active else state.stop) or interrupted:
                break  # ranks leave together: a stop a hook sets on one rank is agreed at the next step
        if interrupted or not state.check_finite():
            break  # interrupted mid-epoch (last.pt holds the exact step) or diverged: no validation
        synchronize(device)
        train_seconds = time.perf_counter() - t0
        outputs, targets = distributed.gather(dist, *infer(state.eval_model, val, amp_dtype=amp_dtype))
        loss_sum, correct, seen = distributed.sum_(dist, state.loss_sum, state.correct,
                                                   torch.tensor(float(state.seen), device=device))
        seen = max(float(seen), 1.0)
        state.metrics = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / seen,
            **({"train_acc": float(correct) / seen} if correct_fn is not None else {}),
            **score_fn(outputs, targets),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
            "train_seconds": train_seconds,
        }
        state.history.append(state.metrics)
        state.epoch_done = True
        _call(callbacks, "on_epoch_end", state)
        state.order, state.epoch_step, state.seen = None, 0, 0
        stopping = _settle(state, dist, device)
        if stopping or state.interrupted:
            break
    _call(callbacks, "on_fit_end", state)
    return state
