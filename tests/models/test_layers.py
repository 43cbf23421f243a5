"""The shared building blocks: dropout keeps nn.Dropout's maths with its faster CPU mask."""

import pytest
import torch
import torch.nn as nn

from cnnfit.models import create
from cnnfit.models.layers import Dropout


@pytest.mark.parametrize("p", [0.25, 0.5])
def test_dropout_keeps_1_minus_p_of_the_units_and_the_mean(p):
    torch.manual_seed(0)
    drop = Dropout(p)
    x = torch.ones(400_000, requires_grad=True)
    y = drop(x)
    kept = y > 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.005)
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / (1 - p)))  # kept units scaled, the rest zero
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient flows through exactly the kept units, scaled alike


def test_dropout_is_the_identity_in_eval_and_at_the_ends():
    x = torch.randn(8, 16)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0)(x), x)
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))


def test_dropout_masks_follow_the_seed_and_differ_between_steps():
    drop = Dropout(0.5)
    torch.manual_seed(3)
    a, b = drop(torch.ones(1000)), drop(torch.ones(1000))
    torch.manual_seed(3)
    assert torch.equal(drop(torch.ones(1000)), a) and not torch.equal(a, b)  # resume restores the RNG: same masks


def test_models_use_it_and_it_is_still_an_nn_dropout():
    model = create("simplecnn", num_classes=10, in_chans=1)
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(isinstance(m, Dropout) for m in drops)
