"""Every setting of a run in one tree of frozen pydantic models, loaded from defaults < file < CLI.

`None` means "auto": the pipeline resolves it and records the reason, and the resolved tree is what
`config.yaml` holds, so `cnnfit train config=runs/x/config.yaml` repeats the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cnnfit.errors import CnnfitError, suggest

IMAGENET = "imagenet"  # init=imagenet: the model's own ImageNet weights, wherever models.imagenet_weights finds them
SCRATCH = "none"  # init=none: random weights, even where the data would get an ImageNet backbone


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Group):
    source: str = Field("digits", description="a named set (digits, mnist, fashion-mnist, kmnist, emnist-letters "
                        "and EMNIST's other splits, qmnist, cifar10, cifar100, svhn, stl10), hf:owner/name, a folder "
                        "of class folders, a .zip of them, a .csv manifest, or a folder or file of arrays (idx, "
                        "CIFAR, STL-10, .npz, .h5, .mat, Hugging Face save_to_disk or .parquet)")
    imgsz: int | None = Field(None, ge=4, le=1024, description="square input size in pixels")
    channels: Literal[1, 3] | None = Field(None, description="1 or 3; auto: 1 when every image is grayscale")
    resize: Literal["squash", "crop", "pad", "center"] = Field(
        "squash", description="how non-square images become square; center: the shorter side to imgsz/0.875, then "
        "a centre crop (ImageNet's evaluation)")
    val: float = Field(0.15, gt=0.0, lt=1.0, description="validation fraction when the source has no val split")
    test: float = Field(0.15, gt=0.0, lt=1.0, description="test fraction when the source has no test split")
    cache: bool = Field(True, description="decode once and memory-map later runs")
    workers: int | None = Field(None, ge=1, description="decoding threads; auto: all cores")
    stream: bool | None = Field(None, description="stream batches from disk; auto: when the data would take over "
                                "half the free memory")
    exclude: str | list[str] = Field([], description="files to leave out: glob patterns, or a .txt file with one "
                                      "path or pattern per line")
    fraction: float = Field(1.0, gt=0, le=1, description="use this fraction of the train and val splits "
                            "(stratified, seeded) for quick experiments; test stays whole")
    per_class: int | None = Field(None, ge=1, description="keep at most N images per class in train and val "
                                  "(scarce-data studies); test stays whole")
    merge_val: bool = Field(False, description="train on train+val for the set epochs, best.pt = the last epoch; "
                            "val is not scored (its images were trained on), the test split still is")
    folds: int | None = Field(None, description="k-fold cross-validation: cut train+val into this many stratified "
                              "folds (seeded by seed), the test split kept as without it; none: no folds")
    labels: bool | str = Field(False, description="cnnfit inspect: look for likely label errors: true runs a 5-fold "
                               "cv first; or a cv run's folder or oof.csv (cleanlab on out-of-fold probabilities)")
    fold: int | None = Field(None, description="with folds: the fold (0..folds-1) that is val, the others train")
    download: bool = Field(False, description="fetch a missing named dataset from its official address (md5-checked)")
    h5_images: str = Field("", description="the HDF5 dataset holding the images, e.g. train/x; auto: told by "
                           "shape and name")
    h5_labels: str = Field("", description="the HDF5 dataset holding the labels, e.g. train/y; auto: told by shape "
                           "and name")
    allow_outside: bool = Field(False, description="read images outside the data folder: CSV rows that leave the "
                                "manifest's folder, links in a folder that point elsewhere (refused by default)")
    task: Literal["auto", "classify", "multilabel", "regress"] = Field(
        "auto", description="auto: from the data (a CSV manifest with 'a;b' labels is multilabel, a numeric "
        "'target' column is regress), else classify")

    @model_validator(mode="after")
    def _folds(self) -> "DataConfig":
        if self.folds is not None and self.folds < 2:
            raise ValueError(f"data.folds={self.folds} cuts nothing; use data.folds=2 or more (5 is usual), or drop it")
        if self.fold is not None and self.folds is None:
            raise ValueError(f"data.fold={self.fold} needs data.folds=K (the number of folds); add e.g. data.folds=5")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise ValueError(f"data.fold={self.fold} is out of range for data.folds={self.folds}; use 0 to "
                             f"{self.folds - 1}")
        if self.folds is not None and self.merge_val:
            raise ValueError("data.folds and data.merge_val disagree: a fold's val is its held-out part; drop one")
        return self


NOT_OPTIONS = ("name", "init", "pretrained", "trust_code")  # model.* keys that are not the builder's options


class ModelConfig(_Group):
    name: str = Field("simplecnn", description="a registered model (see `cnnfit models`), a layers .yaml file, "
                      "or pkg.module:Class for your own nn.Module")
    width: float | None = Field(None, gt=0, le=8, description="channel multiplier; auto: the model's classic widths")
    dropout: float | None = Field(None, ge=0, lt=1, description="dropout before the classifier; auto: the model's own")
    bn: bool | None = Field(None, description="batch norm after each conv (models that offer it); auto: model's own")
    act: Literal["relu", "relu6", "gelu", "elu", "tanh", "sigmoid", "silu"] | None = Field(
        None, description="activation; auto: the model's own")
    aux: bool | None = Field(None, description="googlenet auxiliary heads (their loss is added with weight 0.3)")
    crop: int | None = Field(None, ge=0, description="fastnet: px cut from each edge before the first layer (2 keeps "
                             "MNIST's centred 20x20 digits and takes a sixth off a step); auto: none")
    blocks: int | None = Field(None, ge=2, le=3, description="fastnet: conv groups, 3 or 2 (2 drops the last, "
                               "~35% of a 28 px image's FLOPs); auto: 3")
    init: str | None = Field(None, description="start from weights: imagenet (the model's ImageNet weights, with "
                             "their preprocessing and a fine-tuning recipe), none (random weights), a torchvision/timm "
                             ".pth, a .safetensors, a cnnfit checkpoint or run directory; the head is replaced if the "
                             "classes differ")
    pretrained: bool | None = Field(None, description="true: the same as init=imagenet; false: init=none")
    # excluded from every dump: config.yaml and checkpoints never carry it, so a file cannot vouch for itself
    trust_code: bool | None = Field(None, exclude=True, description="true: import a pkg.module:Class model that "
                                    "a config file, recipe or resumed run names (its code runs); auto: only one "
                                    "typed on the command line or passed from Python")


    def options(self) -> dict[str, Any]:
        """The builder's options the user gave (width, dropout, ...): every key but those that pick and start it."""
        return {k: v for k, v in self.model_dump(exclude=set(NOT_OPTIONS)).items() if v is not None}

    @model_validator(mode="after")
    def _pretrained(self) -> "ModelConfig":
        if self.pretrained is False and self.init == IMAGENET:
            raise ValueError(f"pretrained=false and init={IMAGENET} disagree; keep one of them")
        if self.pretrained is False and self.init is None:  # pretrained=false: the same as init=none
            object.__setattr__(self, "init", SCRATCH)
            self.model_fields_set.add("init")
        if self.pretrained and self.init not in (None, IMAGENET):
            raise ValueError(f"pretrained=true means init={IMAGENET}, but init={self.init} is given; keep one of them")
        if self.pretrained and self.init is None:
            object.__setattr__(self, "init", IMAGENET)  # frozen model: set once, while it is being validated
            self.model_fields_set.add("init")
        return self


class FinetuneConfig(_Group):
    freeze: Literal["backbone"] | int | None = Field(
        None, description="freeze the backbone, or its first N stages; batch norm in frozen stages stays in eval mode")
    freeze_epochs: int = Field(0, ge=0, description="two-phase fine-tuning: train with the backbone frozen for N "
                               "epochs, then unfreeze it at backbone_lr_mult")
    head_lr_mult: float = Field(1.0, gt=0, description="LR multiplier for the head (and auxiliary heads)")
    backbone_lr_mult: float | None = Field(None, gt=0, description="LR multiplier for the backbone")


class OptimConfig(_Group):
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = Field("adamw", description="optimizer")
    lr: float | None = Field(None, gt=0, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd and rmsprop momentum")
    nesterov: bool = Field(False, description="nesterov momentum (sgd)")
    decoupled: bool = Field(False, description="sgd: lr is the step per 1024 images and weight_decay the shrink per "
                            "1024 images, each independent of momentum, batch and the other (Page, 2019; airbench)")
    norm_lr_mult: float = Field(1.0, gt=0, description="LR multiplier for batch-norm parameters; when not 1 they are "
                                "decayed too, by weight_decay / norm_lr_mult, so they shrink per step as the weights do")
    weight_decay: float | None = Field(None, ge=0, description="L2 / decoupled decay")
    l1: float = Field(0.0, ge=0, description="L1 penalty on weights (not biases or norms), added to the loss")
    lr_scale: Literal["none", "linear", "sqrt"] = Field(
        "none", description="scale lr by (batch x accumulate) / ref_batch: linear (SGD) or sqrt (Adam family)")
    ref_batch: int = Field(64, gt=0, description="the batch size lr is given for, with lr_scale")


class ScheduleConfig(_Group):
    name: Literal["cosine", "onecycle", "triangle", "step", "multistep", "exponential", "constant", "plateau"] = Field(
        "cosine", description="LR schedule; triangle: linear up to the peak at warmup, then linear down; plateau: "
        "constant, lowered by gamma when the monitor stalls")
    warmup: float = Field(0.0, ge=0, description="linear warmup length in epochs (fractions allowed); onecycle and "
                          "triangle: epochs to the peak (auto for 0: 30% of the run)")
    start: float | None = Field(None, ge=0, le=1, description="onecycle and triangle: LR factor at the first step; "
                                "auto: 0.04")
    end: float | None = Field(None, ge=0, le=1, description="onecycle and triangle: LR factor at the last step; "
                              "auto: 1e-4 (onecycle), 0 (triangle)")
    step_size: int = Field(10, gt=0, description="epochs between decays (step)")
    milestones: list[float] = Field([], description="epochs at which the LR is multiplied by gamma (multistep)")
    gamma: float | None = Field(None, gt=0, le=1, description="decay factor: per step_size (step), per milestone "
                                "(multistep), per epoch (exponential), per plateau")
    patience: int = Field(3, ge=1, description="epochs without improvement before the LR drops (plateau)")


class TrainConfig(_Group):
    epochs: int = Field(10, gt=0, description="passes over the training split")
    batch: int = Field(64, gt=0, description="images per step")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    seed: int = Field(0, ge=0, description="seed for split, init, order and augmentation")
    amp: Literal["auto", "bf16", "fp16", "off"] = Field("auto", description="mixed precision; auto: measured default per device")
    channels_last: bool | None = Field(None, description="NHWC memory layout; auto: measured default per device")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")
    monitor: Literal["auto", "val_acc", "val_loss", "val_macro_f1", "val_balanced_acc", "epoch"] = Field(
        "auto", description="metric that picks best.pt and early stopping; epoch: best.pt is the last epoch")
    class_weight: Literal["none", "balanced"] | dict[str, float] = Field(
        "none", description="loss weight per class: none, balanced (n / (classes * count)) or {class: weight}")
    sampler: Literal["shuffle", "balanced"] = Field("shuffle", description="balanced: draw every class equally often")
    patience: int = Field(0, ge=0, description="early stopping after this many epochs without improvement; 0: off")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")
    log_every: int = Field(25, gt=0, description="steps between progress updates (each one syncs the device)")
    loss: Literal["auto", "ce", "bce", "focal", "mse", "l1", "huber"] = Field(
        "auto", description="auto: ce (classify), bce (multilabel), mse (regress)")
    focal_gamma: float = Field(2.0, ge=0, description="focusing parameter of the focal loss")
    accumulate: int = Field(1, ge=1, description="micro-batches per optimizer step: batch x accumulate images per step")
    drop_last: bool = Field(False, description="leave out each epoch's last, partial batch (a different one each "
                            "epoch): every step has the same shape, which compiled models and batch norm like")
    lookahead: int = Field(0, ge=0, description="every N steps pull the weights toward a slow copy (Lookahead, Zhang et "
                           "al., 2019) with a pull that grows over the run; the slow weights are the result; 0: off")
    clip_norm: float | None = Field(None, gt=0, description="clip the global gradient norm to this value")
    clip_value: float | None = Field(None, gt=0, description="clip every gradient element to [-v, v]")
    ema: float | None = Field(None, gt=0, lt=1, description="keep an exponential moving average of the weights with "
                              "this decay (e.g. 0.999); it is validated and saved as best.pt")
    compile: bool | Literal["reduce-overhead", "max-autotune"] = Field(
        False, description="torch.compile the model (checked against eager gradients first); reduce-overhead also "
        "replays each step as a CUDA graph: one launch instead of a hundred, for small models on fast GPUs")
    deterministic: bool = Field(False, description="deterministic kernels everywhere: bit-identical reruns; "
                                "amp=auto then stays fp32, so results do not depend on how batches are split")
    time: float | None = Field(None, gt=0, description="time budget in minutes: the run ends cleanly when spent; "
                               "the LR schedule runs over whichever of the epochs and the budget ends first")
    ckpt_every: int = Field(500, ge=0, description="steps between last.pt writes (also at every epoch end and on "
                            "Ctrl-C / SIGTERM); 0: epoch ends only")
    profile: bool = Field(False, description="profile a few steps: trace.json (Chrome trace) and profile.txt")
    tensorboard: bool = Field(False, description="TensorBoard logs in the run directory")
    track: list[Literal["mlflow", "wandb"]] = Field(
        [], description="experiment trackers: none, mlflow (to MLFLOW_TRACKING_URI, else SQLite in project/mlruns), "
        "wandb (offline into the run directory unless an API key is set), or both: track=mlflow,wandb")
    repeats: int = Field(1, ge=1, description="train N times with seeds seed..seed+N-1; report mean +- std")
    devices: int = Field(1, ge=1, description="processes on this machine (one per GPU, or a share of the CPU "
                         "cores); N > 1 starts torchrun for you. batch stays the global batch")
    sync_bn: bool = Field(False, description="with several GPUs: batch-norm statistics over the global batch "
                          "(SyncBatchNorm) instead of each GPU's share")
    dist_timeout: float = Field(300.0, gt=0, description="seconds a rank waits for the others before the job "
                                "ends with an error (a dead or hung rank)")

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    @field_validator("track", mode="before")
    @classmethod
    def _track_list(cls, value: Any) -> Any:  # track=mlflow,wandb arrives as one string; track=none as "none"
        if value is None or value is False:
            return []
        names = [v.strip() for v in value.split(",")] if isinstance(value, str) else value
        return list(dict.fromkeys(n for n in names if n not in ("", "none"))) if isinstance(names, list) else names


class ResumeConfig(_Group):
    run: str | None = Field(None, description="continue this run directory exactly where its last.pt stopped")
    force: bool = Field(False, description="resume even with settings that change the run")


class AugConfig(_Group):
    preset: Literal["auto", "none", "glyphs", "small-photos", "photos"] = Field(
        "auto", description="the augmentation every aug.* key left unset gets: auto (what the images call for), none "
        "(off), glyphs (shifts and small rotations, no flips), small-photos (flips and 4 px shifts at 32 px), photos "
        "(random resized crops, flips, colour jitter)")
    hflip: bool | Literal["alternate"] = Field(False, description="random horizontal flip; alternate: a random half "
                                               "of the images flipped in even epochs, the other half in odd ones")
    vflip: bool = Field(False, description="random vertical flip")
    shift: float = Field(0.0, ge=0, le=0.5, description="random translation, fraction of the image size (pad + crop)")
    fill_mode: Literal["constant", "reflect"] = Field("constant", description="what a shift moves in: constant (zeros) "
                                                      "or reflect (the mirrored edge)")
    rotation: float = Field(0.0, ge=0, le=180, description="random rotation, up to this many degrees either way")
    zoom: float = Field(0.0, ge=0, lt=1, description="random zoom: scale in [1 - zoom, 1 + zoom]")
    shear: float = Field(0.0, ge=0, le=45, description="random shear, up to this many degrees")
    brightness: float = Field(0.0, ge=0, le=1, description="brightness factor in [1 - v, 1 + v]")
    contrast: float = Field(0.0, ge=0, le=1, description="contrast factor in [1 - v, 1 + v]")
    saturation: float = Field(0.0, ge=0, le=1, description="saturation factor in [1 - v, 1 + v] (colour images)")
    hue: float = Field(0.0, ge=0, le=0.5, description="hue shift, fraction of the colour wheel (colour images)")
    noise: float = Field(0.0, ge=0, le=1, description="std of added Gaussian noise, in [0, 1] pixel units")
    erasing: float = Field(0.0, ge=0, le=1, description="probability of erasing a random rectangle (cutout)")
    randaugment: int = Field(0, ge=0, le=10, description="RandAugment: ops per image drawn from the list above")
    magnitude: int = Field(9, ge=0, le=30, description="RandAugment strength (0-30)")
    mixup: float = Field(0.0, ge=0, description="mixup Beta(alpha, alpha); 0: off")
    cutmix: float = Field(0.0, ge=0, description="cutmix Beta(alpha, alpha); 0: off (with mixup: one of the two per batch)")
    resized_crop: float = Field(0.0, ge=0, lt=1, description="random resized crop: a random part of at least this "
                                "fraction of the area, aspect 3:4 to 4:3, scaled to full size (Inception's crop); "
                                "0: off")
    only_minority: bool = Field(False, description="augment only classes under half the size of the largest")

    @field_validator("preset", mode="before")
    @classmethod
    def _preset(cls, value: Any) -> Any:  # aug=auto arrives as None, aug=off (YAML 1.1) as false
        return {None: "auto", False: "none"}.get(value, value) if not isinstance(value, str) else value


class EvalConfig(_Group):
    calibrate: bool = Field(False, description="fit temperature scaling on the val split: honest probabilities "
                            "(accuracy unchanged); stored in best.pt and used by predict")
    tta: Literal["none", "flip", "flip+shift"] = Field("none", description="test-time augmentation in eval and "
                                                       "predict: average over flipped (and shifted) copies")
    tta_shift: int | None = Field(None, ge=1, description="pixels each flip+shift copy is moved; auto: 1/16 of the side")
    report: bool = Field(True, description="plots/ and report.html after the test metrics; false: metrics.json and "
                         "predictions.csv only (sweeps and repeated runs: a few seconds less each)")


class TuneConfig(_Group):
    space: dict[str, str | list] = Field({}, description="search space: config key -> loguniform(a, b), "
                                         "uniform(a, b), int(a, b) or choice([x, y, ...]) (a YAML list is a choice)")
    sampler: Literal["grid", "random", "tpe"] = Field("tpe", description="grid: every combination; tpe: Bayesian")
    pruner: Literal["median", "hyperband", "none"] = Field("median", description="stop weak trials early, "
                                                           "from the val metric at each epoch end")
    trials: int = Field(20, ge=1, description="finished (complete or pruned) trials the study stops at")
    timeout: float | None = Field(None, gt=0, description="stop starting trials after this many minutes")
    workers: int = Field(1, ge=1, description="parallel trial processes on this machine")
    storage: str | None = Field(None, description="an Optuna storage URL (postgresql://... shares the study "
                                "between machines); default: sqlite file study.db in the tune directory")
    resume: bool = Field(False, description="continue the study in project/name instead of starting a new one")
    refit: bool = Field(True, description="retrain the best config on train+val, then test once")


class Config(_Group):
    name: str = Field("train", min_length=1, description="run name; a free one is chosen if taken (train2, ...)")
    project: str = Field("runs", min_length=1, description="folder that holds run directories")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    aug: AugConfig = AugConfig()
    eval: EvalConfig = EvalConfig()
    tune: TuneConfig = TuneConfig()
    resume: ResumeConfig = ResumeConfig()

    @field_validator("name")
    @classmethod
    def _one_folder(cls, name: str) -> str:  # name=../x would write outside project=
        if any(c in name for c in "/\\\0") or name in (".", ".."):
            raise ValueError("a run name is one folder name inside project=; use e.g. name=exp1, and project= "
                             "for the folder that holds it")
        return name


# The keys people type most, short; everything else is dotted.
SHORT_KEYS = {
    "data": "data.source", "model": "model.name", "optim": "optim.name", "schedule": "schedule.name",
    "epochs": "train.epochs", "batch": "train.batch", "lr": "optim.lr", "imgsz": "data.imgsz",
    "device": "train.device", "seed": "train.seed", "amp": "train.amp", "patience": "train.patience",
    "monitor": "train.monitor", "exclude": "data.exclude", "class_weight": "train.class_weight", "sampler": "train.sampler",
    "init": "model.init", "freeze": "finetune.freeze", "head_lr_mult": "finetune.head_lr_mult",
    "task": "data.task", "loss": "train.loss", "accumulate": "train.accumulate", "clip_norm": "train.clip_norm",
    "ema": "train.ema", "compile": "train.compile", "deterministic": "train.deterministic", "time": "train.time",
    "profile": "train.profile", "tensorboard": "train.tensorboard", "track": "train.track", "repeats": "train.repeats",
    "resume": "resume.run", "l1": "optim.l1", "weight_decay": "optim.weight_decay", "lr_scale": "optim.lr_scale",
    "ckpt_every": "train.ckpt_every", "calibrate": "eval.calibrate", "tta": "eval.tta",
    "lookahead": "train.lookahead", "drop_last": "train.drop_last",
    "space": "tune.space", "pruner": "tune.pruner", "trials": "tune.trials",
    "timeout": "tune.timeout", "storage": "tune.storage", "refit": "tune.refit", "workers": "tune.workers",
    "devices": "train.devices", "sync_bn": "train.sync_bn", "trust_code": "model.trust_code",
    "pretrained": "model.pretrained", "label_smoothing": "train.label_smoothing", "aug": "aug.preset",
    "labels": "data.labels",
}


def _leaf_fields(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    out = {}
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(_leaf_fields(ann, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = field
    return out


VALID_KEYS = _leaf_fields(Config)


def _canonical(key: str) -> str:
    key = SHORT_KEYS.get(key, key)
    if key not in VALID_KEYS:
        hint = suggest(key, list(VALID_KEYS) + list(SHORT_KEYS), "; did you mean '{}'?")
        raise CnnfitError(f"unknown key '{key}'{hint} (`cnnfit train --help` lists every key)")
    return key


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested YAML mapping -> dotted keys, so files and the command line share one path."""
    flat = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def get_dotted(tree: Any, key: str) -> Any:
    """tree["a"]["b"] for key "a.b"; None where a level is missing or not a dict."""
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def set_dotted(tree: dict, key: str, value: Any) -> dict:
    """Set tree["a"]["b"] = value for key "a.b", making the missing levels; returns `tree`."""
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return tree


def is_set(cfg: Config, key: str) -> bool:
    """Whether the user gave dotted `key` (on the command line, in a file or a recipe, or from Python), as opposed
    to its default: the pipeline fills only keys left unset, so whatever the user says wins."""
    *groups, leaf = key.split(".")
    node: BaseModel = cfg
    for part in groups:
        if part not in node.model_fields_set:
            return False
        node = getattr(node, part)
    return leaf in node.model_fields_set


def with_overrides(cfg: Config | None, overrides: dict[str, Any]) -> Config:
    """`cfg` (or the defaults) with keyword overrides on top (`train__epochs=3`, `**{"train.epochs": 3}` or
    `epochs=3`): the API's path."""
    if cfg is not None and not overrides:
        return cfg
    base = flatten(cfg.model_dump(mode="json", exclude_unset=True)) if cfg is not None else {}  # keeps is_set
    return load_config(**{**base, **overrides})  # the overrides come later, and a later key wins


def _parse_value(text: str) -> Any:
    if text.strip().lower() == "auto":
        return None
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def _read_file(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise CnnfitError(f"config file '{path}' not found; pass an existing YAML file as config=PATH")
    try:
        tree = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise CnnfitError(f"config file '{path}' is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise CnnfitError(f"config file '{path}' must hold a mapping of keys to values")
    return flatten(tree)


def _describe(err: dict, values: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
    # pydantic reports literal/union errors per branch: keep the first, most readable, path
    for valid in VALID_KEYS:
        if key.startswith(valid):
            key = valid
            break
    if err["type"] == "value_error" and key not in VALID_KEYS:  # a check across keys says what is wrong itself
        return err["msg"].removeprefix("Value error, ")
    got = values.get(key, err.get("input"))
    return f"{key}={got!r} is invalid: {err['msg'][0].lower()}{err['msg'][1:]}"


RECIPES = Path(__file__).parent / "recipes"  # shipped, tuned settings: `recipe=fmnist-fast`


def recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES.glob("*.yaml"))


def recipe_path(name: str) -> Path:
    """A shipped recipe by name, or a YAML file of the same form."""
    if (RECIPES / f"{name}.yaml").is_file():
        return RECIPES / f"{name}.yaml"
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return Path(name)
    raise CnnfitError(f"unknown recipe '{name}'; choose from: {', '.join(recipes())} (or give a .yaml file)")


def is_module_name(name: Any) -> bool:
    """`pkg.mod:Class`, the user's own module, as models.custom tells it from a layers file (.yaml, .yml)."""
    return isinstance(name, str) and ":" in name and not name.lower().endswith((".yaml", ".yml"))


def _check_code(flat: dict[str, Any], read_from: dict[str, str]) -> None:
    """A model module named by a file (config=, recipe=) is imported only with trust_code=true given by the user:
    importing it runs the file's choice of code. A file cannot give that opt-in itself."""
    for key, path in read_from.items():
        if SHORT_KEYS.get(key, key) == "model.trust_code":
            raise CnnfitError(f"{path} sets {key}; only you can trust code: remove it from the file and add "
                              "trust_code=true to the command line")
    if any(SHORT_KEYS.get(k, k) == "model.trust_code" and v is True for k, v in flat.items()):
        return
    for key, path in read_from.items():
        value = flat[key]
        if key in ("space", "tune.space") and isinstance(value, dict):  # a search over models: each choice a name
            key, value = "space.model.name", value.get("model.name")
        if SHORT_KEYS.get(key, key) == "model.name" or key.endswith("space.model.name"):
            code = [n for n in (value if isinstance(value, list) else [value]) if is_module_name(n)]
            if code:
                raise CnnfitError(f"{path} names model {code[0]!r}, which runs code from the file; if you trust it, "
                                  "add trust_code=true")


def load_config(args: list[str] | None = None, **overrides: Any) -> Config:
    """Build a Config from `key=value` strings (and/or keyword overrides); defaults < recipe= < config= file < args."""
    flat: dict[str, Any] = {}
    pairs: list[tuple[str, Any]] = []
    for arg in args or []:
        if "=" not in arg:
            raise CnnfitError(f"expected key=value, got '{arg}' (for example: epochs=5)")
        key, _, text = arg.partition("=")
        pairs.append((key.strip(), _parse_value(text)))
    pairs += [(k.replace("__", "."), v) for k, v in overrides.items()]
    files = {"recipe": 0, "config": 1}  # recipe < config file < keys, in whatever order they were given
    read_from: dict[str, str] = {}  # key -> the file its value came from
    for key, value in sorted(pairs, key=lambda pair: files.get(pair[0], 2)):  # stable: later keys still win
        if key in files:
            path = str(recipe_path(str(value)) if key == "recipe" else value)
            given = _read_file(path)
            flat.update(given)
            read_from.update(dict.fromkeys(given, path))
        else:
            flat[key] = value
            read_from = {k: f for k, f in read_from.items() if SHORT_KEYS.get(k, k) != SHORT_KEYS.get(key, key)}
    _check_code(flat, read_from)
    space = {k.split(".", 1)[1].removeprefix("space."): v for k, v in flat.items()
             if k.startswith(("space.", "tune.space."))}  # space.lr=loguniform(1e-4,1e-1): one entry each
    flat = {k: v for k, v in flat.items() if not k.startswith(("space.", "tune.space."))}
    if space:
        given = flat.pop("space", flat.pop("tune.space", {})) or {}
        flat["tune.space"] = {**given, **space}
    values = {_canonical(k): str(v) if isinstance(v, Path) else v for k, v in flat.items()}
    try:
        tree: dict[str, Any] = {}
        for key, value in values.items():
            set_dotted(tree, key, value)
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise CnnfitError(_describe(exc.errors()[0], values)) from None


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def help_text(auto: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(key, default, description) for every key, short names first where they exist; `auto` adds each auto
    rule's text (the pipeline's table) to the key it fills."""
    short_for = {v: k for k, v in SHORT_KEYS.items()}
    rows = []
    for key, field in VALID_KEYS.items():
        shown = f"{short_for[key]} ({key})" if key in short_for else key
        rule = (auto or {}).get(key)
        default = "auto" if field.default is None or rule else str(field.default)
        rows.append((shown, default, (field.description or "") + (f"; auto: {rule}" if rule else "")))
    return rows

