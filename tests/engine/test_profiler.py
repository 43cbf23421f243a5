import json

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import profile

from cnnfit.engine.callbacks.profiler import Profile
from cnnfit.engine.state import State


def _train(callback, steps: int) -> State:
    """A tiny manual loop that calls the hooks in the order fit does: one epoch of `steps` steps."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))
    state = State(model, opt, 1, steps)
    callback.on_fit_start(state)
    callback.on_epoch_start(state)
    for _ in range(steps):
        F.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()
        state.step += 1
        callback.on_step_end(state)
    state.metrics = {"epoch": 1, "train_loss": 1.0}
    callback.on_epoch_end(state)
    callback.on_fit_end(state)
    return state


def _trace_events(path):
    trace = json.loads(path.read_text())
    return trace["traceEvents"]


def test_profile_writes_trace_and_table_when_the_window_closes(tmp_path):
    cb = Profile(tmp_path, wait=1, warmup=1, active=3)
    _train(cb, steps=7)
    assert cb.prof is None and not torch.autograd._profiler_enabled()  # stopped after step 5 of 7
    assert any(e.get("name", "").startswith("aten::") for e in _trace_events(tmp_path / "trace.json"))
    text = (tmp_path / "profile.txt").read_text()
    assert "steps recorded: 3 of 3" in text and "aten::" in text and "CPU Mem" in text


def test_profile_writes_what_it_has_when_training_ends_inside_the_window(tmp_path):
    _train(Profile(tmp_path, wait=1, warmup=1, active=3), steps=3)
    assert _trace_events(tmp_path / "trace.json")
    text = (tmp_path / "profile.txt").read_text()
    assert "steps recorded: 1 of 3" in text and "aten::" in text


def test_profile_says_why_when_training_ends_before_recording(tmp_path):
    _train(Profile(tmp_path, wait=2, warmup=1, active=3), steps=1)
    assert not (tmp_path / "trace.json").exists()
    assert "before the profiler recorded any" in (tmp_path / "profile.txt").read_text()


def test_profile_export_failure_is_reported_not_raised(tmp_path, monkeypatch):
    def broken(self, path):
        raise OSError("disk full")

    monkeypatch.setattr(profile, "export_chrome_trace", broken)
    state = _train(Profile(tmp_path, wait=0, warmup=1, active=1), steps=4)
    assert state.step == 4
    assert "could not export the profile: OSError: disk full" in (tmp_path / "profile.txt").read_text()
    assert not torch.autograd._profiler_enabled()  # stopped, so training goes on at full speed
