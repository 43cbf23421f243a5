import math

import pytest
import torch
import torch.nn.functional as F

from cnnfit.engine.losses import LOSSES, make_loss
from cnnfit.errors import CnnfitError

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [-0.5, 1.5, 0.0], [1.0, 1.0, 1.0]])
LABELS = torch.tensor([0, 2, 1, 2])


def test_auto_picks_the_tasks_usual_loss():
    hot = F.one_hot(LABELS, 3).float()
    assert torch.isclose(make_loss("classify")(LOGITS, LABELS), F.cross_entropy(LOGITS, LABELS))
    assert torch.isclose(make_loss("multilabel")(LOGITS, hot), F.binary_cross_entropy_with_logits(LOGITS, hot))
    assert torch.isclose(make_loss("regress")(torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])),
                         torch.tensor(2.5))  # (1 + 4) / 2: (B, 1) outputs line up with (B,) targets


def test_ce_by_hand_with_smoothing_weights_and_soft_targets():
    out, y = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([1])  # p = (1/4, 3/4)
    assert torch.isclose(make_loss("classify", "ce")(out, y), torch.tensor(-math.log(0.75)))
    smooth = make_loss("classify", "ce", label_smoothing=0.2)(out, y)  # target (0.1, 0.9)
    assert torch.isclose(smooth, torch.tensor(-(0.1 * math.log(0.25) + 0.9 * math.log(0.75))))
    w = torch.tensor([1.0, 2.0, 4.0])
    assert torch.isclose(make_loss("classify", "ce", class_weight=w)(LOGITS, LABELS),
                         F.cross_entropy(LOGITS, LABELS, weight=w))
    soft = torch.tensor([[0.7, 0.3, 0.0]] * 4)  # mixup
    assert torch.isclose(make_loss("classify")(LOGITS, soft), -(soft * LOGITS.log_softmax(1)).sum(1).mean())


def test_bce_on_classes_is_bce_on_one_hot_and_two_classes_work():
    hot = F.one_hot(LABELS, 3).float()
    assert torch.isclose(make_loss("classify", "bce")(LOGITS, LABELS), F.binary_cross_entropy_with_logits(LOGITS, hot))
    smooth = make_loss("classify", "bce", label_smoothing=0.3)(LOGITS, LABELS)  # on 1 - 0.3 + 0.1, off 0.1
    assert torch.isclose(smooth, F.binary_cross_entropy_with_logits(LOGITS, hot * 0.7 + 0.1))
    out2, y2 = torch.tensor([[0.0, 0.0]]), torch.tensor([1])  # two classes: log 2 on each output
    assert torch.isclose(make_loss("classify", "bce")(out2, y2), torch.tensor(math.log(2.0)))


def test_bce_class_weight_is_pos_weight_for_multilabel():
    hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    w = torch.tensor([3.0, 1.0, 0.5])
    got = make_loss("multilabel", "bce", class_weight=w)(LOGITS, hot)
    assert torch.isclose(got, F.binary_cross_entropy_with_logits(LOGITS, hot, pos_weight=w))
    one = make_loss("multilabel", "bce", class_weight=torch.tensor([3.0]))(torch.zeros(1, 1), torch.ones(1, 1))
    assert torch.isclose(one, torch.tensor(3 * math.log(2.0)))  # a positive at p = 1/2, weighted 3


def test_focal_with_gamma_zero_is_ce_and_gamma_down_weights_easy_images():
    w = torch.tensor([1.0, 2.0, 4.0])
    for kw in ({}, {"class_weight": w}, {"label_smoothing": 0.1}):
        assert torch.isclose(make_loss("classify", "focal", focal_gamma=0.0, **kw)(LOGITS, LABELS),
                             make_loss("classify", "ce", **kw)(LOGITS, LABELS))
    out, y = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([1])  # p_t = 3/4
    focal = make_loss("classify", "focal", focal_gamma=2.0)(out, y)
    assert torch.isclose(focal, torch.tensor(-(0.25**2) * math.log(0.75)))  # Lin et al. (1 - p_t)^gamma


def test_sigmoid_focal_by_hand_and_at_gamma_zero():
    hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    w = torch.tensor([3.0, 1.0, 0.5])
    assert torch.isclose(make_loss("multilabel", "focal", focal_gamma=0.0, class_weight=w)(LOGITS, hot),
                         make_loss("multilabel", "bce", class_weight=w)(LOGITS, hot))
    out, y = torch.tensor([[math.log(3.0), math.log(3.0)]]), torch.tensor([[1.0, 0.0]])  # p = 3/4 on both
    expected = (0.25**2 * -math.log(0.75) + 0.75**2 * -math.log(0.25)) / 2
    assert torch.isclose(make_loss("multilabel", "focal")(out, y), torch.tensor(expected))


def test_regression_losses_match_functional():
    pred, y = torch.tensor([[0.5], [2.0], [-3.0]]), torch.tensor([0.0, 0.0, 0.0])
    assert torch.isclose(make_loss("regress", "l1")(pred, y), torch.tensor(5.5 / 3))
    assert torch.isclose(make_loss("regress", "huber")(pred, y), torch.tensor((0.125 + 1.5 + 2.5) / 3))
    assert torch.isclose(make_loss("regress", "mse")(pred[:, 0], y), torch.tensor((0.25 + 4 + 9) / 3))
    with pytest.raises(CnnfitError, match="num_classes=1"):
        make_loss("regress")(torch.zeros(3, 2), y)


def test_losses_give_finite_gradients():
    for task, names in LOSSES.items():
        for name in names:
            out = torch.randn(6, 1 if task == "regress" else 3, requires_grad=True)
            y = {"classify": torch.tensor([0, 1, 2, 0, 1, 2]), "multilabel": (torch.rand(6, 3) > 0.5).float(),
                 "regress": torch.randn(6)}[task]
            make_loss(task, name)(out, y).backward()
            assert torch.isfinite(out.grad).all(), (task, name)


@pytest.mark.parametrize("task, name, fragment", [
    ("regress", "ce", "loss 'ce' does not fit task=regress; choose from: auto, mse, l1, huber"),
    ("multilabel", "ce", "choose from: auto, bce, focal"),
    ("classify", "mse", "choose from: auto, ce, bce, focal"),
    ("segment", "auto", "unknown task 'segment'"),
])
def test_incompatible_pairs_name_the_valid_choices(task, name, fragment):
    with pytest.raises(CnnfitError, match=fragment):
        make_loss(task, name)


def test_regression_refuses_class_options():
    with pytest.raises(CnnfitError, match="train.label_smoothing=0"):
        make_loss("regress", label_smoothing=0.1)
