import numpy as np
import pytest
import torch

import cnnfit
from cnnfit.engine.ema import debiased_ema, make_ema


def test_each_step_weighs_exactly_its_share_of_the_exponential_average():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    ema = make_ema(model, 0.9)
    for t in range(5):
        with torch.no_grad():
            model[0].weight.fill_(float(t))
        model(torch.randn(4, 3))  # train mode: BN counts the batch
        ema.update_parameters(model)
    shares = 0.1 * 0.9 ** np.arange(4, -1, -1)  # step t weighs (1 - decay) * decay**age, normalized
    expected = (shares / shares.sum() * np.arange(5)).sum()
    assert ema.module[0].weight[0, 0].item() == pytest.approx(expected, rel=1e-6)
    assert int(ema.module[1].num_batches_tracked) == 5  # counts are copied, not averaged


def test_a_short_run_with_a_long_average_is_not_dominated_by_its_first_step(tmp_path):
    # ~180 steps at decay 0.999: torch's own EMA kept 84% of the first step's weights and scored 0.73
    run = cnnfit.train(data="digits", model="simplecnn", epochs=8, ema=0.999, seed=0, project=str(tmp_path))
    assert run.accuracy > 0.92


def test_decay_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="between 0 and 1"):
        debiased_ema(1.0)
