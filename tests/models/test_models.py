"""Every registered model, at every input size the zoo promises: shapes, gradients, finiteness, export."""

import pytest
import torch

from cnnfit import models
from cnnfit.errors import CnnfitError

ALL = models.list_models()


def _build(name, size, chans, classes=7):
    torch.manual_seed(0)
    model = models.create(name, num_classes=classes, in_chans=chans, imgsz=size)
    for m in model.modules():  # zero-initialised residual BNs would block gradients to the convs before them
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.weight is not None:
            torch.nn.init.ones_(m.weight)
    return model


@pytest.mark.parametrize("size", [28, 32, 64, 224])
@pytest.mark.parametrize("name", ALL)
def test_logits_and_a_gradient_for_every_parameter(name, size):
    for chans in (1, 3) if size < 224 else (3,):  # 224 px is ImageNet-sized: RGB (gray differs only in conv1)
        model = _build(name, size, chans)
        out = model(torch.randn(2, chans, size, size))
        assert out.shape == (2, 7), f"{name} at {size} px, {chans} ch gave {tuple(out.shape)}"
        assert torch.isfinite(out).all()
        torch.nn.functional.cross_entropy(out, torch.tensor([1, 5])).backward()
        dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        assert not dead, f"{name} at {size} px, {chans} ch: no gradient for {dead[:5]}"
        bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
        assert not bad, f"{name}: non-finite gradient in {bad[:5]}"
        assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 7


@pytest.mark.parametrize("name", ALL)
def test_minimum_size_is_declared_and_enforced(name):
    size = models.min_size(name)
    assert size <= 28, f"{name} must take MNIST-sized input"
    model = models.create(name, num_classes=3, in_chans=1, imgsz=size).eval()
    assert model(torch.randn(1, 1, size, size)).shape == (1, 3)
    with pytest.raises(CnnfitError, match=rf"{name} needs inputs of at least {size} px, got {size - 1}; set imgsz="):
        models.create(name, num_classes=3, in_chans=1, imgsz=size - 1)


# Lite1/2 are Lite0's code at other widths and depths (10 s each to export): their ONNX check runs with -m slow
SAME_CODE_AS_LITE0 = ("efficientnet_lite1", "efficientnet_lite2")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SAME_CODE_AS_LITE0 else n
                                  for n in ALL])
def test_onnx_export_matches_torch(name, tmp_path):
    from cnnfit.export import to_onnx

    model = _build(name, 32, 3).eval()
    path = to_onnx(model, tmp_path / f"{name}.onnx", in_chans=3, imgsz=32)  # checks onnxruntime against torch
    assert path.stat().st_size > 1000 and not list(tmp_path.glob(".*.tmp"))


def test_googlenet_aux_heads_train_with_the_main_head():
    model = models.create("googlenet", num_classes=4, in_chans=3, imgsz=64, aux=True)
    logits, *aux = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 4) and len(aux) == 2 and all(a.shape == (2, 4) for a in aux)
    assert model.eval()(torch.randn(2, 3, 64, 64)).shape == (2, 4)


def test_unknown_model_and_option_name_the_fix():
    with pytest.raises(CnnfitError, match="unknown model 'resnet81'; did you mean 'resnet18'.*choose from: .*alexnet"):
        models.create("resnet81", num_classes=2)
    with pytest.raises(CnnfitError, match="resnet18 has no option bn; it takes: "):
        models.create("resnet18", num_classes=2, bn=True)


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="registered twice"):
        models.register(models.registry._BUILDERS["lenet5"])
