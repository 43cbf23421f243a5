"""Every "auto" rule of a run, with its reason, beside the config keys it fills.

A setting left unset (`None`, or "auto") is filled here, once, before anything is written; `config.yaml` records
the result and the run summary prints the reason. The help text of every auto key (`cnnfit train --help`) is
generated from `AUTO_HELP`, so what the help states cannot drift from what the run does."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnfit import engine
from cnnfit.config import IMAGENET, Config, ResumeConfig, help_text as config_help
from cnnfit.data.sources import AUTO_PHOTO_SIZE
from cnnfit.device import amp_name, cpu_has_bf16, resolve_amp, resolve_channels_last
from cnnfit.errors import CnnfitError

# peak LR per optimizer: the values the Adam (Kingma & Ba, 2015) and SGD-momentum literature train small CNNs with
AUTO_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}
# decay per optimizer: AdamW's decoupled 0.05 (as DeiT/ConvNeXt), SGD's classic 5e-4, none for the coupled others
AUTO_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05, "adam": 0.0, "rmsprop": 0.0}
IMBALANCE = 3.0  # largest/smallest train class above which accuracy hides the small classes: monitor macro F1
BACKBONE_LR_MULT = 0.1  # two-phase fine-tuning: the unfrozen backbone moves 10x slower than the new head
GAMMA = {"exponential": 0.95}  # per epoch; every other decaying schedule cuts by GAMMA_ELSE
GAMMA_ELSE = 0.1

AUTO_HELP = {
    "data.imgsz": f"the images' own size ({AUTO_PHOTO_SIZE} px if mixed)",
    "optim.lr": ", ".join(f"{v:g} ({k})" for k, v in AUTO_LR.items()),
    "optim.weight_decay": ", ".join(f"{v:g} ({k})" for k, v in AUTO_WEIGHT_DECAY.items()),
    "train.monitor": f"val_macro_f1 when the largest class is over {IMBALANCE:g}x the smallest, else val_acc "
                     "(multilabel: val_macro_f1, regress: val_loss)",
    "finetune.backbone_lr_mult": f"{BACKBONE_LR_MULT:g} with freeze_epochs, else 1",
    "finetune.freeze": "the backbone while freeze_epochs last, else nothing",
    "schedule.gamma": f"{GAMMA['exponential']:g} exponential, else {GAMMA_ELSE:g}",
}


def help_text() -> list[tuple[str, str, str]]:
    """(key, default, meaning) of every config key, the auto rules' text joined to the keys they fill."""
    return config_help(AUTO_HELP)


@dataclass(frozen=True)
class Resolved:
    """The values a run trains with, and why each automatic one is what it is."""

    config: Config  # the whole tree as config.yaml records it
    lr: float  # peak LR after lr_scale
    weight_decay: float
    step_lr: float  # what torch's optimizer is given (decoupled SGD converts per-1024-image values)
    step_wd: float
    amp_dtype: torch.dtype | None
    channels_last: bool
    monitor: str
    frozen_default: str | None
    why: dict[str, str]  # "amp", "channels_last", "monitor", "optim": the reasons the summary prints


def monitor_for(cfg: Config, task: str, train_counts: np.ndarray | None) -> tuple[str, str]:
    """The metric that picks best.pt and stops early, and why."""
    if cfg.data.merge_val:  # val was trained on: it cannot pick the epoch, so best.pt follows the last one
        return "epoch", "merge_val: the last epoch"
    if cfg.train.monitor != "auto":
        return cfg.train.monitor, "set"
    if task == "classify":
        imbalance = train_counts.max() / max(train_counts.min(), 1)
        skewed = imbalance > IMBALANCE
        return ("val_macro_f1" if skewed else "val_acc",
                f"auto: largest/smallest class {imbalance:.1f}" + (f" > {IMBALANCE:g}" if skewed else ""))
    return engine.scores.MONITORS[task], f"auto: {task}"


def resolve(cfg: Config, *, task: str, shape: tuple[int, int, int], train_counts: np.ndarray | None,
            device: torch.device) -> Resolved:
    """Fill every auto setting of `cfg` for data of `task` and `shape` (C, H, W) on `device`."""
    d, t, o = cfg.data, cfg.train, cfg.optim
    if o.decoupled and o.name != "sgd":
        raise CnnfitError(f"optim.decoupled=true is for sgd (its lr and weight decay are per 1024 images); "
                          f"drop it, or use optim={o.name} with plain lr and weight_decay")
    amp_dtype, amp_why = resolve_amp(t.amp, device, t.deterministic)
    channels_last, cl_why = resolve_channels_last(t.channels_last, device)
    base_lr = o.lr or AUTO_LR[o.name]
    lr = engine.scale_lr(base_lr, t.batch * t.accumulate, o.lr_scale, o.ref_batch)
    wd = o.weight_decay if o.weight_decay is not None else AUTO_WEIGHT_DECAY[o.name]
    step_lr, step_wd = (engine.decoupled_sgd(lr, wd, momentum=o.momentum, batch=t.batch * t.accumulate)
                        if o.decoupled else (lr, wd))
    monitor, monitor_why = monitor_for(cfg, task, train_counts)
    ft = cfg.finetune
    backbone_lr_mult = ft.backbone_lr_mult or (BACKBONE_LR_MULT if ft.freeze_epochs else 1.0)
    gamma = cfg.schedule.gamma or GAMMA.get(cfg.schedule.name, GAMMA_ELSE)
    c, h, _ = shape
    config = cfg.model_copy(update={
        "data": d.model_copy(update={"imgsz": h, "channels": c, "source": absolute(d.source), "task": task}),
        "optim": o.model_copy(update={"lr": base_lr, "weight_decay": wd}),
        "train": t.model_copy(update={"amp": amp_name(amp_dtype), "channels_last": channels_last, "monitor": monitor}),
        "model": cfg.model.model_copy(update={"init": absolute(cfg.model.init) if cfg.model.init not in (None, IMAGENET)
                                              else cfg.model.init}),
        "finetune": ft.model_copy(update={"backbone_lr_mult": backbone_lr_mult}),
        "schedule": cfg.schedule.model_copy(update={"gamma": gamma}),
        "resume": ResumeConfig(),
    })
    optim_why = ((f"{o.lr_scale} scaling of {base_lr:g} at batch {o.ref_batch}; " if o.lr_scale != "none" else "")
                 + ("auto: defaults for " + o.name if o.lr is None or o.weight_decay is None else "set"))
    return Resolved(config, lr, wd, step_lr, step_wd, amp_dtype, channels_last, monitor,
                    ft.freeze if ft.freeze is not None else ("backbone" if ft.freeze_epochs else None),
                    {"amp": amp_why, "channels_last": cl_why, "monitor": monitor_why, "optim": optim_why})


def absolute(source: str) -> str:
    """Paths become absolute in config.yaml so eval and predict work from any folder; names stay names."""
    return str(Path(source).expanduser().resolve()) if Path(source).expanduser().exists() else source


def eval_amp(trained: str, device: torch.device, amp: str | None = None,
             task: str = "classify") -> torch.dtype | None:
    """The autocast dtype to score in: a classifier's, the precision the run trained in (its validation used it
    too), unless `amp` (auto, bf16, fp16, off, as train.amp) says otherwise; fp32 where this device lacks the
    run's dtype, and for regression, whose outputs are the numbers themselves (bf16 keeps 3 digits). On 2 CPU
    cores, bf16 scored the 10,000 MNIST test images in 0.54 s against 1.03 s in fp32, with one prediction in
    10,000 different."""
    if amp is not None:
        return resolve_amp(amp, device)[0]
    if task == "regress":
        return None
    if trained == "bf16" and (device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())):
        return torch.bfloat16
    if trained == "fp16" and device.type == "cuda":
        return torch.float16
    return None


__all__ = ["AUTO_HELP", "AUTO_LR", "AUTO_WEIGHT_DECAY", "Resolved", "absolute", "eval_amp", "help_text",
           "monitor_for", "resolve"]
