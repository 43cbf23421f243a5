"""Embeddings: what a trained model sees in an image, as the vector its classifier reads, and the nearest images by it.

    f = features(module, images)               # (N, D) float32, L2-normalised; module: predictor.Pixels, uint8 in
    ids, sims = nearest(f[:5], f, k=3)          # (5, 3) indices into the bank, most similar first

The vector is the input of the model's `.head` Linear (every registered model has one), taken by a forward
pre-hook, so one forward pass of whatever wraps the model (Pixels' normalisation, TTA) gives it unchanged."""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np
import torch
from torch import nn

from cnnfit.data import normalize as normalize_pixels
from cnnfit.errors import CnnfitError

BATCH = 256  # images per forward pass: memory flat in N; ~1 MB of uint8 at 1x64x64 plus the activations
SIMILARITIES = 1 << 24  # float32 scores held at once by `nearest`: 64 MB, e.g. 335 queries x 50,000 bank rows


class _Captured(Exception):
    """Raised by the hook once the features are in hand: the rest of the forward pass (the head, TTA's other views)
    would be thrown away, so it is not run."""


def head_of(module: nn.Module) -> nn.Linear:
    """The classifier the features feed: the shallowest submodule named `head` that is an nn.Linear (Pixels.model.head,
    or TTA's model.head inside it, or a bare model's own)."""
    heads = [(name.count("."), name, m) for name, m in module.named_modules()
             if name.rsplit(".", 1)[-1] == "head" and isinstance(m, nn.Linear)]
    if not heads:
        raise CnnfitError(f"{type(module).__name__} has no `head` nn.Linear layer, whose input is the embedding; "
                          "every registered model has one: give your own model a `self.head = nn.Linear(D, classes)`")
    return min(heads, key=lambda h: h[:2])[2]


def features(module: nn.Module, images: np.ndarray | torch.Tensor, *, batch: int = BATCH,
             device: torch.device | str | None = None, normalize: bool = True,
             mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """(N, ...) images -> (N, D) float32 penultimate features: the input of the model's `head` Linear.

    `images` are what `module` takes: (N, C, H, W) uint8 for `predictor.Pixels` (its normalisation and layout
    apply), or for a bare model float inputs already normalised, or uint8 with the run's `mean` and `std` given.
    A TTA-wrapped model gives its first view's features, the image as it is. `device`: where to run, by default
    where the module's weights are. `normalize`: L2-normalise each row (default), so a plain dot product of saved
    vectors (numpy, FAISS's inner-product index) is the cosine similarity, the usual measure for neighbours by
    embedding; `nearest` uses cosine either way. The module runs in eval mode and is left in the mode it came in.
    Safe beside other threads using the same module: the hook acts only in the calling thread."""
    if len(images) == 0:
        raise CnnfitError("features takes at least one image, got 0")
    dev = torch.device(device) if device is not None else next(module.parameters(), torch.empty(0)).device
    stats = None
    if mean is not None or std is not None:
        if mean is None or std is None:
            raise CnnfitError("give both mean and std (the run's, from best.pt), or neither")
        stats = (torch.tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1),
                 1.0 / torch.tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1))
    head, owner, held = head_of(module), threading.get_ident(), []

    def grab(_: nn.Module, args: tuple) -> None:
        if threading.get_ident() != owner:  # a server thread predicting with the same module at this moment
            return
        held.append(args[0].detach().float().flatten(1))  # (B, D)
        raise _Captured

    hook, was_training = head.register_forward_pre_hook(grab), module.training
    out = None
    try:
        module.eval()
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                x = torch.as_tensor(np.ascontiguousarray(images[i:i + batch]) if isinstance(images, np.ndarray)
                                    else images[i:i + batch]).to(dev)
                if stats is not None:
                    x = normalize_pixels(x, *stats)  # (B, C, H, W) float32, as DeviceLoader fed it in training
                held.clear()
                try:
                    module(x)
                except _Captured:
                    pass
                if not held:
                    raise CnnfitError(f"{type(module).__name__}'s forward never called its head; embeddings are the "
                                      "head's input, so the model must end in its `head` Linear")
                f = torch.nn.functional.normalize(held[0], dim=1) if normalize else held[0]  # (B, D)
                if out is None:  # one (N, D) array filled batch by batch: no N/batch pieces to concatenate
                    out = np.empty((len(images), f.shape[1]), np.float32)
                out[i:i + len(f)] = f.cpu().numpy()
    finally:
        hook.remove()
        module.train(was_training)
    return out


def nearest(query: np.ndarray, bank: np.ndarray, k: int, *,
            budget: int = SIMILARITIES) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of `bank` (M, D) most cosine-similar to each row of `query` (Nq, D): indices (Nq, k) int64 into
    the bank and their similarities (Nq, k) float32, most similar first. Queries go in chunks of `budget` // M
    rows, so the scores held at once stay within `budget` floats (64 MB) however many queries come. A query that
    is also in the bank finds itself (similarity 1) first, bar exact duplicates: ask for k + 1 and drop column 0
    for leave-one-out neighbours."""
    query, bank = np.asarray(query, np.float32), np.asarray(bank, np.float32)
    if query.ndim != 2 or bank.ndim != 2 or query.shape[1] != bank.shape[1]:
        raise CnnfitError(f"nearest takes (Nq, D) queries and an (M, D) bank of the same D, got {query.shape} "
                          f"and {bank.shape}")
    if not 1 <= k <= len(bank):
        raise CnnfitError(f"k={k} neighbours from a bank of {len(bank)}; choose k from 1 to {len(bank)}")
    bank = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)  # (M, D) unit rows; zeros stay 0
    ids = np.empty((len(query), k), np.int64)
    sims = np.empty((len(query), k), np.float32)
    rows = max(1, budget // len(bank))
    for i in range(0, len(query), rows):
        q = query[i:i + rows]
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)  # (n, D)
        s = q @ bank.T  # (n, M) cosine similarities
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]  # (n, k) the k best, unordered: O(M) per row, not a sort
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")  # (n, k)
        ids[i:i + len(q)] = np.take_along_axis(top, order, axis=1)
        sims[i:i + len(q)] = np.take_along_axis(s, ids[i:i + len(q)], axis=1)
    return ids, sims


__all__ = ["features", "head_of", "nearest"]
