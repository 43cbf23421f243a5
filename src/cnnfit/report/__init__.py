"""Every HTML page cnnfit writes and their building blocks: the run report (report.html), compare (compare.html)
and the tuning report (tune_report.html), all read through `RunFiles`."""

from cnnfit.report.compare import compare
from cnnfit.report.numbers import format_metric, lookup_metric, metric_path
from cnnfit.report.run_page import render_report, write_report
from cnnfit.report.runfiles import RunFiles
from cnnfit.report.tune_page import tune_page

__all__ = ["RunFiles", "compare", "format_metric", "lookup_metric", "metric_path", "render_report", "tune_page",
           "write_report"]
