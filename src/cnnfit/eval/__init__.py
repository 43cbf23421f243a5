"""Evaluation: metrics and plots."""

from cnnfit.eval.metrics import classification_metrics, fit_thresholds, multilabel_metrics, regression_metrics
from cnnfit.eval.plots import plot_confusion, plot_curves

__all__ = ["classification_metrics", "fit_thresholds", "multilabel_metrics", "plot_confusion", "plot_curves",
           "regression_metrics"]
