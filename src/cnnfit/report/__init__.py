"""Every HTML page cnnfit writes and their building blocks: the run report (report.html), compare (compare.html),
the tuning report (tune_report.html), all read through `RunFiles`, and the label review (label_review.html)."""

from cnnfit.report.compare import compare
from cnnfit.report.label_review import render_label_review, write_label_review
from cnnfit.report.numbers import format_metric, lookup_metric, metric_path
from cnnfit.report.run_page import render_report, write_report
from cnnfit.report.runfiles import RunFiles
from cnnfit.report.tune_page import tune_page

__all__ = ["RunFiles", "compare", "format_metric", "lookup_metric", "metric_path", "render_label_review",
           "render_report", "tune_page", "write_label_review", "write_report"]
