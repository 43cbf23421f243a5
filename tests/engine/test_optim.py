import pytest
import torch

from cnnfit.engine.optim import build_optimizer, cosine, make_schedule, one_cycle, param_groups, step_decay


def test_schedules_at_their_ends():
    assert cosine(0, total=100) == 1.0
    assert cosine(100, total=100) == pytest.approx(0.0)
    assert cosine(50, total=100) == pytest.approx(0.5)
    assert step_decay(9, total=30, every=10) == 1.0 and step_decay(10, total=30, every=10) == pytest.approx(0.1)
    assert one_cycle(0, total=100) == pytest.approx(0.04)
    assert one_cycle(30, total=100) == pytest.approx(1.0)
    assert one_cycle(100, total=100) == pytest.approx(1e-4)


def test_warmup_rises_linearly_then_hands_over():
    f = make_schedule("cosine", total=110, warmup=10)
    values = [f(s) for s in range(110)]
    assert values[0] < values[5] < values[9] < 1.0
    assert values[10] == 1.0 and values[-1] < 0.01


def test_no_weight_decay_on_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer("adamw", model, lr=0.1, weight_decay=0.05)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.05 and [p.ndim for p in decayed["params"]] == [4]
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) == 3


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_reduces_a_loss(name):
    torch.manual_seed(0)
    w = torch.nn.Linear(4, 1)
    opt = build_optimizer(name, w, lr=0.05)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    first = None
    for _ in range(50):
        loss = torch.nn.functional.mse_loss(w(x), y)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert loss.item() < first * 0.9


def test_multistep_and_exponential_at_their_ends():
    from cnnfit.engine.optim import exponential, multistep, scale_lr

    assert multistep(0, total=100, milestones=(30, 60)) == 1.0
    assert multistep(30, total=100, milestones=(30, 60)) == pytest.approx(0.1)
    assert multistep(99, total=100, milestones=(30, 60)) == pytest.approx(0.01)
    assert exponential(0, total=100, every=10) == 1.0
    assert exponential(20, total=100, every=10, gamma=0.5) == pytest.approx(0.25)
    assert scale_lr(0.1, 256, "linear", 64) == pytest.approx(0.4)
    assert scale_lr(1e-3, 256, "sqrt", 64) == pytest.approx(2e-3)
    assert scale_lr(1e-3, 256, "none", 64) == 1e-3


def test_plateau_lowers_the_lr_after_patience_epochs_without_improvement():
    from cnnfit.engine.callbacks import ReduceLROnPlateau
    from cnnfit.engine.state import State

    model = torch.nn.Linear(2, 2)
    state = State(model, build_optimizer("sgd", model, lr=0.1), epochs=10, steps_per_epoch=1)
    cb = ReduceLROnPlateau("val_loss", patience=2, factor=0.5)
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.92, 0.91, 0.93]):
        state.epoch, state.metrics = epoch, {"val_loss": loss}
        cb.on_epoch_end(state)
    assert state.lr_scale == 0.25  # stalls at epochs 3-4 and 5-6


def test_triangle_matches_linear_interpolation_through_its_three_points():
    import numpy as np

    f = make_schedule("triangle", total=476, warmup=109, start=0.2, end=0.07)
    steps = [0, 50, 108, 109, 110, 300, 475, 476]
    expected = np.interp(steps, [0, 109, 476], [0.2, 1.0, 0.07])  # airbench's schedule, as numpy draws it
    assert [f(s) for s in steps] == pytest.approx(expected.tolist(), abs=1e-12)
    assert make_schedule("triangle", total=100)(100) == 0.0  # auto end: down to nothing


def test_decoupled_sgd_takes_the_step_of_a_summed_loss_at_airbenchs_numbers():
    """airbench sums the loss over the batch and divides its per-1024 lr by 1024 * (1 + 1/(1 - m)); cnnfit averages
    the loss: the torch hyperparameters decoupled_sgd gives must move the weights identically."""
    from cnnfit.engine.optim import decoupled_sgd

    lr, wd, m, batch = 11.5, 0.0153, 0.85, 256
    torch.manual_seed(0)
    x, y = torch.randn(batch, 6), torch.randint(0, 3, (batch,))
    nets = [torch.nn.Linear(6, 3) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    kilostep = 1024 * (1 + 1 / (1 - m))
    ref = torch.optim.SGD(nets[0].parameters(), lr=lr / kilostep, weight_decay=wd * batch / kilostep / (lr / kilostep),
                          momentum=m, nesterov=True)
    step_lr, step_wd = decoupled_sgd(lr, wd, momentum=m, batch=batch)
    ours = torch.optim.SGD(nets[1].parameters(), lr=step_lr, weight_decay=step_wd, momentum=m, nesterov=True)
    for _ in range(3):
        for net, opt, reduction in ((nets[0], ref, "sum"), (nets[1], ours, "mean")):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y, reduction=reduction).backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    assert step_lr == pytest.approx(11.5 * 256 / kilostep)


def test_norm_lr_mult_gives_norm_layers_their_own_lr_and_a_matching_decay():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    opt = build_optimizer("sgd", model, lr=0.1, weight_decay=0.01, groups=param_groups(model, 0.01, norm_lr_mult=64))
    by_lr = {round(g["lr"], 6): g for g in opt.param_groups}
    norm = by_lr[6.4]
    assert {id(p) for p in norm["params"]} == {id(p) for p in model[1].parameters()}
    assert norm["weight_decay"] == pytest.approx(0.01 / 64)  # lr x decay per step: the weights' own
    decayed = [g for g in opt.param_groups if g["weight_decay"] == 0.01]
    assert len(decayed) == 1 and sorted(p.ndim for p in decayed[0]["params"]) == [2, 4]
