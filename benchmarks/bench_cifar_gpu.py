"""CIFAR-10 on one GPU: cnnfit's recipe cifar10-speed against the reference it follows, airbench 0.1.8's train94
(Keller Jordan, https://github.com/KellerJordan/cifar10-airbench), n runs of each, interleaved, in one process, on
the same decoded pixels.

  cnnfit     cnnfit.train(recipe=cifar10-speed, data=..., seed=S): the ordinary Python API
  airbench   airbench.train94(): its own network, loader, optimizer and TTA (pip install airbench==0.1.8)

Time is what airbench times: training plus the TTA evaluation of the test split, the data already on the GPU, with
the device synchronized at each boundary. airbench's is its own CUDA-event total (whitening init, training epochs,
TTA eval: the 'eval' row it prints). cnnfit's is init_seconds (airnet's data-dependent whitening init) + the
epochs' train_seconds (training steps only; no validation, no checkpoint writes) + test_seconds (test inference
with its TTA views), each synchronized. Neither counts data decoding, loading to the GPU or compilation: each side
runs once first, untimed, and those seconds are printed as "warm-up (compile)". Runs alternate (airbench run i,
then cnnfit run i), so a slow phase of the machine hits both.

MFU: model FLOPs per run over seconds per run over the GPU's bf16 peak as measured here (mean of 10 timed
8192^3 bf16 matmuls after warm-ups, CUDA events). Model FLOPs = 3 x forward FLOPs x training images seen + forward
FLOPs x TTA views x test images, forward FLOPs of one 3x32x32 image counted the same way for both networks
(cnnfit.models.summary.count_flops: torch's FlopCounterMode, 2 per multiply-accumulate of convs and linears).

Data: the CIFAR-10 JPEG copy, $CNNFIT_DATA/cifar10-jpeg/cifar10-jpeg.zip (class folders under train/ and test/),
decoded once by cnnfit's own loader (cached). airbench reads cifar10/train.pt and test.pt from its working
directory; they are written from those same pixels into a scratch directory, train images in one seeded random
order (airbench whitens its first layer from the first 5,000 train images: in class-folder order they would all be
airplanes), labels in cnnfit's class order.

    python benchmarks/bench_cifar_gpu.py [--runs 20] [--only cnnfit|airbench] [--data PATH] [--keep] [key=value ...]

Ctrl-C (or `timeout -s INT`) stops the runs and summarizes those that finished.
key=value pairs go to cnnfit on top of the recipe (smoke checks on CPU: epochs=1 data.fraction=0.02 compile=false;
airbench needs CUDA). One row per side is appended to benchmarks/results/cifar_gpu.csv (or --out).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import cnnfit
from cnnfit import models
from cnnfit.data import ImageSet, data_root, read_rows
from cnnfit.errors import TrainingStopped
from cnnfit.eval.tta import views
from cnnfit.models.summary import count_flops
from cnnfit.pipeline.prepare import load_data

from bench_tta import cpu_info, git_revision
from results_csv import append_row

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = REPO / "benchmarks" / "results" / "cifar_gpu.csv"
RECIPE = "cifar10-speed"
AIRBENCH = "0.1.8"  # the version whose train94, warmup94, CifarLoader and printed table this script reads
SIDES = ("airbench", "cnnfit")
MATMUL_SIDE = 8192  # px of the square bf16 matmuls that measure the peak: large enough to saturate an H100
MATMUL_REPS, MATMUL_WARMUP = 10, 5
AIRBENCH_TTA_VIEWS = {0: 1, 1: 2, 2: 6}  # its tta_level: none, mirror, mirror x (itself + 2 one-px translates)
MACHINE_FIELDS = ["when", "git", "device", "cuda", "torch", "cnnfit", "airbench", "peak_tflops"]
FIELDS = MACHINE_FIELDS + [
    "side", "recipe", "data", "overrides", "runs", "acc_mean", "acc_std", "s_mean", "s_std", "s_min", "s_median",
    "s_max", "ratio", "warmup_s", "fwd_mflops", "pflop_per_run", "tflops", "mfu", "epochs", "train_images",
    "images_seen", "test_images", "tta_views", "accuracies", "seconds", "notes"]

console = Console(width=None if sys.stdout.isatty() else 160)  # tables stay whole in a log


def say(text: str) -> None:
    print(text, flush=True)


# ---------------------------------------------------------------- the machine

def measure_peak(device: torch.device) -> float | None:
    """The GPU's bf16 matmul FLOP/s: mean time of MATMUL_REPS 8192^3 products after MATMUL_WARMUP, CUDA events.
    None off CUDA (MFU is a GPU figure here)."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(MATMUL_SIDE, MATMUL_SIDE, device=device, dtype=torch.bfloat16) for _ in range(2))
    out = torch.empty_like(a)
    for _ in range(MATMUL_WARMUP):  # clocks up, cuBLAS picks its kernel
        torch.matmul(a, b, out=out)
    torch.cuda.synchronize(device)
    seconds = []
    for _ in range(MATMUL_REPS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(a, b, out=out)
        end.record()
        end.synchronize()
        seconds.append(start.elapsed_time(end) / 1e3)
    del a, b, out
    torch.cuda.empty_cache()
    return 2 * MATMUL_SIDE**3 / statistics.mean(seconds)


def machine(device: torch.device, peak: float | None, sides: list[str]) -> dict:
    """The columns every CSV row carries: where and with what it ran."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu: {cpu_info()[0]}"
    try:
        airbench = metadata.version("airbench") if "airbench" in sides else ""
    except metadata.PackageNotFoundError:
        airbench = "unknown"
    return {"when": time.strftime("%Y-%m-%d %H:%M"), "git": git_revision(), "device": name,
            "cuda": torch.version.cuda or "", "torch": torch.__version__, "cnnfit": cnnfit.__version__,
            "airbench": airbench, "peak_tflops": round(peak / 1e12, 1) if peak else ""}


# ---------------------------------------------------------------- the data, both ways

def write_reference_data(ds: ImageSet, folder: Path) -> dict[str, np.ndarray]:
    """folder/cifar10/train.pt and test.pt as airbench's CifarLoader reads them ({'images': (N, 32, 32, 3) uint8,
    'labels': (N,) int64, 'classes': names}) from cnnfit's decoded images; per-class counts of each split."""
    if ds.origin is None or not (ds.origin == 2).any():
        raise SystemExit("the data has no test split of its own; give the CIFAR-10 copy with train/ and test/ folders")
    if ds.shape != (3, 32, 32):
        raise SystemExit(f"airbench trains on 3x32x32 images; the data decodes to {'x'.join(map(str, ds.shape))}")
    parts = {"train": np.flatnonzero(ds.origin != 2), "test": np.flatnonzero(ds.origin == 2)}  # val joins train
    parts["train"] = np.random.default_rng(0).permutation(parts["train"])  # a sample of every class up front
    out = folder / "cifar10"
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, idx in parts.items():
        images = torch.from_numpy(read_rows(ds.images, idx)).permute(0, 2, 3, 1).contiguous()  # (N, 32, 32, 3)
        labels = torch.from_numpy(ds.labels[idx].astype(np.int64))  # (N,) in cnnfit's class order
        torch.save({"images": images, "labels": labels, "classes": list(ds.classes)}, out / f"{split}.pt")
        counts[split] = np.bincount(labels.numpy(), minlength=len(ds.classes))
    return counts


# ---------------------------------------------------------------- cnnfit

def cnnfit_forward_flops(cfg: cnnfit.Config, classes: int, chans: int, side: int) -> int:
    """Forward FLOPs of one image through the recipe's model, built as the trainer builds it."""
    options = {k: v for k, v in cfg.model.model_dump(exclude={"name", "init"}).items() if v is not None}
    model = models.create(cfg.model.name, num_classes=classes, in_chans=chans, imgsz=side, **options)
    return count_flops(model, in_chans=chans, imgsz=side)


def run_cnnfit(cfg: cnnfit.Config, seed: int, project: Path, keep: bool) -> dict:
    """One training run through cnnfit.train; its timed seconds, accuracy and what it trained on."""
    t0 = time.perf_counter()
    run = cnnfit.train(cfg, seed=seed, project=str(project), name=f"speed{seed}")
    call = time.perf_counter() - t0
    t = run.metrics["timings"]
    notes = []
    if "init_seconds" not in t:
        notes.append("no timings.init_seconds: counted as 0")
    if "test_seconds" not in t:  # evaluate()'s whole call: report and plots included, so an upper bound
        notes.append("no timings.test_seconds: eval_seconds used")
    init, test = t.get("init_seconds", 0.0), t.get("test_seconds", t.get("eval_seconds", 0.0))
    split = json.loads((run.dir / "split.json").read_text())
    if not keep:
        shutil.rmtree(run.dir, ignore_errors=True)
    train_s = sum(row["train_seconds"] for row in run.history)
    return {"accuracy": run.metrics["accuracy"], "seconds": init + train_s + test, "init": init, "train": train_s,
            "test": test, "call": call, "epochs": len(run.history), "train_images": len(split["train"]),
            "test_images": len(split["test"]), "compile": t.get("compile", ""), "notes": notes}


def cnnfit_images_seen(cfg: cnnfit.Config, r: dict) -> int:
    """Training images through the model: every epoch passes the train split once, less the partial last batch
    when drop_last is set."""
    n, batch = r["train_images"], cfg.train.batch
    per_epoch = n // batch * batch if cfg.train.drop_last else n
    return r["epochs"] * per_epoch


# ---------------------------------------------------------------- airbench

def airbench_eval_row(text: str) -> tuple[float, float]:
    """(tta_val_acc, total_time_seconds) from the 'eval' row of the table train94 prints."""
    from airbench.utils import logging_columns_list

    names = [c.strip() for c in logging_columns_list]
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(names) and cells[names.index("epoch")] == "eval":
            return float(cells[names.index("tta_val_acc")]), float(cells[names.index("total_time_seconds")])
    raise RuntimeError("airbench printed no 'eval' row; its output ends:\n" + "\n".join(text.splitlines()[-8:]))


@contextlib.contextmanager
def airbench_settings(folder: Path):
    """airbench's working directory (it reads cifar10/*.pt from there) and its cuDNN setting (benchmark mode, set
    when it is imported); cnnfit's settings come back afterwards."""
    saved = os.getcwd(), torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    os.chdir(folder)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
    try:
        yield
    finally:
        os.chdir(saved[0])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[1:]


def run_airbench(seed: int, folder: Path, run: int) -> dict:
    """One train94 run (torch seeded; airbench itself leaves the seed alone); its own timing and TTA accuracy."""
    import airbench

    torch.manual_seed(seed)
    text = io.StringIO()
    t0 = time.perf_counter()
    with airbench_settings(folder), contextlib.redirect_stdout(text):
        airbench.train94(run=run)
        torch.cuda.synchronize()
    call = time.perf_counter() - t0
    accuracy, seconds = airbench_eval_row(text.getvalue())
    return {"accuracy": accuracy, "seconds": seconds, "call": call, "notes": []}


def airbench_work(n_train: int, n_test: int) -> dict:
    """What train94 runs through its net, from its own hyperparameters: ceil(batches per epoch x 9.9) steps of
    1024 images (the last partial batch dropped), and its TTA views of every test image."""
    from airbench.lib_airbench94 import hyp

    batch = hyp["opt"]["batch_size"]
    steps = math.ceil(n_train // batch * hyp["opt"]["train_epochs"])
    return {"epochs": hyp["opt"]["train_epochs"], "images_seen": steps * batch, "train_images": n_train,
            "test_images": n_test, "tta_views": AIRBENCH_TTA_VIEWS[hyp["net"]["tta_level"]]}


def airbench_forward_flops() -> int:
    from airbench import make_net94

    return count_flops(make_net94(), in_chans=3, imgsz=32)  # its builder puts the net on CUDA in fp16


# ---------------------------------------------------------------- summary

def mean_std(values: list[float], fmt: str) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{fmt}} ± {sd:{fmt}}"


def summarize(side: str, runs: list[dict], work: dict, warmup: float, peak: float | None,
              base: float | None) -> dict:
    """The CSV row of one side (machine columns apart)."""
    acc, sec = [r["accuracy"] for r in runs], [r["seconds"] for r in runs]
    flops = 3 * work["fwd_flops"] * work["images_seen"] + work["fwd_flops"] * work["tta_views"] * work["test_images"]
    rate = flops / statistics.mean(sec)
    notes = sorted({n for r in runs for n in r["notes"]})
    return {"side": side, "runs": len(runs), "acc_mean": round(statistics.mean(acc), 4),
            "acc_std": round(statistics.stdev(acc), 4) if len(acc) > 1 else 0.0,
            "s_mean": round(statistics.mean(sec), 3), "s_std": round(statistics.stdev(sec), 3) if len(sec) > 1 else 0.0,
            "s_min": round(min(sec), 3), "s_median": round(statistics.median(sec), 3), "s_max": round(max(sec), 3),
            "ratio": round(statistics.mean(sec) / base, 3) if base else "", "warmup_s": round(warmup, 1),
            "fwd_mflops": round(work["fwd_flops"] / 1e6, 2), "pflop_per_run": round(flops / 1e15, 4),
            "tflops": round(rate / 1e12, 2), "mfu": round(rate / peak, 4) if peak else "", "epochs": work["epochs"],
            "train_images": work["train_images"], "images_seen": work["images_seen"],
            "test_images": work["test_images"], "tta_views": work["tta_views"],
            "accuracies": " ".join(f"{a:.4f}" for a in acc), "seconds": " ".join(f"{s:.3f}" for s in sec),
            "notes": "; ".join(notes)}


def table(rows: list[dict], peak: float | None) -> Table:
    t = Table(title="CIFAR-10; seconds = training + TTA eval, synchronized; " + (
              f"MFU against the measured bf16 peak {peak / 1e12:.0f} TFLOP/s" if peak else "no GPU: no MFU"),
              title_justify="left")
    for col in ("side", "runs", "TTA test acc", "seconds", "min / median / max", "/airbench", "warm-up (compile)",
                "PFLOP/run", "TFLOP/s", "MFU"):
        t.add_column(col, justify="left" if col == "side" else "right", no_wrap=True)
    for r in rows:
        acc = [float(a) for a in r["accuracies"].split()]
        sec = [float(s) for s in r["seconds"].split()]
        t.add_row(r["side"], str(r["runs"]), mean_std(acc, ".4f"), mean_std(sec, ".2f"),
                  f"{r['s_min']:.2f} / {r['s_median']:.2f} / {r['s_max']:.2f}",
                  f"{r['ratio']:.2f}" if r["ratio"] != "" else "-", f"{r['warmup_s']:.1f} s",
                  f"{r['pflop_per_run']:.3f}", f"{r['tflops']:.1f}",
                  f"{100 * r['mfu']:.1f}%" if r["mfu"] != "" else "-")
    return t


# ---------------------------------------------------------------- main

def warm_up(sides: list[str], cfg: cnnfit.Config, scratch: Path, project: Path, args: argparse.Namespace,
            shape: tuple[int, int, int], n_classes: int) -> tuple[dict[str, float], dict | None]:
    """One untimed run of each side (compilation, cuDNN autotuning, first allocations): its seconds, and what
    cnnfit's run trained on (epochs, images), which the timed runs repeat."""
    seconds, work = {}, None
    if "airbench" in sides:
        import airbench

        t0 = time.perf_counter()
        with airbench_settings(scratch), contextlib.redirect_stdout(io.StringIO()):
            airbench.warmup94()  # its own warm-up: one training step
        run_airbench(seed=args.runs, folder=scratch, run=-2)  # and a whole run, so eval shapes are tuned too
        seconds["airbench"] = time.perf_counter() - t0
    if "cnnfit" in sides:
        t0 = time.perf_counter()
        first = run_cnnfit(cfg, seed=args.runs, project=project, keep=args.keep)
        seconds["cnnfit"] = time.perf_counter() - t0
        chans, px, _ = shape
        work = {"epochs": first["epochs"], "images_seen": cnnfit_images_seen(cfg, first),
                "train_images": first["train_images"], "test_images": first["test_images"],
                "tta_views": len(views(torch.zeros(1, chans, px, px), cfg.eval.tta)),
                "fwd_flops": cnnfit_forward_flops(cfg, n_classes, chans, px)}
        for line in ([first["compile"]] if first["compile"] else []) + first["notes"]:
            say(f"cnnfit: {line}")
    return seconds, work


def timed_runs(sides: list[str], cfg: cnnfit.Config, scratch: Path, project: Path,
               args: argparse.Namespace) -> dict[str, list[dict]]:
    """args.runs runs of each side, alternating, seeds 0..runs-1; an interrupt keeps the runs that finished."""
    results: dict[str, list[dict]] = {s: [] for s in sides}
    try:
        for i in range(args.runs):
            for side in sides:
                if side == "airbench":
                    r = run_airbench(seed=i, folder=scratch, run=i)
                    detail = f"(its own timing; call {r['call']:.2f} s)"
                else:
                    r = run_cnnfit(cfg, seed=i, project=project, keep=args.keep)
                    detail = (f"(init {r['init']:.2f} + train {r['train']:.2f} + test {r['test']:.2f}; "
                              f"call {r['call']:.2f} s)")
                results[side].append(r)
                say(f"run {i:>2} {side:>8}: TTA acc {r['accuracy']:.4f}  {r['seconds']:.3f} s {detail}")
    except (KeyboardInterrupt, TrainingStopped) as exc:  # Ctrl-C, or timeout -s INT
        if isinstance(exc, TrainingStopped) and exc.code != 130:
            raise  # a run that diverged is a finding, not a stop
        say("interrupted: the summary has the runs that finished")
    return {s: rs for s, rs in results.items() if rs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20, help="timed runs of each side, seeds 0..N-1")
    p.add_argument("--only", choices=SIDES, default=None, help="one side only (default: both)")
    p.add_argument("--data", default=None, help="the CIFAR-10 copy; default $CNNFIT_DATA/cifar10-jpeg/cifar10-jpeg.zip")
    p.add_argument("--recipe", default=RECIPE, help="cnnfit's recipe (a shipped name or a .yaml)")
    p.add_argument("--keep", action="store_true", help="keep cnnfit's run directories (in runs/bench_cifar_gpu "
                   "unless --project); by default each is deleted once its numbers are read")
    p.add_argument("--project", type=Path, default=None, help="where cnnfit's run directories go")
    p.add_argument("--out", type=Path, default=RESULTS, help="CSV to append one row per side to")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="cnnfit settings on top of the recipe")
    args = p.parse_args()
    if args.runs < 1:
        raise SystemExit("--runs must be 1 or more")
    sides = [args.only] if args.only else list(SIDES)
    data = args.data or str(data_root() / "cifar10-jpeg" / "cifar10-jpeg.zip")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if "airbench" in sides and device.type != "cuda":
        raise SystemExit("airbench needs a CUDA GPU (its make_net94 calls .cuda()); on this machine run --only cnnfit")
    if "airbench" in sides and importlib.util.find_spec("airbench") is None:
        raise SystemExit(f"airbench is not installed; pip install airbench=={AIRBENCH} (it needs torchvision), "
                         "or run --only cnnfit")
    try:  # the recipe and every override checked before any work
        # no plots or report.html per run (seconds each, outside the timed region); an override turns them back on
        cfg = cnnfit.load_config([f"recipe={args.recipe}", "eval.report=false", *args.overrides, f"data={data}"])
    except cnnfit.CnnfitError as exc:
        raise SystemExit(f"cnnfit: {exc}") from None

    say("command: " + shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])))
    say(f"sides: {', '.join(sides)}; runs: {args.runs} each, interleaved; data: {data}; recipe: {args.recipe}"
        + (f" with {' '.join(args.overrides)}" if args.overrides else ""))
    peak = measure_peak(device)
    say(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
        + (f"; measured bf16 peak {peak / 1e12:.1f} TFLOP/s ({MATMUL_REPS} x {MATMUL_SIDE}^3 matmuls)" if peak else ""))

    with tempfile.TemporaryDirectory(prefix="bench_cifar_gpu_") as tmp:
        scratch = Path(tmp)
        project = args.project or (REPO / "runs" / "bench_cifar_gpu" if args.keep else scratch / "runs")
        t0 = time.perf_counter()
        ds, cache_hit, _ = load_data(cfg)  # the pixels both sides train on, decoded once (cnnfit's cache)
        say(f"data: {len(ds)} images {'x'.join(map(str, ds.shape))}, classes {', '.join(ds.classes)}; "
            f"{'cache hit' if cache_hit else 'decoded'} in {time.perf_counter() - t0:.1f} s")
        work: dict[str, dict] = {}
        if "airbench" in sides:
            counts = write_reference_data(ds, scratch)
            say("airbench data: " + "; ".join(f"{k}.pt {int(c.sum())} images, per class {c.min()}-{c.max()}"
                                              for k, c in counts.items()) + f" (in {scratch / 'cifar10'})")
            work["airbench"] = {**airbench_work(int(counts["train"].sum()), int(counts["test"].sum())),
                                "fwd_flops": airbench_forward_flops()}
        shape, n_classes = ds.shape, len(ds.classes)
        del ds

        warmup, cnnfit_work = warm_up(sides, cfg, scratch, project, args, shape, n_classes)
        if cnnfit_work is not None:
            work["cnnfit"] = cnnfit_work
        say("warm-up (compile): " + ", ".join(f"{s} {v:.1f} s" for s, v in warmup.items()))
        for side, w in work.items():
            say(f"{side}: {w['fwd_flops'] / 1e6:.1f} MFLOP per image forward; {w['images_seen']} training images "
                f"seen over {w['epochs']} epochs of {w['train_images']}; {w['tta_views']} TTA views x "
                f"{w['test_images']} test images")
        results = timed_runs(sides, cfg, scratch, project, args)
    if not results:
        raise SystemExit("no run finished: nothing to summarize")

    base = statistics.mean(r["seconds"] for r in results["airbench"]) if "airbench" in results else None
    try:  # the row names the data as the data root sees it, not by this machine's folders
        shown_data = str(Path(data).resolve().relative_to(data_root().resolve()))
    except ValueError:
        shown_data = Path(data).name
    env = machine(device, peak, list(results))
    setting = {"airbench": {"recipe": "train94", "overrides": ""},
               "cnnfit": {"recipe": args.recipe, "overrides": " ".join(args.overrides)}}
    rows = []
    for side in results:
        row = summarize(side, results[side], work[side], warmup[side], peak, base)
        append_row(args.out, FIELDS, {**env, **setting[side], "data": shown_data, **row})
        rows.append(row)
    console.print(table(rows, peak))
    if base and "cnnfit" in results:
        say(f"cnnfit / airbench time = {rows[-1]['ratio']:.3f} (means over {len(results['cnnfit'])} and "
            f"{len(results['airbench'])} runs)")
    say(f"rows -> {os.path.relpath(args.out)}")


if __name__ == "__main__":
    main()
