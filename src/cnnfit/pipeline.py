"""The recipe, top to bottom: data -> split -> loaders -> model -> fit -> evaluate; and eval / predict
rebuilt from a run directory alone."""

from __future__ import annotations

import csv
import glob
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cnnfit import data as D
from cnnfit import engine as E
from cnnfit import models
from cnnfit.config import Config, flatten, load_config, to_yaml
from cnnfit.device import pick_device, resolve_amp, resolve_channels_last, seed_everything
from cnnfit.engine import callbacks as C
from cnnfit.errors import CnnfitError
from cnnfit.prepare import build_augment, load_data, new_run_dir, prepare, write_data_report, write_samples
from cnnfit.eval import classification_metrics, plot_confusion, plot_curves

_AUTO_LR = {"sgd": 0.05, "adam": 1e-3, "adamw": 1e-3, "rmsprop": 1e-3}
_AUTO_WD = {"sgd": 5e-4, "adamw": 0.05, "adam": 0.0, "rmsprop": 0.0}


@dataclass
class Run:
    dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]


def _absolute(source: str) -> str:
    """Paths become absolute in config.yaml so eval and predict work from any folder; names stay names."""
    return str(Path(source).expanduser().resolve()) if Path(source).expanduser().exists() else source


def _class_weights(spec: str | dict[str, float], classes: list[str], counts: np.ndarray) -> torch.Tensor | None:
    if spec == "none":
        return None
    if spec == "balanced":  # scikit-learn's rule: n_samples / (n_classes * count)
        return torch.tensor(counts.sum() / (len(classes) * np.maximum(counts, 1)), dtype=torch.float32)
    unknown = sorted(set(spec) - set(classes))
    if unknown:
        raise CnnfitError(f"class_weight names unknown classes {unknown}; the classes are: {', '.join(classes)}")
    return torch.tensor([float(spec.get(c, 1.0)) for c in classes], dtype=torch.float32)


def _per_class(counts: dict[str, list[int]], classes: list[str]) -> str:
    triples = list(zip(counts["train"], counts["val"], counts["test"]))
    if len(set(triples)) == 1:
        return "{}/{}/{} each".format(*triples[0])
    if len(classes) <= 6:
        return "; ".join(f"{c} {a}/{b}/{t}" for c, (a, b, t) in zip(classes, triples))
    train = counts["train"]
    return f"train {min(train)}..{max(train)} per class (largest/smallest {max(train) / max(min(train), 1):.1f})"


def _print_summary(console: Console, rows: list[tuple[str, str, str]]) -> None:
    table = Table(title="cnnfit train", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_column(style="dim")
    for key, value, why in rows:
        table.add_row(escape(key), escape(value), escape(why))
    console.print(table)


def train(cfg: Config | None = None, *, console: Console | None = None, **overrides: Any) -> Run:
    """Train a model as `cfg` says and evaluate it on the test split. Every input is validated
    before the run directory is created, so bad input leaves nothing behind."""
    t0 = time.perf_counter()
    if cfg is None or overrides:
        base = flatten(cfg.model_dump(mode="json")) if cfg is not None else {}
        cfg = load_config(**{k.replace(".", "__"): v for k, v in base.items()}, **overrides)
    console = console or Console()
    d, t, o = cfg.data, cfg.train, cfg.optim
    models.check_name(cfg.model.name)
    device = pick_device(t.device)
    seed_everything(t.seed)

    # data: decoded once, then memory-mapped from the cache; split; statistics of the train split
    prep = prepare(cfg, min_size=models.min_size(cfg.model.name))
    ds, cache_hit, parts, split_how, mean, std = prep.ds, prep.cache_hit, prep.parts, prep.split_how, prep.mean, prep.std
    c, h, _ = ds.shape
    n_train = len(parts["train"])
    if t.batch > n_train:
        raise CnnfitError(f"batch={t.batch} is larger than the {n_train} training images; use batch={n_train} or less")
    amp_dtype, amp_why = resolve_amp(t.amp, device)
    channels_last, cl_why = resolve_channels_last(t.channels_last, device)
    lr = o.lr or _AUTO_LR[o.name]
    wd = o.weight_decay if o.weight_decay is not None else _AUTO_WD[o.name]
    amp_name = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "off"}[amp_dtype]
    train_counts = prep.train_counts
    imbalance = train_counts.max() / max(train_counts.min(), 1)
    monitor, monitor_why = t.monitor, "set"
    if monitor == "auto":
        monitor = "val_macro_f1" if imbalance > 3 else "val_acc"
        monitor_why = f"auto: largest/smallest class {imbalance:.1f}" + (" > 3" if imbalance > 3 else "")
    class_weight = _class_weights(t.class_weight, ds.classes, train_counts)

    # model: built, and started from init= weights, before anything is written
    options = {k: v for k, v in cfg.model.model_dump(exclude={"name", "init"}).items() if v is not None}
    model_kwargs = {**models.builder_kwargs(cfg.model.name, imgsz=h), **options}
    model = models.create(cfg.model.name, num_classes=len(ds.classes), in_chans=c, imgsz=h, **options)
    init = models.load_pretrained(model, cfg.model.init, classes=ds.classes) if cfg.model.init else None
    ft = cfg.finetune
    frozen = E.finetune.resolve_freeze(model, ft.freeze if ft.freeze is not None
                                       else ("backbone" if ft.freeze_epochs else None))
    backbone_lr_mult = ft.backbone_lr_mult or (0.1 if ft.freeze_epochs else 1.0)
    resolved = cfg.model_copy(update={
        "data": d.model_copy(update={"imgsz": h, "channels": c, "source": _absolute(d.source)}),
        "optim": o.model_copy(update={"lr": lr, "weight_decay": wd}),
        "train": t.model_copy(update={"amp": amp_name, "channels_last": channels_last, "monitor": monitor}),
        "model": cfg.model.model_copy(update={"init": _absolute(cfg.model.init) if cfg.model.init else None}),
        "finetune": ft.model_copy(update={"backbone_lr_mult": backbone_lr_mult}),
    })

    # only now, with every input checked, does the run directory exist
    run_dir = new_run_dir(cfg.project, cfg.name)
    (run_dir / "config.yaml").write_text(to_yaml(resolved))
    split = {k: v.tolist() for k, v in parts.items()}
    (run_dir / "split.json").write_text(json.dumps({"how": split_how, "seed": t.seed, **split}))
    if ds.skipped:
        (run_dir / "skipped.txt").write_text("".join(f"{f}\t{why}\n" for f, why in ds.skipped))

    if init is not None:
        (run_dir / "init.json").write_text(json.dumps(asdict(init), indent=1))
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    n_params = sum(p.numel() for p in model.parameters())
    counts = {name: np.bincount(ds.labels[idx], minlength=len(ds.classes)).tolist() for name, idx in parts.items()}
    auto = lambda given, why: "set" if given is not None else why  # noqa: E731
    _print_summary(console, [
        ("data", f"{d.source}: {len(ds)} images, {len(ds.classes)} classes", "cache hit" if cache_hit else "decoded and cached"),
        ("split", " / ".join(f"{k} {len(v)}" for k, v in parts.items()), split_how),
        ("per class", _per_class(counts, ds.classes), "train/val/test"),
        ("skipped", f"{len(ds.skipped)} files" + (f" (listed in {run_dir / 'skipped.txt'})" if ds.skipped else ""),
         "; ".join(f"{Path(f).name}: {why}" for f, why in ds.skipped[:3])),
        ("input", f"{c}x{h}x{h} ({d.resize})",
         auto(d.imgsz, f"auto: own size ({D.sources.AUTO_PHOTO_SIZE} px if mixed)")),
        ("model", f"{cfg.model.name}, {n_params:,} parameters", ", ".join(f"{k}={v}" for k, v in options.items())),
        *([("init", init.summary(), f"from {cfg.model.init} (details in init.json)")] if init else []),
        *([("fine-tune", _finetune_text(frozen, ft, t.epochs, backbone_lr_mult), "")] if frozen or ft.head_lr_mult != 1
          or backbone_lr_mult != 1 else []),
        ("device", f"{device}, amp {amp_name}, channels_last {channels_last}", f"{amp_why}; {cl_why}"),
        ("training", f"{t.epochs} epochs x {-(-n_train // t.batch)} steps, "
                     f"batch {t.batch}" + (f", {t.sampler} sampler" if t.sampler != "shuffle" else "")
                     + (f", class weights {t.class_weight}" if t.class_weight != "none" else ""),
         f"monitor {monitor} ({monitor_why})" + (f", patience {t.patience}" if t.patience else "")),
        ("optimizer", f"{o.name} lr {lr:g} weight_decay {wd:g}",
         "auto: defaults for " + o.name if o.lr is None or o.weight_decay is None else "set"),
        ("schedule", f"{cfg.schedule.name}" + (f", warmup {cfg.schedule.warmup:g} epochs" if cfg.schedule.warmup else ""), ""),
        ("run", str(run_dir), ""),
    ])

    augment = build_augment(cfg)
    write_data_report(prep, run_dir, console)
    common = dict(batch=t.batch, device=device, mean=mean, std=std, channels_last=channels_last, stream=d.stream)
    minority = [i for i, n in enumerate(train_counts) if n < train_counts.max() / 2] if cfg.aug.only_minority else None
    train_loader = D.DeviceLoader(ds.images, ds.labels, index=parts["train"], augment=augment, shuffle=True, seed=t.seed,
                                  balanced=t.sampler == "balanced", augment_classes=minority,
                                  **common)
    val_loader = D.DeviceLoader(ds.images, ds.labels, index=parts["val"], **common)
    mix = None
    if cfg.aug.mixup > 0 or cfg.aug.cutmix > 0:
        mix = lambda x, y: D.augment.mix(x, y, len(ds.classes), train_loader.generator,  # noqa: E731
                                         mixup=cfg.aug.mixup, cutmix=cfg.aug.cutmix)
    groups = E.param_groups(model, wd, backbone=E.finetune.backbone_ids(model), backbone_lr_mult=backbone_lr_mult,
                            head_lr_mult=ft.head_lr_mult)
    optimizer = E.build_optimizer(o.name, model, lr=lr, weight_decay=wd, momentum=o.momentum, nesterov=o.nesterov,
                                  groups=groups)
    steps = len(train_loader)
    schedule = E.make_schedule(cfg.schedule.name, total=t.epochs * steps, warmup=round(cfg.schedule.warmup * steps),
                               every=cfg.schedule.step_size * steps, gamma=cfg.schedule.gamma)
    meta = {
        "model": cfg.model.name, "model_kwargs": model_kwargs, "classes": ds.classes, "imgsz": h, "channels": c,
        "resize": d.resize, "mean": mean, "std": std, "config": resolved.model_dump(mode="json"),
    }
    callbacks = [C.LRSchedule(schedule), C.Checkpointing(run_dir, meta, monitor, "auto", t.min_delta),
                 C.History(run_dir / "history.csv"), C.ProgressBar(console, every=t.log_every)]
    if t.patience:
        callbacks.append(C.EarlyStopping(monitor, "auto", t.patience, t.min_delta))
    if frozen:  # first, so frozen batch norm goes back to eval right after the loop's model.train()
        callbacks.insert(0, C.Freeze(frozen, epochs=ft.freeze_epochs or None))
    setup_seconds = time.perf_counter() - t0
    console.print(f"ready to train {setup_seconds:.2f} s after start ({'cache hit' if cache_hit else 'decoded'})")
    state = E.fit(model, train_loader, val_loader, optimizer=optimizer, epochs=t.epochs, device=device,
                  callbacks=callbacks, label_smoothing=t.label_smoothing, amp_dtype=amp_dtype,
                  class_weight=None if class_weight is None else class_weight.to(device), mix=mix)
    train_seconds = time.perf_counter() - t0 - setup_seconds
    plot_curves(state.history, run_dir / "curves.png")
    write_samples(prep, run_dir, augment, t.seed)
    timings = {"setup_seconds": setup_seconds, "train_seconds": train_seconds, "cache_hit": cache_hit}
    metrics = evaluate(run_dir, console=console, dataset=ds, extra={"timings": timings, "stop": state.stop})
    return Run(run_dir, metrics, state.history, timings)


def _finetune_text(frozen: list[str], ft: Any, epochs: int, backbone_lr_mult: float) -> str:
    parts = []
    if frozen:
        span = f"for {ft.freeze_epochs} of {epochs} epochs" if ft.freeze_epochs else "for the whole run"
        parts.append(f"frozen {', '.join(frozen) if len(frozen) <= 4 else f'{len(frozen)} stages'} {span}")
    parts.append(f"LR x{backbone_lr_mult:g} backbone, x{ft.head_lr_mult:g} head")
    return "; ".join(parts)


def _model_from_checkpoint(ckpt: dict, device: torch.device) -> torch.nn.Module:
    model = models.create(ckpt["model"], num_classes=len(ckpt["classes"]), in_chans=ckpt["channels"],
                          **ckpt["model_kwargs"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()


def _run_dir(run: str | Path) -> Path:
    path = Path(run)
    if not (path / "best.pt").is_file():
        raise CnnfitError(f"'{run}' is not a finished run directory (no best.pt); pass e.g. runs/train")
    return path


def evaluate(run: str | Path, *, console: Console | None = None, dataset: D.ImageSet | None = None,
             extra: dict | None = None, device: str = "auto") -> dict[str, Any]:
    """Test-split metrics of a run's best.pt; writes metrics.json, confusion.png, predictions.csv."""
    run_dir = _run_dir(run)
    console = console or Console()
    ckpt = E.load_checkpoint(run_dir / "best.pt")
    cfg = Config.model_validate(ckpt["config"])
    ds = dataset if dataset is not None else load_data(cfg)[0]
    split = json.loads((run_dir / "split.json").read_text())
    test_idx = np.asarray(split["test"], dtype=np.int64)
    if len(test_idx) and test_idx.max() >= len(ds):
        raise CnnfitError(f"the data for {run_dir} has changed since training ({len(ds)} images now); "
                          "evaluate against the original data")
    dev = pick_device(device)
    model = _model_from_checkpoint(ckpt, dev)
    loader = D.DeviceLoader(ds.images, ds.labels, index=test_idx, batch=256, device=dev, mean=ckpt["mean"],
                            std=ckpt["std"], stream=cfg.data.stream)
    logits, labels = E.infer(model, loader)
    metrics = classification_metrics(logits, labels, ckpt["classes"])
    previous = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    kept = {k: v for k, v in previous.items() if k not in metrics}  # e.g. training timings survive a re-eval
    metrics.update({"split": "test", "best_epoch": ckpt["epoch"] + 1, "val": ckpt["metrics"], **kept, **(extra or {})})
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_confusion(metrics["confusion_matrix"], ckpt["classes"], run_dir / "confusion.png")
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    with open(run_dir / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "file", "true", "pred", "confidence"])
        for i, idx in enumerate(test_idx):
            w.writerow([int(idx), ds.files[idx] if ds.files else "", ckpt["classes"][labels[i]],
                        ckpt["classes"][pred[i]], f"{conf[i]:.6f}"])
    console.print(f"test accuracy {metrics['accuracy']:.4f}  macro F1 {metrics['macro']['f1']:.4f}  "
                  f"({len(labels)} images, best epoch {metrics['best_epoch']}) -> {run_dir / 'metrics.json'}")
    return metrics


def _expand(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for p in paths:
        hits = [Path(h) for h in sorted(glob.glob(p, recursive=True))] or [Path(p)]
        for hit in hits:
            if hit.is_dir():
                found += sorted(f for f in hit.rglob("*") if f.is_file() and D.is_image_name(f.name)
                                and not any(part.startswith(".") for part in f.relative_to(hit).parts))
            elif hit.is_file():
                found.append(hit)
            else:
                raise CnnfitError(f"'{p}' matches no file or folder; pass image files, folders or globs")
    return found


def predict(run: str | Path, paths: list[str], *, topk: int = 5, out: str | Path | None = None,
            device: str = "auto", console: Console | None = None) -> list[dict[str, Any]]:
    """Top-k classes for image files, decoded exactly as training decoded them; writes a CSV."""
    run_dir = _run_dir(run)
    console = console or Console()
    ckpt = E.load_checkpoint(run_dir / "best.pt")
    files = _expand(paths)
    if not files:
        raise CnnfitError("no image files found in the given paths")
    arrays = D.map_images(lambda f: D.decode_image(f, ckpt["imgsz"], ckpt["channels"], ckpt["resize"]), files)
    decoded = [a for a in arrays if not isinstance(a, D.DecodeError)]
    kept = [f for f, a in zip(files, arrays) if not isinstance(a, D.DecodeError)]
    skipped = [(f, str(a)) for f, a in zip(files, arrays) if isinstance(a, D.DecodeError)]
    for f, why in skipped:
        console.print(f"skipped {f}: {why}", markup=False, highlight=False, soft_wrap=True)
    if not kept:
        raise CnnfitError("none of the given files could be decoded as an image")
    dev = pick_device(device)
    model = _model_from_checkpoint(ckpt, dev)
    loader = D.DeviceLoader(np.stack(decoded), np.zeros(len(kept)), batch=256, device=dev, mean=ckpt["mean"],
                            std=ckpt["std"])
    logits, _ = E.infer(model, loader)
    k = min(topk, len(ckpt["classes"]))
    probs, ids = logits.softmax(1).topk(k, dim=1)
    rows = [{"file": str(f), **{f"top{j + 1}": ckpt["classes"][ids[i, j]] for j in range(k)},
             **{f"prob{j + 1}": round(float(probs[i, j]), 6) for j in range(k)}} for i, f in enumerate(kept)]
    out_path = Path(out) if out else _free_name(run_dir / "predict.csv")
    with open(out_path, "w", newline="") as fh:
        fields = ["file"] + [x for j in range(k) for x in (f"top{j + 1}", f"prob{j + 1}")]
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    console.print(f"{len(rows)} predictions -> {out_path}" + (f" ({len(skipped)} skipped)" if skipped else ""),
                  markup=False, soft_wrap=True)
    return rows


def _free_name(path: Path) -> Path:
    stem, suffix, i = path.stem, path.suffix, 2
    while path.exists():
        path = path.with_name(f"{stem}{i}{suffix}")
        i += 1
    return path


__all__ = ["Run", "evaluate", "predict", "train"]
