"""Model summaries as data: counts checked by hand, the zoo table, a layer table of a known model."""

import torch.nn as nn

from cnnfit import models
from cnnfit.models.summary import count_flops, count_params, layer_table, zoo_table


def test_count_params_matches_a_hand_count():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    assert count_params(model) == (3 * 4 * 9 + 4) + (4 + 4) + (144 * 5 + 5)


def test_count_flops_of_one_conv_is_analytic():
    cin, cout, k, size = 3, 8, 3, 16
    conv = nn.Conv2d(cin, cout, k, padding=1, bias=False)  # "same" padding: the output is also 16x16
    assert conv.training
    assert count_flops(conv, in_chans=cin, imgsz=size) == 2 * cin * cout * k * k * size * size
    assert conv.training  # the training flag comes back


def test_zoo_table_has_a_row_per_model():
    rows = zoo_table(imgsz=12, in_chans=1, num_classes=5)
    assert [r["name"] for r in rows] == models.list_models()
    for r in rows:
        assert r["params"] > 0 and r["options"] == models.options_of(r["name"])
        if r["min_size"] <= 12:
            assert r["flops"] > 0 and r["note"] is None, r
        else:
            assert r["flops"] is None and r["note"] == f"needs imgsz >= {r['min_size']}", r


def test_layer_table_of_simplecnn_at_28px():
    model = models.create("simplecnn", num_classes=10, in_chans=1)
    model.conv1.requires_grad_(False)
    table = layer_table(model, in_chans=1, imgsz=28)
    hand = {"conv1", "conv2", "drop1", "fc", "drop2", "head"}  # activations and Identity bn rows may sit between
    got = [(r["name"], r["type"], r["shape"]) for r in table["rows"] if r["name"] in hand]
    assert got == [
        ("conv1", "Conv2d", (32, 26, 26)),  # 3x3 valid: 28 - 2
        ("conv2", "Conv2d", (64, 24, 24)),  # 26 - 2
        ("drop1", "Dropout", (64, 12, 12)),  # after the 2x2 max-pool
        ("fc", "Linear", (512,)),
        ("drop2", "Dropout", (512,)),
        ("head", "Linear", (10,)),
    ]
    assert table["rows"][0]["params"] == 32 * 9 + 32
    assert sum(r["params"] for r in table["rows"]) == table["params"] == count_params(model)
    assert table["frozen"] == 32 * 9 + 32 and table["trainable"] == table["params"] - table["frozen"]
    assert table["output"] == (10,) and model.training


class _Split(nn.Module):
    def forward(self, x):
        return x.chunk(2, dim=1)


class _TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.split = _Split()
        self.act = nn.ReLU()

    def forward(self, x):
        a, b = self.split(self.conv(x))
        return self.act(a).mean((2, 3)), self.act(b).flatten(1)  # the same ReLU, called twice


def test_layer_table_handles_tuples_and_repeated_calls():
    table = layer_table(_TwoHeads(), in_chans=1, imgsz=5)
    assert [(r["name"], r["shape"]) for r in table["rows"]] == [
        ("conv", (4, 5, 5)), ("split", ((2, 5, 5), (2, 5, 5))), ("act", (2, 5, 5)), ("act", (2, 5, 5))]
    assert table["output"] == ((2,), (50,))
