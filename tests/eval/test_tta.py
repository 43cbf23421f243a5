import pytest
import torch
from torch import nn

from cnnfit.eval.tta import TTA, views


def test_views_flip_and_shift():
    x = torch.arange(2 * 1 * 32 * 32, dtype=torch.float32).reshape(2, 1, 32, 32)
    assert len(views(x, "none")) == 1 and len(views(x, "flip")) == 2
    out = views(x, "flip+shift")
    assert len(out) == 6 and all(v.shape == x.shape for v in out)
    assert torch.equal(out[1], x.flip(-1))
    assert torch.equal(out[2][..., 2:, 2:], x[..., :-2, :-2])  # 2 px (32/16) down and right
    assert torch.equal(out[3][..., :-2, :-2], x[..., 2:, 2:])
    with pytest.raises(ValueError, match="flip"):
        views(x, "rotate")


def test_tta_of_a_mirror_symmetric_model_is_the_model():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    with torch.no_grad():  # symmetric kernels and mean pooling: the model cannot tell an image from its mirror
        conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
    model = nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        plain = model(x).softmax(1)
        flipped = TTA(model, "flip")(x).softmax(1)
    assert torch.allclose(plain, flipped, atol=1e-6)


def test_tta_averages_probabilities():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x = torch.randn(3, 1, 2, 2)
    with torch.no_grad():
        expected = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
        got = TTA(model, "flip")(x).softmax(1)
        regress = TTA(model, "flip", task="regress")(x)
    assert torch.allclose(got, expected, atol=1e-6)
    assert torch.allclose(regress, (model(x) + model(x.flip(-1))).detach() / 2, atol=1e-6)


def test_flip_and_shift_by_a_chosen_number_of_pixels():
    x = torch.arange(1 * 1 * 32 * 32, dtype=torch.float32).reshape(1, 1, 32, 32)
    out = views(x, "flip+shift", shift=1)
    assert torch.equal(out[2][..., 1:, 1:], x[..., :-1, :-1]) and torch.equal(out[3][..., :-1, :-1], x[..., 1:, 1:])
    assert torch.equal(out[4][..., 1:, 1:], x.flip(-1)[..., :-1, :-1])
