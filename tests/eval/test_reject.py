import math

import numpy as np
import pytest
import torch

from cnnfit.errors import CnnfitError
from cnnfit.eval.reject import answered, fit_reject, ood_figures, scores


def _val(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores in (0, 1) where a higher score is more often right: P(correct | s) = s."""
    rng = np.random.default_rng(seed)
    s = rng.beta(5, 1, n)
    return s, rng.random(n) < s


def test_scores_are_the_calibrated_top_probability_and_the_logsumexp():
    logits = np.array([[2.0, 0.0, -1.0], [500.0, 499.0, 0.0]])  # the second would overflow a naive exp
    p = torch.softmax(torch.tensor(logits) / 2.0, 1).max(1).values.numpy()
    assert np.allclose(scores(logits, 2.0), p)
    assert np.allclose(scores(logits, 1.0, "energy"), torch.logsumexp(torch.tensor(logits), 1).numpy())
    with pytest.raises(CnnfitError, match="choose from: maxprob, energy"):
        scores(logits, kind="entropy")


def test_the_precision_target_holds_on_val_answers_as_many_as_it_can_and_carries_to_new_data():
    s, ok = _val(5000, 0)
    r = fit_reject(s, ok, precision=0.95)
    keep = answered(s, r["threshold"])
    assert ok[keep].mean() >= 0.95 and r["val_precision"] == pytest.approx(ok[keep].mean())
    assert r["val_coverage"] == pytest.approx(keep.mean()) and 0.2 < r["val_coverage"] < 0.9
    wider = s >= np.sort(s[~keep])[-1]  # answering the next image too
    assert ok[wider].mean() < 0.95 or wider.sum() == keep.sum()
    s2, ok2 = _val(5000, 1)  # new images from the same source: the precision holds within noise
    assert ok2[answered(s2, r["threshold"])].mean() > 0.94


def test_a_coverage_target_answers_that_share_and_impossible_targets_say_so():
    s, ok = _val(1000, 2)
    r = fit_reject(s, ok, coverage=0.8)
    assert r["val_coverage"] == pytest.approx(0.8, abs=0.002) and answered(s, r["threshold"]).sum() == 800
    never = fit_reject(np.linspace(0, 1, 50), np.zeros(50, bool), precision=0.99)  # every answer is wrong
    assert never["threshold"] == math.inf and never["val_coverage"] == 0 and never["val_precision"] is None
    for kwargs in ({}, {"precision": 0.9, "coverage": 0.9}, {"precision": 1.5}):
        with pytest.raises(CnnfitError) as err:
            fit_reject(s, ok, **kwargs)
        assert "\n" not in str(err.value)


def test_tied_scores_are_answered_or_withheld_together():
    s = np.array([0.9, 0.9, 0.9, 0.5])
    r = fit_reject(s, np.array([True, True, False, True]), precision=0.7)
    assert answered(s, r["threshold"]).sum() == 4 and r["val_precision"] == 0.75


def test_ood_figures_tell_separated_scores_from_mixed_ones():
    rng = np.random.default_rng(0)
    far = ood_figures(rng.normal(3, 1, 2000), rng.normal(-3, 1, 2000))
    same = ood_figures(rng.normal(0, 1, 2000), rng.normal(0, 1, 2000))
    assert far["auroc"] > 0.99 and far["fpr95"] < 0.01
    assert abs(same["auroc"] - 0.5) < 0.05 and abs(same["fpr95"] - 0.95) < 0.03
