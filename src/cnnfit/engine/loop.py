"""The training loop: one flat function a reader can hold in their head, plus batched inference."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnfit.engine.callbacks import HOOKS, Callback
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
    """Logits (float32, on CPU) and labels for every batch, in order, with the model in eval mode."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in batches:
        with _autocast(x.device, amp_dtype):
            out = model(x)
        logits.append(out.float())
        labels.append(y)
    model.train(was_training)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long)
    return torch.cat(logits).cpu(), torch.cat(labels).cpu()


def _balanced_scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Macro F1 and balanced accuracy from a confusion count, cheap enough for every epoch."""
    if not len(labels):
        return float("nan"), float("nan")
    k = logits.shape[1]
    cm = torch.bincount(labels * k + logits.argmax(1), minlength=k * k).view(k, k).double()  # (true, pred)
    tp, support, predicted = cm.diag(), cm.sum(1), cm.sum(0)
    present = support > 0
    recall = tp / support.clamp(min=1)
    precision = tp / predicted.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return f1[present | (predicted > 0)].mean().item(), recall[present].mean().item()


def fit(model: nn.Module, train: Iterable, val: Iterable, *, optimizer: torch.optim.Optimizer,
        epochs: int, device: torch.device, callbacks: Sequence[Callback] = (), label_smoothing: float = 0.0,
        amp_dtype: torch.dtype | None = None, class_weight: torch.Tensor | None = None,
        mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None) -> State:
    """Train for `epochs` (or until a callback sets `state.stop`); per-epoch metrics land in state.history."""
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    state = State(model, optimizer, epochs, len(train), getattr(train, "batch", 0))
    _call(callbacks, "on_fit_start", state)
    for epoch in range(epochs):
        state.epoch = epoch
        state.loss_sum = torch.zeros((), device=device)
        state.correct = torch.zeros((), device=device, dtype=torch.long)
        state.seen = 0
        model.train()
        t0 = time.perf_counter()
        _call(callbacks, "on_epoch_start", state)
        for x, y in train:
            x, target = mix(x, y) if mix is not None else (x, y)  # mixup/cutmix: soft targets (B, classes)
            with _autocast(device, amp_dtype):
                out = model(x)  # (B, classes), or a tuple (logits, *auxiliary logits) from models with aux heads
                logits, aux = (out[0], out[1:]) if isinstance(out, tuple) else (out, ())
                loss = F.cross_entropy(logits, target, weight=class_weight, label_smoothing=label_smoothing)
                for extra in aux:
                    loss = loss + AUX_WEIGHT * F.cross_entropy(extra, target, weight=class_weight,
                                                               label_smoothing=label_smoothing)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.seen += len(y)
            state.loss_sum += loss.detach().float() * len(y)  # stays on device: no host sync per step
            state.correct += (logits.detach().argmax(1) == y).sum()
            _call(callbacks, "on_step_end", state)
            if state.stop:
                break
        train_seconds = time.perf_counter() - t0
        val_logits, val_labels = infer(model, val, amp_dtype=amp_dtype)
        macro_f1, balanced_acc = _balanced_scores(val_logits, val_labels)
        state.metrics = {
            "epoch": epoch + 1,
            "train_loss": state.loss_sum.item() / max(state.seen, 1),
            "train_acc": state.correct.item() / max(state.seen, 1),
            "val_loss": F.cross_entropy(val_logits, val_labels).item() if len(val_labels) else float("nan"),
            "val_acc": (val_logits.argmax(1) == val_labels).float().mean().item() if len(val_labels) else float("nan"),
            "val_macro_f1": macro_f1,
            "val_balanced_acc": balanced_acc,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - t0,
            "train_seconds": train_seconds,
        }
        state.history.append(state.metrics)
        _call(callbacks, "on_epoch_end", state)
        if state.stop:
            break
    _call(callbacks, "on_fit_end", state)
    return state
