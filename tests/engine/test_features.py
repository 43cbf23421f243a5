"""A frozen backbone's features: what the head receives, for every model whose output is its head applied to them,
and a model that trains its head on them while its state_dict stays the whole model's."""

import pytest
import torch

from cnnfit import models
from cnnfit.engine.features import OnFeatures, head_inputs


def _batches(n: int = 20, size: int = 32, batch: int = 8):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet18", "mobilenet_v2", "simplecnn"])
def test_the_head_applied_to_the_features_gives_the_models_output(name):
    model = models.create(name, num_classes=3, imgsz=32).eval()
    batches = _batches()
    features = head_inputs(model, batches)
    assert features is not None and features.shape[0] == 20 and features.ndim == 2
    with torch.no_grad():
        want = torch.cat([model(x) for x, _ in batches])
        assert torch.allclose(OnFeatures(model)(features), want, atol=1e-5)


def test_a_model_that_post_processes_its_head_has_no_features():
    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 3)

        def forward(self, x):
            return 2 * self.head(self.body(x))  # not head(features): training the head alone would be wrong

    assert head_inputs(Scaled(), _batches()) is None
    assert head_inputs(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 3)), _batches()) is None


def test_training_on_features_moves_the_head_only_and_saves_the_whole_model():
    model = models.create("resnet18", num_classes=3, imgsz=32)
    wrapped = OnFeatures(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    features = head_inputs(model, _batches())
    opt = torch.optim.SGD(model.head.parameters(), lr=0.5)
    torch.nn.functional.cross_entropy(wrapped(features), torch.zeros(20, dtype=torch.long)).backward()
    opt.step()
    saved = wrapped.state_dict()
    assert saved.keys() == before.keys()  # loads into a plain resnet18, as any checkpoint
    changed = {k for k in before if not torch.equal(before[k], saved[k])}
    assert changed == {"head.weight", "head.bias"}
    fresh = models.create("resnet18", num_classes=3, imgsz=32)
    OnFeatures(fresh).load_state_dict(saved)
    assert torch.equal(fresh.head.weight, model.head.weight)
