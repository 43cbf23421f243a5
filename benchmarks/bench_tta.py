"""Time to accuracy: each shipped recipe trained end to end, side by side with the other ways a user could take,
every run a fresh process (imports, data loading and evaluation count), on the official train (60k) and test
(10k) images:

  cnnfit     python -m cnnfit train recipe=NAME seed=S
  raw        benchmarks/tta_torch.py --mode raw: the best hand-written PyTorch for the same target (uint8 tensors
             preloaded, batched augmentation, fused AdamW, OneCycleLR, bf16 + channels_last where native)
  tutorial   benchmarks/tta_torch.py --mode tutorial: the PyTorch MNIST example as written (its two-conv CNN,
             per-sample Dataset + DataLoader, Adadelta, fp32), tested after every epoch and stopped at the first
             one that reaches the target, after its 14 epochs, or at --tutorial-cap times cnnfit's mean time
  keras      benchmarks/tta_keras.py: Keras 3 on TensorFlow (tf.data, model.fit), in its own venv
             benchmarks/.venv-keras, created on first use (python -m venv; pip install tensorflow-cpu keras)
  loader     (only when asked for) benchmarks/tta_torch.py --mode loader: the recipe through a per-sample
             Dataset + DataLoader in fp32 NCHW, which isolates what the data path and precision cost

raw, keras and loader use the recipe's model (fastnet at the recipe's width), epochs, batch, peak LR, weight
decay, one-cycle schedule, label smoothing, EMA, augmentation (flip, shift, erasing) and test-time augmentation.
Targets: mnist-fast 0.990, fmnist-fast 0.925, fmnist-best 0.940 (mean test accuracy over the seeds; the tutorial
way must reach it in each run, and a run stopped by the cap counts as "not reached in at least that time").

Time is measured from process start to the line that carries the test metric ("to metric", the figure the targets
are about) and to exit: cnnfit prints its metric before it draws its plots and writes its report, work the
baselines do not do; they print theirs last.

cnnfit's decoded-data cache starts empty in a temporary CNNFIT_CACHE and is filled once before the timed runs:
every run is a user's second run on the dataset (decoding memory-mapped, per-split statistics and data report
computed for its seed), the same on every invocation of this script.

    python benchmarks/bench_tta.py [--recipes mnist-fast,fmnist-fast,fmnist-best] [--seeds 5]
                                   [--only cnnfit,raw,tutorial,keras,loader] [--threads N]
                                   [--tutorial-cap 4]
                                   [--fraction F] [--epochs E]        (the last two for smoke checks only)
    python benchmarks/bench_tta.py --per-epoch [--epochs 2] [--batch 64] [--model simplecnn] [--data fashion-mnist]

--per-epoch: seconds per epoch, same model and batch, no augmentation, Fashion-MNIST train (60k) by default:
the tutorials' two-conv CNN (cnnfit's simplecnn) at batch 64. Rows go to benchmarks/results/tta.csv (recipes)
and benchmarks/results/tta_per_epoch.csv (--per-epoch), or --out. Data: CNNFIT_DATA/<mnist|fashion-mnist>/ idx
files.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from results_csv import append_row

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KERAS_VENV = HERE / ".venv-keras"
KERAS_MARKER = KERAS_VENV / "installed.json"  # written after a successful install: versions, seconds, size
RESULTS = "benchmarks/results/tta.csv"  # relative to the repository
RESULTS_EPOCH = "benchmarks/results/tta_per_epoch.csv"
WAYS = ("cnnfit", "raw", "tutorial", "keras", "loader")
DEFAULT_WAYS = {"recipes": "cnnfit,raw,tutorial,keras", "per-epoch": "cnnfit,raw,loader,keras"}
TARGETS = {"mnist-fast": 0.990, "fmnist-fast": 0.925, "fmnist-best": 0.940}
PHASES = ("import", "setup", "train", "eval", "rest")  # seconds; rest = exit minus the others (startup, teardown)
MACHINE_FIELDS = ["when", "git", "cpu", "cores", "cpu_count", "bf16_native", "threads", "torch", "tensorflow",
                  "keras", "cnnfit"]
FIELDS = MACHINE_FIELDS + ["recipe", "way", "seed", "accuracy", "target", "wall_s", "exit_s", "import_s", "setup_s",
                           "train_s", "eval_s", "rest_s", "epochs", "batch", "fraction", "train_images", "cache_hit",
                           "reached", "stop"]
EPOCH_FIELDS = MACHINE_FIELDS + ["data", "model", "way", "seed", "batch", "epochs", "fraction", "train_images",
                                 "epoch_s", "steady_s_per_epoch", "accuracy", "wall_s"]
# recipe keys the baselines mirror; any other key set away from cnnfit's default is refused by name
MIRRORED = {"data.source", "data.merge_val", "data.fraction", "model.name", "model.width", "model.crop", "model.blocks",
            "train.epochs", "train.batch", "train.seed", "train.label_smoothing", "train.ema", "train.monitor",
            "optim.name", "optim.lr", "optim.weight_decay", "schedule.name", "aug.hflip", "aug.shift", "aug.erasing",
            "eval.tta"}

console = Console(width=None if sys.stdout.isatty() else 160)  # tables stay whole in a log


# ---------------------------------------------------------------- machine and versions

def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_info() -> tuple[str, int]:
    """CPU model and physical core count from /proc/cpuinfo (Linux); ('unknown', 0) elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown", 0
    model, cores, phys = "unknown", set(), ""
    for line in text.splitlines():
        key, _, value = (s.strip() for s in line.partition(":"))
        if key == "model name" and model == "unknown":
            model = value
        elif key == "physical id":
            phys = value
        elif key == "core id":
            cores.add((phys, value))
    return model, len(cores) or (os.cpu_count() or 0)


def machine(threads: int | None) -> dict:
    """The columns every CSV row carries: where and with what it ran."""
    model, cores = cpu_info()
    keras_versions = json.loads(KERAS_MARKER.read_text()) if KERAS_MARKER.exists() else {}
    return {"when": time.strftime("%Y-%m-%d %H:%M"), "git": git_revision(), "cpu": model, "cores": cores,
            "cpu_count": os.cpu_count(), "bf16_native": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
            "threads": threads or torch.get_num_threads(), "torch": torch.__version__,
            "tensorflow": keras_versions.get("tensorflow", ""), "keras": keras_versions.get("keras", ""),
            "cnnfit": metadata.version("cnnfit")}


# ---------------------------------------------------------------- the Keras venv

def dir_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20


def run_step(cmd: list[str], log: Path) -> str:
    """Run one install step, its output appended to `log` once the folder exists; '' or a one-line reason."""
    name = " ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd[:4]))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"'{name}' failed: {exc}"
    if log.parent.is_dir():
        with log.open("a") as f:
            f.write(done.stdout + done.stderr)
    if done.returncode != 0:
        lines = [ln.strip() for ln in (done.stdout + done.stderr).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines or ["no output"]
        return f"'{name}' exited {done.returncode}: {errors[-1][:200]}"
    return ""


def ensure_keras_venv() -> tuple[Path | None, str]:
    """benchmarks/.venv-keras with tensorflow-cpu and keras, made once; (its python, '') or (None, why not)."""
    python = KERAS_VENV / "bin" / "python"
    if KERAS_MARKER.exists() and python.exists():
        return python, ""
    console.print(f"creating {os.path.relpath(KERAS_VENV)} (python -m venv; pip install tensorflow-cpu keras): "
                  "once, a few minutes")
    t0 = time.perf_counter()
    steps = [[sys.executable, "-m", "venv", "--clear", str(KERAS_VENV)],
             [str(python), "-m", "pip", "install", "tensorflow-cpu", "keras"]]
    for cmd in steps:
        why = run_step(cmd, KERAS_VENV / "install.log")
        if why:
            return None, why
    probe = subprocess.run([str(python), "-c", "import importlib.metadata as m, json; print(json.dumps("
                            "{p: m.version(p) for p in ('tensorflow-cpu', 'keras')}))"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"the venv was made but its packages do not load: {last}"
    versions = json.loads(probe.stdout)
    info = {"tensorflow": versions["tensorflow-cpu"], "keras": versions["keras"],
            "install_seconds": round(time.perf_counter() - t0, 1), "size_mib": round(dir_mib(KERAS_VENV), 1)}
    KERAS_MARKER.write_text(json.dumps(info, indent=1))
    console.print(f"keras venv ready: tensorflow-cpu {info['tensorflow']}, keras {info['keras']}, "
                  f"{info['install_seconds']:.0f} s, {info['size_mib']:.0f} MiB")
    return python, ""


# ---------------------------------------------------------------- the recipe as the baselines read it

def recipe_spec(recipe: str, seed: int, epochs: int | None, fraction: float) -> dict:
    """The recipe's resolved settings, flat, as tta_torch.py and tta_keras.py take them (--spec JSON)."""
    from cnnfit.config import Config, flatten, load_config
    from cnnfit.pipeline.resolve import AUTO_LR, AUTO_WEIGHT_DECAY

    flat = flatten(load_config([f"recipe={recipe}"]).model_dump(mode="json"))
    default = flatten(Config().model_dump(mode="json"))
    odd = sorted(k for k in flat if k not in MIRRORED and flat[k] != default.get(k))
    fixed = {"optim.name": "adamw", "schedule.name": "onecycle", "data.merge_val": True}  # all the baselines do
    odd += [f"{k}={flat[k]}" for k, v in fixed.items() if flat[k] != v]
    if odd:
        raise SystemExit(f"recipe {recipe} sets {', '.join(odd)}, which the baselines do not mirror; they take "
                         f"{', '.join(sorted(MIRRORED))} with {', '.join(f'{k}={v}' for k, v in fixed.items())}")
    return {"data": flat["data.source"], "model": flat["model.name"], "width": flat["model.width"],
            "crop": flat["model.crop"], "blocks": flat["model.blocks"],
            "epochs": epochs or flat["train.epochs"], "batch": flat["train.batch"],
            "lr": flat["optim.lr"] or AUTO_LR["adamw"],
            "weight_decay": (flat["optim.weight_decay"] if flat["optim.weight_decay"] is not None
                             else AUTO_WEIGHT_DECAY["adamw"]),
            "label_smoothing": flat["train.label_smoothing"], "ema": flat["train.ema"],
            "hflip": flat["aug.hflip"], "shift": flat["aug.shift"], "erasing": flat["aug.erasing"],
            "tta": flat["eval.tta"], "fraction": fraction, "seed": seed}


def epoch_spec(args: argparse.Namespace, seed: int) -> dict:
    """--per-epoch: the tutorial setting, no augmentation, AdamW at 1e-3 with one-cycle, all train images."""
    return {"data": args.data, "model": args.model, "width": None, "crop": None, "blocks": None,
            "epochs": args.epochs or 2, "batch": args.batch,
            "lr": 1e-3, "weight_decay": 0.05, "label_smoothing": 0.0, "ema": None, "hflip": False, "shift": 0.0,
            "erasing": 0.0, "tta": "none", "fraction": args.fraction, "seed": seed}


def cnnfit_args(spec: dict, recipe: str | None) -> list[str]:
    """`cnnfit train` key=value pairs for the same run as `spec`."""
    keys = [f"recipe={recipe}"] if recipe else [
        f"data={spec['data']}", f"model={spec['model']}", "data.merge_val=true", "optim=adamw", f"lr={spec['lr']}",
        f"optim.weight_decay={spec['weight_decay']}", "schedule=onecycle", "train.monitor=epoch"]
    keys += [f"seed={spec['seed']}", f"epochs={spec['epochs']}", f"batch={spec['batch']}"]
    return keys + ([f"data.fraction={spec['fraction']}"] if spec["fraction"] < 1 else [])


# ---------------------------------------------------------------- running one way

def run_timed(cmd: list[str], env: dict, log: Path, marker: str) -> tuple[float, float, str]:
    """Wall seconds from process start to the first stdout line that starts with `marker` (the final metric) and
    to exit, and its stdout; a failure raises with the log's tail. cnnfit prints its test metric before it
    draws its plots and writes its report; the baselines print theirs as their last line."""
    lines, to_metric = [], None
    with log.open("w") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO)
        for line in proc.stdout:
            if to_metric is None and line.startswith(marker):
                to_metric = time.perf_counter() - t0
            lines.append(line)
        proc.wait()
        wall = time.perf_counter() - t0
    out = "".join(lines)
    if proc.returncode != 0 or to_metric is None:
        tail = (log.read_text() + out).strip().splitlines()[-8:]
        raise RuntimeError(f"exit {proc.returncode}, no line starting {marker!r}: " + "\n".join(tail))
    return to_metric, wall, out


def cnnfit_import_seconds(env: dict) -> float:
    """`import cnnfit.pipeline` in a fresh process as the command line does it (collector paused, then frozen),
    median of 3 (the first also warms the file cache)."""
    code = ("import time; t = time.perf_counter(); from cnnfit.cli import _importing\n"
            "with _importing(True): import cnnfit.pipeline\nprint(time.perf_counter() - t)")
    times = [float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                  check=True).stdout) for _ in range(3)]
    return statistics.median(times)


def run_cnnfit(spec: dict, recipe: str | None, work: Path, env: dict, import_s: float) -> dict:
    name = f"{recipe or 'epoch'}-{spec['seed']}"
    cmd = [sys.executable, "-m", "cnnfit", "train", *cnnfit_args(spec, recipe), f"project={work}", f"name={name}"]
    to_metric, wall, _ = run_timed(cmd, env, work / f"{name}.log", marker="test accuracy")
    run_dir = work / name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    t = metrics["timings"]
    history = (run_dir / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("train_seconds")
    train_images = len(json.loads((run_dir / "split.json").read_text())["train"])
    return {"accuracy": metrics["accuracy"], "wall": to_metric, "exit": wall, "import": import_s,
            "setup": t["setup_seconds"],
            "train": t["train_seconds"], "eval": t.get("eval_seconds", 0.0), "cache_hit": t.get("cache_hit"),
            "epoch_seconds": [float(row.split(",")[column]) for row in history[1:]], "train_images": train_images}


def run_helper(way: str, spec: dict, work: Path, env: dict, python: Path | None, threads: int | None) -> dict:
    """tta_torch.py (raw, loader, tutorial) or tta_keras.py (keras): the last stdout line is their JSON result."""
    if way == "keras":
        cmd = [str(python), str(HERE / "tta_keras.py")]
    else:
        cmd = [sys.executable, str(HERE / "tta_torch.py"), "--mode", way]
    cmd += ["--spec", json.dumps(spec)] + (["--threads", str(threads)] if threads else [])
    to_metric, wall, out = run_timed(cmd, env, work / f"{way}-{spec['seed']}.log", marker="{")
    result = json.loads(out.strip().splitlines()[-1])
    return {**result, "wall": to_metric, "exit": wall, "setup": result["data"]}


def run_way(way: str, spec: dict, recipe: str | None, ctx: dict) -> dict:
    """One fresh-process run; 'rest' is the time to exit the phases do not account for."""
    if way == "cnnfit":
        r = run_cnnfit(spec, recipe, ctx["work"], ctx["env"], ctx["import_s"])
    else:
        r = run_helper(way, spec, ctx["work"], ctx["env"], ctx["keras_python"], ctx["threads"])
    r["rest"] = r["exit"] - sum(r[p] for p in PHASES[:-1])
    return r


# ---------------------------------------------------------------- set-up shared by both modes

def prepare_env(args: argparse.Namespace, work: Path) -> dict:
    """Subprocess environment: the caller's, a private cnnfit cache, OMP_NUM_THREADS only when --threads is set."""
    env = dict(os.environ, CNNFIT_CACHE=str(work / "cache"), PYTHONUNBUFFERED="1")
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    return env


def warm_cnnfit_cache(runs: list[list[str]], env: dict) -> None:
    """Leave in the private cache, untimed, what a first `cnnfit train` with these key=value lists leaves there for
    later runs of the same data: the decoded images, the split's statistics and the data report. The timed runs
    are then what a user's second run is (the baselines keep nothing between runs: they parse the idx files)."""
    code = """
import sys, tempfile
from pathlib import Path
from cnnfit import models
from cnnfit.config import load_config
from cnnfit.pipeline.prepare import prepare, write_data_report
for keys in sys.argv[1:]:
    cfg = load_config(keys.split("\\n"))
    with tempfile.TemporaryDirectory() as out:
        prep = prepare(cfg, min_size=models.min_size(cfg.model.name))
        write_data_report(prep, Path(out))
"""
    args = sorted({"\n".join(keys) for keys in runs})
    subprocess.run([sys.executable, "-c", code, *args], env=env, check=True, capture_output=True)


def pick_ways(args: argparse.Namespace) -> tuple[list[str], Path | None]:
    """The ways asked for; keras is dropped with a one-line reason when its venv cannot be made."""
    ways = [w for w in args.only.split(",") if w]
    unknown = sorted(set(ways) - set(WAYS))
    if unknown:
        raise SystemExit(f"--only: unknown way {', '.join(unknown)}; choose from {', '.join(WAYS)}")
    if args.per_epoch and "tutorial" in ways:
        raise SystemExit("--per-epoch compares one model and batch: the tutorial way trains its own; "
                         "use --only cnnfit,raw,loader,keras")
    python = None
    if "keras" in ways:
        python, why = ensure_keras_venv()
        if python is None:
            console.print(f"[yellow]keras skipped: {why}[/]", highlight=False)
            ways.remove("keras")
    return ways, python


# ---------------------------------------------------------------- tables

def mean_std(values: list[float], fmt: str = ".1f") -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{fmt}} ± {sd:{fmt}}"


def recipe_table(recipe: str, results: dict[str, list[dict]], target: float | None) -> Table:
    """One row per way: accuracy, time to the metric and its spread, time to exit, phase means, ratio to cnnfit,
    target reached."""
    t = Table(title=f"{recipe}: {len(next(iter(results.values())))} seeds, target {target}; seconds from process "
              "start to the test metric, to exit, and in each phase", title_justify="left")
    for col in ("way", "test acc", "to metric", "min/med/max", "exit", *PHASES, "/cnnfit", "to target"):
        t.add_column(col, justify="left" if col in ("way", "to target") else "right", no_wrap=True)
    base = statistics.mean(r["wall"] for r in results["cnnfit"]) if results.get("cnnfit") else None
    for way, runs in results.items():
        if not runs:
            continue
        walls, accs = [r["wall"] for r in runs], [r["accuracy"] for r in runs]
        acc = statistics.mean(accs)
        censored = sum(r.get("reached") is False for r in runs)  # tutorial runs stopped by the cap or epoch limit
        at_least = "≥ " if censored else ""
        if target is None:
            reached = "-"
        elif censored:
            reached = f"not reached in {censored}/{len(runs)} runs (≥ {statistics.mean(walls):.0f} s)"
        else:
            reached = f"{statistics.mean(walls):.0f} s" if acc >= target else f"not reached ({acc:.4f})"
        t.add_row(way, mean_std(accs, ".4f"), at_least + mean_std(walls), " / ".join(f"{v:.0f}" for v in (
                  min(walls), statistics.median(walls), max(walls))), f"{statistics.mean(r['exit'] for r in runs):.1f}",
                  *(f"{statistics.mean(r[p] for r in runs):.1f}" for p in PHASES),
                  f"{at_least}{statistics.mean(walls) / base:.2f}" if base else "-", reached)
    return t


def steady(times: list[float]) -> float:
    """Seconds per epoch without the first epoch (graph tracing, warm-up) when there are two or more."""
    return statistics.median(times[1:] if len(times) >= 2 else times)


def epoch_table(results: dict[str, dict], spec: dict) -> Table:
    t = Table(title=f"s/epoch: {spec['model']}, batch {spec['batch']}, {spec['data']}, no aug", title_justify="left")
    for col in ("way", "epochs s", "steady s/epoch", "test acc", "/cnnfit"):
        t.add_column(col, justify="left" if col == "way" else "right", no_wrap=True)
    base = steady(results["cnnfit"]["epoch_seconds"]) if "cnnfit" in results else None
    for way, r in results.items():
        s = steady(r["epoch_seconds"])
        t.add_row(way, " ".join(f"{v:.1f}" for v in r["epoch_seconds"]), f"{s:.1f}", f"{r['accuracy']:.4f}",
                  f"{s / base:.2f}" if base else "-")
    return t


# ---------------------------------------------------------------- the two modes

def recipe_rows(recipe: str, way: str, spec: dict, r: dict, env_cols: dict) -> dict:
    return {**env_cols, "recipe": recipe, "way": way, "seed": spec["seed"], "accuracy": round(r["accuracy"], 4),
            "target": TARGETS.get(recipe, ""), "wall_s": round(r["wall"], 2), "exit_s": round(r["exit"], 2),
            **{f"{p}_s": round(r[p], 2) for p in PHASES}, "epochs": len(r["epoch_seconds"]) or spec["epochs"], "batch": spec["batch"],
            "fraction": spec["fraction"], "train_images": r.get("train_images", ""),
            "cache_hit": r.get("cache_hit", ""), "reached": "" if r.get("reached") is None else r["reached"],
            "stop": r.get("stop") or ""}


def run_recipes(args: argparse.Namespace, ways: list[str], ctx: dict) -> None:
    recipes = [r for r in args.recipes.split(",") if r]
    specs = {(rc, s): recipe_spec(rc, s, args.epochs, args.fraction) for rc in recipes for s in range(args.seeds)}
    if "cnnfit" in ways:
        warm_cnnfit_cache([cnnfit_args(spec, rc) for (rc, _), spec in specs.items()], ctx["env"])
        ctx["import_s"] = cnnfit_import_seconds(ctx["env"])
    env_cols = machine(args.threads)
    for recipe in recipes:
        results: dict[str, list[dict]] = {w: [] for w in ways}
        for seed in range(args.seeds):  # seeds outside, ways inside: a slow phase of the machine hits every way
            order = list(ways)
            if seed % 2 and {"cnnfit", "raw"} <= set(order):  # the two closest ways take turns going first
                i, j = order.index("cnnfit"), order.index("raw")
                order[i], order[j] = order[j], order[i]
            for way in order:
                spec = specs[recipe, seed]
                if way == "tutorial":  # its own model and optimizer; stopped at the target, or at the cap
                    cnnfit_walls = [r["wall"] for r in results.get("cnnfit", [])]
                    cap = args.tutorial_cap * statistics.mean(cnnfit_walls) if cnnfit_walls else None
                    spec = {"data": spec["data"], "fraction": spec["fraction"], "seed": seed,
                            "target": TARGETS.get(recipe, 1.0), "cap_s": cap, "epochs": 14, "batch": 64}
                try:
                    r = run_way(way, spec, recipe, ctx)
                except RuntimeError as exc:
                    console.print(f"[red]{recipe} {way} seed {seed} failed[/] {exc}", highlight=False)
                    continue
                results[way].append(r)
                append_row(args.out, FIELDS, recipe_rows(recipe, way, spec, r, env_cols))
                console.print(f"{recipe} {way:>8} seed {seed}: acc {r['accuracy']:.4f}  metric at {r['wall']:.1f} s, "
                              f"exit {r['exit']:.1f} s (train {r['train']:.1f} s)"
                              + (f"; stopped: {r['stop']}" if r.get("stop") else ""), highlight=False)
        results = {w: rs for w, rs in results.items() if rs}
        if results:
            console.print(recipe_table(recipe, results, TARGETS.get(recipe)))
    console.print(f"rows -> {os.path.relpath(args.out)}", highlight=False)


def run_per_epoch(args: argparse.Namespace, ways: list[str], ctx: dict) -> None:
    spec = epoch_spec(args, seed=0)
    if "cnnfit" in ways:
        warm_cnnfit_cache([cnnfit_args(spec, None)], ctx["env"])
        ctx["import_s"] = 0.0  # not a phase of interest here
    env_cols = machine(args.threads)
    results = {}
    for way in ways:
        try:
            r = run_way(way, spec, None, ctx)
        except RuntimeError as exc:
            console.print(f"[red]{way} failed[/] {exc}", highlight=False)
            continue
        results[way] = r
        append_row(args.out, EPOCH_FIELDS, {
            **env_cols, "data": spec["data"], "model": spec["model"], "way": way, "seed": spec["seed"],
            "batch": spec["batch"], "epochs": spec["epochs"], "fraction": spec["fraction"],
            "train_images": r.get("train_images", ""), "epoch_s": " ".join(f"{v:.2f}" for v in r["epoch_seconds"]),
            "steady_s_per_epoch": round(steady(r["epoch_seconds"]), 2), "accuracy": round(r["accuracy"], 4),
            "wall_s": round(r["wall"], 2)})
    if not results:
        return
    console.print(epoch_table(results, spec))
    if {"cnnfit", "keras"} <= results.keys():
        ratio = steady(results["cnnfit"]["epoch_seconds"]) / steady(results["keras"]["epoch_seconds"])
        console.print(f"cnnfit / keras seconds per epoch = {ratio:.2f}", highlight=False)
    console.print(f"rows -> {os.path.relpath(args.out)}", highlight=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default="mnist-fast,fmnist-fast,fmnist-best")
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 for every way")
    p.add_argument("--only", default=None, help=f"ways, comma-separated; default {DEFAULT_WAYS['recipes']} "
                   f"({DEFAULT_WAYS['per-epoch']} with --per-epoch)")
    p.add_argument("--tutorial-cap", type=float, default=4.0, help="stop a tutorial run that has not reached the "
                   "target after this many times cnnfit's mean time in the same run (reported as at least that)")
    p.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS and every framework's thread count")
    p.add_argument("--fraction", type=float, default=1.0, help="of the train images (smoke checks only)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (smoke checks only)")
    p.add_argument("--per-epoch", action="store_true", help="seconds per epoch instead of time to accuracy")
    p.add_argument("--out", type=Path, default=None, help=f"CSV to append to; default {RESULTS} "
                   f"({RESULTS_EPOCH} with --per-epoch)")
    p.add_argument("--model", default="simplecnn", help="--per-epoch: the model")
    p.add_argument("--batch", type=int, default=64, help="--per-epoch: the batch")
    p.add_argument("--data", default="fashion-mnist", help="--per-epoch: mnist or fashion-mnist")
    args = p.parse_args()
    args.out = args.out or REPO / (RESULTS_EPOCH if args.per_epoch else RESULTS)
    args.only = args.only or DEFAULT_WAYS["per-epoch" if args.per_epoch else "recipes"]
    if not 0 < args.fraction <= 1:
        raise SystemExit("--fraction must be in (0, 1]")
    ways, keras_python = pick_ways(args)
    with tempfile.TemporaryDirectory(prefix="bench_tta_") as tmp:
        work = Path(tmp)
        ctx = {"work": work, "env": prepare_env(args, work), "keras_python": keras_python, "threads": args.threads,
               "import_s": 0.0}
        console.print(f"ways: {', '.join(ways)}; threads: {args.threads or 'default'}; "
                      f"data: {os.environ.get('CNNFIT_DATA', '~/.cache/cnnfit/data')}"
                      + (f"; fraction {args.fraction}" if args.fraction < 1 else "")
                      + (f"; epochs {args.epochs}" if args.epochs else ""), highlight=False)
        (run_per_epoch if args.per_epoch else run_recipes)(args, ways, ctx)


if __name__ == "__main__":
    main()
