"""init=imagenet: the model's ImageNet weights, the preprocessing they were trained with, and fine-tuning the way
experts do it. Each default below fills a key only when the user left it unset, and the run summary prints it with
its reason, so every choice is visible and overridable.

    cfg, weights = imagenet_recipe(cfg)  # before the data is read: the weights decide imgsz, channels, resize
    prep = replace(prep, mean=weights.mean(c), std=weights.std(c))  # their mean/std, not the data's
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from cnnfit import distributed, engine, models
from cnnfit.config import IMAGENET, Config, is_set
from cnnfit.data import DeviceLoader
from cnnfit.data.augment import Augment, identity as no_augment
from cnnfit.data.cache import remembered_array
from cnnfit.pipeline.prepare import Prepared
from cnnfit.pipeline.resolve import fill

log = logging.getLogger(__name__)

# (key, value, why) of the fine-tuning recipe. Numbers from the transfer-learning literature and checked on
# hymenoptera (245 train photos, 2 classes, efficientnet_lite0): see benchmarks/bench_transfer.py.
HEAD_FIRST = 2  # epochs of the head alone before the backbone thaws
# The augmentation is the data's own (resolve.by_data: aug.preset=photos for photos, glyphs for digits).
FINETUNE: tuple[tuple[str, Any, str], ...] = (
    ("train.label_smoothing", 0.1, "keeps a small set's head from growing overconfident (Szegedy et al. 2016)"),
    ("train.batch", 32, "more steps per epoch on a few hundred images"),
    ("finetune.backbone_lr_mult", 0.03, "once thawed, the backbone moves 33x slower than the new head: on "
     "hymenoptera, val accuracy 0.961 for 3 of 3 seeds, against 0.948, 0.954 and 0.961 at 0.1"),
)
# freeze=backbone (a linear probe): no augmentation, so the backbone's features are computed once and cached
FROZEN: tuple[tuple[str, Any, str], ...] = (
    ("train.label_smoothing", 0.1, "keeps a small set's head from growing overconfident (Szegedy et al. 2016)"),
    ("train.epochs", 30, "the head trains on cached features: an epoch takes milliseconds"),
)


@dataclass(frozen=True)
class Weights:
    """ImageNet weights of a zoo model and what they expect of their input."""

    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]  # imgsz, channels, color, resize, crop_pct, interpolation, mean, std, source, top1
    filled: list[tuple[str, Any, str]] = field(default_factory=list)  # (key, value, why) the recipe set

    def mean(self, channels: int) -> list[float]:
        """Their per-channel mean; one channel (the stem summed over RGB) sees the average."""
        m = [float(v) for v in self.meta["mean"]]
        return m if channels == 3 else [sum(m) / 3]

    def std(self, channels: int) -> list[float]:
        s = [float(v) for v in self.meta["std"]]
        return s if channels == 3 else [sum(s) / 3]

    def describe(self) -> str:
        m = self.meta
        return (f"ImageNet-1k, {m['source']}, top-1 {m['top1']:g}%; input {m['imgsz']} px {m['color']}, "
                f"{m['resize']} to {round(m['imgsz'] / m['crop_pct'])} then centre crop, {m['interpolation']}, "
                f"mean {_numbers(m['mean'])} std {_numbers(m['std'])}")


def _numbers(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def imagenet_recipe(cfg: Config) -> tuple[Config, Weights | None]:
    """For init=imagenet: `cfg` with the weights' preprocessing and the fine-tuning recipe in every key the user left
    unset, and the weights; any other cfg is returned as it is, with None."""
    if cfg.model.init != IMAGENET:
        return cfg, None
    state_dict, meta = models.imagenet_weights(cfg.model.name)
    rows: list[tuple[str, Any, str]] = [
        ("data.imgsz", meta["imgsz"], "the weights' input size"),
        ("data.channels", 3, "the weights see RGB: grayscale images are replicated to 3 channels"),
        ("data.resize", "center", "the weights' resize: shorter side, then centre crop"),
    ]
    if cfg.finetune.freeze == "backbone" and not cfg.finetune.freeze_epochs:  # a linear probe
        rows += FROZEN
    else:
        if not is_set(cfg, "finetune.freeze"):  # the user chose what to freeze: no head-first phase on top
            rows.append(("finetune.freeze_epochs", min(HEAD_FIRST, cfg.train.epochs - 1),  # >= 1 epoch of all layers
                         "head first, backbone frozen (its batch norm keeps ImageNet's statistics): a random head's "
                         "large gradients would disturb the pretrained filters (LP-FT, Kumar et al. 2022)"))
        rows += FINETUNE
    cfg, filled = fill(cfg, rows)
    return cfg, Weights(state_dict, meta, filled)


def feature_loaders(cfg: Config, model: torch.nn.Module, labels: np.ndarray, prep: Prepared,
                    amp_dtype: torch.dtype | None, frozen: list[str], augment: Augment, ctx: distributed.Dist,
                    common: dict) -> tuple[torch.nn.Module, DeviceLoader, DeviceLoader] | None:
    """With the whole backbone frozen for the whole run and no augmentation, each image's features never change: they
    are computed once, kept beside the cached data (keyed by the backbone's weights, the input and the split), and the
    head trains on them (engine.features.OnFeatures). Returns that model and its train and val loaders, or None
    where the full model must run each step."""
    t, a = cfg.train, cfg.aug
    whole = frozen and frozen == [n for n, _ in engine.finetune.stages(model)] and not cfg.finetune.freeze_epochs
    if not whole or augment is not no_augment or a.hflip == "alternate" or a.mixup or a.cutmix or ctx.active \
            or t.compile or t.tensorboard or getattr(model, "set_epoch", None) is not None:
        return None
    key = _backbone_key(model, prep, amp_dtype)
    t0, parts, hits = time.perf_counter(), {}, []
    for name in ("train", "val"):
        rows = prep.parts[name]
        part_key = key + hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()

        def compute(rows: np.ndarray = rows) -> np.ndarray:
            found = engine.features.head_inputs(model, DeviceLoader(prep.ds.images, labels, index=rows, **common),
                                                amp_dtype=amp_dtype)
            return np.zeros((0, 0), np.float32) if found is None else found.numpy()

        features, hit = remembered_array(prep.ds, part_key, "features", compute) if len(rows) else (
            np.zeros((0, 0), np.float32), True)
        if len(rows) and features.shape[0] != len(rows):
            log.info(f"{cfg.model.name}'s output is not its head applied to flat features: the full model runs "
                     "each step")
            return None
        parts[name] = features
        hits.append(hit)
    plain = {**common, "mean": [0.0], "std": [1.0], "channels_last": False, "stream": False}
    train = DeviceLoader(parts["train"], labels[prep.parts["train"]], shuffle=True, seed=t.seed,
                         balanced=t.sampler == "balanced", drop_last=t.drop_last, **plain)
    val = DeviceLoader(parts["val"], labels[prep.parts["val"]], **plain)
    log.info(f"frozen backbone, no augmentation: the head trains on its features, {parts['train'].shape[1]} per image "
             f"({'read from the cache' if all(hits) else 'computed and cached'} in {time.perf_counter() - t0:.1f} s)")
    return engine.features.OnFeatures(model), train, val


def _backbone_key(model: torch.nn.Module, prep: Prepared, amp_dtype: torch.dtype | None) -> str:
    """What the features depend on: every weight but the head's, the input's size and normalization, the precision."""
    digest = hashlib.sha256()
    for name, value in model.state_dict().items():
        if not name.startswith("head."):
            digest.update(name.encode())
            digest.update(value.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    digest.update(json.dumps([list(prep.ds.shape), prep.mean, prep.std, str(amp_dtype)]).encode())
    return digest.hexdigest()


__all__ = ["FINETUNE", "FROZEN", "HEAD_FIRST", "Weights", "feature_loaders", "imagenet_recipe"]
