import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cnnfit import models
from cnnfit.errors import CnnfitError

SMALL = ["simplecnn", "fastnet", "lenet5"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def has(model: nn.Module, kind: type[nn.Module]) -> bool:
    return any(isinstance(m, kind) for m in model.modules())


def test_simplecnn_defaults_are_unchanged():
    model = models.create("simplecnn", num_classes=10, in_chans=1)
    assert n_params(model) == 4_743_050  # measured before the width/bn/act options existed
    assert list(model.state_dict()) == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                                        "fc.weight", "fc.bias", "head.weight", "head.bias"]
    assert (model.drop1.p, model.drop2.p, model.fc.out_features, model.grid) == (0.25, 0.5, 512, 12)
    assert has(model, nn.ReLU) and not has(model, nn.BatchNorm2d)


def test_lenet5_defaults_are_unchanged():
    model = models.create("lenet5", num_classes=10, in_chans=1)
    assert n_params(model) == 61_706  # measured before the act/width/bn/dropout options existed
    assert len(model.state_dict()) == 10 and has(model, nn.ReLU) and not has(model, nn.BatchNorm2d)
    assert model.drop.p == 0.0


@pytest.mark.parametrize("name, chans", [("simplecnn", [16, 32, 256]), ("lenet5", [3, 8, 42]),
                                         ("fastnet", [16, 32, 128])])
def test_width_scales_channels(name, chans):
    model = models.create(name, num_classes=10, in_chans=1, width=0.5)
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [convs[0], convs[1], model.head.in_features] == chans


@pytest.mark.parametrize("name", ["simplecnn", "lenet5"])
def test_bn_adds_batchnorm_after_each_conv(name):
    model = models.create(name, num_classes=10, in_chans=1, bn=True)
    assert isinstance(model.bn1, nn.BatchNorm2d) and isinstance(model.bn2, nn.BatchNorm2d)
    assert model.conv1.bias is None  # BN's shift makes it redundant
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name, default", [("simplecnn", nn.ReLU), ("lenet5", nn.ReLU), ("fastnet", nn.GELU)])
def test_act_swaps_every_activation(name, default):
    assert has(models.create(name, num_classes=10), default)
    model = models.create(name, num_classes=10, act="tanh")
    assert has(model, nn.Tanh) and not has(model, default)


def test_dropout_option():
    assert models.create("simplecnn", num_classes=2, dropout=0.2).drop2.p == 0.2
    assert models.create("lenet5", num_classes=2, dropout=0.3).drop.p == 0.3
    with pytest.raises(CnnfitError, match="fastnet has no option dropout"):
        models.create("fastnet", num_classes=2, dropout=0.1)


@pytest.mark.parametrize("name", SMALL)
def test_large_inputs_give_logits(name):
    model = models.create(name, num_classes=4, in_chans=3, imgsz=224).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 4)


@pytest.mark.parametrize("name", SMALL)
def test_stages_hold_every_backbone_parameter(name):
    model = models.create(name, num_classes=3, **({} if name == "fastnet" else {"bn": True}))
    staged = {f"{s}.{n}" for s in model.stage_names for n, _ in model.get_submodule(s).named_parameters()}
    assert staged | {"head.weight", "head.bias"} == {n for n, _ in model.named_parameters()}
    assert model.tv_renames is None and isinstance(model.head, nn.Linear)


def test_fastnet_is_cheap():
    model = models.create("fastnet", num_classes=10, in_chans=1).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 1, 28, 28))
    assert counter.get_total_flops() < 60e6  # ~58 MFLOPs: about 2 min per Fashion-MNIST epoch on 2 CPU cores


def test_fastnet_crop_ignores_the_border_and_saves_work():
    """crop=2 sees only the central 24x24 of a 28 px image: a changed border changes nothing, and it costs
    0.88 of the FLOPs (the last group runs at 3x3 px either way). Too large a crop is refused with the
    largest that fits."""
    torch.manual_seed(0)
    full = models.create("fastnet", num_classes=10, in_chans=1, imgsz=28).eval()
    cropped = models.create("fastnet", num_classes=10, in_chans=1, imgsz=28, crop=2).eval()
    cropped.load_state_dict(full.state_dict())  # same parameters: cropping adds none
    x = torch.randn(3, 1, 28, 28)
    noisy_border = x.clone()
    noisy_border[..., :2, :] = noisy_border[..., -2:, :] = noisy_border[..., :, :2] = noisy_border[..., :, -2:] = 9.0
    with torch.no_grad():
        assert torch.equal(cropped(x), cropped(noisy_border))
        assert torch.allclose(cropped(x), full(x[..., 2:-2, 2:-2]))
        assert not torch.allclose(full(x), full(noisy_border))
    flops = []
    for model in (full, cropped):
        with FlopCounterMode(display=False) as counter:
            model(x[:1])
        flops.append(counter.get_total_flops())
    assert 0.8 < flops[1] / flops[0] < 0.92
    tight = models.create("fastnet", num_classes=10, in_chans=1, imgsz=28, crop=10)  # 8 px: just enough
    assert tight(x).shape == (3, 10)
    with pytest.raises(CnnfitError, match="crop=11 leaves 6 px of a 28 px input and needs 8; use crop=10 or less"):
        models.create("fastnet", num_classes=10, in_chans=1, imgsz=28, crop=11)


def test_fastnet_with_two_blocks_drops_the_last_group_and_a_third_of_the_work(tmp_path):
    """blocks=2 ends at block2: no block3 parameters, ~0.65 of the FLOPs at 28 px, block3 not a stage to freeze,
    and its weights reload into a fresh blocks=2 net; other counts are refused with the choices."""
    from cnnfit.engine.finetune import resolve_freeze

    three = models.create("fastnet", num_classes=10, in_chans=1, imgsz=28, width=0.5)
    two = models.create("fastnet", num_classes=10, in_chans=1, imgsz=28, width=0.5, blocks=2)
    assert not any(k.startswith("block3") for k in two.state_dict())
    assert resolve_freeze(two, "backbone") == ["stem", "block1", "block2"]
    flops = []
    for model in (three.eval(), two.eval()):
        with FlopCounterMode(display=False) as counter:
            model(torch.randn(1, 1, 28, 28))
        flops.append(counter.get_total_flops())
    assert 0.55 < flops[1] / flops[0] < 0.75
    torch.save(two.state_dict(), tmp_path / "two.pt")
    again = models.create("fastnet", num_classes=10, in_chans=1, imgsz=28, width=0.5, blocks=2)
    again.load_state_dict(torch.load(tmp_path / "two.pt"))
    with pytest.raises(CnnfitError, match="fastnet has 2 or 3 conv groups, not blocks=4"):
        models.create("fastnet", num_classes=10, blocks=4)


def test_fastnet_learns_digits():
    """200 Adam steps of 16 images (~2.5 passes over 1300 digits, ~7 s on 2 cores) reach ~98% held out."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16  # (1797, 1, 8, 8), pixels 0..16
    x = F.interpolate(x, size=28, mode="bilinear", align_corners=False)  # (1797, 1, 28, 28)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(digits.target)
    perm = torch.randperm(len(x), generator=g)
    train, test = perm[:1300], perm[1300:]
    model = models.create("fastnet", num_classes=10, in_chans=1, imgsz=28)
    steps = 200
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)  # linear decay: a stable last step
    for _ in range(steps):
        idx = train[torch.randint(len(train), (16,), generator=g)]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    assert acc > 0.9
