"""Evaluation: metrics and their error bars, calibration, "unknown" answers, embeddings, test-time augmentation and
plots; the pages that show them are in cnnfit.report."""

from cnnfit.eval.bootstrap import intervals, paired_difference
from cnnfit.eval.calibration import expected_calibration_error, fit_temperature
from cnnfit.eval.embed import features, nearest
from cnnfit.eval.metrics import classification_metrics, fit_thresholds, multilabel_metrics, regression_metrics
from cnnfit.eval.plots import plot_confusion, plot_curves
from cnnfit.eval.reject import answered, fit_reject, scores
from cnnfit.eval.tta import TTA

__all__ = ["TTA", "answered", "classification_metrics", "expected_calibration_error", "features", "fit_reject",
           "fit_temperature", "fit_thresholds", "intervals", "multilabel_metrics", "nearest", "paired_difference",
           "plot_confusion", "plot_curves", "regression_metrics", "scores"]
