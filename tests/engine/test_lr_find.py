import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

from cnnfit.engine.lr_find import LRFind, lr_range_test, suggest
from cnnfit.errors import CnnfitError
from cnnfit.eval.plots import plot_lr_find


def _digits(n=256, batch=32):
    d = load_digits()
    x = torch.tensor(d.images[:n], dtype=torch.float32).unsqueeze(1) / 16  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(d.target[:n])
    return [(x[i: i + batch], y[i: i + batch]) for i in range(0, n, batch)]


def _cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


class _WithAux(nn.Module):
    """Returns (logits, aux logits), as GoogLeNet-style models do."""

    def __init__(self):
        super().__init__()
        self.body = _cnn()

    def forward(self, x):
        logits = self.body(x)
        return logits, logits.detach() * 0


def test_range_test_suggests_inside_range_and_restores_everything():
    torch.manual_seed(0)
    batches, model = _digits(), _cnn()
    groups = [{"params": model[0].parameters(), "lr_mult": 0.1}, {"params": list(model.parameters())[2:]}]
    opt = torch.optim.Adam(groups, lr=1e-3)
    for x, y in batches[:2]:  # some optimizer state and moved BN statistics, so restoring them means something
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
    weights = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())
    model.eval()
    seen_lrs = []

    def loss_fn(logits, y):
        seen_lrs.append([g["lr"] for g in opt.param_groups])
        return F.cross_entropy(logits, y)

    result = lr_range_test(model, batches, opt, loss_fn, start=1e-5, end=10.0, steps=60)

    assert 1e-5 <= result.lrs[0] <= result.suggestion <= result.lrs[-1] <= 10.0
    assert len(result.lrs) == len(result.losses) == len(result.smoothed) > 20  # cycled through the 8 batches
    assert "steepest" in result.rule and f"{result.suggestion:.3g}" in result.rule
    assert all(a == pytest.approx(0.1 * b) for a, b in seen_lrs)  # lr_mult respected per group
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    restored = opt.state_dict()
    assert [g["lr"] for g in restored["param_groups"]] == [g["lr"] for g in opt_state["param_groups"]]
    for i, s in opt_state["state"].items():
        for k, v in s.items():
            assert torch.equal(restored["state"][i][k], v), (i, k)


def test_range_test_stops_early_when_the_loss_diverges():
    torch.manual_seed(0)
    model = _WithAux()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_range_test(model, _digits(), opt, F.cross_entropy, start=1e-4, end=1e8, steps=100)
    assert len(result.lrs) < 100 and result.lrs[-1] < 1e8
    assert np.isfinite(result.losses).all()
    assert result.lrs[0] <= result.suggestion < result.lrs[-1]


def test_range_test_rejects_a_backwards_range():
    model = _cnn()
    with pytest.raises(CnnfitError, match="0 < start < end"):
        lr_range_test(model, _digits(), torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy,
                      start=1.0, end=1e-3)


def test_suggest_picks_the_steepest_point_before_the_minimum():
    lrs = np.logspace(-6, 1, 120)
    t = np.log10(lrs)
    loss = 2.3 - 2.0 / (1 + np.exp(-3 * (t + 3)))  # sigmoid in log LR: steepest at 1e-3
    loss += np.exp(4 * (t - 0.5))  # blows up near the end; the minimum is around 1e-1
    lr, rule = suggest(list(lrs), list(loss))
    assert lr == pytest.approx(1e-3, rel=0.15)
    assert rule.startswith("steepest descent")


def test_suggest_falls_back_to_a_tenth_of_the_minimum_on_flat_or_short_curves():
    lrs = list(np.logspace(-4, 0, 50))
    flat = [1.0] * 49 + [0.999]  # falls 0.1%: no clear slope
    lr, rule = suggest(lrs, flat)
    assert lr == pytest.approx(lrs[-1] / 10) and rule.startswith("minimum of the smoothed loss / 10")
    lr, rule = suggest([1e-3, 1e-2, 1e-1], [2.0, 1.0, 3.0])
    assert lr == pytest.approx(1e-3) and "only" in rule


def test_plot_lr_find_writes_a_png(tmp_path):
    lrs = list(np.logspace(-5, 0, 40))
    losses = [2.3 - 2 / (1 + np.exp(-3 * (np.log10(v) + 2.5))) for v in lrs]
    result = LRFind(lrs=lrs, losses=losses, smoothed=losses, suggestion=3e-3, rule="test")
    plot_lr_find(result, tmp_path / "lr_find.png")
    assert (tmp_path / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["lr_find.png"]  # no temporary file left behind
