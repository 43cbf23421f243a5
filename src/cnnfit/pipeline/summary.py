"""The table `cnnfit train` logs before training: one row per setting, its value and why it has it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnfit.config import Config
from cnnfit.data.sources import AUTO_PHOTO_SIZE
from cnnfit.distributed import Dist
from cnnfit.pipeline.prepare import Prepared
from cnnfit.pipeline.resolve import Resolved

log = logging.getLogger(__name__)


def _per_class_text(counts: dict[str, list[int]], classes: list[str]) -> str:
    triples = list(zip(counts["train"], counts["val"], counts["test"]))
    if len(set(triples)) == 1:
        return "{}/{}/{} each".format(*triples[0])
    if len(classes) <= 6:
        return "; ".join(f"{c} {a}/{b}/{t}" for c, (a, b, t) in zip(classes, triples))
    train = counts["train"]
    return f"train {min(train)}..{max(train)} per class (largest/smallest {max(train) / max(min(train), 1):.1f})"


def log_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """Rows of (setting, value, why) as one record: plain text for logging, a table for the CLI."""
    text = "\n".join(f"{k:<12} {v}" + (f"  ({why})" if why else "") for k, v, why in rows)
    log.info(f"{title}\n{text}", extra={"table": {"title": title, "columns": None, "rows": [list(r) for r in rows],
                                                  "styles": ["bold", "", "dim"]}})


def _loss_text(task: str, t: Any) -> str:
    name = t.loss if t.loss != "auto" else {"classify": "ce", "multilabel": "bce", "regress": "mse"}[task]
    extra = (f", label smoothing {t.label_smoothing:g}" if t.label_smoothing else "") + (
        f", gamma {t.focal_gamma:g}" if name == "focal" else "")
    return f"{name} ({task})" + extra


def _finetune_text(frozen: list[str], ft: Any, epochs: int, backbone_lr_mult: float) -> str:
    parts = []
    if frozen:
        span = f"for {ft.freeze_epochs} of {epochs} epochs" if ft.freeze_epochs else "for the whole run"
        parts.append(f"frozen {', '.join(frozen) if len(frozen) <= 4 else f'{len(frozen)} stages'} {span}")
    parts.append(f"LR x{backbone_lr_mult:g} backbone, x{ft.head_lr_mult:g} head")
    return "; ".join(parts)


def _value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _optimizer_text(cfg: Config, r: Resolved) -> str:
    o, t = cfg.optim, cfg.train
    return (f"{o.name} lr {r.lr:g} weight_decay {r.weight_decay:g}"
            + (f" per 1024 images (torch SGD: lr {r.step_lr:.4g}, weight_decay {r.step_wd:.4g})" if o.decoupled else "")
            + (f", norm lr x{o.norm_lr_mult:g}" if o.norm_lr_mult != 1 else "") + (f" l1 {o.l1:g}" if o.l1 else "")
            + (f", clip_norm {t.clip_norm:g}" if t.clip_norm else "")
            + (f", clip_value {t.clip_value:g}" if t.clip_value else "")
            + (f", ema {t.ema:g}" if t.ema else "") + (f", lookahead every {t.lookahead} steps" if t.lookahead else ""))


def _data_rows(cfg: Config, prep: Prepared, run_dir: Path, chosen: set[str]) -> list[tuple[str, str, str]]:
    ds, task, d = prep.ds, prep.ds.task, cfg.data
    c, h, _ = ds.shape
    per_class = []
    if task == "classify":
        counts = {n: np.bincount(ds.labels[i], minlength=len(ds.classes)).tolist() for n, i in prep.parts.items()}
        per_class = [("per class", _per_class_text(counts, ds.classes), "train/val/test")]
    return [
        ("data", f"{d.source}: {len(ds)} images, {len(ds.classes)} {'classes' if task != 'regress' else 'target'}"
         + (f", {task}" if task != "classify" else ""), "cache hit" if prep.cache_hit else "decoded and cached"),
        ("split", " / ".join(f"{k} {len(v)}" for k, v in prep.parts.items()), prep.split_how),
        *per_class,
        ("skipped", f"{len(ds.skipped)} files" + (f" (listed in {run_dir / 'skipped.txt'})" if ds.skipped else ""),
         "; ".join(f"{Path(f).name}: {why}" for f, why in ds.skipped[:3])),
        ("input", f"{c}x{h}x{h} ({d.resize})",
         "auto: see data.imgsz below" if "data.imgsz" in chosen else "set" if d.imgsz is not None
         else f"auto: own size ({AUTO_PHOTO_SIZE} px if mixed)"),
    ]


def train_rows(cfg: Config, r: Resolved, prep: Prepared, *, run_dir: Path, model: torch.nn.Module,
               options: dict[str, Any], init: Any, frozen: list[str], device: torch.device, ctx: Dist,
               steps: int, resumed_at: int | None, weights: Any = None,
               chosen: list[tuple[str, Any, str]] = ()) -> list[tuple[str, str, str]]:
    """Every row of the run summary, from the resolved settings."""
    t, ft, rc = cfg.train, cfg.finetune, r.config
    n_params = sum(p.numel() for p in model.parameters())
    backbone_lr_mult = rc.finetune.backbone_lr_mult
    return [
        *_data_rows(cfg, prep, run_dir, {key for key, _, _ in chosen}),
        ("model", f"{cfg.model.name}, {n_params:,} parameters", ", ".join(f"{k}={v}" for k, v in options.items())),
        *([("init", init.summary(), f"from {cfg.model.init} (details in init.json)")] if init else []),
        *([("weights", weights.describe(), "init=imagenet: the input follows the weights")] if weights else []),
        *[(key, _value(value), why) for key, value, why in chosen],  # each default the data chose, with why
        *([("fine-tune", _finetune_text(frozen, ft, t.epochs, backbone_lr_mult), "")] if frozen or ft.head_lr_mult != 1
          or backbone_lr_mult != 1 else []),
        ("device", f"{device}, amp {rc.train.amp}, channels_last {r.channels_last}"
         + (", deterministic" if t.deterministic else ""), f"{r.why['amp']}; {r.why['channels_last']}"),
        *([("distributed", f"{ctx.world} processes ({'nccl' if device.type == 'cuda' else 'gloo'}), "
            f"{-(-t.batch // ctx.world)} images each per step" + (", SyncBatchNorm" if t.sync_bn else ""),
            "torchrun; batch is the global batch")] if ctx.active else []),
        ("training", f"{t.epochs} epochs x {steps} steps, batch {t.batch}"
                     + (f" x {t.accumulate} accumulated" if t.accumulate > 1 else "")
                     + (f", {t.sampler} sampler" if t.sampler != "shuffle" else "")
                     + (f", class weights {t.class_weight}" if t.class_weight != "none" else ""),
         f"monitor {r.monitor} ({r.why['monitor']})" + (f", patience {t.patience}" if t.patience else "")),
        ("loss", _loss_text(prep.ds.task, t), ""),
        ("optimizer", _optimizer_text(cfg, r), r.why["optim"]),
        ("schedule", cfg.schedule.name + (f", warmup {cfg.schedule.warmup:g} epochs" if cfg.schedule.warmup else ""),
         ""),
        ("run", str(run_dir), f"resumed at step {resumed_at}" if resumed_at is not None else ""),
    ]


__all__ = ["log_table", "train_rows"]
