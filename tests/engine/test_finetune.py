import pytest
import torch

from cnnfit import models
from cnnfit.data import DeviceLoader, channel_stats, resolve, split_indices
from cnnfit.data.sources import read
from cnnfit.engine import build_optimizer, finetune, fit, param_groups
from cnnfit.engine.callbacks import Callback, Freeze
from cnnfit.errors import CnnfitError


def _loaders():
    ds = read(resolve("digits"), 16)
    parts, _ = split_indices(ds, 0.15, 0.15, seed=0)
    (xt, yt), (xv, yv) = [(ds.images[parts[k]], ds.labels[parts[k]]) for k in ("train", "val")]
    mean, std = channel_stats(xt)
    kw = dict(batch=64, device=torch.device("cpu"), mean=mean, std=std)
    return DeviceLoader(xt, yt, shuffle=True, **kw), DeviceLoader(xv, yv, **kw)


def _model():
    torch.manual_seed(0)
    return models.create("resnet20", num_classes=10, in_chans=1, imgsz=16)


def _snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_frozen_backbone_keeps_weights_and_norm_statistics():
    model = _model()
    names = finetune.resolve_freeze(model, "backbone")
    backbone = {n: _snapshot(model.get_submodule(n)) for n in names}
    head = model.head.weight.clone()
    train, val = _loaders()
    groups = param_groups(model, 0.05, backbone=finetune.backbone_ids(model))
    fit(model, train, val, optimizer=build_optimizer("adamw", model, lr=3e-3, groups=groups), epochs=2,
        device=torch.device("cpu"), callbacks=[Freeze(names)])
    for n in names:
        after = model.get_submodule(n).state_dict()
        assert all(torch.equal(v, after[k]) for k, v in backbone[n].items()), f"{n} changed while frozen"
    assert not torch.equal(head, model.head.weight)


def test_two_phase_unfreezes_with_a_lower_backbone_lr():
    model = _model()
    names = finetune.resolve_freeze(model, "backbone")
    first_param = next(model.get_submodule(names[0]).parameters()).clone()
    train, val = _loaders()
    groups = param_groups(model, 0.0, backbone=finetune.backbone_ids(model), backbone_lr_mult=0.1, head_lr_mult=2.0)
    opt = build_optimizer("adam", model, lr=1e-3, groups=groups)
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([1e-4, 2e-3])
    seen = []

    class Probe(Callback):
        def on_epoch_end(self, s):
            seen.append(next(s.model.get_submodule(names[0]).parameters()).clone())

    fit(model, train, val, optimizer=opt, epochs=2, device=torch.device("cpu"), callbacks=[Freeze(names, 1), Probe()])
    assert torch.equal(seen[0], first_param), "backbone moved during the frozen epoch"
    assert not torch.equal(seen[1], first_param), "backbone did not train after unfreezing"


def test_freeze_first_stages_and_out_of_range():
    model = _model()
    all_stages = [n for n, _ in finetune.stages(model)]
    assert finetune.resolve_freeze(model, 2) == all_stages[:2]
    assert finetune.resolve_freeze(model, None) == []
    with pytest.raises(CnnfitError, match=rf"freeze=99 is out of range: this model has {len(all_stages)} stages"):
        finetune.resolve_freeze(model, 99)


def test_stages_cover_every_backbone_parameter():
    for name in models.list_models():
        model = models.create(name, num_classes=3, in_chans=1, imgsz=32)
        backbone = finetune.backbone_ids(model)
        head = {id(p) for n, p in model.named_parameters() if n.startswith(("head.", "aux"))}
        uncovered = [n for n, p in model.named_parameters() if id(p) not in backbone | head]
        assert not uncovered, f"{name}: parameters in no stage: {uncovered[:5]}"
        assert not backbone & head, f"{name}: head parameters inside a stage"
