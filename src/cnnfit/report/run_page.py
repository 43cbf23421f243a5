"""report.html: one self-contained page per run that answers a reviewer's questions: what was trained on what, how
well it scores, where it fails, what the data looked like, and with which settings and software.

The page reads only files in the run directory (metrics.json, config.yaml, data_report.json, history.csv,
split.json, skipped.txt, predictions.csv, plots/*.png and, for older runs, the PNGs in the run directory itself);
any may be missing, and a section is written only when one of its inputs exists. Images are embedded as
data:image/png;base64 URIs and the CSS is inline: no external resource, no JavaScript.

Every number taken from metrics.json carries its path in a data-metric attribute and is written by one rule
(`format_metric`); both rules are in cnnfit.report.numbers. The sections are in run_scores (how well it scores)
and run_context (what it ran on and how).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from cnnfit.config import get_dotted
from cnnfit.files import write_atomic
from cnnfit.report import run_context, run_scores
from cnnfit.report.html import esc, page
from cnnfit.report.runfiles import RunFiles

_SECTIONS = (("summary", "Summary"), ("metrics", "Metrics"), ("curves", "Training curves"),
             ("per-class", "Per class"), ("confusion", "Confusion"), ("roc", "ROC and PR"),
             ("calibration", "Calibration"), ("unknown", "Unknown answers"), ("errors", "Errors"),
             ("explain", "Explanations"), ("neighbours", "Nearest training images"), ("data", "Data"),
             ("config", "Config"), ("environment", "Environment"), ("timing", "Timing"), ("more-plots", "More plots"))

_RENDER: dict[str, Callable[[RunFiles], str]] = {**run_scores.RENDERERS, **run_context.RENDERERS}
# sections that do not apply to a task, whatever files exist
_SKIP = {"multilabel": {"confusion", "calibration"}, "regress": {"per-class", "confusion", "roc", "calibration"}}


def render_report(run_dir: str | Path) -> str:
    """The report of a run directory as one HTML string (write_report writes it)."""
    run = RunFiles(run_dir)
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
    name = run.dir.resolve().name
    what = [run.task, get_dotted(run.config, "data.source") or run.metrics.get("dataset"),
            run.metrics.get("model") or get_dotted(run.config, "model.name")]
    return page(f"{name} · cnnfit report", f"cnnfit run <code>{esc(name)}</code>",
                " · ".join(str(w) for w in what if w), sections,
                f"Written by cnnfit from the files in {esc(name)}/; numbers in the metrics come from metrics.json.")


def write_report(run_dir: str | Path, *, out: Path | None = None) -> Path:
    """Write run_dir/report.html (or `out`) from the files in the run directory, atomically; returns its path."""
    return write_atomic(Path(out) if out is not None else Path(run_dir) / "report.html", render_report(run_dir))


__all__ = ["render_report", "write_report"]
