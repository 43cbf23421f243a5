import pytest
import torch
import torch.nn as nn

from cnnfit import models
from cnnfit.errors import CnnfitError
from cnnfit.models.resnet import PadShortcut

IMAGENET = ["resnet18", "resnet34", "resnet50"]
CIFAR = ["resnet20", "resnet32", "resnet44", "resnet56"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tv_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The state_dict as torchvision names it: `tv_renames` applied to key prefixes."""
    out = {}
    for key, value in model.state_dict().items():
        for ours, theirs in model.tv_renames.items():
            if key.startswith(ours):
                key = theirs + key[len(ours):]
        out[key] = tuple(value.shape)
    return out


@pytest.mark.parametrize("name, expected", [("resnet18", 11_689_512), ("resnet34", 21_797_672),
                                            ("resnet50", 25_557_032)])
def test_imagenet_param_counts_match_torchvision(name, expected):
    assert n_params(models.create(name, num_classes=1000, in_chans=3, imgsz=224)) == expected


@pytest.mark.parametrize("name, n_keys, keys", [
    ("resnet18", 122, {"fc.weight": (1000, 512), "fc.bias": (1000,), "conv1.weight": (64, 3, 7, 7),
                       "layer2.0.downsample.0.weight": (128, 64, 1, 1), "layer4.1.bn2.running_var": (512,)}),
    ("resnet34", 218, {"layer3.5.conv2.weight": (256, 256, 3, 3), "layer4.2.bn2.num_batches_tracked": (),
                       "layer4.0.downsample.1.weight": (512,)}),
    ("resnet50", 320, {"fc.weight": (1000, 2048), "layer1.0.downsample.0.weight": (256, 64, 1, 1),
                       "layer2.0.conv2.weight": (128, 128, 3, 3), "layer4.2.conv3.weight": (2048, 512, 1, 1),
                       "layer4.2.bn3.bias": (2048,), "layer3.5.conv1.weight": (256, 1024, 1, 1)}),
])
def test_state_dict_uses_torchvision_names(name, n_keys, keys):
    shapes = tv_shapes(models.create(name, num_classes=1000, in_chans=3, imgsz=224))
    assert len(shapes) == n_keys and not any(k.startswith("head.") for k in shapes)
    assert {k: shapes[k] for k in keys} == keys


def test_resnet50_is_v1_5_and_blocks_start_as_identity():
    model = models.create("resnet50", num_classes=10, imgsz=224)
    first = model.layer2[0]
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)  # v1.5: the 3x3 strides
    assert all((b.bn3.weight == 0).all() for layer in (model.layer1, model.layer4) for b in layer)
    assert (models.create("resnet18", num_classes=10).layer3[1].bn2.weight == 0).all()
    assert (models.create("resnet20", num_classes=10).layer1[0].bn2.weight == 1).all()  # paper init


@pytest.mark.parametrize("name", IMAGENET)
def test_stem_follows_imgsz(name):
    small, large = (models.create(name, num_classes=2, imgsz=s) for s in (95, 96))
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and large.conv1.stride == (2, 2)
    assert isinstance(large.maxpool, nn.MaxPool2d)
    assert models.create(name, num_classes=2).conv1.kernel_size == (7, 7)  # ImageNet default: imgsz=224


def test_large_stem_gives_logits_at_224():
    model = models.create("resnet18", num_classes=5, in_chans=1, imgsz=224).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 224, 224)).shape == (1, 5)


@pytest.mark.parametrize("name, n, expected_m", [("resnet20", 3, 0.27), ("resnet32", 5, 0.46), ("resnet44", 7, 0.66),
                                                 ("resnet56", 9, 0.85)])
def test_cifar_resnets_match_the_paper(name, n, expected_m):
    model = models.create(name, num_classes=10, in_chans=3)
    assert round(n_params(model) / 1e6, 2) == expected_m  # He et al. 2015, Table 6
    weighted = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == 6 * n + 2  # option A shortcuts add no layers
    assert [model.layer1[0].conv1.out_channels, model.layer2[0].conv1.out_channels,
            model.layer3[0].conv1.out_channels] == [16, 32, 64]
    assert not hasattr(model, "layer4") and model.tv_renames is None


def test_option_a_shortcut_subsamples_and_pads_with_zeros():
    x = torch.randn(2, 16, 7, 7)
    out = PadShortcut(stride=2, extra=16)(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, :16], x[:, :, ::2, ::2]) and not out[:, 16:].any()
    assert isinstance(models.create("resnet32", num_classes=10).layer3[0].downsample, PadShortcut)


@pytest.mark.parametrize("name", IMAGENET + CIFAR)
def test_stages_hold_every_backbone_parameter(name):
    model = models.create(name, num_classes=3, imgsz=32)
    staged = {f"{s}.{n}" for s in model.stage_names for n, _ in model.get_submodule(s).named_parameters()}
    assert staged | {"head.weight", "head.bias"} == {n for n, _ in model.named_parameters()}
    assert model.stage_names[:2] == ("conv1", "bn1") and isinstance(model.head, nn.Linear)


def test_width_scales_channels_and_keeps_names():
    base, half = (models.create("resnet50", num_classes=10, imgsz=224, width=w) for w in (1.0, 0.5))
    assert half.state_dict().keys() == base.state_dict().keys()
    assert half.layer1[0].conv1.weight.shape == (32, 32, 1, 1) and half.head.in_features == 1024
    wide = models.create("resnet20", num_classes=10, width=2.0)
    assert [wide.conv1.out_channels, wide.layer3[0].conv2.out_channels, wide.head.in_features] == [32, 128, 128]


def test_act_swaps_every_activation():
    for name in ("resnet18", "resnet50", "resnet20"):
        model = models.create(name, num_classes=10, act="gelu")
        assert not any(isinstance(m, nn.ReLU) for m in model.modules())
        assert any(isinstance(m, nn.GELU) for m in model.layer1[0].modules())


def test_options_the_family_lacks_are_refused():
    with pytest.raises(CnnfitError, match="resnet18 has no option dropout"):
        models.create("resnet18", num_classes=2, dropout=0.1)
    with pytest.raises(CnnfitError, match="resnet20 has no option bn"):
        models.create("resnet20", num_classes=2, bn=True)
