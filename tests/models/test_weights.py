import pytest
import torch
from safetensors.torch import save_file

from cnnfit import models
from cnnfit.errors import CnnfitError
from cnnfit.models.weights import from_torchvision, load_pretrained, read_state_dict, to_torchvision


def _resnet18(classes=10, chans=3, seed=0):
    torch.manual_seed(seed)
    model = models.create("resnet18", num_classes=classes, in_chans=chans, imgsz=32)
    for m in model.modules():  # non-trivial BN statistics, so loading them is checked too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def test_torchvision_named_resnet18_loads_exactly(tmp_path):
    src = _resnet18(seed=1)
    tv = to_torchvision(src.state_dict(), src)
    assert "fc.weight" in tv and not any(k.startswith("head.") for k in tv)
    assert {"conv1.weight", "layer4.1.bn2.running_var", "layer2.0.downsample.0.weight"} <= set(tv)
    torch.save(tv, tmp_path / "resnet18.pth")

    dst = _resnet18(seed=2)
    report = load_pretrained(dst, tmp_path / "resnet18.pth")
    assert not report.missing and not report.unexpected and not report.mismatched and not report.new_head
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(src(x), dst(x))
    assert from_torchvision(tv, dst).keys() == src.state_dict().keys()


def test_safetensors_ddp_prefix_and_wrappers_are_read(tmp_path):
    src = _resnet18(seed=1)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    save_file(sd, tmp_path / "w.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "lightning.ckpt")
    for path in (tmp_path / "w.safetensors", tmp_path / "lightning.ckpt"):
        assert read_state_dict(path).keys() == sd.keys()


def test_head_is_replaced_and_input_conv_adapted_when_shapes_differ(tmp_path):
    src = _resnet18(classes=1000, chans=3, seed=1)
    torch.save(to_torchvision(src.state_dict(), src), tmp_path / "imagenet.pth")
    dst = _resnet18(classes=5, chans=1, seed=2)
    report = load_pretrained(dst, tmp_path / "imagenet.pth")
    assert report.new_head == ["head.weight", "head.bias"]
    assert report.adapted == ["conv1.weight 3->1 channels"]
    assert torch.allclose(dst.conv1.weight, src.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(dst.layer3[1].conv2.weight, src.layer3[1].conv2.weight)
    # a gray image through the adapted filters equals its RGB copy through the originals (up to the head)
    gray = torch.rand(2, 1, 32, 32)
    assert torch.allclose(dst.conv1(gray), src.conv1(gray.expand(-1, 3, -1, -1)), atol=1e-5)


def test_foreign_or_broken_weights_are_refused_with_the_reason(tmp_path):
    lenet = models.create("lenet5", num_classes=10, in_chans=1)
    torch.save(lenet.state_dict(), tmp_path / "lenet.pth")
    with pytest.raises(CnnfitError, match=r"match only \d+ of \d+ tensors.*another architecture"):
        load_pretrained(_resnet18(), tmp_path / "lenet.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CnnfitError, match="cannot be read"):
        load_pretrained(_resnet18(), tmp_path / "junk.pth")
    with pytest.raises(CnnfitError, match="not found"):
        load_pretrained(_resnet18(), tmp_path / "missing.pth")


def test_partial_match_is_reported_not_silent(tmp_path):
    src = _resnet18(seed=1)
    sd = src.state_dict()
    del sd["layer4.1.conv2.weight"]
    sd["extra.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "partial.pt")
    report = load_pretrained(_resnet18(seed=2), tmp_path / "partial.pt")
    assert report.missing == ["layer4.1.conv2.weight"] and report.unexpected == ["extra.weight"]
    assert "1 missing: layer4.1.conv2.weight" in report.summary()


def test_cnnfit_checkpoint_with_other_class_names_gets_a_new_head(tmp_path):
    src = _resnet18(classes=3, seed=1)
    torch.save({"model": "resnet18", "classes": ["a", "b", "c"], "state_dict": src.state_dict()}, tmp_path / "best.pt")
    same = load_pretrained(_resnet18(classes=3, seed=2), tmp_path, classes=["a", "b", "c"])
    other = load_pretrained(_resnet18(classes=3, seed=2), tmp_path, classes=["x", "y", "z"])
    assert not same.new_head and other.new_head == ["head.weight", "head.bias"]
