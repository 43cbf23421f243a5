"""airnet: the data-set whitening, the frozen-bias schedule, shift-only BN and dirac init, that it learns, and that
its data-set state reloads."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnfit import models
from cnnfit.models.airnet import WHITEN_EPS


def digits(size: int = 32, chans: int = 1, noise: float = 0.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 1797 8x8 digits, upsampled to `size` px and normalized: (N, chans, size, size), labels (N,).
    With chans=3 each image gets a random colour; `noise` (std) adds pixel noise, so no patch direction is empty."""
    from sklearn.datasets import load_digits

    g = torch.Generator().manual_seed(seed)
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16  # (1797, 1, 8, 8), pixels 0..16
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)  # (1797, 1, size, size)
    if chans > 1:
        x = x * torch.rand(len(x), chans, 1, 1, generator=g)  # (1797, chans, size, size): correlated channels
    x = x + noise * torch.randn(x.shape, generator=g)
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    return x, torch.tensor(data.target)


def second_moment(out: torch.Tensor) -> torch.Tensor:
    """(C, C) E[o o^T] over batch and positions of a (N, C, H, W) map: the 'covariance' the whitening targets."""
    flat = out.transpose(0, 1).reshape(out.shape[1], -1).double()  # (C, N*H*W)
    return flat @ flat.T / flat.shape[1]


def test_init_from_data_whitens_2x2_patches():
    """After init_from_data the first half of the whitening filters give decorrelated unit-variance outputs (each
    variance l / (l + eps), so within eps / l_min of 1); the second half is their negation. The default
    (identity) filters leave the strong pixel correlation of smooth images."""
    x, _ = digits(chans=3, noise=0.1)
    x = x[:600]
    model = models.create("airnet", num_classes=10, in_chans=3, imgsz=32)
    k = 3 * 4
    before = second_moment(F.conv2d(x, model.whiten.weight)[:, :k])
    assert (before - torch.eye(k, dtype=torch.float64)).abs().max() > 0.5  # neighbouring pixels correlate

    model.init_from_data(x)
    w = model.whiten.weight
    assert w.shape == (2 * k, 3, 2, 2) and not w.requires_grad
    assert torch.equal(w[k:], -w[:k])
    patches = x.unfold(2, 2, 1).unfold(3, 2, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, k)  # (P, 12)
    l_min = torch.linalg.eigvalsh(patches.T.double() @ patches.double() / len(patches)).min().item()
    assert l_min > 20 * WHITEN_EPS  # the noise keeps every direction well above eps, so the bar below is tight
    cov = second_moment(F.conv2d(x, w)[:, :k])
    off = cov - torch.diag(cov.diag())
    assert off.abs().max() < 1e-3, off.abs().max()
    assert (cov.diag() <= 1 + 1e-3).all() and (cov.diag() >= 1 - WHITEN_EPS / l_min - 1e-3).all(), cov.diag()
    assert (cov.diag()[:-1] >= cov.diag()[1:] - 1e-4).all()  # largest eigenvalue first: least shrunk by eps


def test_set_epoch_trains_the_whitening_bias_for_the_first_epochs_only():
    model = models.create("airnet", num_classes=3, whiten_bias_epochs=2)
    bias = dict(model.named_parameters())["whiten.bias"]
    assert "whiten.weight" in model.state_dict() and "whiten.weight" not in dict(model.named_parameters())
    trains = []
    for epoch in (0, 1, 2, 5, 1):  # the last: a resume from an earlier epoch
        model.set_epoch(epoch)
        trains.append(bias.requires_grad)
    assert trains == [True, True, False, False, True]

    model.set_epoch(0)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert bias.grad is not None
    model.set_epoch(2)  # a frozen bias drops its grad: an optimizer then skips it (no momentum, no decay)
    assert bias.grad is None
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert bias.grad is None and model.head.weight.grad is not None


def test_bn_is_shift_only_and_convs_start_as_dirac():
    model = models.create("airnet", num_classes=10, in_chans=3, width=0.5)
    norms = {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert len(norms) == 6
    params = dict(model.named_parameters())
    for name, bn in norms.items():
        assert bn.weight is None and f"{name}.weight" not in params
        assert params[f"{name}.bias"] is bn.bias and bn.bias.requires_grad and not bn.bias.any()
        assert (bn.eps, bn.momentum) == (1e-12, 0.4)
    bn = model.block1.bn1.train()
    x = torch.randn(8, bn.num_features, 5, 5) * 3 + 2
    with torch.no_grad():
        bn.bias.fill_(0.5)
        y = bn(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.full((bn.num_features,), 0.5), atol=1e-5)  # shift applied
    assert torch.allclose(y.var((0, 2, 3), unbiased=False), torch.ones(bn.num_features), atol=1e-4)  # scale 1
    assert torch.allclose(bn.running_mean, 0.4 * x.mean((0, 2, 3)), atol=1e-5) and bn.num_batches_tracked == 1
    with torch.no_grad():
        assert torch.allclose(bn.eval()(x), (x - bn.running_mean[:, None, None])
                              / (bn.running_var[:, None, None] + 1e-12).sqrt() + 0.5, atol=1e-4)  # running stats

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(24, 32), (32, 32), (32, 128), (128, 128),
                                                               (128, 128), (128, 128)]
    for conv in convs:
        n = min(conv.in_channels, conv.out_channels)
        dirac = torch.zeros(n, conv.in_channels, 3, 3)
        dirac[range(n), range(n), 1, 1] = 1
        assert torch.equal(conv.weight[:n], dirac)
        if conv.out_channels > n:  # the other filters keep PyTorch's random init
            assert conv.weight[n:].std() > 0.01
    assert model.head.bias is None and model.scale == 1 / 9


def test_feature_maps_at_32px_and_the_logit_scale():
    model = models.create("airnet", num_classes=10, in_chans=3).eval()
    maps = {}
    for name in ("whiten", "block1", "block2", "block3"):
        model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: maps.update({name: o}))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
        expected = model.head(F.max_pool2d(maps["block3"], 3).flatten(1)) / 9  # airbench's MaxPool2d(3), then x 1/9
    assert {k: v.shape[1:] for k, v in maps.items()} == {"whiten": (24, 31, 31), "block1": (64, 15, 15),
                                                         "block2": (256, 7, 7), "block3": (256, 3, 3)}
    assert torch.allclose(logits, expected, atol=1e-6)


def test_airnet_learns_digits():
    """200 SGD-nesterov steps of 32 images (~5 passes over 1300 digits, the whitening bias frozen after 3; ~6 s
    on 2 cores) at quarter width reach ~0.98-0.99 held out (seeds 0, 1)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x, y = digits()
    perm = torch.randperm(len(x), generator=g)
    train, test = perm[:1300], perm[1300:]
    model = models.create("airnet", num_classes=10, in_chans=1, imgsz=32, width=0.25)
    model.init_from_data(x[train])
    steps, batch = 200, 32
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)  # linear decay: a stable last step
    for step in range(steps):
        model.set_epoch(step * batch // len(train))
        idx = train[torch.randint(len(train), (batch,), generator=g)]
        loss = F.cross_entropy(model(x[idx]), y[idx], label_smoothing=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    assert not model.whiten.bias.requires_grad
    model.eval()
    with torch.no_grad():
        acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    assert acc > 0.95


def test_data_init_travels_in_the_state_dict_and_onnx(tmp_path):
    from cnnfit.export import to_onnx

    x, _ = digits(chans=3, noise=0.1)
    torch.manual_seed(0)
    model = models.create("airnet", num_classes=10, in_chans=3, imgsz=32, width=0.25)
    model.init_from_data(x[:300])
    model.train()
    with torch.no_grad():
        model(x[:64])  # moves the BN running statistics off their start
    torch.save(model.state_dict(), tmp_path / "airnet.pt")

    torch.manual_seed(1)
    fresh = models.create("airnet", num_classes=10, in_chans=3, imgsz=32, width=0.25).eval()
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(x[300:310]), model(x[300:310]))
        fresh.load_state_dict(torch.load(tmp_path / "airnet.pt", weights_only=True))
        assert torch.equal(fresh(x[300:310]), model(x[300:310]))
    to_onnx(fresh, tmp_path / "airnet.onnx", in_chans=3, imgsz=32)  # raises unless onnxruntime matches torch


@pytest.mark.parametrize("size", [9, 28])
def test_gray_inputs_at_the_smallest_and_mnist_size(size):
    model = models.create("airnet", num_classes=4, in_chans=1, imgsz=size)
    assert model.whiten.weight.shape == (8, 1, 2, 2)
    model.init_from_data(torch.randn(16, 1, size, size).cumsum(-1))
    assert model.eval()(torch.randn(2, 1, size, size)).shape == (2, 4)
