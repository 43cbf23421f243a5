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
