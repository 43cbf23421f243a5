"""What a finished (or interrupted) search leaves in its folder: trials.csv, best.yaml, plots/, tune_report.html and
tune.json, all from the Optuna study alone, so they can be rewritten at any time while trials still run.

Every trial is an ordinary cnnfit run; its params are dotted config keys ("optim.lr", "model.name") and its user
attrs say where it ran and how it ended (run_dir, best_epoch, epochs_run, stop, seconds, worker).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import warnings
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from PIL import Image
from pydantic import ValidationError
from rich.console import Console

from cnnfit.config import SHORT_KEYS, Config, to_yaml
from cnnfit.errors import CnnfitError
from cnnfit.eval.html import CSS, data_table, esc, kv_table, note, tile, tile_grid
from cnnfit.eval.report_numbers import format_metric
from cnnfit.files import write_atomic

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

_ATTRS = ("best_epoch", "epochs_run", "seconds", "stop", "worker", "run_dir")  # user attrs each trial sets
# optuna.trial.TrialState names, in reading order, and how the page says each
_STATES = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
_FIGSIZE = (8, 4.5)  # inches: 880 x 495 px at plots._save's 110 dpi, full width on a laptop, legible on a phone


def apply_params(base_config: Config, params: dict[str, Any]) -> Config:
    """`base_config` with each param set at its dotted key, and the tune section back at its defaults, so the
    result trains one model instead of starting another search."""
    tree = base_config.model_dump(mode="json")
    tree.pop("tune", None)  # absent = defaults: a trained config must not start a search
    for key, value in params.items():
        node = tree
        *parents, leaf = SHORT_KEYS.get(key, key).split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise CnnfitError(f"the tuned value {where}={err.get('input')!r} does not make a valid config "
                          f"({err['msg']}); check the search space for that key") from None


def write_results(study: optuna.Study, tune_dir: Path, *, base_config: Config, monitor: str,
                  refit: dict | None = None, console: Console | None = None) -> dict:
    """Write trials.csv, best.yaml (when a trial completed), plots/*.png, tune_report.html and tune.json into
    `tune_dir`, each atomically, one console line per file; returns what tune.json holds."""
    console = console or Console()
    tune_dir = Path(tune_dir)
    tune_dir.mkdir(parents=True, exist_ok=True)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    direction = study.direction.name.lower()
    counts = {state: sum(t.state.name == state for t in trials) for state in _STATES}
    best = study.best_trial if counts["COMPLETE"] else None
    notes: list[str] = []

    def wrote(path: Path, what: str) -> None:
        console.print(f"{what}: {path}", highlight=False, markup=False, soft_wrap=True)

    params = sorted({k for t in trials for k in t.params})
    rows = [_row(t, params) for t in trials]
    columns = ["number", "state", "value", *params, *_ATTRS, "datetime_start", "datetime_complete"]
    _write_text(tune_dir / "trials.csv", _csv(rows, columns))
    wrote(tune_dir / "trials.csv", f"{len(rows)} trials")

    best_yaml = tune_dir / "best.yaml"
    if best is not None:
        _write_text(best_yaml, _best_yaml(study, best, base_config, monitor, best_yaml))
        wrote(best_yaml, f"best config (trial {best.number})")
    else:
        best_yaml.unlink(missing_ok=True)  # from an earlier study in this folder: it is not this one's best
        tried = _count_text(counts) or "no trials yet"
        notes.append(f"no best.yaml: no trial completed ({tried})")

    plots, plot_notes = _plots(study, trials, best, monitor, tune_dir / "plots")
    notes += plot_notes
    for name in plots:
        wrote(tune_dir / "plots" / name, "plot")

    summary = _finite({
        "study": study.study_name, "direction": direction, "monitor": monitor, "counts": counts,
        "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params},
        "refit": refit, "notes": notes,
    })  # the dict returned is the one tune.json holds
    page = _html(study, trials, rows, columns, params, best, summary, base_config, plots, tune_dir)
    _write_text(tune_dir / "tune_report.html", page)
    wrote(tune_dir / "tune_report.html", "report")
    _write_text(tune_dir / "tune.json", json.dumps(summary, indent=2, default=str) + "\n")
    wrote(tune_dir / "tune.json", "summary")
    return summary


# --- files ----------------------------------------------------------------------------------------------

def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text)  # workers still running read a whole file or the previous one


def _row(t: FrozenTrial, params: list[str]) -> dict[str, Any]:
    when = lambda d: d.isoformat(timespec="seconds") if d else None  # noqa: E731
    return {"number": t.number, "state": t.state.name, "value": t.value,
            **{k: t.params.get(k) for k in params}, **{k: t.user_attrs.get(k) for k in _ATTRS},
            "datetime_start": when(t.datetime_start), "datetime_complete": when(t.datetime_complete)}


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return buf.getvalue()


def _best_yaml(study: optuna.Study, best: FrozenTrial, base_config: Config, monitor: str, path: Path) -> str:
    cfg = apply_params(base_config, best.params)
    tuned = ", ".join(f"{k}={v!r}" for k, v in sorted(best.params.items()))
    lines = [f"best trial of tune study '{study.study_name}': trial {best.number}, {monitor} = {best.value!r} "
             f"({study.direction.name.lower()})",
             f"tuned: {tuned}" if tuned else "tuned: nothing (the search space was empty)",
             f"its run: {best.user_attrs.get('run_dir', 'n/a')}",
             f"train it: cnnfit train config={path}"]
    header = "".join(f"# {' '.join(line.split())}\n" for line in lines)  # one line each, whatever the names hold
    return header + to_yaml(cfg)


def _finite(value: Any) -> Any:
    """NaN and infinity as null: json.dumps would write them as NaN/Infinity, which strict readers reject."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# --- plots ----------------------------------------------------------------------------------------------

def _plots(study: optuna.Study, trials: list[FrozenTrial], best: FrozenTrial | None, monitor: str,
           out: Path) -> tuple[list[str], list[str]]:
    """The four Optuna pictures that apply, as PNGs in `out`; (written names, why each other one was skipped)."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.visualization import matplotlib as ovm

    from cnnfit.eval.plots import _plt, _save

    plt = _plt()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    stepped = [t for t in trials if t.intermediate_values]
    varied = [k for k in {k for t in complete for k in t.params}
              if len({repr(t.params.get(k)) for t in complete}) > 1]

    def history():
        ax = ovm.plot_optimization_history(study, target_name=monitor)
        ax.set(title="Optimization history", xlabel="trial")
        for line in ax.get_lines():
            if line.get_label() == "Best Value":
                line.set_label("best so far")
        ax.legend(loc="best")  # inside the axes: optuna's outside legend takes a fifth of the width
        return ax

    def importances():
        ax = ovm.plot_param_importances(study, target_name=monitor)
        ax.set_title(f"Setting importance for {monitor}", loc="left")  # optuna's title is the left one
        ax.set(xlabel="importance", ylabel="")
        ax.get_legend().remove()  # one objective: its legend only repeats the title
        return ax

    def parallel():
        ax = ovm.plot_parallel_coordinate(study, target_name=monitor)
        ax.set_title(f"Settings of each completed trial, coloured by {monitor}", y=1.03)
        return ax

    def intermediate():
        ax = ovm.plot_intermediate_values(study)
        _restyle_intermediate(ax, trials, best)
        ax.set(title=f"{monitor} per epoch of every trial", xlabel="epoch", ylabel=monitor)
        return ax

    plans = [
        ("history.png", history, "" if complete else "no trial completed yet"),
        ("importances.png", importances,
         "" if len(complete) >= 2 and varied else
         f"needs 2 or more completed trials with a setting that varies ({len(complete)} completed"
         f"{', no setting varied' if len(complete) >= 2 else ''})"),
        ("parallel.png", parallel, "" if any(t.params for t in complete) else
         "no trial completed yet" if not complete else "no settings were searched"),
        ("intermediate.png", intermediate, "" if stepped else "no trial reported a per-epoch value yet"),
    ]
    out.mkdir(parents=True, exist_ok=True)
    written, notes = [], []
    for name, draw, skip in plans:
        path = out / name
        if skip:
            path.unlink(missing_ok=True)  # from an earlier write: it would no longer match the report
            notes.append(f"no {name}: {skip}")
            continue
        # optuna switches pyplot to its ggplot style for good; rc_context puts cnnfit's own style back after
        with plt.rc_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            # a setting with one value in every completed trial gives a flat axis; matplotlib widens it itself
            warnings.filterwarnings("ignore", "Attempting to set identical low and high", UserWarning)
            before = set(plt.get_fignums())
            try:
                ax = draw()
            except Exception as exc:  # a picture optuna cannot draw for this study must not lose the others
                for num in set(plt.get_fignums()) - before:
                    plt.close(num)
                path.unlink(missing_ok=True)
                notes.append(f"no {name}: optuna could not draw it ({type(exc).__name__}: {exc})")
                continue
            fig = ax.figure
            fig.set_size_inches(*_FIGSIZE)
            fig.set_layout_engine("tight")
            _save(fig, path)
        written.append(name)
    return written, notes


def _restyle_intermediate(ax: Any, trials: list[FrozenTrial], best: FrozenTrial | None) -> None:
    """One colour per outcome instead of one per trial: completed blue, pruned grey with an x where the pruner
    stopped it, the best trial red on top; a three-entry legend reads at any trial count (a legend entry per
    trial does not fit past ~20)."""
    from matplotlib.lines import Line2D

    state = {f"Trial{t.number}": t.state.name for t in trials}
    for line in ax.get_lines():
        label = line.get_label()
        if state.get(label) == "PRUNED":
            line.set(color="#9a9a9a", alpha=0.8, linewidth=1.0)
            x, y = line.get_data()
            if len(x):
                ax.plot(x[-1:], y[-1:], "x", color="#555555", markersize=7)
        else:
            line.set(color="tab:blue", alpha=0.6, linewidth=1.2)
        if best is not None and label == f"Trial{best.number}":
            line.set(color="tab:red", alpha=1.0, linewidth=2.2, zorder=5)
    handles = [Line2D([], [], color="tab:blue", marker=".", label="completed or running"),
               Line2D([], [], color="#9a9a9a", marker="x", markeredgecolor="#555555", label="pruned (x: stopped)")]
    if best is not None:
        handles.append(Line2D([], [], color="tab:red", linewidth=2.2, label=f"best (trial {best.number})"))
    ax.legend(handles=handles, loc="best", fontsize=9)


def _captions(monitor: str, direction: str) -> dict[str, tuple[str, str]]:
    better = "higher" if direction == "maximize" else "lower"
    return {
        "history.png": ("Optimization history",
                        f"Each dot is a completed trial's {monitor} ({better} is better) and the line the best so "
                        f"far; a line that went flat long ago means more trials are unlikely to help."),
        "importances.png": ("Setting importance",
                            f"How much of the spread in {monitor} across completed trials each searched setting "
                            f"explains, as Optuna estimates it; rough with few trials, and settings near zero can "
                            f"be fixed."),
        "parallel.png": ("Parallel coordinates",
                         f"Each line is a completed trial through its value of every setting, the darkest lines "
                         f"the best {monitor}; where dark lines bunch on an axis is a good range for that setting."),
        "intermediate.png": ("Per-epoch values and pruning",
                             f"{monitor} after every epoch of each trial; grey lines ending in an x are trials the "
                             f"pruner stopped because they trailed the others at that epoch."),
    }


# --- the page -------------------------------------------------------------------------------------------

_EXTRA_CSS = """
table.trials td:first-child,table.trials th:first-child{position:sticky;left:0;background:#fff;z-index:1}
table.trials tr.best td{background:#dafbe1;font-weight:600}
table.trials tr.pruned td,table.trials tr.fail td,table.trials tr.waiting td{color:var(--muted)}
table.trials tr.fail td.state{color:#82071e}
table.trials td{white-space:nowrap}
"""


def _html(study: optuna.Study, trials: list[FrozenTrial], rows: list[dict], columns: list[str], params: list[str],
          best: FrozenTrial | None, summary: dict, base_config: Config, plots: list[str], tune_dir: Path) -> str:
    monitor, direction = summary["monitor"], summary["direction"]
    sections = [("summary", "Summary", _summary_section(study, trials, best, summary))]
    sections.append(("best", "Best trial", _best_section(best, base_config, monitor, summary["notes"], tune_dir)))
    if summary["refit"] is not None:
        sections.append(("refit", "Refit of the best config", _refit_section(summary["refit"], tune_dir)))
    sections.append(("plots", "Plots", _plots_section(plots, summary["notes"], monitor, direction, tune_dir)))
    sections.append(("trials", "Trials", _trials_section(rows, columns, params, best, tune_dir)))
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title, _ in sections)
    main = "".join(f'<section id="{sid}"><h2>{esc(title)}</h2>{body}</section>' for sid, title, body in sections)
    name = study.study_name
    sub = f"{monitor} ({direction}) · {len(trials)} trials"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(name)} · cnnfit tune report</title><style>{CSS}{_EXTRA_CSS}</style></head><body>"
            f'<header><div class="wrap"><h1>cnnfit tune <code>{esc(name)}</code></h1>'
            f"<p>{esc(sub)}</p></div></header>"
            f'<nav aria-label="Sections"><div class="wrap">{nav}</div></nav>'
            f'<main class="wrap">{main}</main>'
            f'<footer class="wrap">Written by cnnfit from the Optuna study; the same rows are in trials.csv, the '
            f"summary in tune.json.</footer></body></html>\n")


def _summary_section(study: optuna.Study, trials: list[FrozenTrial], best: FrozenTrial | None, summary: dict) -> str:
    counts = summary["counts"]
    spent = sum(_seconds(t) for t in trials)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    tiles = tile_grid([
        tile(f"best {summary['monitor']}", esc(format_metric(best.value)) if best else "none",
             f"trial {best.number}" if best else "no trial completed"),
        tile("trials", esc(f"{len(trials):,}"), _count_text(counts)),
        tile("time", esc(_duration(wall if wall is not None else spent)),
             f"{_duration(spent)} of training in all" if wall is not None else "training time in all"),
    ])
    kind = lambda obj: type(obj).__name__ if obj is not None else ""  # noqa: E731
    rows = [("study", esc(study.study_name)), ("monitor", esc(summary["monitor"])),
            ("direction", esc(summary["direction"])),
            ("sampler", esc(kind(getattr(study, "sampler", None)))),
            ("pruner", esc(kind(getattr(study, "pruner", None)))),
            *((f"{_STATES[s]} trials", esc(f"{n:,}")) for s, n in counts.items() if n or s == "COMPLETE"),
            ("best", esc(f"trial {best.number}: {format_metric(best.value)}") if best else "none"),
            ("first trial started", esc(_when(min(starts)) if starts else "")),
            ("last trial ended", esc(_when(max(ends)) if ends else "")),
            ("wall time", esc(_duration(wall) if wall is not None else "")),
            ("training time, all trials", esc(_duration(spent)))]
    return tiles + kv_table(rows)


def _best_section(best: FrozenTrial | None, base_config: Config, monitor: str, notes: list[str],
                  tune_dir: Path) -> str:
    if best is None:
        return note(next((n for n in notes if n.startswith("no best.yaml")), "no trial completed")
                    + "; the best config is written once one does.")
    base = base_config.model_dump(mode="json")
    rows = []
    for key in sorted(best.params):
        node: Any = base
        for part in SHORT_KEYS.get(key, key).split("."):
            node = node.get(part) if isinstance(node, dict) else None
        rows.append([f"<code>{esc(key)}</code>", esc(_value_text(best.params[key], 6)),
                     esc("auto" if node is None else _value_text(node, 6))])
    run = best.user_attrs.get("run_dir")
    lead = (f"<p>Trial {best.number} scored {esc(monitor)} = <b>{esc(format_metric(best.value))}</b>"
            f"{', best epoch ' + esc(best.user_attrs['best_epoch']) if 'best_epoch' in best.user_attrs else ''}"
            f"{' (run ' + _link(run, tune_dir) + ')' if run else ''}. Its config is in <code>best.yaml</code>; "
            f"train it on its own with <code>cnnfit train config={esc(tune_dir / 'best.yaml')}</code>.</p>")
    table = data_table(["setting", "best value", "base config"], rows) if rows else note("no settings were searched")
    return lead + table


def _refit_section(refit: dict, tune_dir: Path) -> str:
    rows = []
    for key, value in refit.items():
        if key == "run_dir" and value:
            rows.append((key, _link(str(value), tune_dir)))
        elif isinstance(value, (dict, list)):
            rows.append((key, f"<code>{esc(json.dumps(_finite(value), default=str))}</code>"))
        else:
            rows.append((key, esc(format_metric(value, key))))
    lead = note("The best config trained once more as an ordinary run; what that run reported:")
    return lead + kv_table(rows)


def _plots_section(plots: list[str], notes: list[str], monitor: str, direction: str, tune_dir: Path) -> str:
    captions = _captions(monitor, direction)
    figures = []
    for name in plots:
        data = (tune_dir / "plots" / name).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
        uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
        title, how = captions[name]
        figures.append(f'<figure class="wide"><img src="{uri}" width="{width}" height="{height}" '
                       f'alt="{esc(title)}: {esc(how)}"><figcaption><b>{esc(title)}.</b> {esc(how)}'
                       f"</figcaption></figure>")
    skipped = "".join(note(n) for n in notes if n.startswith("no ") and n.split(":")[0].endswith(".png"))
    return (f'<div class="figs">{"".join(figures)}</div>' if figures else "") + skipped


def _trials_section(rows: list[dict], columns: list[str], params: list[str], best: FrozenTrial | None,
                    tune_dir: Path) -> str:
    if not rows:
        return note("no trials yet")
    numeric = {"number", "value", "best_epoch", "epochs_run", "seconds"}
    align = lambda c: ' class="n"' if c in numeric else ""  # noqa: E731
    head = "".join(f'<th scope="col"{align(c)}>{esc(c)}</th>' for c in columns)
    body = []
    for r in rows:
        cls = " ".join(filter(None, [r["state"].lower(), "best" if best and r["number"] == best.number else ""]))
        cells = []
        for c in columns:
            v = r[c]
            if c == "run_dir" and v:
                text = _link(str(v), tune_dir)
            elif c == "value":
                text = esc(format_metric(v)) if v is not None else ""
            elif c == "seconds":
                text = esc(f"{v:,.1f}") if isinstance(v, (int, float)) else esc(v or "")
            elif c in params:
                text = esc(_value_text(v, 4)) if v is not None else ""
            else:
                text = esc("" if v is None else v)
            state = ' class="state"' if c == "state" else align(c)
            cells.append(f"<td{state}>{text}</td>")
        body.append(f'<tr class="{cls}">{"".join(cells)}</tr>')
    legend = note("The best trial is highlighted; pruned and failed trials are grey. Every column is also in "
                  "trials.csv.")
    return (legend + f'<div class="scroll"><table class="trials"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


# --- small formatting -----------------------------------------------------------------------------------

def _link(run_dir: str, tune_dir: Path) -> str:
    """The run directory as text, linked to its report.html by a relative address when that file exists."""
    report = Path(run_dir) / "report.html"
    if not report.is_file():
        return f'<code class="path">{esc(run_dir)}</code>'
    try:
        rel = os.path.relpath(report.resolve(), tune_dir.resolve())
    except ValueError:  # another drive (Windows): no relative address exists
        return f'<code class="path">{esc(run_dir)}</code>'
    return f'<a href="{esc(quote(Path(rel).as_posix()))}"><code class="path">{esc(run_dir)}</code></a>'


def _count_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {_STATES[s]}" for s, n in counts.items() if n)


def _value_text(value: Any, digits: int) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _seconds(t: FrozenTrial) -> float:
    seconds = t.user_attrs.get("seconds")
    if isinstance(seconds, (int, float)) and math.isfinite(seconds):
        return float(seconds)
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return 0.0


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def _when(d: datetime) -> str:
    return d.isoformat(sep=" ", timespec="seconds")


__all__ = ["apply_params", "write_results"]
