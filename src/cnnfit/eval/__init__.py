"""Evaluation: metrics, calibration, test-time augmentation and plots; the pages that show them are in cnnfit.report."""

from cnnfit.eval.calibration import expected_calibration_error, fit_temperature
from cnnfit.eval.metrics import classification_metrics, fit_thresholds, multilabel_metrics, regression_metrics
from cnnfit.eval.plots import plot_confusion, plot_curves
from cnnfit.eval.tta import TTA

__all__ = ["TTA", "classification_metrics", "expected_calibration_error", "fit_temperature", "fit_thresholds",
           "multilabel_metrics", "plot_confusion", "plot_curves", "regression_metrics"]
