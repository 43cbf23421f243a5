import math

import torch
import torch.nn.functional as F

from cnnfit.engine.losses import make_loss
from cnnfit.engine.scores import MONITORS, epoch_scores, train_correct


def test_classify_scores_on_a_known_case():
    labels = torch.tensor([0, 0, 0, 1, 2, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 0])
    logits = F.one_hot(pred, 3).float() * 4
    s = epoch_scores("classify", logits, labels, make_loss("classify"))
    assert math.isclose(s["val_acc"], 4 / 6)
    assert math.isclose(s["val_balanced_acc"], (2 / 3 + 1 + 1 / 2) / 3)
    f1 = [2 * (2 / 3) * (2 / 3) / (4 / 3), 2 * 0.5 * 1 / 1.5, 2 * 1 * 0.5 / 1.5]  # per class from precision, recall
    assert math.isclose(s["val_macro_f1"], sum(f1) / 3)
    assert math.isclose(s["val_loss"], F.cross_entropy(logits, labels).item(), rel_tol=1e-6)
    assert MONITORS["classify"] in s


def test_multilabel_scores_on_a_known_case():
    targets = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    logits = torch.tensor([[3.0, -2, 1], [-1, 2, 2], [2, -3, -1], [-2, -2, -2]])  # 3 errors: (1,2) fp, (2,1) fn
    s = epoch_scores("multilabel", logits, targets, make_loss("multilabel"))
    # tp 4, fp 1, fn 1 -> micro F1 8/10; per label F1 1, 2/3, 2/3; exact rows 0 and 3
    assert math.isclose(s["val_f1"], 0.8) and math.isclose(s["val_macro_f1"], (1 + 2 / 3 + 2 / 3) / 3)
    assert s["val_subset_acc"] == 0.5
    assert math.isclose(s["val_loss"], F.binary_cross_entropy_with_logits(logits, targets).item(), rel_tol=1e-6)
    assert MONITORS["multilabel"] in s


def test_regression_scores_in_original_units_for_both_shapes():
    mean, std = 50.0, 10.0
    y = torch.tensor([-1.0, 0.0, 1.0, 2.0])  # standardized
    pred = torch.tensor([[-1.0], [0.5], [1.0], [1.0]])  # errors 0, 0.5, 0, -1 std
    s = epoch_scores("regress", pred, y, make_loss("regress"), target_scale=(mean, std))
    assert math.isclose(s["val_mae"], 1.5 / 4 * std) and math.isclose(s["val_rmse"], math.sqrt(1.25 / 4) * std)
    assert math.isclose(s["val_r2"], 1 - 1.25 / 5)  # total sum of squares about the mean 0.5: 5
    assert math.isclose(s["val_loss"], 1.25 / 4)
    flat = epoch_scores("regress", pred[:, 0], y, make_loss("regress"))
    assert math.isclose(flat["val_mae"], 1.5 / 4) and flat["val_r2"] == s["val_r2"]
    perfect = epoch_scores("regress", y, y, make_loss("regress"))
    assert perfect["val_r2"] == 1.0 and perfect["val_mae"] == 0.0


def test_empty_outputs_give_nan_for_every_score():
    for task, targets in (("classify", torch.empty(0, dtype=torch.long)), ("multilabel", torch.empty(0, 3)),
                          ("regress", torch.empty(0))):
        s = epoch_scores(task, torch.empty(0, 0), targets, make_loss(task))
        assert len(s) == 4 and MONITORS[task] in s and all(math.isnan(v) for v in s.values())


def test_train_correct_counts_classes_only():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    assert train_correct("classify", logits, torch.tensor([0, 1, 1])).item() == 2
    assert train_correct("classify", logits, torch.tensor([[0.8, 0.2], [0.4, 0.6], [0.1, 0.9]])).item() == 2
    assert train_correct("multilabel", logits, torch.ones(3, 2)) is None
    assert train_correct("regress", logits[:, :1], torch.zeros(3)) is None
