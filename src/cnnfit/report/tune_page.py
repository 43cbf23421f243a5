"""tune_report.html: a study's summary, best trial, refit, plots and every trial on one self-contained page
(inline CSS and PNGs, no JavaScript), built from the same rows and summary that trials.csv and tune.json hold."""

from __future__ import annotations

import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cnnfit.config import SHORT_KEYS, Config, get_dotted
from cnnfit.report.html import data_table, duration, esc, figure, grid, kv_table, note, page, tile
from cnnfit.report.numbers import format_metric
from cnnfit.report.runfiles import RunFiles

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

# optuna.trial.TrialState names, in reading order, and how the page and the notes say each
STATES = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


def count_text(counts: dict[str, int]) -> str:
    """The trial counts as text, zeros left out: '3 completed, 2 pruned, 1 failed'."""
    return ", ".join(f"{n:,} {STATES[s]}" for s, n in counts.items() if n)


# --- the page -------------------------------------------------------------------------------------------

_EXTRA_CSS = """
table.trials td:first-child,table.trials th:first-child{position:sticky;left:0;background:#fff;z-index:1}
table.trials tr.best td{background:#dafbe1;font-weight:600}
table.trials tr.pruned td,table.trials tr.fail td,table.trials tr.waiting td{color:var(--muted)}
table.trials tr.fail td.state{color:#82071e}
table.trials td{white-space:nowrap}
"""


def tune_page(study: optuna.Study, trials: list[FrozenTrial], rows: list[dict], columns: list[str],
              params: list[str], best: FrozenTrial | None, summary: dict, base_config: Config, plots: list[str],
              tune_dir: Path) -> str:
    """The whole page; `rows` and `columns` are trials.csv's, `summary` is what tune.json holds (NaN already
    null), `plots` the PNG names written under tune_dir/plots, embedded from there."""
    monitor, direction = summary["monitor"], summary["direction"]
    sections = [("summary", "Summary", _summary_section(study, trials, best, summary))]
    sections.append(("best", "Best trial", _best_section(best, base_config, monitor, summary["notes"], tune_dir)))
    if summary["refit"] is not None:
        sections.append(("refit", "Refit of the best config", _refit_section(summary["refit"], tune_dir)))
    sections.append(("plots", "Plots", _plots_section(plots, summary["notes"], monitor, direction, tune_dir)))
    sections.append(("trials", "Trials", _trials_section(rows, columns, params, best, tune_dir)))
    name = study.study_name
    return page(f"{name} · cnnfit tune report", f"cnnfit tune <code>{esc(name)}</code>",
                f"{monitor} ({direction}) · {len(trials)} trials", sections,
                "Written by cnnfit from the Optuna study; the same rows are in trials.csv, the summary in tune.json.",
                _EXTRA_CSS)


def _summary_section(study: optuna.Study, trials: list[FrozenTrial], best: FrozenTrial | None, summary: dict) -> str:
    counts = summary["counts"]
    spent = sum(_seconds(t) for t in trials)
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    tiles = grid("tiles", [
        tile(f"best {summary['monitor']}", esc(format_metric(best.value)) if best else "none",
             f"trial {best.number}" if best else "no trial completed"),
        tile("trials", esc(f"{len(trials):,}"), count_text(counts)),
        tile("time", esc(duration(wall if wall is not None else spent)),
             f"{duration(spent)} of training in all" if wall is not None else "training time in all"),
    ])
    kind = lambda obj: type(obj).__name__ if obj is not None else ""  # noqa: E731
    rows = [("study", esc(study.study_name)), ("monitor", esc(summary["monitor"])),
            ("direction", esc(summary["direction"])),
            ("sampler", esc(kind(getattr(study, "sampler", None)))),
            ("pruner", esc(kind(getattr(study, "pruner", None)))),
            *((f"{STATES[s]} trials", esc(f"{n:,}")) for s, n in counts.items() if n or s == "COMPLETE"),
            ("best", esc(f"trial {best.number}: {format_metric(best.value)}") if best else "none"),
            ("first trial started", esc(_when(min(starts)) if starts else "")),
            ("last trial ended", esc(_when(max(ends)) if ends else "")),
            ("wall time", esc(duration(wall) if wall is not None else "")),
            ("training time, all trials", esc(duration(spent)))]
    return tiles + kv_table(rows)


def _best_section(best: FrozenTrial | None, base_config: Config, monitor: str, notes: list[str],
                  tune_dir: Path) -> str:
    if best is None:
        return note(next((n for n in notes if n.startswith("no best.yaml")), "no trial completed")
                    + "; the best config is written once one does.")
    base = base_config.model_dump(mode="json")
    rows = [[f"<code>{esc(key)}</code>", esc(_value_text(best.params[key], 6)),
             esc("auto" if (node := get_dotted(base, SHORT_KEYS.get(key, key))) is None else _value_text(node, 6))]
            for key in sorted(best.params)]
    run = best.user_attrs.get("run_dir")
    lead = (f"<p>Trial {best.number} scored {esc(monitor)} = <b>{esc(format_metric(best.value))}</b>"
            f"{', best epoch ' + esc(best.user_attrs['best_epoch']) if 'best_epoch' in best.user_attrs else ''}"
            f"{' (run ' + _link(run, tune_dir) + ')' if run else ''}. Its config is in <code>best.yaml</code>; "
            f"train it on its own with <code>cnnfit train config={esc(tune_dir / 'best.yaml')}</code>.</p>")
    return lead + (data_table(["setting", "best value", "base config"], rows) if rows
                   else note("no settings were searched"))


def _refit_section(refit: dict, tune_dir: Path) -> str:
    rows = [(key, _link(str(value), tune_dir) if key == "run_dir" and value else
             f"<code>{esc(json.dumps(value, default=str))}</code>" if isinstance(value, (dict, list)) else
             esc(format_metric(value, key))) for key, value in refit.items()]
    return note("The best config trained once more as an ordinary run; what that run reported:") + kv_table(rows)


def _captions(monitor: str, direction: str) -> dict[str, tuple[str, str]]:
    """Per plot: its title and how to read it, the figure's caption and alt text."""
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


def _plots_section(plots: list[str], notes: list[str], monitor: str, direction: str, tune_dir: Path) -> str:
    captions, found = _captions(monitor, direction), RunFiles(tune_dir).plots
    figures = [figure(*found[name], *captions[name], wide=True) for name in plots if name in found]
    skipped = "".join(note(n) for n in notes if n.startswith("no ") and n.split(":")[0].endswith(".png"))
    return grid("figs", figures) + skipped


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
    report, code = Path(run_dir) / "report.html", f'<code class="path">{esc(run_dir)}</code>'
    if not report.is_file():
        return code
    try:
        rel = os.path.relpath(report.resolve(), tune_dir.resolve())
    except ValueError:  # another drive (Windows): no relative address exists
        return code
    return f'<a href="{esc(quote(Path(rel).as_posix()))}">{code}</a>'


def _value_text(value: Any, digits: int) -> str:
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def _seconds(t: FrozenTrial) -> float:
    seconds = t.user_attrs.get("seconds")
    if isinstance(seconds, (int, float)) and math.isfinite(seconds):
        return float(seconds)
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return 0.0


def _when(d: datetime) -> str:
    return d.isoformat(sep=" ", timespec="seconds")


__all__ = ["STATES", "count_text", "tune_page"]
