"""Every "auto" rule of a run, with its reason, beside the config keys it fills.

A setting left unset (`None`, or "auto") is filled here, once, before anything is written; `config.yaml` records
the result and the run summary prints the reason. The help text of every auto key (`cnnfit train --help`) is
generated from `AUTO_HELP`, so what the help states cannot drift from what the run does."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnfit import engine, models
from cnnfit.config import IMAGENET, SCRATCH, Config, ResumeConfig, help_text as config_help, is_set, set_dotted
from cnnfit.data.look import Look
from cnnfit.data.sources import AUTO_PHOTO_SIZE
from cnnfit.device import amp_name, cpu_has_bf16, resolve_amp, resolve_channels_last
from cnnfit.errors import CnnfitError

# peak LR per optimizer: the values the Adam (Kingma & Ba, 2015) and SGD-momentum literature train small CNNs with
AUTO_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}
# decay per optimizer: AdamW's decoupled 0.05 (as DeiT/ConvNeXt), SGD's classic 5e-4, none for the coupled others
AUTO_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05, "adam": 0.0, "rmsprop": 0.0}
IMBALANCE = 3.0  # largest/smallest train class above which accuracy hides the small classes: monitor macro F1
# val images under which val_loss picks the epoch: on digits' 269, val_acc picked a lucky early epoch (test 0.963,
# seed 0) where val_loss picked a later one (0.981); 3-seed test mean 0.988 against 0.981, 20 epochs
SMALL_VAL = 1000
BACKBONE_LR_MULT = 0.1  # two-phase fine-tuning: the unfrozen backbone moves 10x slower than the new head
GAMMA = {"exponential": 0.95}  # per epoch; every other decaying schedule cuts by GAMMA_ELSE
GAMMA_ELSE = 0.1

Row = tuple[str, Any, str]  # (dotted key, the value chosen, why): one row of the run summary each

# --- what the images are, before they are decoded ------------------------------------------------------------------
PHOTO_SIDE = 64  # px, median shorter side above which images are photos: an ImageNet backbone's domain (CIFAR is 32)
BACKBONE = "efficientnet_lite0"  # ImageNet weights that ship with cnnfit: 75.1% top-1, 4.7M parameters, CPU-friendly
SCRATCH_MODELS = {  # a batch-normalised net from scratch, by kind; glyphs keep the tutorial CNN
    "glyphs": ("simplecnn", "the MNIST tutorials' CNN; on digits it ties a grid's best (bench_defaults.py)"),
    # CIFAR-10, 5,000 images, 1.5 min, hflip + shift: test 0.646 against resnet20's 0.564 and airnet's 0.617
    "small-photos": ("fastnet", "a batch-normalised net after airbench94, the fastest learner of small photos"),
    "photos": ("fastnet", "from scratch (init=none, or no ImageNet weights here): a batch-normalised net"),
}
AUG: dict[str, tuple[Row, ...]] = {  # the augmentation each kind of image calls for
    # Fashion-MNIST, 5,000 images, 1 min: test 0.890 with these, 0.859 with shift 0.1 and 10 degrees, 0.888 with none
    "glyphs": (("aug.shift", 0.05, "glyphs move a little on the page (5%: 1.4 px at 28 px); no flips: a mirrored "
                "letter is another letter or none"),
               ("aug.rotation", 5, "and tilt a little (up to 5 degrees)")),
    "small-photos": (("aug.hflip", True, "a mirrored photo shows the same class"),
                     ("aug.shift", 0.125, "4 px shifts at 32 px: the standard CIFAR augmentation (He et al. 2016)"),
                     ("aug.fill_mode", "reflect", "a shift's uncovered edge mirrored, not black (airbench's "
                      "reflect padding)")),
    "photos": (("aug.resized_crop", 0.25, "random resized crop of 25-100% of each photo: the ImageNet training "
                "augmentation, milder than its 8% for a small set"),
               ("aug.hflip", True, "a mirrored photo shows the same class"),
               ("aug.brightness", 0.2, "light colour jitter: lighting varies between photos"),
               ("aug.contrast", 0.2, "light colour jitter"),
               ("aug.saturation", 0.2, "light colour jitter")),
}
# --- how long, from the size of the training split ----------------------------------------------------------
SCRATCH_STEPS = 2000  # optimizer steps a run from scratch aims at: digits' 1,257 images -> 60 epochs (the cap)
FINETUNE_STEPS = 1000  # pretrained weights need fewer: hymenoptera's 245 photos -> 10 epochs (the cap)
EPOCHS = {"scratch": (10, 60), "finetune": (5, 10)}  # (fewest, most) epochs
TIMED_EPOCHS = 1000  # with time= and no epochs: the budget ends the run, and the LR decays over the budget
PATIENCE_SHARE = 4  # early stopping after a quarter of the run without improvement (at least MIN_PATIENCE epochs)
MIN_PATIENCE = 5
TIMED_PATIENCE = 10  # epochs, for a run the time budget ends
MIN_STEPS = 8  # a tiny training split still gets 8 optimizer steps an epoch: batch <= images / 8
MIN_BATCH, MAX_BATCH = 8, 64  # below 8, batch-norm statistics are noise; 64 is cnnfit's batch for everything else

AUTO_HELP = {
    "data.imgsz": f"the images' own size ({AUTO_PHOTO_SIZE} px if mixed)",
    "optim.lr": ", ".join(f"{v:g} ({k})" for k, v in AUTO_LR.items()),
    "optim.weight_decay": ", ".join(f"{v:g} ({k})" for k, v in AUTO_WEIGHT_DECAY.items()),
    "train.monitor": f"val_macro_f1 when the largest class is over {IMBALANCE:g}x the smallest, else val_loss "
                     f"under {SMALL_VAL} val images, else val_acc (multilabel: val_macro_f1, regress: val_loss)",
    "finetune.backbone_lr_mult": f"{BACKBONE_LR_MULT:g} with freeze_epochs, else 1",
    "finetune.freeze": "the backbone while freeze_epochs last, else nothing",
    "schedule.gamma": f"{GAMMA['exponential']:g} exponential, else {GAMMA_ELSE:g}",
    "model.name": f"photos (shorter side over {PHOTO_SIDE} px): {BACKBONE} with init=imagenet, else "
                  + ", ".join(f"{m} ({kind})" for kind, (m, _) in SCRATCH_MODELS.items()),
    "model.init": f"imagenet for photos whose model has ImageNet weights here ({BACKBONE} ships with cnnfit)",
    "aug.preset": "glyphs for grayscale images up to 64 px, small-photos for colour ones, photos above 64 px; "
                  "none for a linear probe (freeze=backbone)",
    "train.epochs": f"{SCRATCH_STEPS} optimizer steps from scratch within {'-'.join(map(str, EPOCHS['scratch']))} "
                    f"epochs, {FINETUNE_STEPS} fine-tuning within {'-'.join(map(str, EPOCHS['finetune']))}; "
                    f"{TIMED_EPOCHS} with time= (the budget ends the run and the LR decays over it)",
    "train.patience": f"a quarter of the epochs, at least {MIN_PATIENCE}; {TIMED_PATIENCE} with time=",
    "train.batch": f"{MAX_BATCH}, less for a small training split: at least {MIN_STEPS} steps an epoch, "
                   f"at least {MIN_BATCH} images a step",
}


def help_text() -> list[tuple[str, str, str]]:
    """(key, default, meaning) of every config key, the auto rules' text joined to the keys they fill."""
    return config_help(AUTO_HELP)


def fill(cfg: Config, rows: list[Row] | tuple[Row, ...]) -> tuple[Config, list[Row]]:
    """`cfg` with each row's value in its key where the user left the key unset (the first row of a key wins), and
    the rows that were filled. Filled keys count as set from then on, so a later rule leaves them alone."""
    filled: dict[str, Row] = {}
    for key, value, why in rows:
        if key not in filled and not is_set(cfg, key):
            filled[key] = (key, value, why)
    if not filled:
        return cfg, []
    tree = cfg.model_dump(mode="json", exclude_unset=True)
    for key, value, _ in filled.values():
        set_dotted(tree, key, value)
    if cfg.model.trust_code is not None:  # never dumped (a file cannot vouch for code), so carried by hand
        set_dotted(tree, "model.trust_code", cfg.model.trust_code)
    return type(cfg).model_validate(tree), list(filled.values())


def kind_of(seen: Look) -> tuple[str, str]:
    """glyphs, small-photos or photos, and why."""
    size = f"{seen.side} px" + (" (median shorter side)" if seen.mixed else "")
    if seen.side > PHOTO_SIDE:
        return "photos", f"{'colour' if seen.channels == 3 else 'grayscale'} images of {size}"
    return ("glyphs" if seen.channels == 1 else "small-photos"), \
        f"{'grayscale' if seen.channels == 1 else 'colour'} images of {size}"


def by_data(cfg: Config, seen: Look) -> tuple[Config, list[Row]]:
    """The model, its weights, the input size for photos from scratch, and the augmentation, each chosen from
    what the images are where the user left it unset: the choices that decide how the data is decoded."""
    kind, why = kind_of(seen)
    m, rows = cfg.model, []
    name = m.name if is_set(cfg, "model.name") else BACKBONE
    if kind == "photos" and m.init is None and models.has_imagenet_weights(name) and models.imagenet_offline(name):
        rows += [("model.name", BACKBONE, f"{kind}, {why}: ImageNet features transfer to photos; {BACKBONE}'s "
                  "weights ship with cnnfit (init=none trains from scratch)"),
                 ("model.init", IMAGENET, f"photos, and {name}'s ImageNet weights are here; init=none trains from "
                  "scratch")]
    elif m.init in (None, SCRATCH):
        model, model_why = SCRATCH_MODELS[kind]
        rows.append(("model.name", model, f"{kind}, {why}: {model_why}"))
        if kind == "photos" and not is_set(cfg, "model.name"):
            rows.append(("data.imgsz", AUTO_PHOTO_SIZE, f"from scratch on the CPU, {AUTO_PHOTO_SIZE} px trains ~12x "
                         "faster than 224 px; set imgsz for more detail"))
    preset = cfg.aug.preset
    if preset == "auto":
        probe = cfg.finetune.freeze == "backbone" and not cfg.finetune.freeze_epochs
        preset, preset_why = ("none", "a linear probe (freeze=backbone) trains on cached features: no "
                              "augmentation") if probe else (kind, f"{why}; aug=none turns it off")
        rows.append(("aug.preset", preset, preset_why))
    return fill(cfg, [*rows, *AUG.get(preset, ())])


def by_size(cfg: Config, n_train: int) -> tuple[Config, list[Row]]:
    """Batch, epochs and early stopping from the number of training images (and the time budget), where unset."""
    t, rows = cfg.train, []
    batch = t.batch
    if not is_set(cfg, "train.batch") and n_train < MAX_BATCH * MIN_STEPS:
        batch = min(n_train, max(MIN_BATCH, 2 ** int(math.log2(max(n_train // MIN_STEPS, 1)))))
        rows.append(("train.batch", batch, f"{n_train} training images: {-(-n_train // batch)} steps an epoch"))
    if t.time:
        epochs = TIMED_EPOCHS
        rows += [("train.epochs", epochs, f"time={t.time:g} min ends the run; the LR decays over the budget"),
                 ("train.patience", TIMED_PATIENCE, "early stopping; best.pt keeps the best epoch's weights")]
    else:
        tuned = cfg.model.init not in (None, SCRATCH)  # pretrained weights converge in fewer steps
        steps, (lo, hi) = (FINETUNE_STEPS, EPOCHS["finetune"]) if tuned else (SCRATCH_STEPS, EPOCHS["scratch"])
        per_epoch = -(-n_train // batch)
        epochs = t.epochs if is_set(cfg, "train.epochs") else min(hi, max(lo, -(-steps // per_epoch)))
        rows += [("train.epochs", epochs, f"{steps} steps {'fine-tuning' if tuned else 'from scratch'} at "
                  f"{per_epoch} an epoch ({n_train} training images), within {lo}-{hi} epochs"),
                 ("train.patience", max(MIN_PATIENCE, -(-epochs // PATIENCE_SHARE)),
                  "early stopping after a quarter of the epochs without improvement; best.pt keeps the best "
                  "epoch's weights")]
    return fill(cfg, rows)


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


def monitor_for(cfg: Config, task: str, train_counts: np.ndarray | None, n_val: int | None = None) -> tuple[str, str]:
    """The metric that picks best.pt and stops early, and why."""
    if cfg.data.merge_val:  # val was trained on: it cannot pick the epoch, so best.pt follows the last one
        return "epoch", "merge_val: the last epoch"
    if cfg.train.monitor != "auto":
        return cfg.train.monitor, "set"
    if task == "classify":
        imbalance = train_counts.max() / max(train_counts.min(), 1)
        if imbalance > IMBALANCE:
            return "val_macro_f1", f"auto: largest/smallest class {imbalance:.1f} > {IMBALANCE:g}"
        if n_val is not None and n_val < SMALL_VAL:
            return "val_loss", (f"auto: {n_val} val images, where accuracy moves in steps of {100 / n_val:.2f} "
                                "points and the loss is continuous")
        return "val_acc", f"auto: largest/smallest class {imbalance:.1f}"
    return engine.scores.MONITORS[task], f"auto: {task}"


def resolve(cfg: Config, *, task: str, shape: tuple[int, int, int], train_counts: np.ndarray | None,
            device: torch.device, n_val: int | None = None) -> Resolved:
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
    monitor, monitor_why = monitor_for(cfg, task, train_counts, n_val)
    ft = cfg.finetune
    backbone_lr_mult = ft.backbone_lr_mult or (BACKBONE_LR_MULT if ft.freeze_epochs else 1.0)
    gamma = cfg.schedule.gamma or GAMMA.get(cfg.schedule.name, GAMMA_ELSE)
    c, h, _ = shape
    config = cfg.model_copy(update={
        "data": d.model_copy(update={"imgsz": h, "channels": c, "source": absolute(d.source), "task": task}),
        "optim": o.model_copy(update={"lr": base_lr, "weight_decay": wd}),
        "train": t.model_copy(update={"amp": amp_name(amp_dtype), "channels_last": channels_last, "monitor": monitor}),
        "model": cfg.model.model_copy(update={"init": absolute(cfg.model.init) if cfg.model.init not in (None, IMAGENET,
                                                                                                   SCRATCH)
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


__all__ = ["AUG", "AUTO_HELP", "AUTO_LR", "AUTO_WEIGHT_DECAY", "Resolved", "Row", "absolute", "by_data", "by_size",
           "eval_amp", "fill", "help_text", "kind_of", "monitor_for", "resolve"]
