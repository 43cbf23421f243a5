"""report.html: one self-contained page per run that answers a reviewer's questions: what was trained on what, how
well it scores, where it fails, what the data looked like, and with which settings and software.

The page reads only files in the run directory (metrics.json, config.yaml, data_report.json, history.csv,
split.json, skipped.txt, predictions.csv, plots/*.png and, for older runs, the PNGs in the run directory itself);
any may be missing, and a section is written only when one of its inputs exists. Images are embedded as
data:image/png;base64 URIs and the CSS is inline: no external resource, no JavaScript.

Every number taken from metrics.json carries its path in a data-metric attribute and is written by one rule
(`format_metric`); both rules are in cnnfit.eval.report_numbers. The parts of the page live beside this module:
html (building blocks and stylesheet), report_run (reading the run directory), report_scores and report_context
(the sections).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from cnnfit.eval import report_context, report_scores
from cnnfit.eval.html import CSS, esc
from cnnfit.eval.report_numbers import format_metric, lookup_metric, metric_path, metric_span
from cnnfit.eval.report_run import Run, dig
from cnnfit.files import write_atomic

_SECTIONS = (("summary", "Summary"), ("metrics", "Metrics"), ("curves", "Training curves"),
             ("per-class", "Per class"), ("confusion", "Confusion"), ("roc", "ROC and PR"),
             ("calibration", "Calibration"), ("errors", "Errors"), ("data", "Data"), ("config", "Config"),
             ("environment", "Environment"), ("timing", "Timing"), ("more-plots", "More plots"))

_RENDER: dict[str, Callable[[Run], str]] = {**report_scores.RENDERERS, **report_context.RENDERERS}
# sections that do not apply to a task, whatever files exist
_SKIP = {"multilabel": {"confusion", "calibration"}, "regress": {"per-class", "confusion", "roc", "calibration"}}


def render_report(run_dir: str | Path) -> str:
    """The report of a run directory as one HTML string (write_report writes it)."""
    run = Run(Path(run_dir))
    sections = []
    for sid, title in _SECTIONS:
        if sid in _SKIP.get(run.task, set()):
            continue
        try:
            body = _RENDER[sid](run)
        except Exception as e:  # a file in a shape this code does not know: say so, keep the rest of the report
            body = f'<p class="problem">This section could not be drawn: {esc(type(e).__name__)}: {esc(e)}</p>'
        if body:
            sections.append((sid, "Per label" if sid == "per-class" and run.task == "multilabel" else title, body))
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title, _ in sections)
    main = "".join(f'<section id="{sid}"><h2>{esc(title)}</h2>{body}</section>' for sid, title, body in sections)
    name = run.dir.resolve().name
    what = [run.task, dig(run.config, "data", "source") or run.metrics.get("dataset"),
            run.metrics.get("model") or dig(run.config, "model", "name")]
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(name)} · cnnfit report</title><style>{CSS}</style></head><body>"
            f'<header><div class="wrap"><h1>cnnfit run <code>{esc(name)}</code></h1>'
            f"<p>{esc(' · '.join(str(w) for w in what if w))}</p></div></header>"
            f'<nav aria-label="Sections"><div class="wrap">{nav}</div></nav>'
            f'<main class="wrap">{main}</main>'
            f'<footer class="wrap">Written by cnnfit from the files in {esc(name)}/; numbers in the metrics come '
            f"from metrics.json.</footer></body></html>\n")


def write_report(run_dir: str | Path, *, out: Path | None = None) -> Path:
    """Write run_dir/report.html (or `out`) from the files in the run directory, atomically; returns its path."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.html"
    return write_atomic(out, render_report(run_dir))


# the number rules (from report_numbers) are part of the report's interface
__all__ = ["format_metric", "lookup_metric", "metric_path", "metric_span", "render_report", "write_report"]
