"""Models the user brings: a layers file (net.yaml) and their own module (pkg.mod:Class)."""

import re
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

from cnnfit import models
from cnnfit.errors import CnnfitError

DIGITS_NET = """
layers:
  - conv: {filters: 32, kernel: 3}   # 8x8
  - bn
  - relu
  - residual:                        # identity shortcut
      - conv: 32
      - bn
      - relu
  - pool: 2                          # 4x4
  - residual:                        # projection: 32 -> 64 channels, 4x4 -> 2x2
      - conv: {filters: 64, stride: 2}
      - bn
      - relu
  - dropout: 0.1
  - flatten
  - dense: 64
  - act: relu
"""


def _write(tmp_path, text, name="net.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_yaml_model_learns_digits(tmp_path):
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16  # (1797, 1, 8, 8) in [0, 1]
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x))
    train, test = order[:1400], order[1400:]
    net = _write(tmp_path, DIGITS_NET)
    model = models.create(net, num_classes=10, in_chans=1, **models.builder_kwargs(net, imgsz=8))
    assert isinstance(model.residual1.shortcut, nn.Identity)
    proj = model.residual2.shortcut[0]
    assert isinstance(proj, nn.Conv2d) and proj.stride == (2, 2) and (proj.in_channels, proj.out_channels) == (32, 64)
    assert model.conv1.bias is None and model.dense1.bias is not None  # no bias before bn only

    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    # 8x8 batches: thread hand-offs cost more than the math (20 ms vs up to 1 s a step on a busy 2-core box)
    torch.set_num_threads(1)
    try:
        for step in range(300):
            idx = train[torch.randint(len(train), (64,))]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        acc = (model(x[test]).argmax(1) == y[test]).float().mean().item()
    assert acc > 0.85, acc


def test_model_shape_and_names(tmp_path):
    net = _write(tmp_path, """
        layers:
          - conv: {filters: 8, stride: 2}  # 17 -> 9 px
          - gelu
          - pool: {type: avg}              # 9 -> 4 px
          - gpool                          # (8,)
          - residual: [dense: 4, bn]       # 8 -> 4 features
    """)
    model = models.create(net, num_classes=3, in_chans=2, imgsz=17)
    assert model.stage_names == ("conv1", "act1", "pool1", "gpool1", "residual1")
    assert model.tv_renames is None and model.global_pool is None  # gpool already made vectors
    assert isinstance(model.residual1.shortcut[0], nn.Linear)  # 8 -> 4 features: a Linear projection, then bn
    assert model(torch.randn(5, 2, 17, 17)).shape == (5, 3)
    assert model.head.in_features == 4 and model.head.out_features == 3


def test_maps_are_pooled_before_the_head(tmp_path):
    net = _write(tmp_path, "layers: [conv: 6, relu]")
    model = models.create(net, num_classes=2, in_chans=3, imgsz=10)
    assert model.head.in_features == 6 and model(torch.randn(1, 3, 10, 10)).shape == (1, 2)


def test_layers_list_rebuilds_without_the_file(tmp_path):
    net = _write(tmp_path, DIGITS_NET)
    kwargs = models.builder_kwargs(net, imgsz=16)
    assert kwargs["imgsz"] == 16 and kwargs["layers"][0] == {"conv": {"filters": 32, "kernel": 3}}
    saved = tmp_path / "kwargs.pt"
    torch.save(kwargs, saved)
    first = models.create(net, num_classes=10, in_chans=3, **kwargs)
    (tmp_path / "net.yaml").unlink()
    second = models.create(net, num_classes=10, in_chans=3, **torch.load(saved, weights_only=True))
    assert str(first) == str(second)
    second.load_state_dict(first.state_dict())


def test_custom_names_in_the_registry(tmp_path):
    net = _write(tmp_path, "layers: [conv: 4]")
    models.check_name(net)
    assert models.min_size(net) == 1 and models.options_of(net) == ["layers"]
    assert net not in models.list_models()
    with pytest.raises(CnnfitError, match="pass imgsz"):
        models.create(net, num_classes=2)
    with pytest.raises(CnnfitError, match="has no option width; a layers file takes its arguments inside the file"):
        models.create(net, num_classes=2, imgsz=8, width=2)


@pytest.mark.parametrize("text, imgsz, message", [
    ("layers: [conv: 8, bnn]", 28, "net.yaml: layer 2 has unknown type 'bnn'; did you mean 'bn'? choose from: conv,"),
    ("layers: [{conv: {filters: 8, kernal: 5}}]", 28,
     "net.yaml: layer 1 (conv) has no argument 'kernal'; did you mean 'kernel'? it takes: filters, kernel,"),
    ("layers: [conv: {kernel: 3}]", 28, "net.yaml: layer 1 (conv) needs filters, e.g. conv: {filters: 32}"),
    ("layers: [dropout: 1.5]", 28, "net.yaml: layer 1 (dropout) has p=1.5; p must be a number in [0, 1)"),
    ("layers: [act: swish]", 28, "net.yaml: layer 1 (act) has name='swish'; name must be one of relu,"),
    ("layers: [flatten: 2]", 28, "net.yaml: layer 1 (flatten) takes no arguments; write it as `flatten`"),
    ("layers: [{conv: 8, bn: null}]", 28, "net.yaml: layer 1 is {'conv': 8, 'bn': None}; write a name such as bn"),
    ("layers: [conv: 8, residual: [conv: 8, pol]]", 28,
     "net.yaml: layer 2.2 has unknown type 'pol'; did you mean 'pool'"),
    ("layers: [pool, pool, pool, pool, pool]", 28,
     "net.yaml: layer 5 (pool) makes the 1x1 map empty at imgsz=28; remove a pool or raise imgsz"),
    ("layers: [conv: {filters: 8, kernel: 5, padding: valid}]", 4,
     "net.yaml: layer 1 (conv) makes the 4x4 map empty at imgsz=4; use padding: same"),
    ("layers: [conv: 8, dense: 10]", 28, "net.yaml: layer 2 (dense) needs a vector but gets a 8x28x28 map; "
                                         "put flatten or gpool before it"),
    ("layers: [flatten, conv: 8]", 4, "net.yaml: layer 2 (conv) needs a (C, H, W) map but gets a vector of 48"),
    ("layers: [residual: [conv: 8, gpool]]", 8, "net.yaml: layer 1 (residual) turns a 3x8x8 input into 8; "
                                                "a block must keep a map a map"),
    ("layers: [residual: [conv: {filters: 8, padding: valid}]]", 8,
     "net.yaml: layer 1 (residual) turns the 8x8 map into 6x6, which no strided 1x1 shortcut matches"),
    ("layers: [conv: {filters: 8, groups: 3}]", 8, "net.yaml: layer 1 (conv) has groups=3, which must divide"),
    ("layers: [conv: {filters: 8}", 28, "net.yaml is not valid YAML ("),
    ("conv: 8", 28, "net.yaml must hold a `layers:` list"),
    ("layers: [conv: 8]\nname: mine", 28, "net.yaml has unknown key name; a layers file holds only `layers:`"),
    ("layers: []", 28, "net.yaml: `layers:` must be a non-empty list"),
])
def test_layers_file_errors_name_layer_and_fix(tmp_path, text, imgsz, message):
    net = _write(tmp_path, text)
    with pytest.raises(CnnfitError, match=re.escape(message)):
        models.create(net, num_classes=3, in_chans=3, imgsz=imgsz)


def test_structure_errors_come_from_check_name(tmp_path):
    with pytest.raises(CnnfitError, match="unknown type 'cnv'; did you mean 'conv'"):
        models.check_name(_write(tmp_path, "layers: [cnv: 8]"))
    with pytest.raises(CnnfitError, match=re.escape("model file 'missing.yml' not found in ")):
        models.check_name("missing.yml")


NETS = '''
import torch.nn as nn

class Net(nn.Module):
    def __init__(self, num_classes, in_chans=3, width=8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.features(x))

def flat(*, num_classes, imgsz):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * imgsz * imgsz, num_classes))

def not_a_model(num_classes):
    return 42

def broken(num_classes):
    raise ValueError("width must be even")
'''


@pytest.fixture
def user_nets(tmp_path, monkeypatch):
    (tmp_path / "usernets.py").write_text(NETS)
    (tmp_path / "needsdep.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "typo.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("usernets", "needsdep", "typo"):
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_user_class_builds_and_gives_logits(user_nets):
    model = models.create("usernets:Net", num_classes=4, in_chans=1, imgsz=12, width=16)
    assert model(torch.randn(2, 1, 12, 12)).shape == (2, 4) and model.features[0].out_channels == 16
    assert models.options_of("usernets:Net") == ["width"] and models.min_size("usernets:Net") == 1
    assert models.builder_kwargs("usernets:Net", imgsz=12) == {}  # Net takes no imgsz
    models.check_name("usernets:Net")


def test_user_factory_gets_imgsz(user_nets):
    assert models.builder_kwargs("usernets:flat", imgsz=6) == {"imgsz": 6}
    model = models.create("usernets:flat", num_classes=5, in_chans=3, imgsz=6)
    assert model(torch.randn(2, 3, 6, 6)).shape == (2, 5)


@pytest.mark.parametrize("name, options, message", [
    ("nosuchmodule:Net", {}, "model 'nosuchmodule:Net': no module named 'nosuchmodule' in "),
    ("usernets:Nett", {}, "model 'usernets:Nett': usernets has no attribute 'Nett'; did you mean 'Net'? "
                          "it defines: Net, broken, flat, not_a_model"),
    ("usernets:not_a_model", {}, "model 'usernets:not_a_model' returned type int, not a torch.nn.Module"),
    ("usernets:broken", {}, "model 'usernets:broken' failed to build as broken(num_classes=3): "
                            "ValueError: width must be even; fix the constructor or the options"),
    ("usernets:Net", {"depth": 3}, "model 'usernets:Net' has no option depth; it takes: width"),
    ("needsdep:Net", {}, "model 'needsdep:Net': needsdep imports 'no_such_dependency_xyz', which is not installed"),
    ("typo:Net", {}, "model 'typo:Net': importing typo failed (SyntaxError: "),
    ("usernets:", {}, "model 'usernets:' must read module:attribute"),
    ("nets/usernets.py:Net", {}, "write its module as a dotted name, e.g. nets.usernets:Net"),
])
def test_user_module_errors(user_nets, name, options, message):
    with pytest.raises(CnnfitError, match=re.escape(message)):
        models.create(name, num_classes=3, in_chans=3, imgsz=8, **options)
