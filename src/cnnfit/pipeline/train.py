"""The recipe, top to bottom: resolve -> prepare -> build -> fit -> finish (`_recipe`), and the entry points
around it: `train` (one run, a resumed run, or N seeds) and `lr_find`."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnfit import distributed, engine, models
from cnnfit.config import SCRATCH, Config, with_overrides
from cnnfit.data import DeviceLoader, ImageSet
from cnnfit.data.augment import Augment, identity as no_augment, mix as mix_batches
from cnnfit.device import keep_freed_memory, pick_device, seed_everything, set_deterministic
from cnnfit.engine.callbacks import (Callback, CatchSignals, Checkpointing, EarlyStopping, Freeze, History,
                                     LRSchedule, Lookahead, MLflowRun, Monitor, Profile, ProgressBar,
                                     ReduceLROnPlateau, TensorBoard, TimeBudget, WandbRun)
from cnnfit.engine.callbacks.tracking import Parent, ending, require
from cnnfit.errors import CnnfitError, TrainingStopped
from cnnfit.eval.plots import plot_curves, plot_lr, plot_lr_find
from cnnfit.pipeline import repeats, rundir, summary
from cnnfit.pipeline.evaluate import evaluate
from cnnfit.pipeline.prepare import (Prepared, build_augment, init_from_data, look_at, prepare, write_data_report,
                                     write_samples)
from cnnfit.pipeline.resolve import Resolved, by_data, by_size, resolve
from cnnfit.pipeline.resume import resume_config
from cnnfit.pipeline.transfer import Weights, feature_loaders, imagenet_recipe
from cnnfit.pipeline.rundir import Run

log = logging.getLogger(__name__)

# what a tracker (track=) gets of the run directory as artifacts: what a reader needs to judge and repeat the run.
# Not best.pt and last.pt: the largest files by far (a resnet50's best.pt is ~95 MB, last.pt twice that), and the
# run directory, whose path each tracker run records, keeps them
TRACKED_FILES = ("config.yaml", "metrics.json", "history.csv", "report.html", "plots")


def train(cfg: Config | None = None, *, callbacks: list | None = None, test: bool = True,
          track_parent: Parent | None = None, **overrides: Any) -> Run:
    """Train a model as `cfg` says and evaluate it on the test split. Every input is validated
    before the run directory is created, so bad input leaves nothing behind. `resume=RUN` continues a run
    exactly where its last.pt stopped; `repeats=N` trains N seeds and reports mean and std.

    `callbacks` join the run's own (a tuning trial's pruning); `test=False` leaves the test split untouched
    (a tuning trial is scored on val, so the test split is seen once, by the final refit); `track_parent`: the
    tuning study this run is a trial of, whose tracker run (track=) the run's own nests under."""
    cfg = with_overrides(cfg, overrides)
    if cfg.resume.run:
        cfg, run_dir, ckpt = resume_config(cfg)
        return _train(cfg, run_dir, ckpt, extra_callbacks=callbacks, test=test, track_parent=track_parent)
    if cfg.train.repeats > 1:
        if distributed.from_env().active:
            raise CnnfitError("repeats=N trains its seeds one after another in one process; under torchrun or "
                              "devices= start one job per seed (seed=N)")
        parent, seeds = repeats.seeds(cfg)
        runs = []
        for i, one in enumerate(seeds):
            log.info(f"repeat {i + 1}/{len(seeds)}: seed {one.train.seed}", extra={"style": "bold"})
            runs.append(_train(one))
        return repeats.summarize(parent, runs)
    return _train(cfg, extra_callbacks=callbacks, test=test, track_parent=track_parent)


def lr_find(cfg: Config | None = None, **overrides: Any) -> Run:
    """`cnnfit lr-find`: the LR range test on exactly the model, data and optimizer `train` would build;
    lr_find.png and the suggested LR (metrics["lr"]) in a run directory of its own."""
    cfg = with_overrides(cfg, overrides)
    if cfg.name == "train":
        cfg = cfg.model_copy(update={"name": "lr_find"})
    return _train(cfg, find_lr=True)


def _train(cfg: Config, run_dir: Path | None = None, ckpt: dict | None = None, *, find_lr: bool = False,
           extra_callbacks: list | None = None, test: bool = True, track_parent: Parent | None = None) -> Run:
    """One run in this process; under torchrun, this process's rank of a data-parallel run."""
    ctx, t = distributed.from_env(), cfg.train
    require(t.track)  # a tracker's missing client is refused before the run directory is made
    saved = ckpt["train_state"].get("world", 1) if ckpt is not None else None
    args = dict(find_lr=find_lr, extra_callbacks=extra_callbacks or [], test=test, track_parent=track_parent,
                ctx=ctx)
    if not ctx.active:
        if saved is not None and saved > 1:
            raise CnnfitError(f"resume: {run_dir} was trained by {saved} processes; resume it with the same number: "
                              f"cnnfit train resume={run_dir} devices={saved}")
        if t.devices > 1:
            raise CnnfitError(f"devices={t.devices} is started by the command line (cnnfit train ... "
                              "devices=N); from Python, run the script under torchrun --nproc_per_node=N")
        return _run(cfg, run_dir, ckpt, device=pick_device(t.device), **args)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", ctx.world))
    if t.devices > 1 and t.devices != local:
        raise CnnfitError(f"devices={t.devices}, but torchrun started {local} processes on this machine; "
                          "under torchrun drop devices= (--nproc_per_node sets it)")
    if find_lr:
        raise CnnfitError("lr-find runs in one process; start it without torchrun or devices=")
    if t.batch < ctx.world:  # before the process group: a refused job never starts one
        raise CnnfitError(_BATCH_WORLD.format(batch=t.batch, world=ctx.world))
    if saved is not None and saved != ctx.world:
        raise CnnfitError(f"resume: {run_dir} was trained by {saved} processes and this job has {ctx.world}; "
                          f"resume it with the same number (devices={saved}, or torchrun --nproc_per_node)")
    device = distributed.device_for(ctx, t.device)
    if t.sync_bn and device.type != "cuda":
        raise CnnfitError("sync_bn=true needs CUDA GPUs (NCCL); on CPU drop sync_bn, or use a model without "
                          "batch norm when every rank must see the global batch's statistics")
    with distributed.session(ctx, device, t.dist_timeout):
        return _run(cfg, run_dir, ckpt, device=device, **args)


@dataclass
class _Built:
    """The model side of a run: built, started from its weights, and what its checkpoint must say."""

    model: torch.nn.Module
    options: dict[str, Any]  # model.* settings the user gave
    init: models.InitReport | None
    frozen: list[str]
    loss_fn: Any
    labels: np.ndarray  # the training targets (regression: standardized)
    meta: dict[str, Any]  # what every checkpoint carries to eval, predict, export and serve


def _run(cfg: Config, run_dir: Path | None, ckpt: dict | None, **options: Any) -> Run:
    with contextlib.ExitStack() as held:  # rundir.start locks the run directory in it; the run's end unlocks it
        return _recipe(cfg, run_dir, ckpt, held=held, **options)


def _recipe(cfg: Config, run_dir: Path | None, ckpt: dict | None, *, find_lr: bool, extra_callbacks: list,
            test: bool, track_parent: Parent | None, ctx: distributed.Dist, device: torch.device,
            held: contextlib.ExitStack) -> Run:
    t0 = time.perf_counter()
    set_deterministic(cfg.train.deterministic)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults on each step's activations: a tenth of a CPU step
    seed_everything(distributed.rank_seed(cfg.train.seed, ctx.rank))  # init differs per rank; DDP copies rank 0's
    cfg, chosen = by_data(cfg, distributed.main_first(ctx, lambda: look_at(cfg)))  # model, weights, augmentation
    cfg, weights = imagenet_recipe(cfg)  # init=imagenet: the weights decide the input, before the data is read
    prep = _prepare(cfg, ctx, run_dir)
    if weights is not None:  # normalized as in the weights' own training, not by this data's statistics
        prep = replace(prep, mean=weights.mean(prep.ds.shape[0]), std=weights.std(prep.ds.shape[0]))
        chosen += weights.filled
    cfg, sized = by_size(cfg, len(prep.parts["train"]))  # batch, epochs, early stopping
    chosen += sized
    _check_batch(cfg, prep, ctx)
    r = resolve(cfg, task=prep.ds.task, shape=prep.ds.shape, train_counts=prep.train_counts, device=device,
                n_val=len(prep.parts["val"]))
    b = _build(cfg, r, prep, ckpt, device, weights)
    resumed_at = ckpt["train_state"]["step"] if ckpt is not None else None
    run_dir = rundir.start(cfg, r.config, run_dir=run_dir, parts=prep.parts, split_how=prep.split_how,
                           skipped=prep.ds.skipped, init=b.init, ctx=ctx, held=held)
    model = _place(b.model, cfg, r, ctx, device)
    augment = build_augment(cfg)
    train_loader, val_loader, common = _loaders(cfg, prep, b.labels, augment, r, ctx, device)
    per_epoch = -(-len(train_loader) // cfg.train.accumulate)  # optimizer steps per epoch
    summary.log_table("cnnfit train", summary.train_rows(
        cfg, r, prep, run_dir=run_dir, model=model, options=b.options, init=b.init, frozen=b.frozen, device=device,
        ctx=ctx, steps=per_epoch, resumed_at=resumed_at, weights=weights, chosen=chosen))
    if ctx.main:
        write_data_report(prep, run_dir)
    optimizer, schedule = _optimizer(cfg, r, model, per_epoch)
    fresh = ckpt is None and b.init is None  # a resumed or init= model keeps its weights
    init_seconds = init_from_data(model, prep.ds.images, b.labels, prep.parts["train"], cfg.train.seed, common) \
        if fresh else 0.0
    if not find_lr and (on := feature_loaders(cfg, model, b.labels, prep, r.amp_dtype, b.frozen, augment, ctx,
                                              common)) is not None:
        model, train_loader, val_loader = on  # the head alone, on the frozen backbone's cached features
        b = replace(b, frozen=[])
    budget = TimeBudget(cfg.train.time) if cfg.train.time else None
    # one process: each rank's own clock would give the ranks different LRs
    schedule_cb = LRSchedule(schedule, budget=None if ctx.active else budget, total=cfg.train.epochs * per_epoch)
    tensorboard = _tensorboard(prep, b, run_dir, common) if cfg.train.tensorboard and ctx.main else None
    trackers = _trackers(cfg, r, run_dir, track_parent) if ctx.main and not find_lr else []
    held.enter_context(ending(trackers))  # a fit or an evaluation that raises ends their runs as failed
    callbacks = _callbacks(cfg, r, b, run_dir, schedule_cb, budget, ctx, [tensorboard, *trackers]) + extra_callbacks
    forward, compile_why = _forward(cfg, model, r, b, ctx, device, train_loader)
    if find_lr:
        return _range_test(model, train_loader, optimizer, b.loss_fn, r.amp_dtype, run_dir)
    mix = partial(mix_batches, num_classes=len(prep.ds.classes), generator=train_loader.generator,
                  mixup=cfg.aug.mixup, cutmix=cfg.aug.cutmix) if cfg.aug.mixup > 0 or cfg.aug.cutmix > 0 else None
    if ctx.active and cfg.train.deterministic and (draws := distributed.per_rank_draws(
            model, augment=augment is not no_augment, mixing=mix is not None, sync_bn=cfg.train.sync_bn)):
        log.info(f"note: deterministic=true, but {', '.join(draws)} differ between ranks, so the numbers "
                 "follow a 1-process run's only roughly; they are equal (to float rounding) for a model without "
                 "dropout or batch norm (e.g. model=lenet5) and no augmentation")
    setup_seconds = time.perf_counter() - t0
    log.info(f"ready to train: data and model set up in {setup_seconds:.2f} s "
             f"({'cache hit' if prep.cache_hit else 'decoded'})")
    state = _fit(cfg, r, b, model, forward, train_loader, val_loader, optimizer, callbacks, mix, ckpt, ctx, device,
                 run_dir)
    timings = {"setup_seconds": setup_seconds, "train_seconds": time.perf_counter() - t0 - setup_seconds,
               "cache_hit": prep.cache_hit, "init_seconds": init_seconds}
    if resumed_at is not None:  # train_seconds counts from the resume; the steps before it ran in an earlier process
        timings["resumed_at_step"] = resumed_at
    if compile_why:
        timings["compile"] = compile_why
    if not ctx.main:  # rank 0 evaluates on the test split and writes the results
        return Run(run_dir, {}, state.history, {k: timings[k] for k in ("setup_seconds", "train_seconds")})
    plots = partial(_training_plots, run_dir, state.history, r.monitor, cfg, schedule_cb, per_epoch, prep, augment)
    return _finish(run_dir, state, timings, r.monitor, prep.ds, test=test, plots=plots, trackers=trackers)


def _prepare(cfg: Config, ctx: distributed.Dist, run_dir: Path | None) -> Prepared:
    """The data, decoded once (by rank 0 first), then memory-mapped from the cache; split; train-split statistics;
    every check on it that can fail, before anything is written."""
    prep = distributed.main_first(ctx, lambda: prepare(cfg, min_size=models.min_size(cfg.model.name)))
    if run_dir is not None and (why := rundir.split_changed(run_dir, prep.parts)):
        raise CnnfitError(f"resume: the data of {run_dir} has changed ({why}); resume needs the same data")
    if (cfg.aug.mixup > 0 or cfg.aug.cutmix > 0) and prep.ds.task != "classify":
        raise CnnfitError(f"mixup and cutmix are for single-label classification, not {prep.ds.task}; "
                          "set aug.mixup=0 aug.cutmix=0")
    return prep


_BATCH_WORLD = "batch={batch} is the global batch and is smaller than the {world} processes; use batch={world} or more"


def _check_batch(cfg: Config, prep: Prepared, ctx: distributed.Dist) -> None:
    n_train, batch = len(prep.parts["train"]), cfg.train.batch
    if batch > n_train:
        raise CnnfitError(f"batch={batch} is larger than the {n_train} training images; use batch={n_train} or less")
    if batch < ctx.world:
        raise CnnfitError(_BATCH_WORLD.format(batch=batch, world=ctx.world))


def _build(cfg: Config, r: Resolved, prep: Prepared, ckpt: dict | None, device: torch.device,
           imagenet: Weights | None) -> _Built:
    """The loss, the targets and the model, started from init= weights (or ImageNet's, or the resumed ones)."""
    ds, t = prep.ds, cfg.train
    models.check_name(cfg.model.name)
    counts = prep.train_counts if ds.task == "classify" else None
    weights = engine.losses.class_weights(t.class_weight, ds.classes, counts) if counts is not None else None
    loss_fn = engine.losses.make_loss(ds.task, t.loss, label_smoothing=t.label_smoothing, focal_gamma=t.focal_gamma,
                                      class_weight=None if weights is None else weights.to(device))
    labels, target_scale = ds.labels, None
    if ds.task == "regress":  # standardized targets train at any scale; metrics are reported in the data's units
        tr = ds.labels[prep.parts["train"]].astype(np.float64)
        target_scale = (float(tr.mean()), float(max(tr.std(), 1e-12)))
        labels = ((ds.labels - target_scale[0]) / target_scale[1]).astype(np.float32)
    c, h, _ = ds.shape
    options = cfg.model.options()
    model = models.create(cfg.model.name, num_classes=len(ds.classes), in_chans=c, imgsz=h, **options)
    init = None
    if imagenet is not None and not ckpt:
        init = models.load_pretrained(model, imagenet.state_dict, name=f"ImageNet: {imagenet.meta['source']}")
    elif cfg.model.init not in (None, SCRATCH) and not ckpt:
        init = models.load_pretrained(model, cfg.model.init, classes=ds.classes)
    if ckpt is not None:
        model.load_state_dict(ckpt["model_state"])
    frozen = engine.finetune.resolve_freeze(model, r.frozen_default)
    meta = {"model": cfg.model.name, "model_kwargs": {**models.builder_kwargs(cfg.model.name, imgsz=h), **options},
            "classes": ds.classes, "imgsz": h, "channels": c, "resize": cfg.data.resize, "mean": prep.mean,
            "std": prep.std, "task": ds.task, "target_scale": target_scale, "config": r.config.model_dump(mode="json")}
    if imagenet is not None:  # where the backbone's weights came from, for whoever reloads the model
        meta["pretrained"] = {k: imagenet.meta[k] for k in ("source", "top1")} | {"dataset": "ImageNet-1k"}
    return _Built(model, options, init, frozen, loss_fn, labels, meta)


def _place(model: torch.nn.Module, cfg: Config, r: Resolved, ctx: distributed.Dist,
           device: torch.device) -> torch.nn.Module:
    model = model.to(device, memory_format=torch.channels_last if r.channels_last else torch.contiguous_format)
    if ctx.active and cfg.train.sync_bn:
        if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not m.affine and m.bias is not None
               for m in model.modules()):  # torch's conversion keeps affine=True layers' parameters only
            raise CnnfitError(f"sync_bn=true would drop the batch-norm shifts of {cfg.model.name}; drop sync_bn")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same parameters and state_dict keys
    return model


def _loaders(cfg: Config, prep: Prepared, labels: np.ndarray, augment: Augment, r: Resolved,
             ctx: distributed.Dist, device: torch.device) -> tuple[DeviceLoader, DeviceLoader, dict]:
    t, counts = cfg.train, prep.train_counts
    common = dict(batch=t.batch, device=device, mean=prep.mean, std=prep.std, channels_last=r.channels_last,
                  stream=cfg.data.stream)
    minority = ([i for i, n in enumerate(counts) if n < counts.max() / 2]
                if cfg.aug.only_minority and counts is not None else None)
    train = DeviceLoader(prep.ds.images, labels, index=prep.parts["train"], augment=augment, shuffle=True,
                         seed=t.seed, balanced=t.sampler == "balanced", augment_classes=minority, rank=ctx.rank,
                         world=ctx.world, augment_seed=distributed.rank_seed(t.seed, ctx.rank),
                         drop_last=t.drop_last, alternate_flip=cfg.aug.hflip == "alternate", **common)
    # each rank validates its own slice of val; the loop gathers the outputs in rank order. Val images that were
    # trained on (merge_val) would only score training: they are not validated (the val columns read nan)
    val_part = prep.parts["val"][:0] if cfg.data.merge_val else np.array_split(prep.parts["val"], ctx.world)[ctx.rank]
    return train, DeviceLoader(prep.ds.images, labels, index=val_part, **common), common


def _optimizer(cfg: Config, r: Resolved, model: torch.nn.Module,
               per_epoch: int) -> tuple[torch.optim.Optimizer, Any]:
    o, s, ft = cfg.optim, cfg.schedule, r.config.finetune
    groups = engine.param_groups(model, r.step_wd, backbone=engine.finetune.backbone_ids(model),
                                 backbone_lr_mult=ft.backbone_lr_mult, head_lr_mult=ft.head_lr_mult,
                                 norm_lr_mult=o.norm_lr_mult)
    optimizer = engine.build_optimizer(o.name, model, lr=r.step_lr, weight_decay=r.step_wd, momentum=o.momentum,
                                       nesterov=o.nesterov, groups=groups)
    schedule = engine.make_schedule(
        s.name, total=cfg.train.epochs * per_epoch, warmup=round(s.warmup * per_epoch),
        every=s.step_size * per_epoch if s.name == "step" else per_epoch, gamma=r.config.schedule.gamma,
        milestones=tuple(round(m * per_epoch) for m in s.milestones), start=s.start, end=s.end)
    return optimizer, schedule


def _tensorboard(prep: Prepared, b: _Built, run_dir: Path, common: dict) -> TensorBoard:
    """TensorBoard logs, with 16 val images as the model sees them (unnormalized for display)."""
    loader = DeviceLoader(prep.ds.images, b.labels, index=prep.parts["val"][:16], **common)
    x, _ = next(iter(loader))
    images = (x[:16].float() * loader.inv_std.reciprocal() + loader.mean).clamp(0, 1).cpu()
    return TensorBoard(run_dir, images=images, graph_input=x[:2])


def _trackers(cfg: Config, r: Resolved, run_dir: Path, parent: Parent | None) -> list[MLflowRun | WandbRun]:
    """The experiment trackers track= names, with the resolved config (what config.yaml holds) as their params."""
    params = r.config.model_dump(mode="json")
    kinds = {"mlflow": MLflowRun, "wandb": WandbRun}
    return [kinds[name](run_dir, params=params, parent=parent) for name in cfg.train.track]


def _callbacks(cfg: Config, r: Resolved, b: _Built, run_dir: Path, schedule_cb: LRSchedule,
               budget: TimeBudget | None, ctx: distributed.Dist, loggers: list[Callback | None]) -> list[Callback]:
    """The run's callbacks, in the order the loop calls them; `loggers` (TensorBoard, trackers) last."""
    t, main = cfg.train, ctx.main
    return [cb for cb in (
        Freeze(b.frozen, epochs=cfg.finetune.freeze_epochs or None) if b.frozen else None,  # first: frozen batch
        # norm goes back to eval right after the loop's model.train()
        Lookahead(t.lookahead) if t.lookahead else None,  # before checkpointing: it saves the weights after the sync
        schedule_cb,
        Checkpointing(run_dir, b.meta, r.monitor, "auto", t.min_delta, t.ckpt_every, write=main),
        History(run_dir / "history.csv") if main else None,
        ProgressBar(every=t.log_every) if main else None,
        EarlyStopping(r.monitor, "auto", t.patience, t.min_delta) if t.patience else None,
        ReduceLROnPlateau(r.monitor, "auto", cfg.schedule.patience, r.config.schedule.gamma, t.min_delta)
        if cfg.schedule.name == "plateau" else None,
        budget,
        Profile(run_dir) if t.profile and main else None,
        *loggers,
    ) if cb is not None]


def _forward(cfg: Config, model: torch.nn.Module, r: Resolved, b: _Built, ctx: distributed.Dist,
             device: torch.device, train_loader: DeviceLoader) -> tuple[torch.nn.Module, str]:
    """What the loop calls: the model, wrapped for data parallelism and compiled when asked."""
    forward, why = model, ""
    if ctx.active:  # gradients averaged over ranks in buckets while backward still runs
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=bool(b.frozen))  # frozen stages have no gradient
    if cfg.train.compile:
        t_compile = time.perf_counter()
        x, y = next(iter(train_loader))
        mode = cfg.train.compile if isinstance(cfg.train.compile, str) else None
        if mode == "reduce-overhead" and device.type != "cuda":
            mode = None  # CUDA graphs are a CUDA feature; elsewhere this is the default compilation
        forward, why = engine.compile_checked(forward, x, y, b.loss_fn, r.amp_dtype, mode)
        why += f" (first compile and check: {time.perf_counter() - t_compile:.1f} s)"
        log.info(why)
    return forward, why


def _fit(cfg: Config, r: Resolved, b: _Built, model: torch.nn.Module, forward: torch.nn.Module,
         train_loader: DeviceLoader, val_loader: DeviceLoader, optimizer: torch.optim.Optimizer,
         callbacks: list, mix: Any, ckpt: dict | None, ctx: distributed.Dist, device: torch.device,
         run_dir: Path) -> engine.State:
    t, task = cfg.train, b.meta["task"]
    signals = CatchSignals()
    step = engine.StepOptions(amp_dtype=r.amp_dtype, accumulate=t.accumulate, clip_norm=t.clip_norm,
                              clip_value=t.clip_value, l1=cfg.optim.l1, ema=t.ema, mix=mix)
    score_fn = partial(engine.scores.epoch_scores, task, loss=engine.losses.make_loss(task),  # plain, unweighted:
                       target_scale=b.meta["target_scale"])  # comparable across runs
    try:
        state = engine.fit(model, train_loader, val_loader, optimizer=optimizer, epochs=t.epochs, device=device,
                           task=task, loss_fn=b.loss_fn, score_fn=score_fn, callbacks=[*callbacks, signals],
                           step=step, forward=forward, resume=ckpt, dist=ctx)
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
    return state


def _training_plots(run_dir: Path, history: list[dict], monitor: str, cfg: Config, schedule_cb: LRSchedule,
                    per_epoch: int, prep: Prepared, augment: Augment) -> None:
    """Curves, LR and augmented samples, drawn with the test metrics; a tuning trial's come from the study."""
    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    chosen = Monitor.replay(history, monitor, "auto", cfg.train.min_delta)  # the epoch best.pt holds
    plot_curves(history, plots / "curves.png", best_epoch=chosen.best_epoch)
    plot_lr(*(list(zip(*schedule_cb.trace)) or [[], []]), plots / "lr.png", steps_per_epoch=per_epoch)
    write_samples(prep, plots, augment, cfg.train.seed)


def _finish(run_dir: Path, state: engine.State, timings: dict, monitor: str, ds: ImageSet, *, test: bool,
            plots: Any, trackers: list[MLflowRun | WandbRun]) -> Run:
    """The test split's scores (or, for a tuning trial, the best epoch's validation scores) in metrics.json, then
    to each tracker with the run's files."""
    if test:
        metrics = evaluate(run_dir, dataset=ds, extra={"timings": timings, "stop": state.stop}, more_plots=plots)
    else:
        best = Monitor.replay(state.history, monitor)
        metrics = {"task": ds.task, "split": "val", "monitor": monitor, "value": best.best,
                   "best_epoch": best.best_epoch, "val": state.history[best.best_epoch - 1] if state.history else {},
                   "timings": timings, "stop": state.stop}
        rundir.write_json(run_dir / "metrics.json", metrics)
    for tracker in trackers:  # test_accuracy, ... (a trial's: val_value, val_best_epoch)
        tracker.finish(metrics, [run_dir / name for name in TRACKED_FILES], prefix=f"{metrics.get('split', 'test')}_")
    return Run(run_dir, metrics, state.history, timings)


def _range_test(model: torch.nn.Module, loader: DeviceLoader, optimizer: torch.optim.Optimizer, loss_fn: Any,
                amp_dtype: torch.dtype | None, run_dir: Path) -> Run:
    result = engine.lr_range_test(model, loader, optimizer, loss_fn, amp_dtype=amp_dtype)
    plot_lr_find(result, run_dir / "lr_find.png")
    metrics = {"lr": result.suggestion, "rule": result.rule, "lrs": result.lrs, "losses": result.losses}
    rundir.write_json(run_dir / "lr_find.json", metrics, indent=1)
    log.info(f"suggested lr {result.suggestion:.3g}: {result.rule}")
    log.info(f"curve -> {run_dir / 'lr_find.png'}; train with lr={result.suggestion:.2g}")
    return Run(run_dir, metrics)


__all__ = ["lr_find", "train"]
