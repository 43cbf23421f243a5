"""The classic ImageNet families (AlexNet, VGG, GoogLeNet, MobileNetV2): torchvision's architecture for
inputs of 96 px and up, a small-input variant below, and the options each builder takes.

Parameter counts and key shapes are checked on the meta device: 140M-parameter VGGs cost nothing there."""

import pytest
import torch
import torch.nn as nn

from cnnfit import models
from cnnfit.errors import CnnfitError

VGGS = [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
CLASSIC = ["alexnet", *VGGS, "googlenet", "mobilenet_v2"]

# torchvision's published num_params (models docs, IMAGENET1K_V1 weights), 1000 classes
TORCHVISION_PARAMS = {
    "alexnet": 61_100_840, "vgg11": 132_863_336, "vgg11_bn": 132_868_840, "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736, "vgg16": 138_357_544, "vgg16_bn": 138_365_992, "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248, "googlenet": 6_624_904, "mobilenet_v2": 3_504_872,
}

# a few state_dict entries of torchvision's models (names and shapes read from torchvision/models/*.py),
# and how many entries its state_dict has, so an extra or missing layer shows up too
TORCHVISION_KEYS = {
    "alexnet": (16, {"features.0.weight": (64, 3, 11, 11), "features.10.weight": (256, 256, 3, 3),
                     "classifier.1.weight": (4096, 9216), "classifier.4.bias": (4096,),
                     "classifier.6.weight": (1000, 4096)}),
    "vgg11": (22, {"features.3.weight": (128, 64, 3, 3), "features.18.weight": (512, 512, 3, 3),
                   "classifier.0.weight": (4096, 25088)}),
    "vgg16": (32, {"features.0.weight": (64, 3, 3, 3), "features.28.weight": (512, 512, 3, 3),
                   "classifier.3.weight": (4096, 4096), "classifier.6.weight": (1000, 4096),
                   "classifier.6.bias": (1000,)}),
    "vgg16_bn": (97, {"features.1.running_var": (64,), "features.40.weight": (512, 512, 3, 3),
                      "features.41.num_batches_tracked": (), "classifier.6.weight": (1000, 4096)}),
    "googlenet": (344, {"conv1.conv.weight": (64, 3, 7, 7), "conv1.bn.running_mean": (64,),
                        "conv3.conv.weight": (192, 64, 3, 3), "inception3a.branch1.conv.weight": (64, 192, 1, 1),
                        "inception3a.branch3.1.conv.weight": (32, 16, 3, 3),
                        "inception4a.branch2.1.conv.weight": (208, 96, 3, 3),
                        "inception5b.branch4.1.bn.weight": (128,), "fc.weight": (1000, 1024)}),
    "mobilenet_v2": (314, {"features.0.0.weight": (32, 3, 3, 3), "features.1.conv.0.0.weight": (32, 1, 3, 3),
                           "features.1.conv.1.weight": (16, 32, 1, 1), "features.2.conv.1.0.weight": (96, 1, 3, 3),
                           "features.17.conv.2.weight": (320, 960, 1, 1), "features.18.0.weight": (1280, 320, 1, 1),
                           "features.18.1.running_var": (1280,), "classifier.1.weight": (1000, 1280)}),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tiny batches gain nothing from intra-op threads, and on busy shared cores two spinning threads
    made a 0.2 s GoogLeNet step take 13 s; restored afterwards for the other test modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def meta(name: str, **options) -> nn.Module:
    """The ImageNet-size model on the meta device: shapes without memory or init time."""
    with torch.device("meta"):
        return models.create(name, num_classes=1000, in_chans=3, imgsz=224, **options)


def small(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    return models.create(name, num_classes=10, in_chans=1, imgsz=28, **options)


def rename(state_dict: dict, renames: dict[str, str]) -> dict:
    """Swap each key prefix of `renames` (`tv_renames`, or its inverse), leave every other key as is."""
    out = {}
    for key, value in state_dict.items():
        prefix = next((p for p in renames if key.startswith(p)), None)
        out[renames[prefix] + key[len(prefix):] if prefix else key] = value
    return out


def torchvision_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in rename(model.state_dict(), model.tv_renames).items()}


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", CLASSIC)
def test_parameter_count_matches_torchvision(name):
    assert sum(p.numel() for p in meta(name).parameters()) == TORCHVISION_PARAMS[name]


def test_googlenet_aux_heads_match_torchvision():
    model = meta("googlenet", aux=True)
    assert sum(p.numel() for p in model.parameters()) == 13_004_888  # torchvision's aux_logits=True
    shapes = torchvision_shapes(model)
    assert shapes["aux1.conv.conv.weight"] == (128, 512, 1, 1) and shapes["aux2.conv.conv.weight"] == (128, 528, 1, 1)
    assert shapes["aux1.fc1.weight"] == (1024, 2048) and shapes["aux2.fc2.weight"] == (1000, 1024)


@pytest.mark.parametrize("name", TORCHVISION_KEYS)
def test_state_dict_uses_torchvision_names(name):
    count, expected = TORCHVISION_KEYS[name]
    shapes = torchvision_shapes(meta(name))
    assert len(shapes) == count
    assert {k: shapes.get(k) for k in expected} == expected


def test_renamed_state_dict_round_trips_strictly():
    """What a torchvision checkpoint converter does: rename to torchvision's keys and back, load with strict=True."""
    model = small("googlenet", aux=True)
    tv = rename(model.state_dict(), model.tv_renames)
    assert "fc.weight" in tv and not any(k.startswith("head.") for k in tv)
    inverse = {theirs: ours for ours, theirs in model.tv_renames.items()}
    small("googlenet", aux=True).load_state_dict(rename(tv, inverse), strict=True)


@pytest.mark.parametrize("name", CLASSIC)
def test_small_variant_runs_on_mnist_and_down_to_min_size(name):
    size = models.min_size(name)
    assert size <= 28
    model = small(name).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
        assert model(torch.randn(1, 1, size, size)).shape == (1, 10)
    with pytest.raises(CnnfitError, match=f"at least {size} px"):
        models.create(name, num_classes=10, in_chans=1, imgsz=size - 1)


def test_min_size_is_tight_where_pooling_sets_it():
    size = models.min_size("alexnet")
    with pytest.raises(RuntimeError):
        small("alexnet").eval()(torch.randn(1, 1, size - 1, size - 1))


@pytest.mark.parametrize("name, stem_stride", [("alexnet", 4), ("vgg11", 1), ("googlenet", 2), ("mobilenet_v2", 2)])
def test_imagenet_variant_from_96_px(name, stem_stride):
    """At 96 px the ImageNet architecture (strided stem, all pools) still yields logits; at 95, the small one."""
    torch.manual_seed(0)
    model = models.create(name, num_classes=5, in_chans=3, imgsz=96).eval()
    assert convs(model)[0].stride == (stem_stride, stem_stride)
    assert not any(isinstance(m, nn.Identity) for m in model.modules())  # no dropped pool
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 5)
    assert convs(models.create(name, num_classes=5, imgsz=95))[0].stride == (1, 1)


def test_imagenet_variant_at_224_px():
    model = models.create("googlenet", num_classes=4, imgsz=224).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 4)


def test_small_stems_stride_as_documented():
    """Small variants downsample 8x (AlexNet, GoogLeNet, MobileNetV2) instead of 32x; VGG keeps its pools, rounding up."""
    assert small("alexnet").features[0].stride == (1, 1)
    assert small("vgg11").features[2].ceil_mode and not models.create("vgg11", num_classes=2, imgsz=96).features[2].ceil_mode
    assert isinstance(small("googlenet").maxpool1, nn.Identity) and small("googlenet").conv1.conv.stride == (1, 1)
    mobile = small("mobilenet_v2")
    assert mobile.features[0][0].stride == (1, 1) and mobile.features[2].conv[1][0].stride == (1, 1)
    assert mobile.features[4].conv[1][0].stride == (2, 2)


def test_googlenet_aux_outputs_follow_mode():
    model = small("googlenet", aux=True).train()
    out = model(torch.randn(2, 1, 32, 32))
    assert isinstance(out, tuple) and [o.shape for o in out] == [(2, 10)] * 3
    sum(o.logsumexp(1).sum() for o in out).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert model.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    plain = small("googlenet").train()
    assert isinstance(plain(torch.randn(2, 1, 32, 32)), torch.Tensor)
    assert not any(k.startswith("aux") for k in plain.state_dict())
    assert not any(n.startswith("aux") for n, _ in plain.named_modules())


@pytest.mark.parametrize("name", CLASSIC)
def test_stages_cover_the_backbone_in_order(name):
    model = meta(name, **({"aux": True} if name == "googlenet" else {}))
    seen: list[nn.Parameter] = []
    for stage in model.stage_names:
        seen += list(model.get_submodule(stage).parameters())
    extra = {id(p) for n, p in model.named_parameters() if n.startswith(("head.", "aux1.", "aux2."))}
    assert len(seen) == len({id(p) for p in seen}), "stages overlap"
    assert {id(p) for p in seen} | extra == {id(p) for p in model.parameters()} and not extra & {id(p) for p in seen}
    order = [n for n, _ in model.named_parameters() if not n.startswith(("aux1.", "aux2."))]
    firsts = [order.index(next(n for n, _ in model.named_parameters() if n.startswith(s + "."))) for s in
              model.stage_names]
    assert firsts == sorted(firsts)


@pytest.mark.parametrize("name", ["alexnet", "vgg11_bn", "googlenet", "mobilenet_v2"])
def test_width_scales_channels(name):
    default, half = small(name), small(name, width=0.5)
    assert convs(half)[0].out_channels == convs(default)[0].out_channels // 2
    if name != "mobilenet_v2":  # torchvision keeps MobileNetV2's 1280 final features when width < 1
        assert convs(half)[-1].out_channels == convs(default)[-1].out_channels // 2
    assert sum(p.numel() for p in half.parameters()) < sum(p.numel() for p in default.parameters())


@pytest.mark.parametrize("name, default_act", [("alexnet", nn.ReLU), ("vgg13", nn.ReLU), ("googlenet", nn.ReLU),
                                               ("mobilenet_v2", nn.ReLU6)])
def test_act_and_dropout_replace_every_module(name, default_act):
    assert any(isinstance(m, default_act) for m in small(name).modules())
    model = small(name, act="gelu", dropout=0.1)
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules())
    assert any(isinstance(m, nn.GELU) for m in model.modules())
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.1}
    with pytest.raises(CnnfitError, match="unknown activation 'swish'"):
        small(name, act="swish")


def test_builders_refuse_options_they_do_not_have():
    with pytest.raises(CnnfitError, match="vgg16 has no option aux"):
        models.create("vgg16", num_classes=2, aux=True)
    assert "bn" not in models.options_of("vgg16")  # the _bn variants are separate models


def test_init_follows_torchvision():
    vgg = small("vgg11")
    assert abs(vgg.head.weight.std().item() - 0.01) < 0.002 and not vgg.features[0].bias.any()
    inception = small("googlenet")
    assert abs(inception.conv3.conv.weight.std().item() - 0.01) < 0.002  # trunc_normal_(std=0.01, a=-2, b=2)
    mobile = small("mobilenet_v2")
    assert abs(mobile.head.weight.std().item() - 0.01) < 0.002 and not mobile.head.bias.any()
