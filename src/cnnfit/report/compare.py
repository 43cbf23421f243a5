"""`cnnfit compare RUN RUN ...`: runs side by side. Their test metrics with the best of each column marked, the
config keys that differ, their curves overlaid, and for classifiers scored on the same test images whether each
beats the first by more than chance (a paired test); logged as two tables and a sentence per run, and written as
compare.html (one self-contained file), compare.png, compare.csv and compare.json."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any


from cnnfit.config import get_dotted
from cnnfit.engine.callbacks import Monitor
from cnnfit.engine.scores import DIRECTIONS, direction
from cnnfit.errors import CnnfitError
from cnnfit.eval.plots import SCORE_NAMES, pyplot, save_figure
from cnnfit.files import new_run_dir, write_atomic, write_csv
from cnnfit.report.html import duration, esc, note, png_uri
from cnnfit.report.paired import paired as paired_tests
from cnnfit.report.runfiles import RunFiles

log = logging.getLogger(__name__)

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


def compare(runs: list[str | Path], out: str | Path | None = None) -> Path:
    """Compare two or more run directories; unfinished runs (no metrics.json) take part with their history.
    Writes compare.html/.png/.csv/.json into `out`, or into a fresh compare* folder beside the first run, and
    returns that folder. Every run is read and checked before anything is written."""
    runs = [runs] if isinstance(runs, (str, Path)) else list(runs)
    if len(runs) < 2:
        raise CnnfitError(f"compare needs two or more run directories, {len(runs)} given; "
                          "e.g. cnnfit compare runs/train runs/train2")
    loaded = [_load(r) for r in runs]
    dirs = [run.dir for run in loaded]
    for i, d in enumerate(dirs):
        if d in dirs[:i]:
            raise CnnfitError(f"'{runs[i]}' is the same run as '{runs[dirs.index(d)]}'; name each run once")
    if out is not None and Path(out).exists() and not Path(out).is_dir():
        raise CnnfitError(f"out='{out}' is a file; give a folder for compare.html and the other files")
    labels = _labels(dirs)

    diffs = _differences([r.flat_config for r in loaded])
    score = _score_key(loaded)
    rows = [_row(r, label, score) for r, label in zip(loaded, labels)]
    heads, cells = _cells(rows, score)
    paired = paired_tests(loaded, labels)

    out_dir = Path(out) if out is not None else new_run_dir(loaded[0].dir.parent, "compare")
    out_dir.mkdir(parents=True, exist_ok=True)
    _plot(loaded, rows, score, _legend(loaded, labels, diffs), out_dir / "compare.png")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    write_csv(out_dir / "compare.csv", columns, [[row.get(k) for k in columns] for row in rows])
    shown_diffs = {k: {label: v for label, v in zip(labels, values) if v is not _ABSENT} for k, values in diffs.items()}
    best = {key: [label for label, c in zip(labels, cells) if c[i][1]] for i, (key, _) in enumerate(heads)}
    summary = {"runs": rows, "best": {k: names for k, names in best.items() if names}, "differences": shown_diffs,
               "paired": paired}
    write_atomic(out_dir / "compare.json", json.dumps(summary, indent=2))
    shown = {k: [_show(v) for v in values] for k, values in diffs.items()}
    write_atomic(out_dir / "compare.html", _page(rows, heads, cells, shown, [p["verdict"] for p in paired],
                                                 (out_dir / "compare.png").read_bytes()))

    _log_tables(labels, heads, cells, diffs)
    for test in paired:
        log.info(test["verdict"])
    log.info(f"{', '.join(_FILES)} -> {out_dir}")
    return out_dir


# --- the runs -------------------------------------------------------------------------------------------

def _load(given: str | Path) -> RunFiles:
    run = RunFiles(Path(given).expanduser().resolve())
    if not (run.dir / "config.yaml").is_file():
        raise CnnfitError(f"'{given}' is not a run directory (it has no config.yaml); pass folders that cnnfit train "
                          "wrote, e.g. runs/train runs/train2")
    damaged = [f"{name} ({why})" for name, why in run.unreadable.items() if name in ("config.yaml", "metrics.json")]
    if damaged:
        raise CnnfitError(f"'{given}' holds a damaged {damaged[0]}; rerun cnnfit eval on it, or leave it out")
    if not isinstance(run.config, dict):
        raise CnnfitError(f"{run.dir / 'config.yaml'} is not a cnnfit config (no keys); leave '{given}' out")
    if not run.history_values and not (run.dir / "metrics.json").is_file():
        raise CnnfitError(f"'{given}' has no history.csv and no metrics.json: it has not finished an epoch yet; "
                          "compare it once it has")
    return run


def _labels(paths: list[Path]) -> list[str]:
    """Folder names, with parents added to names that two runs share: runs/a and old/a become runs/a, old/a."""
    depth = [1] * len(paths)
    while True:
        labels = ["/".join(p.parts[-d:]) for p, d in zip(paths, depth)]
        clash = [i for i, name in enumerate(labels) if labels.count(name) > 1 and depth[i] < len(paths[i].parts)]
        if not clash:
            return labels
        for i in clash:
            depth[i] += 1


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


def _score_key(runs: list[RunFiles]) -> str | None:
    """The validation score to plot and tabulate: val_acc for classifiers, else the first val_* score a history
    holds (micro F1 for multilabel, MAE for regression); where tasks are mixed, the one most runs have."""
    scores = [[k for k in (run.history_values or [{}])[0] if k.startswith("val_") and k != "val_loss"] for run in runs]
    keys = ["val_acc" if "val_acc" in s else s[0] for s in scores if s]
    return Counter(keys).most_common(1)[0][0] if keys else None


def _best_epoch(history: list[dict[str, float]], monitor: str | None) -> int | None:
    """The epoch a checkpoint would have kept: the best value of the run's monitor (val_acc when unknown)."""
    monitor = monitor if history and monitor in history[0] else "val_acc"
    if not history or monitor not in history[0] or monitor not in DIRECTIONS:
        return None
    best = Monitor.replay(history, monitor).best_epoch
    return int(best) if best >= 0 else None


def _row(run: RunFiles, label: str, score: str | None) -> dict[str, Any]:
    """One run's figures, as plain values (None where unknown): a line of compare.csv and compare.json."""
    m, config, history, task = run.metrics.data, run.flat_config, run.history_values, run.task
    best = m.get("best_epoch") or _best_epoch(history, config.get("train.monitor"))
    at_best = next((h for h in history if h.get("epoch") == best), {})
    seconds = _number(m, ("timings.train_seconds",))
    if seconds is None and history and "seconds" in history[0]:
        seconds = math.fsum(h["seconds"] for h in history if math.isfinite(h["seconds"]))
    return {
        "run": label, "path": str(run.dir),
        "status": "finished" if (run.dir / "metrics.json").is_file() else "unfinished",
        "task": task, "model": config.get("model.name"),
        **{col: _number(m, paths) for col, _, paths, _, tasks in _METRICS if task in tasks},
        **({score: at_best.get(score)} if score else {}),
        "best_epoch": best, "epochs": int(history[-1]["epoch"]) if history else best,
        "planned_epochs": config.get("train.epochs"), "train_seconds": seconds, "params": _params(run.dir),
    }


def _number(tree: dict[str, Any], paths: tuple[str, ...]) -> float | None:
    """The first of the dotted paths that leads to a number in the nested dict."""
    values = (get_dotted(tree, path) for path in paths)
    return next((v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)), None)


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


# --- the table ------------------------------------------------------------------------------------------

def _cells(rows: list[dict[str, Any]], score: str | None) -> tuple[_Heads, _Cells]:
    """The metrics table as text, shared by the log and the HTML: (row key, header) per column, and per run
    (text, is best) cells. A metric column is shown when any run has it; its best value is marked when two or
    more runs have one."""
    columns = [(col, head, lower) for col, head, _, lower, _ in _METRICS]
    if score:
        columns.append((score, "val " + SCORE_NAMES.get(score, score.removeprefix("val_")), direction(score) == "min"))
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
        cells += [(epochs, False), (duration(row["train_seconds"]), False),
                  (f"{row['params']:,}" if row["params"] is not None else "-", False)]
    return heads, table


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _number_text(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1000 or not math.isfinite(value) else f"{value:,.1f}"


def _show(value: Any) -> str:
    """A config value as config.yaml writes it; '-' where the config has no such key."""
    if value is _ABSENT:
        return "-"
    if value is None or isinstance(value, bool):
        return json.dumps(value)  # null, true, false
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_show, value)) + "]"
    return str(value)


def _log_tables(labels: list[str], heads: _Heads, cells: _Cells, diffs: dict[str, list[Any]]) -> None:
    """Both tables with one column per run, so a few runs fit an 80-column terminal."""
    rows = [[head] + [c[i][0] + "*" if c[i][1] else c[i][0] for c in cells] for i, (_, head) in enumerate(heads)]
    _log_table(f"{len(labels)} runs (* best of each metric)", ["", *labels], rows[1:])
    if not diffs:
        log.info("config differences: none (every key but name and project is equal)")
        return
    _log_table("config differences", ["key", *labels], [[key] + [_show(v) for v in values]
                                                       for key, values in diffs.items()])


def _log_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    """One record: the table as aligned plain text, and in extra["table"] for the CLI to draw."""
    widths = [max(len(r[i]) for r in (columns, *rows)) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in (columns, *rows)]
    justify = ["left"] + ["right"] * (len(columns) - 1)
    log.info("\n".join([title, *lines]),
             extra={"table": {"title": title, "columns": columns, "rows": rows, "styles": None, "justify": justify}})


# --- the files ------------------------------------------------------------------------------------------

def _legend(runs: list[RunFiles], labels: list[str], diffs: dict[str, list[Any]], most: int = 3) -> list[str]:
    """Run labels with their first `most` differing settings: 'train2 (lr=0.003)', 'train3 (model=resnet18)'.
    A key goes by its last part where no other key ends the same (optim.patience and train.patience do), *.name
    by its group; a path by its file name."""
    ends = Counter(k.rsplit(".", 1)[-1] for k in dict.fromkeys(k for r in runs for k in r.flat_config))
    keys = list(diffs)[:most]
    short = []
    for key in keys:
        group, _, last = key.rpartition(".")
        short.append(group if last == "name" and group else last if ends[last] == 1 else key)
    more = ", ..." if len(diffs) > most else ""
    legend = []
    for i, label in enumerate(labels):
        values = [diffs[k][i] for k in keys]
        shown = [Path(v).name if k in _PATHS and isinstance(v, str) else _show(v) for k, v in zip(keys, values)]
        legend.append(label + (f" ({', '.join(f'{s}={v}' for s, v in zip(short, shown))}{more})" if keys else ""))
    return legend


def _plot(runs: list[RunFiles], rows: list[dict[str, Any]], score: str | None, legend: list[str], path: Path) -> None:
    """Loss (val solid, train dashed) and the val score per epoch, one colour per run, a star at each best epoch."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    name = SCORE_NAMES.get(score, score.removeprefix("val_")) if score else "score"
    fig, (loss_ax, score_ax) = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    colors = plt.get_cmap("tab10" if len(runs) <= 10 else "tab20").colors
    handles = []
    for i, (run, row) in enumerate(zip(runs, rows)):
        color, history = colors[i % len(colors)], run.history_values
        handles.append(Line2D([], [], color=color, lw=2, label=legend[i]))
        epochs = [h["epoch"] for h in history]
        best = next((j for j, e in enumerate(epochs) if e == row["best_epoch"]), None)
        if history and "train_loss" in history[0]:
            loss_ax.plot(epochs, [h["train_loss"] for h in history], "--", color=color, lw=1.2, alpha=0.8)
        for ax, key in ((loss_ax, "val_loss"), (score_ax, score)):
            if not history or key not in history[0]:
                continue
            values = [h[key] for h in history]
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
    save_figure(fig, path)


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;background:#fff;
  margin:0 auto;max-width:1500px;padding:12px 16px 40px}
h1{font-size:1.35rem;margin:.4em 0}
h2{font-size:1.1rem;margin:1.6em 0 .5em}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;border:1px solid #ddd;border-radius:6px}
table{border-collapse:collapse;min-width:100%;font-variant-numeric:tabular-nums}
th,td{padding:6px 9px;white-space:nowrap;border-bottom:1px solid #eee;text-align:right}
th{background:#f5f5f7;font-weight:600}
th:first-child,td:first-child{text-align:left;position:sticky;left:0;background:#fff}
th:first-child{background:#f5f5f7}
td.text,th.text{text-align:left}
td.unfinished{color:#a15c00}
strong{color:#0b6b2b}
img{display:block;width:100%;height:auto;border:1px solid #ddd;border-radius:6px}
li code{word-break:break-all}
p.note{color:#666;font-size:.9rem}
"""


def _page(rows: list[dict[str, Any]], heads: _Heads, cells: _Cells, diffs: dict[str, list[str]], verdicts: list[str],
          png: bytes) -> str:
    """compare.html: the metrics table with the best of each column in bold, the paired tests' verdicts, each
    differing key's values as config.yaml writes them (one per run), the curves and where each run lives, on one
    self-contained page (inline CSS, the PNG as a data URI, no scripts and nothing fetched), so it can be mailed
    or archived."""
    def row(tag: str, items: list[tuple[str, str]]) -> str:
        """A table row from (HTML, CSS class) pairs; the HTML is escaped already."""
        return "<tr>" + "".join(f'<{tag} class="{c}">{t}</{tag}>' if c else f"<{tag}>{t}</{tag}>"
                                for t, c in items) + "</tr>"

    def table(head: str, body: list[str]) -> str:
        rows = "\n".join(body)
        return f'<div class="scroll"><table>\n<thead>{head}</thead>\n<tbody>\n{rows}\n</tbody></table></div>'

    metrics = table(row("th", [(esc(h), "text" if i < 4 else "") for i, (_, h) in enumerate(heads)]), [
        row("td", [(f"<strong>{esc(t)}</strong>" if best else esc(t),
                    "unfinished" if t == "unfinished" else "text" if i < 4 else "") for i, (t, best) in enumerate(c)])
        for c in cells])
    diff_rows = [row("td", [(esc(k), "text")] + [(esc(v), "text") for v in values]) for k, values in diffs.items()]
    diff_html = (table(row("th", [("key", "text")] + [(esc(r["run"]), "text") for r in rows]), diff_rows) if diffs
                 else note("none: every key but name and project is equal"))
    paired = (f"<h2>Paired tests</h2>\n<ul>{''.join(f'<li>{esc(v)}</li>' for v in verdicts)}</ul>\n"
              '<p class="note">Each run against the first, on the same test images: the difference in accuracy, '
              "its paired bootstrap interval (the images resampled, both runs scored on each resample) and "
              "McNemar's exact test on the images only one of the two gets right. A real difference needs both: "
              "p below 1 - level and an interval that excludes 0.</p>\n") if verdicts else ""
    paths = "".join(f"<li><strong>{esc(r['run'])}</strong>: <code>{esc(r['path'])}</code>"
                    f"{' (unfinished)' if r['status'] == 'unfinished' else ''}</li>" for r in rows)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cnnfit compare: {esc(', '.join(r['run'] for r in rows))}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>cnnfit compare: {len(rows)} runs</h1>
<h2>Test metrics</h2>
{metrics}
<p class="note">Bold: the best value of each column. Unfinished runs have no test metrics; their best epoch and
validation score come from history.csv.</p>
{paired}<h2>Config differences</h2>
{diff_html}
<h2>Curves</h2>
<img src="{png_uri(png)}" alt="loss and validation score per epoch of each run">
<h2>Runs</h2>
<ol>{paths}</ol>
</body>
</html>
"""


__all__ = ["compare"]
