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


def _noisy_logits(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    return torch.nn.functional.one_hot(y, k).float() * 1.5 + torch.randn(n, k, generator=g), y


def test_ranking_and_probability_metrics_equal_scikit_learn_multiclass():
    from sklearn.metrics import (average_precision_score, balanced_accuracy_score, log_loss, roc_auc_score,
                                 top_k_accuracy_score)

    logits, y = _noisy_logits(400, 5)
    m = classification_metrics(logits, y, list("abcde"))
    probs = torch.softmax(logits.double(), 1).numpy()
    yt = y.numpy()
    for k, c in enumerate("abcde"):
        assert m["per_class"][c]["roc_auc"] == roc_auc_score(yt == k, probs[:, k])
        assert m["per_class"][c]["pr_auc"] == average_precision_score(yt == k, probs[:, k])
    assert math.isclose(m["roc_auc"]["macro"], roc_auc_score(yt, probs, multi_class="ovr", average="macro"))
    assert math.isclose(m["roc_auc"]["weighted"], roc_auc_score(yt, probs, multi_class="ovr", average="weighted"))
    assert math.isclose(m["log_loss"], log_loss(yt, probs))
    assert m["balanced_accuracy"] == balanced_accuracy_score(yt, probs.argmax(1))
    assert m["top_k"]["3"] == top_k_accuracy_score(yt, probs, k=3) and "5" not in m["top_k"]  # k < classes only
    assert m["micro"]["f1"] == m["accuracy"]  # single-label: micro averages are accuracy
    assert np.allclose(np.array(m["confusion_normalized"]).sum(1), 1.0)


def test_binary_auc_is_the_positive_class_auc_and_undefined_classes_are_none():
    from sklearn.metrics import roc_auc_score

    logits, y = _noisy_logits(200, 2, seed=1)
    m = classification_metrics(logits, y, ["neg", "pos"])
    probs = torch.softmax(logits.double(), 1).numpy()
    assert m["roc_auc"]["macro"] == roc_auc_score(y.numpy(), probs[:, 1]) == m["per_class"]["pos"]["roc_auc"]
    # a class absent from the split: its AUC is undefined, the average covers the classes that have one
    logits3, y3 = _noisy_logits(90, 3, seed=2)
    keep = y3 != 2
    m3 = classification_metrics(logits3[keep], y3[keep], ["a", "b", "c"])
    assert m3["per_class"]["c"]["roc_auc"] is None and m3["per_class"]["c"]["pr_auc"] is None
    assert math.isclose(m3["roc_auc"]["macro"], (m3["per_class"]["a"]["roc_auc"] + m3["per_class"]["b"]["roc_auc"]) / 2)
