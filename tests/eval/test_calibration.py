import math

import numpy as np
import torch

from cnnfit.eval.calibration import expected_calibration_error, fit_temperature


def test_ece_on_a_hand_computed_case():
    # two bins used: conf 0.9 (3 images, 2 right) and conf 0.6 (1 image, right)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.4, 0.6]])
    labels = np.array([0, 0, 0, 1])
    expected = 3 / 4 * abs(2 / 3 - 0.9) + 1 / 4 * abs(1.0 - 0.6)
    assert math.isclose(expected_calibration_error(probs, labels), expected)
    assert expected_calibration_error(np.eye(3), np.arange(3)) == 0.0  # sure and right: perfectly calibrated


def test_temperature_recovers_the_true_one_and_lowers_ece():
    g = torch.Generator().manual_seed(0)
    true_t = 2.5
    logits = torch.randn(20000, 10, generator=g) * 4  # (N, K), over-confident by a factor 2.5
    labels = torch.multinomial(torch.softmax(logits / true_t, 1), 1, generator=g).squeeze(1)
    t = fit_temperature(logits, labels)
    assert abs(t - true_t) < 0.1
    probs_before = torch.softmax(logits, 1).numpy()
    probs_after = torch.softmax(logits / t, 1).numpy()
    before = expected_calibration_error(probs_before, labels.numpy())
    after = expected_calibration_error(probs_after, labels.numpy())
    assert after < before / 3


def test_temperature_of_calibrated_logits_stays_near_one():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(20000, 4, generator=g) * 2
    labels = torch.multinomial(torch.softmax(logits, 1), 1, generator=g).squeeze(1)
    assert abs(fit_temperature(logits, labels) - 1.0) < 0.05
