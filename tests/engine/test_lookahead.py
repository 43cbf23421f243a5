"""Lookahead: the slow copy's arithmetic, step by step, and a run that uses it resumes exactly."""

import os
import signal

import pytest
import torch

import cnnfit
from cnnfit.engine import State, load_checkpoint
from cnnfit.engine.callbacks import Lookahead
from cnnfit.engine.callbacks.lookahead import DECAY
from cnnfit.errors import TrainingStopped


def test_slow_copy_follows_the_schedule_and_the_run_ends_on_it():
    model = torch.nn.Linear(1, 1, bias=False)
    total, every = 12, 5
    state = State(model, torch.optim.SGD(model.parameters(), lr=0.1), epochs=1, steps_per_epoch=total)
    cb = Lookahead(every)
    cb.on_fit_start(state)
    slow = model.weight.item()
    for step in range(1, total + 1):
        with torch.no_grad():
            model.weight.add_(1.0)  # the fast optimizer's step
        live = model.weight.item()
        state.step = step
        cb.on_step_end(state)
        if step % every == 0:  # the reference arithmetic, written out
            keep = DECAY**every * (step / total) ** 3
            slow = keep * slow + (1 - keep) * live
            assert model.weight.item() == pytest.approx(slow)
        elif step == total:
            assert model.weight.item() == pytest.approx(slow)  # the last step ends on the slow weights
        else:
            assert model.weight.item() == pytest.approx(live)  # untouched between syncs
    with pytest.raises(ValueError, match="lookahead every=0"):
        Lookahead(0)


def test_a_run_with_lookahead_alternate_flips_and_drop_last_resumes_bit_identical(tmp_path, monkeypatch):
    recipe = dict(data="digits", model="simplecnn", epochs=2, batch=64, deterministic=True, seed=0, lookahead=3,
                  drop_last=True, aug__hflip="alternate", aug__shift=0.1, aug__fill_mode="reflect")
    ref = cnnfit.train(**recipe, project=str(tmp_path), name="ref")
    assert ref.history[-1]["train_loss"] < ref.history[0]["train_loss"]
    from cnnfit.engine.callbacks import progress

    real = progress.ProgressBar.on_step_end

    def sigterm_at_31(self, state):  # mid-epoch 2 of 23 full batches each, and between two lookahead syncs
        real(self, state)
        if state.step == 31:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(progress.ProgressBar, "on_step_end", sigterm_at_31)
    with pytest.raises(TrainingStopped, match="interrupted by SIGTERM at step 32"):
        cnnfit.train(**recipe, project=str(tmp_path), name="cut")
    monkeypatch.undo()
    cnnfit.train(resume=str(tmp_path / "cut"))
    a, b = (load_checkpoint(tmp_path / name / "last.pt")["model_state"] for name in ("ref", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
