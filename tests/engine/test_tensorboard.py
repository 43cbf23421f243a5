import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnfit.engine.callbacks.tensorboard import TensorBoard, scalar_tag
from cnnfit.engine.state import State
from cnnfit.errors import CnnfitError


def _fit(callback, model, *, epochs=2, steps=3) -> list[dict]:
    """A tiny manual loop calling the hooks in the order fit does; returns the per-epoch metrics."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))
    state = State(model, opt, epochs, steps)
    callback.on_fit_start(state)
    for epoch in range(epochs):
        state.epoch = epoch
        callback.on_epoch_start(state)
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            state.step += 1
            callback.on_step_end(state)
        opt.param_groups[0]["lr"] *= 0.5
        state.metrics = {"epoch": epoch + 1, "train_loss": loss.item(), "train_acc": 0.5 + epoch / 10,
                         "val_loss": 2.0 - epoch, "val_acc": 0.25 * (epoch + 1), "lr": opt.param_groups[0]["lr"],
                         "seconds": 1.5, "note": "not a number"}
        state.history.append(state.metrics)
        callback.on_epoch_end(state)
    callback.on_fit_end(state)
    return state.history


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return acc


def test_tensorboard_logs_scalars_images_and_graph(tmp_path):
    cb = TensorBoard(tmp_path, images=torch.rand(4, 1, 8, 8), graph_input=torch.rand(1, 1, 8, 8), every=2)
    history = _fit(cb, _model())
    acc = _events(tmp_path)
    tags = acc.Tags()
    assert {"loss/train", "loss/val", "acc/train", "acc/val", "lr", "lr/epoch", "seconds"} <= set(tags["scalars"])
    assert "note" not in tags["scalars"] and "epoch" not in tags["scalars"]
    for tag, key in (("loss/train", "train_loss"), ("acc/val", "val_acc"), ("lr/epoch", "lr")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2]  # 1-based epochs
        assert [e.value for e in events] == pytest.approx([h[key] for h in history])
    lrs = acc.Scalars("lr")
    assert [e.step for e in lrs] == [2, 4, 6] and [e.value for e in lrs] == pytest.approx([0.1, 0.05, 0.05])
    assert tags["images"] == ["samples"] and tags["graph"]


def test_tensorboard_notes_a_graph_it_cannot_trace_and_goes_on(tmp_path):
    cb = TensorBoard(tmp_path, graph_input=torch.rand(1, 3, 8, 8))  # 3 channels into a 1-channel conv
    _fit(cb, _model(), epochs=1)
    acc = _events(tmp_path)
    assert not acc.Tags()["graph"]
    note = acc.Tensors("graph/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "tracing failed with RuntimeError" in note
    assert acc.Scalars("loss/train")


def test_missing_tensorboard_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    with pytest.raises(CnnfitError, match=r"pip install 'cnnfit\[tensorboard\]'"):
        TensorBoard(tmp_path)


def test_scalar_tags_group_train_and_val():
    assert scalar_tag("train_loss") == "loss/train"
    assert scalar_tag("val_macro_f1") == "macro_f1/val"
    assert scalar_tag("lr") == "lr/epoch"
    assert scalar_tag("seconds") == "seconds"
