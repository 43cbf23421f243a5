import math

import numpy as np
import torch
from sklearn.metrics import classification_report, confusion_matrix

from cnnfit.eval.metrics import classification_metrics


def test_known_case_matches_scikit_learn():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    y_pred = np.array([0, 1, 0, 1, 1, 2, 0, 2, 2, 2])
    logits = torch.nn.functional.one_hot(torch.from_numpy(y_pred), 3).float() * 5
    m = classification_metrics(logits, torch.from_numpy(y_true), ["a", "b", "c"])
    ref = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    assert m["accuracy"] == 0.7
    assert m["per_class"]["a"]["precision"] == ref["0"]["precision"] == 2 / 3
    assert m["per_class"]["c"]["recall"] == ref["2"]["recall"] == 0.75
    assert m["macro"]["f1"] == ref["macro avg"]["f1-score"]
    assert m["weighted"]["f1"] == ref["weighted avg"]["f1-score"]
    assert m["confusion_matrix"] == confusion_matrix(y_true, y_pred).tolist()
    assert m["per_class"]["b"]["support"] == 3


def test_multilabel_metrics_perfect_and_known():
    from sklearn.metrics import f1_score

    from cnnfit.eval.metrics import multilabel_metrics

    targets = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    with_empty = torch.cat([targets, torch.zeros(1, 3)])  # an image with none of the labels, rightly so
    perfect = multilabel_metrics(with_empty * 8 - 4, with_empty, ["a", "b", "c"])
    assert perfect["micro"]["f1"] == perfect["macro"]["f1"] == perfect["samples"]["f1"] == 1.0
    assert perfect["subset_accuracy"] == 1.0 and perfect["hamming_loss"] == 0.0 and perfect["macro_roc_auc"] == 1.0
    assert perfect["per_label"]["b"]["support"] == 2 and perfect["thresholds"] == [0.5] * 3
    logits = torch.tensor([[3.0, -2, 1], [-1, 2, 2], [2, -3, -1], [-2, -2, 2]])
    m = multilabel_metrics(logits, targets, ["a", "b", "c"])
    pred = (logits >= 0).int().numpy()
    assert m["micro"]["f1"] == f1_score(targets.int().numpy(), pred, average="micro")
    assert math.isclose(m["hamming_loss"], 2 / 12) and m["subset_accuracy"] == 0.5
    assert m["per_label"]["c"]["precision"] == 2 / 3 and m["per_label"]["b"]["recall"] == 0.5
    one_class = multilabel_metrics(logits[:, :1], torch.ones(4, 1), ["all"])
    assert one_class["per_label"]["all"]["roc_auc"] is None  # no negatives: AUC undefined
    assert math.isclose(one_class["macro"]["f1"], 2 / 3) and one_class["samples"]["f1"] == 0.5  # 2 of 4 found
    assert one_class["subset_accuracy"] == 0.5 and one_class["hamming_loss"] == 0.5


def test_fit_thresholds_beats_one_half_on_a_skewed_label():
    from cnnfit.eval.metrics import fit_thresholds, multilabel_metrics

    # label 0 is rare and its scores low: every positive sits below sigmoid 0.5; label 1 never occurs
    p = torch.tensor([0.05, 0.10, 0.12, 0.30, 0.35, 0.40, 0.20, 0.08])
    y0 = torch.tensor([0.0, 0, 0, 1, 1, 1, 0, 0])
    logits = torch.stack([torch.logit(p), torch.zeros(8)], 1)
    targets = torch.stack([y0, torch.zeros(8)], 1)
    cuts = fit_thresholds(logits, targets)
    # any cut in (0.20, 0.30] separates val perfectly: the middle leaves a margin for test positives
    assert math.isclose(cuts[0], 0.25, rel_tol=1e-5) and cuts[1] == 0.5
    at_half = multilabel_metrics(logits, targets, ["rare", "never"])
    fitted = multilabel_metrics(logits, targets, ["rare", "never"], thresholds=cuts)
    assert at_half["per_label"]["rare"]["f1"] == 0.0 and fitted["per_label"]["rare"]["f1"] == 1.0


def test_regression_metrics():
    from cnnfit.eval.metrics import regression_metrics

    y = torch.tensor([1.0, 2.0, 3.0, 4.0])
    perfect = regression_metrics(y[:, None], y)
    assert perfect["r2"] == 1.0 and perfect["mae"] == perfect["rmse"] == perfect["max_error"] == 0.0
    m = regression_metrics(torch.tensor([[1.0], [2.5], [3.0], [2.0]]), y)
    assert m["mae"] == 2.5 / 4 and math.isclose(m["rmse"], math.sqrt(4.25 / 4)) and m["max_error"] == 2.0
    assert math.isclose(m["r2"], 1 - 4.25 / 5) and m["num_images"] == 4
