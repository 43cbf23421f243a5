"""The recipe, top to bottom: data -> split -> loaders -> model -> fit -> evaluate; and eval / predict
rebuilt from a run directory alone."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from cnnfit import data as D
from cnnfit import distributed
from cnnfit import engine as E
from cnnfit import models
from cnnfit.config import Config, ResumeConfig, flatten, load_config, to_yaml
from cnnfit.device import (amp_name, keep_freed_memory, pick_device, resolve_amp, resolve_channels_last,
                           seed_everything, set_deterministic)
from cnnfit.engine import callbacks as C
from cnnfit.errors import CnnfitError, TrainingStopped
from cnnfit.files import write_atomic
from cnnfit.eval.plots import plot_curves, plot_lr
from cnnfit.inference import evaluate, predict
from cnnfit.prepare import build_augment, init_from_data, new_run_dir, prepare, write_data_report, write_samples
from cnnfit.repeats import repeat
from cnnfit.run_resume import absolute, resume_config, split_changed
from cnnfit.run_summary import finetune_text, loss_text, per_class_text, print_summary

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
        if "accuracy" not in self.metrics:
            raise CnnfitError(f"a {self.metrics.get('task')} run has no accuracy; use run.score or run.metrics")
        return self.metrics["accuracy"]

    @property
    def score(self) -> float:
        """The task's headline test figure: accuracy (classify), micro F1 (multilabel), R^2 (regress)."""
        task = self.metrics.get("task", "classify")
        if task == "multilabel":
            return self.metrics["micro"]["f1"]
        return self.metrics["r2"] if task == "regress" else self.metrics["accuracy"]


def _with_overrides(cfg: Config | None, overrides: dict[str, Any]) -> Config:
    """The Config the API call describes: `cfg` (or the defaults) with keyword overrides on top."""
    if cfg is not None and not overrides:
        return cfg
    base = flatten(cfg.model_dump(mode="json")) if cfg is not None else {}
    return load_config(**{**{k.replace(".", "__"): v for k, v in base.items()}, **overrides})  # overrides win


def train(cfg: Config | None = None, *, console: Console | None = None, callbacks: list | None = None,
          test: bool = True, **overrides: Any) -> Run:
    """Train a model as `cfg` says and evaluate it on the test split. Every input is validated
    before the run directory is created, so bad input leaves nothing behind. `resume=RUN` continues a run
    exactly where its last.pt stopped; `repeats=N` trains N seeds and reports mean and std.

    `callbacks` join the run's own (a tuning trial's pruning); `test=False` leaves the test split untouched
    (a tuning trial is scored on val, so the test split is seen once, by the final refit)."""
    cfg = _with_overrides(cfg, overrides)
    console = console or Console()
    if cfg.resume.run:
        return _train(*resume_config(cfg), console=console, extra_callbacks=callbacks, test=test)
    if cfg.train.repeats > 1:
        if distributed.from_env().active:
            raise CnnfitError("repeats=N trains its seeds one after another in one process; under torchrun or "
                              "devices= start one job per seed (seed=N)")
        parent, metrics = repeat(cfg, console, lambda one: _train(one, console=console))
        return Run(parent, metrics, [], {})
    return _train(cfg, console=console, extra_callbacks=callbacks, test=test)


def lr_find(cfg: Config | None = None, *, console: Console | None = None, **overrides: Any) -> Run:
    """`cnnfit lr-find`: the LR range test on exactly the model, data and optimizer `train` would build;
    lr_find.png and the suggested LR (metrics["lr"]) in a run directory of its own."""
    cfg = _with_overrides(cfg, overrides)
    if cfg.name == "train":
        cfg = cfg.model_copy(update={"name": "lr_find"})
    return _train(cfg, console=console or Console(), find_lr=True)


def _train(cfg: Config, run_dir: Path | None = None, ckpt: dict | None = None, *, console: Console,
           find_lr: bool = False, extra_callbacks: list | None = None, test: bool = True) -> Run:
    """One run in this process; under torchrun, this process's rank of a data-parallel run."""
    ctx = distributed.from_env()
    if not ctx.active:
        if ckpt is not None and (saved := ckpt["train_state"].get("world", 1)) > 1:
            raise CnnfitError(f"resume: {run_dir} was trained by {saved} processes; resume it with the same number: "
                              f"cnnfit train resume={run_dir} devices={saved}")
        if cfg.train.devices > 1:
            raise CnnfitError(f"devices={cfg.train.devices} is started by the command line (cnnfit train ... "
                              "devices=N); from Python, run the script under torchrun --nproc_per_node=N")
        return _train_rank(cfg, run_dir, ckpt, console=console, find_lr=find_lr, extra_callbacks=extra_callbacks,
                           test=test, ctx=ctx, device=pick_device(cfg.train.device))
    t = cfg.train
    local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world))
    if t.devices > 1 and t.devices != local:
        raise CnnfitError(f"devices={t.devices}, but torchrun started {local} processes on this machine; "
                          "under torchrun drop devices= (--nproc_per_node sets it)")
    if find_lr:
        raise CnnfitError("lr-find runs in one process; start it without torchrun or devices=")
    if ckpt is not None and (saved := ckpt["train_state"].get("world", 1)) != ctx.world:
        raise CnnfitError(f"resume: {run_dir} was trained by {saved} processes and this job has {ctx.world}; "
                          f"resume it with the same number (devices={saved}, or torchrun --nproc_per_node)")
    if t.batch < ctx.world:
        raise CnnfitError(f"batch={t.batch} is the global batch and is smaller than the {ctx.world} processes; "
                          f"use batch={ctx.world} or more")
    device = distributed.device_for(ctx, t.device)
    if t.sync_bn and device.type != "cuda":
        raise CnnfitError("sync_bn=true needs CUDA GPUs (NCCL); on CPU drop sync_bn, or use a model without "
                          "batch norm when every rank must see the global batch's statistics")
    if not ctx.main:
        console = Console(quiet=True)  # rank 0 speaks for the job
    with distributed.session(ctx, device, t.dist_timeout):
        return _train_rank(cfg, run_dir, ckpt, console=console, find_lr=False, extra_callbacks=extra_callbacks,
                           test=test, ctx=ctx, device=device)


def _train_rank(cfg: Config, run_dir: Path | None, ckpt: dict | None, *, console: Console, find_lr: bool,
                extra_callbacks: list | None, test: bool, ctx: distributed.Dist, device: torch.device) -> Run:
    t0 = time.perf_counter()
    d, t, o = cfg.data, cfg.train, cfg.optim
    models.check_name(cfg.model.name)
    set_deterministic(t.deterministic)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults on each step's activations: a tenth of a CPU step
    seed_everything(distributed.rank_seed(t.seed, ctx.rank))  # init differs per rank; DDP copies rank 0's

    # data: decoded once (by rank 0 first), then memory-mapped from the cache; split; train-split statistics
    prep = distributed.main_first(ctx, lambda: prepare(cfg, min_size=models.min_size(cfg.model.name)))
    ds, cache_hit, parts, split_how, mean, std = prep.ds, prep.cache_hit, prep.parts, prep.split_how, prep.mean, prep.std
    task = ds.task
    if run_dir is not None and (why := split_changed(run_dir, parts)):
        raise CnnfitError(f"resume: the data of {run_dir} has changed ({why}); resume needs the same data")
    c, h, _ = ds.shape
    n_train = len(parts["train"])
    if t.batch > n_train:
        raise CnnfitError(f"batch={t.batch} is larger than the {n_train} training images; use batch={n_train} or less")
    amp_dtype, amp_why = resolve_amp(t.amp, device, t.deterministic)
    channels_last, cl_why = resolve_channels_last(t.channels_last, device)
    base_lr = o.lr or _AUTO_LR[o.name]
    lr = E.scale_lr(base_lr, t.batch * t.accumulate, o.lr_scale, o.ref_batch)
    wd = o.weight_decay if o.weight_decay is not None else _AUTO_WD[o.name]
    if o.decoupled and o.name != "sgd":
        raise CnnfitError(f"optim.decoupled=true is for sgd (its lr and weight decay are per 1024 images); "
                          f"drop it, or use optim={o.name} with plain lr and weight_decay")
    step_lr, step_wd = (E.decoupled_sgd(lr, wd, momentum=o.momentum, batch=t.batch * t.accumulate)
                        if o.decoupled else (lr, wd))
    amp = amp_name(amp_dtype)
    monitor, monitor_why = t.monitor, "set"
    train_counts = prep.train_counts if task == "classify" else None
    if monitor == "auto" and task == "classify":
        imbalance = train_counts.max() / max(train_counts.min(), 1)
        monitor = "val_macro_f1" if imbalance > 3 else "val_acc"
        monitor_why = f"auto: largest/smallest class {imbalance:.1f}" + (" > 3" if imbalance > 3 else "")
    elif monitor == "auto":
        monitor, monitor_why = E.scores.MONITORS[task], f"auto: {task}"
    if d.merge_val:  # val was trained on: it cannot pick the epoch, so best.pt follows the last one
        monitor, monitor_why = "epoch", "merge_val: the last epoch"
    class_weight = E.losses.class_weights(t.class_weight, ds.classes, train_counts) if task == "classify" else None
    loss_fn = E.losses.make_loss(task, t.loss, label_smoothing=t.label_smoothing, focal_gamma=t.focal_gamma,
                                 class_weight=None if class_weight is None else class_weight.to(device))
    val_loss = E.losses.make_loss(task)  # the task's plain loss, unsmoothed and unweighted: comparable across runs
    labels, target_scale = ds.labels, None
    if task == "regress":  # standardized targets train at any scale; metrics are reported in the data's units
        tr = ds.labels[parts["train"]].astype(np.float64)
        target_scale = (float(tr.mean()), float(max(tr.std(), 1e-12)))
        labels = ((ds.labels - target_scale[0]) / target_scale[1]).astype(np.float32)

    # model: built, and started from init= weights (or the resumed weights), before anything is written
    options = {k: v for k, v in cfg.model.model_dump(exclude={"name", "init"}).items() if v is not None}
    model_kwargs = {**models.builder_kwargs(cfg.model.name, imgsz=h), **options}
    model = models.create(cfg.model.name, num_classes=len(ds.classes), in_chans=c, imgsz=h, **options)
    init = models.load_pretrained(model, cfg.model.init, classes=ds.classes) if cfg.model.init and not ckpt else None
    if ckpt is not None:
        model.load_state_dict(ckpt["model_state"])
    ft = cfg.finetune
    frozen = E.finetune.resolve_freeze(model, ft.freeze if ft.freeze is not None
                                       else ("backbone" if ft.freeze_epochs else None))
    backbone_lr_mult = ft.backbone_lr_mult or (0.1 if ft.freeze_epochs else 1.0)
    gamma = cfg.schedule.gamma or (0.95 if cfg.schedule.name == "exponential" else 0.1)
    resolved = cfg.model_copy(update={
        "data": d.model_copy(update={"imgsz": h, "channels": c, "source": absolute(d.source), "task": task}),
        "optim": o.model_copy(update={"lr": base_lr, "weight_decay": wd}),
        "train": t.model_copy(update={"amp": amp, "channels_last": channels_last, "monitor": monitor}),
        "model": cfg.model.model_copy(update={"init": absolute(cfg.model.init) if cfg.model.init else None}),
        "finetune": ft.model_copy(update={"backbone_lr_mult": backbone_lr_mult}),
        "schedule": cfg.schedule.model_copy(update={"gamma": gamma}),
        "resume": ResumeConfig(),
    })

    # only now, with every input checked, does the run directory exist (a resumed run keeps its own)
    # under data parallelism rank 0 alone writes the run directory, and tells the others its name
    resumed = run_dir is not None
    if not resumed:
        run_dir = distributed.broadcast(new_run_dir(cfg.project, cfg.name) if ctx.main else None, ctx)
    if ctx.main:
        if not resumed:
            split = {k: v.tolist() for k, v in parts.items()}
            (run_dir / "split.json").write_text(json.dumps({"how": split_how, "seed": t.seed, **split}))
        write_atomic(run_dir / "config.yaml", to_yaml(resolved))
        if ds.skipped:
            (run_dir / "skipped.txt").write_text("".join(f"{f}\t{why}\n" for f, why in ds.skipped))
        if init is not None:
            (run_dir / "init.json").write_text(json.dumps(asdict(init), indent=1))
        distributed.write_run_dir(ctx, run_dir)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    if ctx.active and t.sync_bn:
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not m.affine and m.bias is not None
               for m in model.modules()):  # torch's conversion keeps affine=True layers' parameters only
            raise CnnfitError(f"sync_bn=true would drop the batch-norm shifts of {cfg.model.name}; drop sync_bn")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same parameters and state_dict keys
    n_params = sum(p.numel() for p in model.parameters())
    auto = lambda given, why: "set" if given is not None else why  # noqa: E731
    batches = -(-n_train // t.batch)
    steps = -(-batches // t.accumulate)  # optimizer steps per epoch
    print_summary(console, [
        ("data", f"{d.source}: {len(ds)} images, {len(ds.classes)} {'classes' if task != 'regress' else 'target'}"
         + (f", {task}" if task != "classify" else ""), "cache hit" if cache_hit else "decoded and cached"),
        ("split", " / ".join(f"{k} {len(v)}" for k, v in parts.items()), split_how),
        *([("per class", per_class_text({n: np.bincount(ds.labels[i], minlength=len(ds.classes)).tolist()
                                         for n, i in parts.items()}, ds.classes), "train/val/test")]
          if task == "classify" else []),
        ("skipped", f"{len(ds.skipped)} files" + (f" (listed in {run_dir / 'skipped.txt'})" if ds.skipped else ""),
         "; ".join(f"{Path(f).name}: {why}" for f, why in ds.skipped[:3])),
        ("input", f"{c}x{h}x{h} ({d.resize})",
         auto(d.imgsz, f"auto: own size ({D.sources.AUTO_PHOTO_SIZE} px if mixed)")),
        ("model", f"{cfg.model.name}, {n_params:,} parameters", ", ".join(f"{k}={v}" for k, v in options.items())),
        *([("init", init.summary(), f"from {cfg.model.init} (details in init.json)")] if init else []),
        *([("fine-tune", finetune_text(frozen, ft, t.epochs, backbone_lr_mult), "")] if frozen or ft.head_lr_mult != 1
          or backbone_lr_mult != 1 else []),
        ("device", f"{device}, amp {amp}, channels_last {channels_last}"
         + (", deterministic" if t.deterministic else ""), f"{amp_why}; {cl_why}"),
        *([("distributed", f"{ctx.world} processes ({'nccl' if device.type == 'cuda' else 'gloo'}), "
            f"{-(-t.batch // ctx.world)} images each per step" + (", SyncBatchNorm" if t.sync_bn else ""),
            "torchrun; batch is the global batch")] if ctx.active else []),
        ("training", f"{t.epochs} epochs x {steps} steps, batch {t.batch}"
                     + (f" x {t.accumulate} accumulated" if t.accumulate > 1 else "")
                     + (f", {t.sampler} sampler" if t.sampler != "shuffle" else "")
                     + (f", class weights {t.class_weight}" if t.class_weight != "none" else ""),
         f"monitor {monitor} ({monitor_why})" + (f", patience {t.patience}" if t.patience else "")),
        ("loss", loss_text(task, t), ""),
        ("optimizer", f"{o.name} lr {lr:g} weight_decay {wd:g}"
         + (f" per 1024 images (torch SGD: lr {step_lr:.4g}, weight_decay {step_wd:.4g})" if o.decoupled else "")
         + (f", norm lr x{o.norm_lr_mult:g}" if o.norm_lr_mult != 1 else "") + (f" l1 {o.l1:g}" if o.l1 else "")
         + (f", clip_norm {t.clip_norm:g}" if t.clip_norm else "") + (f", clip_value {t.clip_value:g}" if t.clip_value else "")
         + (f", ema {t.ema:g}" if t.ema else "") + (f", lookahead every {t.lookahead} steps" if t.lookahead else ""),
         (f"{o.lr_scale} scaling of {base_lr:g} at batch {o.ref_batch}; " if o.lr_scale != "none" else "")
         + ("auto: defaults for " + o.name if o.lr is None or o.weight_decay is None else "set")),
        ("schedule", f"{cfg.schedule.name}" + (f", warmup {cfg.schedule.warmup:g} epochs" if cfg.schedule.warmup else ""), ""),
        ("run", str(run_dir), f"resumed at step {ckpt['train_state']['step']}" if resumed else ""),
    ])

    augment = build_augment(cfg)
    if ctx.main:
        write_data_report(prep, run_dir, console)
    common = dict(batch=t.batch, device=device, mean=mean, std=std, channels_last=channels_last, stream=d.stream)
    minority = ([i for i, n in enumerate(train_counts) if n < train_counts.max() / 2]
                if cfg.aug.only_minority and train_counts is not None else None)
    train_loader = D.DeviceLoader(ds.images, labels, index=parts["train"], augment=augment, shuffle=True, seed=t.seed,
                                  balanced=t.sampler == "balanced", augment_classes=minority, rank=ctx.rank,
                                  world=ctx.world, augment_seed=distributed.rank_seed(t.seed, ctx.rank),
                                  drop_last=t.drop_last, alternate_flip=cfg.aug.hflip == "alternate", **common)
    # each rank validates its own slice of val; the loop gathers the outputs in rank order. Val images that were
    # trained on (merge_val) would only score training: they are not validated (the val columns read nan)
    val_part = parts["val"][:0] if d.merge_val else np.array_split(parts["val"], ctx.world)[ctx.rank]
    val_loader = D.DeviceLoader(ds.images, labels, index=val_part, **common)
    mix = None
    if cfg.aug.mixup > 0 or cfg.aug.cutmix > 0:
        if task != "classify":
            raise CnnfitError(f"mixup and cutmix are for single-label classification, not {task}; set aug.mixup=0 aug.cutmix=0")
        mix = lambda x, y: D.augment.mix(x, y, len(ds.classes), train_loader.generator,  # noqa: E731
                                         mixup=cfg.aug.mixup, cutmix=cfg.aug.cutmix)
    groups = E.param_groups(model, step_wd, backbone=E.finetune.backbone_ids(model),
                            backbone_lr_mult=backbone_lr_mult, head_lr_mult=ft.head_lr_mult, norm_lr_mult=o.norm_lr_mult)
    optimizer = E.build_optimizer(o.name, model, lr=step_lr, weight_decay=step_wd, momentum=o.momentum,
                                  nesterov=o.nesterov, groups=groups)
    per_epoch = -(-len(train_loader) // t.accumulate)
    schedule = E.make_schedule(cfg.schedule.name, total=t.epochs * per_epoch,
                               warmup=round(cfg.schedule.warmup * per_epoch), every=(
                                   cfg.schedule.step_size * per_epoch if cfg.schedule.name == "step" else per_epoch),
                               gamma=gamma, milestones=tuple(round(m * per_epoch) for m in cfg.schedule.milestones),
                               start=cfg.schedule.start, end=cfg.schedule.end)
    meta = {
        "model": cfg.model.name, "model_kwargs": model_kwargs, "classes": ds.classes, "imgsz": h, "channels": c,
        "resize": d.resize, "mean": mean, "std": std, "task": task, "target_scale": target_scale,
        "config": resolved.model_dump(mode="json"),
    }
    schedule_cb = C.LRSchedule(schedule)
    callbacks = [schedule_cb, C.Checkpointing(run_dir, meta, monitor, "auto", t.min_delta, t.ckpt_every, write=ctx.main)]
    if t.lookahead:  # first: a checkpoint written at a step's end holds the weights after the sync
        callbacks.insert(0, C.Lookahead(t.lookahead))
    if ctx.main:
        callbacks += [C.History(run_dir / "history.csv"), C.ProgressBar(console, every=t.log_every)]
    if t.patience:
        callbacks.append(C.EarlyStopping(monitor, "auto", t.patience, t.min_delta))
    if cfg.schedule.name == "plateau":
        callbacks.append(C.ReduceLROnPlateau(monitor, "auto", cfg.schedule.patience, gamma, t.min_delta))
    if t.time:
        callbacks.append(C.TimeBudget(t.time))
    if t.profile and ctx.main:
        callbacks.append(C.Profile(run_dir))
    if t.tensorboard and ctx.main:
        x, _ = next(iter(D.DeviceLoader(ds.images, labels, index=parts["val"][:16], **common)))
        callbacks.append(C.TensorBoard(run_dir, images=(x[:16].float() * val_loader.inv_std.reciprocal()
                                                        + val_loader.mean).clamp(0, 1).cpu(), graph_input=x[:2]))
    if frozen:  # first, so frozen batch norm goes back to eval right after the loop's model.train()
        callbacks.insert(0, C.Freeze(frozen, epochs=ft.freeze_epochs or None))
    callbacks += extra_callbacks or []
    signals = C.CatchSignals()
    callbacks.append(signals)
    forward, compile_why = model, ""
    if ctx.active:  # gradients averaged over ranks in buckets while backward still runs
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=bool(frozen))  # frozen stages have no gradient
    fresh = ckpt is None and init is None  # a resumed or init= model keeps its weights
    init_seconds = init_from_data(model, ds.images, labels, parts["train"], t.seed, common) if fresh else 0.0
    if t.compile:
        t_compile = time.perf_counter()
        x, y = next(iter(train_loader))
        mode = t.compile if isinstance(t.compile, str) else None
        if mode == "reduce-overhead" and device.type != "cuda":
            mode = None  # CUDA graphs are a CUDA feature; elsewhere this is the default compilation
        forward, compile_why = E.compile_checked(forward, x, y, loss_fn, amp_dtype, mode)
        compile_why += f" (first compile and check: {time.perf_counter() - t_compile:.1f} s)"
        console.print(compile_why)
    if find_lr:
        return _range_test(model, train_loader, optimizer, loss_fn, amp_dtype, run_dir, console)
    if ctx.active and t.deterministic and (draws := distributed.per_rank_draws(
            model, augment=augment is not None, mixing=mix is not None, sync_bn=t.sync_bn)):
        console.print(f"note: deterministic=true, but {', '.join(draws)} differ between ranks, so the numbers "
                      "follow a 1-process run's only roughly; they are equal (to float rounding) for a model without "
                      "dropout or batch norm (e.g. model=lenet5) and no augmentation")
    setup_seconds = time.perf_counter() - t0
    how = "cache hit" if cache_hit else "decoded"
    console.print(f"ready to train: data and model set up in {setup_seconds:.2f} s ({how})")
    try:
        state = E.fit(model, train_loader, val_loader, optimizer=optimizer, epochs=t.epochs, device=device,
                      task=task, loss_fn=loss_fn, callbacks=callbacks, amp_dtype=amp_dtype, mix=mix,
                      score_fn=partial(E.scores.epoch_scores, task, loss=val_loss, target_scale=target_scale),
                      accumulate=t.accumulate, clip_norm=t.clip_norm, clip_value=t.clip_value, l1=o.l1, ema=t.ema,
                      forward=forward, resume=ckpt, dist=ctx)
    except Exception as exc:
        if ctx.active and distributed.lost_peer(exc):
            raise TrainingStopped(
                f"rank {ctx.rank}: another rank of the job stopped or stopped answering ({distributed.describe(exc)}); "
                f"continue from {run_dir / 'last.pt'} with the same number of processes: "
                f"cnnfit train resume={run_dir} devices={int(os.environ.get('LOCAL_WORLD_SIZE', ctx.world))} "
                "(or the same torchrun command with resume=)", code=1) from None
        raise
    finally:
        signals.restore()
    if state.failed:
        raise TrainingStopped(f"{state.stop} (run directory {run_dir})", code=1)
    if state.interrupted:
        raise TrainingStopped(f"interrupted by {state.interrupted} at step {state.step}; continue exactly with: "
                              f"cnnfit train resume={run_dir}", code=130)
    train_seconds = time.perf_counter() - t0 - setup_seconds
    if not ctx.main:  # rank 0 evaluates on the test split and writes the results
        return Run(run_dir, {}, state.history, {"setup_seconds": setup_seconds, "train_seconds": train_seconds})

    def training_plots() -> None:  # drawn with the test metrics; a tuning trial's come from the study instead
        plots = run_dir / "plots"
        plots.mkdir(exist_ok=True)
        chosen = C.Monitor(monitor, "auto", t.min_delta)  # the epoch best.pt holds, as Checkpointing chose it
        for row in state.history:
            chosen.update(row, row["epoch"])
        plot_curves(state.history, plots / "curves.png", best_epoch=chosen.best_epoch)
        steps_lrs = list(zip(*schedule_cb.trace)) or [[], []]
        plot_lr(*steps_lrs, plots / "lr.png", steps_per_epoch=per_epoch)
        write_samples(prep, plots, augment, t.seed)

    timings = {"setup_seconds": setup_seconds, "train_seconds": train_seconds, "cache_hit": cache_hit,
               "init_seconds": init_seconds}
    if resumed:  # train_seconds counts from the resume; the steps before it ran in an earlier process
        timings["resumed_at_step"] = ckpt["train_state"]["step"]
    if compile_why:
        timings["compile"] = compile_why
    if not test:  # scored on val only: the best epoch's validation metrics
        best = C.Monitor(monitor)
        for row in state.history:
            best.update(row, row["epoch"])
        metrics = {"task": task, "split": "val", "monitor": monitor, "value": best.best,
                   "best_epoch": best.best_epoch, "val": state.history[best.best_epoch - 1] if state.history else {},
                   "timings": timings, "stop": state.stop}
        (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return Run(run_dir, metrics, state.history, timings)
    metrics = evaluate(run_dir, console=console, dataset=ds, extra={"timings": timings, "stop": state.stop},
                       more_plots=training_plots)
    return Run(run_dir, metrics, state.history, timings)


def _range_test(model: torch.nn.Module, loader: D.DeviceLoader, optimizer: torch.optim.Optimizer, loss_fn: Any,
                amp_dtype: torch.dtype | None, run_dir: Path, console: Console) -> Run:
    from cnnfit.eval.plots import plot_lr_find

    result = E.lr_range_test(model, loader, optimizer, loss_fn, amp_dtype=amp_dtype)
    plot_lr_find(result, run_dir / "lr_find.png")
    metrics = {"lr": result.suggestion, "rule": result.rule, "lrs": result.lrs, "losses": result.losses}
    (run_dir / "lr_find.json").write_text(json.dumps(metrics, indent=1))
    console.print(f"suggested lr {result.suggestion:.3g}: {result.rule}", highlight=False, soft_wrap=True)
    console.print(f"curve -> {run_dir / 'lr_find.png'}; train with lr={result.suggestion:.2g}", highlight=False,
                  soft_wrap=True)
    return Run(run_dir, metrics)


__all__ = ["Run", "evaluate", "lr_find", "predict", "train"]
