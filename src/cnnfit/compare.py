"""`cnnfit compare RUN RUN ...`: runs side by side. Their test metrics with the best of each column marked, the
config keys that differ, and their curves overlaid; on the console, and in compare.html (one self-contained
file), compare.png, compare.csv and compare.json."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cnnfit.compare_page import compare_page
from cnnfit.config import flatten
from cnnfit.errors import CnnfitError
from cnnfit.eval.plots import _LOWER_IS_BETTER, _SCORES, _plt, _save
from cnnfit.prepare import new_run_dir

_ALL = ("classify", "multilabel", "regress")
# test metrics in column order: (column, header, where metrics.json keeps it (the first found wins),
# lower is better, the tasks it belongs to)
_METRICS = (
    ("accuracy", "accuracy", ("accuracy",), False, ("classify",)),
    ("micro_f1", "micro F1", ("micro.f1",), False, ("multilabel",)),  # the multilabel headline
    ("mae", "MAE", ("mae",), True, ("regress",)),
    ("r2", "R2", ("r2",), False, ("regress",)),
    ("macro_f1", "macro F1", ("macro.f1",), False, ("classify", "multilabel")),
    ("balanced_accuracy", "balanced acc", ("balanced_accuracy",), False, ("classify",)),
    ("roc_auc", "ROC AUC", ("roc_auc.macro", "roc_auc", "macro_roc_auc"), False, _ALL),
    ("ece", "ECE", ("ece",), True, _ALL),
    ("log_loss", "log loss", ("log_loss", "loss"), True, ("classify", "multilabel")),
)
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")  # batch norm state: in the state dict, not learnt
_PATHS = ("data.source", "model.init")  # compared resolved: runs/x and /home/me/runs/x are the same file
_ABSENT = object()  # a key one config has and another lacks (written by another cnnfit version)
_FILES = ("compare.html", "compare.png", "compare.csv", "compare.json")
_Heads = list[tuple[str, str]]  # the metrics table's columns: (key in compare.csv, header)
_Cells = list[list[tuple[str, bool]]]  # per run, per column: (text, best of its column)


@dataclass
class _Run:
    path: Path  # resolved
    config: dict[str, Any]  # config.yaml as dotted keys
    history: list[dict[str, float]]  # history.csv, one dict per epoch
    metrics: dict[str, Any] | None  # metrics.json; None while the run is unfinished
    label: str = ""  # the folder name, with as many parents as it takes to tell equal names apart


def compare(runs: list[str | Path], *, out: str | Path | None = None, console: Console | None = None) -> Path:
    """Compare two or more run directories; unfinished runs (no metrics.json) take part with their history.
    Writes compare.html/.png/.csv/.json into `out`, or into a fresh compare* folder beside the first run, and
    returns that folder. Every run is read and checked before anything is written."""
    console = console or Console()
    runs = [runs] if isinstance(runs, (str, Path)) else list(runs)
    if len(runs) < 2:
        raise CnnfitError(f"compare needs two or more run directories, {len(runs)} given; "
                          "e.g. cnnfit compare runs/train runs/train2")
    loaded = [_load(r) for r in runs]
    seen: dict[Path, str | Path] = {}
    for given, run in zip(runs, loaded):
        if run.path in seen:
            raise CnnfitError(f"'{given}' is the same run as '{seen[run.path]}'; name each run once")
        seen[run.path] = given
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise CnnfitError(f"out='{out}' is a file; give a folder for compare.html and the other files")
    _label(loaded)

    diffs = _differences([r.config for r in loaded])
    score = _score_key(loaded)
    rows = [_row(r, score) for r in loaded]
    heads, cells = _cells(rows, score)
    legend = _legend(loaded, diffs)

    out_dir = Path(out) if out is not None else new_run_dir(str(loaded[0].path.parent), "compare")
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot(loaded, rows, score, legend, out_dir / "compare.png")
    _write_csv(rows, out_dir / "compare.csv")
    shown_diffs = {k: {r.label: v for r, v in zip(loaded, values) if v is not _ABSENT} for k, values in diffs.items()}
    best = {key: [r.label for r, c in zip(loaded, cells) if c[i][1]] for i, (key, _) in enumerate(heads)}
    summary = {"runs": rows, "best": {k: names for k, names in best.items() if names}, "differences": shown_diffs}
    (out_dir / "compare.json").write_text(json.dumps(summary, indent=2))
    shown = {k: [_show(v) for v in values] for k, values in diffs.items()}
    page = compare_page(loaded, heads, cells, shown, (out_dir / "compare.png").read_bytes())
    (out_dir / "compare.html").write_text(page, encoding="utf-8")

    _print(console, loaded, heads, cells, diffs)
    console.print(f"{', '.join(_FILES)} -> {out_dir}", highlight=False, markup=False, soft_wrap=True)
    return out_dir


def _load(given: str | Path) -> _Run:
    path = Path(given).expanduser()
    if not (path / "config.yaml").is_file():
        raise CnnfitError(f"'{given}' is not a run directory (it has no config.yaml); pass folders that cnnfit train "
                          "wrote, e.g. runs/train runs/train2")
    try:
        tree = yaml.safe_load((path / "config.yaml").read_text())
        metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").is_file() else None
    except (yaml.YAMLError, ValueError) as exc:
        raise CnnfitError(f"'{given}' holds a damaged config.yaml or metrics.json ({type(exc).__name__}); "
                          "rerun cnnfit eval on it, or leave it out") from None
    if not isinstance(tree, dict):
        raise CnnfitError(f"{path / 'config.yaml'} is not a cnnfit config (no keys); leave '{given}' out")
    history = _read_history(path / "history.csv")
    if not history and metrics is None:
        raise CnnfitError(f"'{given}' has no history.csv and no metrics.json: it has not finished an epoch yet; "
                          "compare it once it has")
    return _Run(path.resolve(), flatten(tree), history, metrics)


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: _float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _label(runs: list[_Run]) -> None:
    """Folder names, with parents added to names that two runs share: runs/a and old/a become runs/a, old/a."""
    depth = [1] * len(runs)
    while True:
        labels = ["/".join(r.path.parts[-d:]) for r, d in zip(runs, depth)]
        clash = [i for i, name in enumerate(labels) if labels.count(name) > 1 and depth[i] < len(runs[i].path.parts)]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
    for run, name in zip(runs, labels):
        run.label = name


def _differences(configs: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """The dotted keys whose values differ between configs, each with one value per config (_ABSENT where a
    config lacks the key). Left out: name, project and resume.*, which say how a run was started, not what it
    computed; and a key that some configs lack while the others agree on it: a setting added to cnnfit after
    the older runs, which they ran without."""
    keys = dict.fromkeys(k for c in configs for k in c)  # the first config's order, then keys only later ones have
    diffs = {}
    for key in keys:
        if key in ("name", "project") or key.startswith("resume."):
            continue
        values = [c.get(key, _ABSENT) for c in configs]
        present = [_resolved(v) if key in _PATHS else v for v in values if v is not _ABSENT]
        if any(v != present[0] for v in present[1:]):
            diffs[key] = values
    return diffs


def _resolved(value: Any) -> Any:
    if isinstance(value, str) and Path(value).expanduser().exists():
        return str(Path(value).expanduser().resolve())
    return value


def _score_key(runs: list[_Run]) -> str | None:
    """The validation score to plot and tabulate: val_acc for classifiers, else the first val_* score a history
    holds (micro F1 for multilabel, MAE for regression); where tasks are mixed, the one most runs have."""
    keys = []
    for run in runs:
        names = list(run.history[0]) if run.history else []
        scores = [k for k in names if k.startswith("val_") and k != "val_loss"]
        if scores:
            keys.append("val_acc" if "val_acc" in scores else scores[0])
    return Counter(keys).most_common(1)[0][0] if keys else None


def _lower_is_better(key: str) -> bool:
    return key in _LOWER_IS_BETTER or "loss" in key


def _best_epoch(history: list[dict[str, float]], monitor: str | None) -> int | None:
    """The epoch a checkpoint would have kept: the best value of the run's monitor (val_acc when unknown)."""
    monitor = monitor if history and monitor in history[0] else "val_acc"
    points = [(h[monitor], int(h["epoch"])) for h in history if math.isfinite(h.get(monitor, math.nan))]
    if not points:
        return None
    return (min(points) if _lower_is_better(monitor) else max(points, key=lambda p: (p[0], -p[1])))[1]


def _row(run: _Run, score: str | None) -> dict[str, Any]:
    """One run's figures, as plain values (None where unknown): a line of compare.csv and compare.json."""
    m = run.metrics or {}
    task = m.get("task") or run.config.get("data.task") or "classify"
    best = m.get("best_epoch") or _best_epoch(run.history, run.config.get("train.monitor"))
    at_best = next((h for h in run.history if h.get("epoch") == best), {})
    seconds = _number(m, ("timings.train_seconds",))
    if seconds is None and run.history and "seconds" in run.history[0]:
        seconds = math.fsum(h["seconds"] for h in run.history if math.isfinite(h["seconds"]))
    return {
        "run": run.label, "path": str(run.path), "status": "finished" if run.metrics is not None else "unfinished",
        "task": task, "model": run.config.get("model.name"),
        **{col: _number(m, paths) for col, _, paths, _, tasks in _METRICS if task in tasks},
        **({score: at_best.get(score)} if score else {}),
        "best_epoch": best, "epochs": int(run.history[-1]["epoch"]) if run.history else best,
        "planned_epochs": run.config.get("train.epochs"), "train_seconds": seconds, "params": _params(run.path),
    }


def _number(tree: dict[str, Any], paths: tuple[str, ...]) -> float | None:
    """The first of the dotted paths that leads to a number in the nested dict."""
    for path in paths:
        value: Any = tree
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return None


def _params(run_dir: Path) -> int | None:
    """Parameters of the run's model, counted in its checkpoint (the state dict less batch norm's statistics;
    cnnfit's models register no other buffers). None where no checkpoint can be read."""
    from cnnfit.engine import load_checkpoint

    for name in ("best.pt", "last.pt"):
        if (run_dir / name).is_file():
            try:
                state = load_checkpoint(run_dir / name)["state_dict"]
            except (CnnfitError, KeyError):
                return None
            return sum(v.numel() for k, v in state.items() if not k.endswith(_BUFFERS))
    return None


def _cells(rows: list[dict[str, Any]], score: str | None) -> tuple[_Heads, _Cells]:
    """The metrics table as text, shared by the console and the HTML: (row key, header) per column, and per run
    (text, is best) cells. A metric column is shown when any run has it; its best value is marked when two or
    more runs have one."""
    columns = [(col, head, lower) for col, head, _, lower, _ in _METRICS]
    if score:
        columns.append((score, "val " + _SCORES.get(score, score.removeprefix("val_")), _lower_is_better(score)))
    columns = [c for c in columns if any(_finite(row.get(c[0])) for row in rows)]
    heads = [("run", "run"), ("status", "status"), ("task", "task"), ("model", "model"),
             *((col, head) for col, head, _ in columns),
             ("epochs", "best/epochs"), ("train_seconds", "train time"), ("params", "params")]
    table = [[(row["run"], False), (row["status"], False), (row["task"], False), (str(row["model"]), False)]
             for row in rows]
    for col, _, lower in columns:
        values = [row.get(col) for row in rows]
        known = [v for v in values if _finite(v)]
        best = (min(known) if lower else max(known)) if len(known) >= 2 else None
        for cells, v in zip(table, values):
            cells.append((_number_text(v) if v is not None else "-", best is not None and v == best))
    for cells, row in zip(table, rows):
        epochs = f"{row['best_epoch'] or '-'}/{row['epochs'] or '-'}"
        if row["status"] == "unfinished" and (row["epochs"] or 0) < (row["planned_epochs"] or 0):
            epochs += f" of {row['planned_epochs']}"
        cells += [(epochs, False), (_duration(row["train_seconds"]), False),
                  (f"{row['params']:,}" if row["params"] is not None else "-", False)]
    return heads, table


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _number_text(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1000 or not math.isfinite(value) else f"{value:,.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes}m {s:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m"


def _show(value: Any) -> str:
    """A config value as config.yaml writes it; '-' where the config has no such key."""
    if value is _ABSENT:
        return "-"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_show, value)) + "]"
    return str(value)


def _legend(runs: list[_Run], diffs: dict[str, list[Any]], most: int = 3) -> list[str]:
    """Run labels with their first `most` differing settings: 'train2 (lr=0.003)', 'train3 (model=resnet18)'.
    A key goes by its last part where no other key ends the same (optim.patience and train.patience do), *.name
    by its group; a path by its file name."""
    ends = Counter(k.rsplit(".", 1)[-1] for k in dict.fromkeys(k for r in runs for k in r.config))
    keys = list(diffs)[:most]
    short = []
    for key in keys:
        group, _, last = key.rpartition(".")
        short.append(group if last == "name" and group else last if ends[last] == 1 else key)
    more = ", ..." if len(diffs) > most else ""
    labels = []
    for i, run in enumerate(runs):
        values = [diffs[k][i] for k in keys]
        shown = [Path(v).name if k in _PATHS and isinstance(v, str) else _show(v) for k, v in zip(keys, values)]
        labels.append(run.label + (f" ({', '.join(f'{s}={v}' for s, v in zip(short, shown))}{more})" if keys else ""))
    return labels


def _plot(runs: list[_Run], rows: list[dict[str, Any]], score: str | None, legend: list[str], path: Path) -> None:
    """Loss (val solid, train dashed) and the val score per epoch, one colour per run, a star at each best epoch."""
    plt = _plt()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    name = _SCORES.get(score, score.removeprefix("val_")) if score else "score"
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    colors = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20").colors
    handles = []
    for i, (run, row) in enumerate(zip(runs, rows)):
        color = colors[i % len(colors)]
        handles.append(Line2D([], [], color=color, lw=2, label=legend[i]))
        epochs = [h["epoch"] for h in run.history]
        best = next((j for j, e in enumerate(epochs) if e == row["best_epoch"]), None)
        if run.history and "train_loss" in run.history[0]:
            loss_ax.plot(epochs, [h["train_loss"] for h in run.history], "--", color=color, lw=1.2, alpha=0.8)
        for ax, key in ((loss_ax, "val_loss"), (score_ax, score)):
            if not run.history or key not in run.history[0]:
                continue
            values = [h[key] for h in run.history]
            ax.plot(epochs, values, "o-", color=color, lw=1.6, ms=3)
            if best is not None:
                ax.plot(epochs[best], values[best], "*", color=color, ms=14, mec="black", mew=0.6, zorder=3)
    for ax, title in ((loss_ax, "loss"), (score_ax, f"val {name}")):
        ax.set(xlabel="epoch", ylabel=title, title=title[0].upper() + title[1:])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    key = [Line2D([], [], color="grey", lw=1.6, label="val"), Line2D([], [], color="grey", ls="--", label="train"),
           Line2D([], [], color="grey", marker="*", ms=12, ls="", mec="black", label="best epoch")]
    loss_ax.legend(handles=key, loc="upper right", fontsize=9)
    widest = max(len(h.get_label()) for h in handles)
    ncols = max(1, min(len(runs), 3, 150 // (widest + 8)))  # about 150 characters of 9 pt text span 11 inches
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=9, frameon=False)
    _save(fig, path)
    plt.close(fig)


def _write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)


def _print(console: Console, runs: list[_Run], heads: _Heads, cells: _Cells, diffs: dict[str, list[Any]]) -> None:
    """Both tables with one column per run, so a few runs fit an 80-column terminal."""
    table = Table(title=f"{len(runs)} runs (* best of each metric)", box=box.SIMPLE_HEAD)
    table.add_column("")
    for run in runs:
        table.add_column(Text(run.label), justify="right")
    for i, (_, head) in enumerate(heads[1:], start=1):
        table.add_row(Text(head), *(Text(c[i][0] + "*", style="bold green") if c[i][1] else
                                    Text(c[i][0], style="yellow" if c[i][0] == "unfinished" else "") for c in cells))
    console.print(table)
    if not diffs:
        console.print("config differences: none (every key but name and project is equal)", highlight=False)
        return
    table = Table(title="config differences", box=box.SIMPLE_HEAD)
    table.add_column("key")
    for run in runs:
        table.add_column(Text(run.label), justify="right")
    for key, values in diffs.items():
        table.add_row(Text(key), *(Text(_show(v)) for v in values))
    console.print(table)


__all__ = ["compare"]
