"""What a finished (or interrupted) search leaves in its folder: trials.csv, best.yaml, plots/, tune_report.html and
tune.json, all from the Optuna study alone, so they can be rewritten at any time while trials still run; the
page itself is built by cnnfit.report.tune_page.

Every trial is an ordinary cnnfit run; its params are dotted config keys ("optim.lr", "model.name") and its user
attrs say where it ran and how it ended (run_dir, best_epoch, epochs_run, stop, seconds, worker).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from cnnfit.config import SHORT_KEYS, Config, set_dotted, to_yaml
from cnnfit.errors import CnnfitError
from cnnfit.eval.plots import pyplot, save_figure
from cnnfit.files import write_atomic, write_csv
from cnnfit.report.tune_page import STATES, count_text, tune_page

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

_ATTRS = ("best_epoch", "epochs_run", "seconds", "stop", "worker", "run_dir")  # user attrs each trial sets
_FIGSIZE = (8, 4.5)  # inches: 880 x 495 px at save_figure's 110 dpi, full width on a laptop, legible on a phone

log = logging.getLogger(__name__)


def apply_params(base_config: Config, params: dict[str, Any]) -> Config:
    """`base_config` with each param set at its dotted key, and the tune section back at its defaults, so the
    result trains one model instead of starting another search."""
    tree = base_config.model_dump(mode="json")
    tree.pop("tune", None)  # absent = defaults: a trained config must not start a search
    for key, value in params.items():
        set_dotted(tree, SHORT_KEYS.get(key, key), value)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise CnnfitError(f"the tuned value {where}={err.get('input')!r} does not make a valid config "
                          f"({err['msg']}); check the search space for that key") from None


def write_results(study: optuna.Study, tune_dir: Path, *, base_config: Config, monitor: str,
                  refit: dict | None = None) -> dict:
    """Write trials.csv, best.yaml, plots/, tune_report.html, tune.json, each atomically; returns tune.json's dict."""
    tune_dir = Path(tune_dir)
    tune_dir.mkdir(parents=True, exist_ok=True)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    counts = {state: sum(t.state.name == state for t in trials) for state in STATES}
    best = study.best_trial if counts["COMPLETE"] else None
    notes: list[str] = []

    def write(path: Path, text: str, what: str) -> None:
        write_atomic(path, text)  # workers still running read a whole file or the previous one
        log.info(f"{what}: {path}")

    params = sorted({k for t in trials for k in t.params})
    rows = [_row(t, params) for t in trials]
    columns = ["number", "state", "value", *params, *_ATTRS, "datetime_start", "datetime_complete"]
    write_csv(tune_dir / "trials.csv", columns, [[row[k] for k in columns] for row in rows], line_end="\n")
    log.info(f"{len(rows)} trials: {tune_dir / 'trials.csv'}")

    best_yaml = tune_dir / "best.yaml"
    if best is not None:
        write(best_yaml, _best_yaml(study, best, base_config, monitor, best_yaml), f"best config (trial {best.number})")
    else:
        best_yaml.unlink(missing_ok=True)  # from an earlier study in this folder: it is not this one's best
        notes.append(f"no best.yaml: no trial completed ({count_text(counts) or 'no trials yet'})")

    plots, plot_notes = _plots(study, trials, best, monitor, tune_dir / "plots")
    notes += plot_notes
    for name in plots:
        log.info(f"plot: {tune_dir / 'plots' / name}")

    summary = _finite({
        "study": study.study_name, "direction": study.direction.name.lower(), "monitor": monitor, "counts": counts,
        "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params},
        "refit": refit, "notes": notes,
    })  # the dict returned is the one tune.json holds
    page = tune_page(study, trials, rows, columns, params, best, summary, base_config, plots, tune_dir)
    write(tune_dir / "tune_report.html", page, "report")
    write(tune_dir / "tune.json", json.dumps(summary, indent=2, default=str) + "\n", "summary")
    return summary


# --- files ----------------------------------------------------------------------------------------------

def _row(t: FrozenTrial, params: list[str]) -> dict[str, Any]:
    when = lambda d: d.isoformat(timespec="seconds") if d else None  # noqa: E731
    return {"number": t.number, "state": t.state.name, "value": t.value,
            **{k: t.params.get(k) for k in params}, **{k: t.user_attrs.get(k) for k in _ATTRS},
            "datetime_start": when(t.datetime_start), "datetime_complete": when(t.datetime_complete)}


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
    from optuna.visualization import matplotlib as ovm

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

    skip = _skip_reasons(trials)
    out.mkdir(parents=True, exist_ok=True)
    written, notes = [], []
    for name, draw in (("history.png", history), ("importances.png", importances), ("parallel.png", parallel),
                       ("intermediate.png", intermediate)):
        why = skip[name] or _draw(draw, out / name)
        if why:
            (out / name).unlink(missing_ok=True)  # from an earlier write: it would no longer match the report
            notes.append(f"no {name}: {why}")
        else:
            written.append(name)
    return written, notes


def _skip_reasons(trials: list[FrozenTrial]) -> dict[str, str]:
    """Per picture, why the study cannot show it yet; '' where it can."""
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    varied = [k for k in {k for t in complete for k in t.params}
              if len({repr(t.params.get(k)) for t in complete}) > 1]
    return {
        "history.png": "" if complete else "no trial completed yet",
        "importances.png": "" if len(complete) >= 2 and varied else
        f"needs 2 or more completed trials with a setting that varies ({len(complete)} completed"
        f"{', no setting varied' if len(complete) >= 2 else ''})",
        "parallel.png": "" if any(t.params for t in complete) else
        "no trial completed yet" if not complete else "no settings were searched",
        "intermediate.png": "" if any(t.intermediate_values for t in trials) else
        "no trial reported a per-epoch value yet",
    }


def _draw(draw: Any, path: Path) -> str:
    """One Optuna picture (`draw` returns its axes) written to `path`; '' or why Optuna could not draw it."""
    from optuna.exceptions import ExperimentalWarning

    plt = pyplot()
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
            return f"optuna could not draw it ({type(exc).__name__}: {exc})"
        fig = ax.figure
        fig.set_size_inches(*_FIGSIZE)
        fig.set_layout_engine("tight")
        save_figure(fig, path)
    return ""


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


__all__ = ["apply_params", "write_results"]
