import numpy as np
import pytest
import torch

from cnnfit import models
from cnnfit.data import DeviceLoader, channel_stats, resolve, split_indices
from cnnfit.data.sources import read
from cnnfit.engine import build_optimizer, fit
from cnnfit.engine.callbacks import Callback, EarlyStopping, Monitor, ProgressBar
from cnnfit.errors import CnnfitError


def _loaders(batch=64):
    ds = read(resolve("digits"), 16)
    parts, _ = split_indices(ds, 0.15, 0.15, seed=0)
    (xt, yt), (xv, yv) = [(ds.images[parts[k]], ds.labels[parts[k]]) for k in ("train", "val")]
    mean, std = channel_stats(xt)
    kw = dict(batch=batch, device=torch.device("cpu"), mean=mean, std=std)
    return DeviceLoader(xt, yt, shuffle=True, **kw), DeviceLoader(xv, yv, **kw)


def test_fit_learns_digits_and_records_history():
    torch.manual_seed(0)
    train, val = _loaders()
    model = models.create("lenet5", num_classes=10, in_chans=1)
    opt = build_optimizer("adamw", model, lr=3e-3)
    state = fit(model, train, val, optimizer=opt, epochs=4, device=torch.device("cpu"))
    assert len(state.history) == 4 and state.step == 4 * len(train)
    assert state.history[-1]["val_acc"] > 0.85
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]


def test_callbacks_see_every_hook_and_can_stop():
    calls = []

    class Recorder(Callback):
        def on_fit_start(self, s): calls.append("fit_start")
        def on_epoch_start(self, s): calls.append("epoch_start")
        def on_step_end(self, s):
            if s.step == 3:
                s.stop = "enough"
        def on_epoch_end(self, s): calls.append("epoch_end")
        def on_fit_end(self, s): calls.append("fit_end")

    train, val = _loaders()
    model = models.create("lenet5", num_classes=10, in_chans=1)
    state = fit(model, train, val, optimizer=build_optimizer("sgd", model, lr=0.01), epochs=5,
                device=torch.device("cpu"), callbacks=[Recorder()])
    assert calls == ["fit_start", "epoch_start", "epoch_end", "fit_end"]
    assert state.stop == "enough" and state.step == 3


def test_early_stopping_stops_with_a_reason_and_restores_best():
    train, val = _loaders()
    model = models.create("lenet5", num_classes=10, in_chans=1)
    opt = build_optimizer("sgd", model, lr=1e-9)  # nothing improves
    stopper = EarlyStopping("val_acc", patience=2)
    state = fit(model, train, val, optimizer=opt, epochs=20, device=torch.device("cpu"), callbacks=[stopper])
    assert state.stop == "no val_acc improvement in 2 epochs"
    assert len(state.history) == 3


def test_a_monitor_on_an_unknown_metric_is_refused_with_the_choices():
    with pytest.raises(CnnfitError, match=r"cannot tell whether 'val_accuracy' should go up or down; "
                                          r"did you mean 'val_acc'\? monitor one of: val_loss, "):
        EarlyStopping("val_accuracy")
    assert Monitor("val_loss").mode == "min" and Monitor("val_macro_f1").mode == "max"


def test_progress_logs_a_row_per_epoch_and_the_live_bar_at_debug(caplog):
    caplog.set_level("DEBUG", logger="cnnfit")
    train, val = _loaders()
    model = models.create("lenet5", num_classes=10, in_chans=1)
    fit(model, train, val, optimizer=build_optimizer("sgd", model, lr=1e-9), epochs=5, device=torch.device("cpu"),
        callbacks=[ProgressBar(every=5), EarlyStopping("val_acc", patience=1)])
    lines = [r for r in caplog.records if r.levelname == "INFO"]
    assert lines[0].getMessage().split()[:3] == ["epoch", "train_loss", "train_acc"] and lines[0].style == "bold"
    assert [r.getMessage().split()[0] for r in lines[1:-1]] == ["1/5", "2/5"]
    assert lines[-1].getMessage() == "stopped early: no val_acc improvement in 1 epochs"
    bars = [r.progress for r in caplog.records if hasattr(r, "progress")]
    assert bars[0] == {"task": "epoch 1/5", "completed": 0, "total": len(train), "info": "", "done": False}
    assert bars[1]["completed"] == 5 and bars[1]["info"].startswith("loss ") and bars[-1] == {"stop": True}


def test_balanced_scores_match_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, f1_score

    from cnnfit.engine.scores import _balanced_scores

    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 4, 300))
    logits = torch.from_numpy(rng.normal(size=(300, 4))) + torch.nn.functional.one_hot(labels, 4) * 1.5
    f1, bacc = _balanced_scores(logits, labels)
    pred = logits.argmax(1).numpy()
    assert abs(f1 - f1_score(labels.numpy(), pred, average="macro")) < 1e-9
    assert abs(bacc - balanced_accuracy_score(labels.numpy(), pred)) < 1e-9


def test_a_tie_for_best_goes_to_the_lower_val_loss_then_the_later_epoch():
    rows = [{"epoch": 1, "val_acc": 0.90, "val_loss": 0.50}, {"epoch": 2, "val_acc": 0.95, "val_loss": 0.40},
            {"epoch": 3, "val_acc": 0.95, "val_loss": 0.30}, {"epoch": 4, "val_acc": 0.95, "val_loss": 0.35},
            {"epoch": 5, "val_acc": 0.95, "val_loss": 0.30}, {"epoch": 6, "val_acc": 0.94, "val_loss": 0.10}]
    assert Monitor.replay(rows, "val_acc").best_epoch == 5  # best.pt: the tie at 0.95 with the lowest loss, latest
    patience = Monitor("val_acc")  # early stopping and LR on plateau: only a real improvement counts
    assert [patience.update(r, r["epoch"]) for r in rows] == [True, True, False, False, False, False]
    assert Monitor.replay(rows, "val_loss").best_epoch == 6
