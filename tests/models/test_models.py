import pytest
import torch

from cnnfit import models
from cnnfit.errors import CnnfitError


@pytest.mark.parametrize("name", models.list_models())
@pytest.mark.parametrize("size, chans", [(28, 1), (32, 3), (64, 3)])
def test_forward_backward_every_model(name, size, chans):
    torch.manual_seed(0)
    model = models.create(name, num_classes=7, in_chans=chans, **models.builder_kwargs(name, imgsz=size))
    x = torch.randn(2, chans, size, size)
    out = model(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 7


@pytest.mark.parametrize("name", models.list_models())
def test_minimum_size_works(name):
    size = models.min_size(name)
    model = models.create(name, num_classes=3, in_chans=1, **models.builder_kwargs(name, imgsz=size)).eval()
    assert model(torch.randn(1, 1, size, size)).shape == (1, 3)


def test_unknown_model_lists_choices():
    with pytest.raises(CnnfitError, match="unknown model 'resnet81'.*choose from: lenet5, resnet18, simplecnn"):
        models.create("resnet81", num_classes=2)


def test_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="registered twice"):
        models.register(models.registry._BUILDERS["lenet5"])


def test_resnet_stem_follows_input_size():
    small = models.create("resnet18", num_classes=2, imgsz=32)
    large = models.create("resnet18", num_classes=2, imgsz=224)
    assert small.conv1.kernel_size == (3, 3) and large.conv1.kernel_size == (7, 7)
