"""Bootstrap error bars and the paired test: intervals that cover the true accuracy as often as they claim,
definitions equal to scikit-learn's, and a paired test that tells a 3-point gain from a 0.2-point one."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from cnnfit.errors import CnnfitError
from cnnfit.eval import intervals, paired_difference
from cnnfit.eval.bootstrap import _counts, _scores


def _predictions(rng, n_images, accuracy, k=10):
    """True labels and predictions each right with probability `accuracy` (a wrong one is another class)."""
    y = rng.integers(0, k, n_images)
    right = rng.random(n_images) < accuracy
    return y, np.where(right, y, (y + rng.integers(1, k, n_images)) % k)


def _sklearn(y, pred, k):
    with warnings.catch_warnings():  # a class predicted but absent from the truth
        warnings.simplefilter("ignore", UserWarning)
        return (accuracy_score(y, pred), balanced_accuracy_score(y, pred),
                f1_score(y, pred, labels=range(k), average="macro", zero_division=0))


def test_accuracy_interval_covers_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    truths = rng.uniform(0.5, 0.97, 200)  # the population accuracy of each set, not its sample's
    covered = 0
    for p in truths:
        lo, hi = intervals(*_predictions(rng, 300, p))["accuracy"]
        covered += lo <= p <= hi
    assert 0.90 <= covered / len(truths) <= 0.99, covered


def test_scores_per_resample_are_scikit_learns_with_absent_classes():
    rng = np.random.default_rng(1)
    for k, n in ((10, 40), (5, 7), (30, 200)):
        y, pred = _predictions(rng, n, 0.6, k)
        y = np.minimum(y, k - 3)  # the last two classes never true; some are predicted, some not at all
        got = [float(s[0]) for s in _scores(*_counts(y[None], pred[None], k))]  # one "resample": the data itself
        assert got == pytest.approx(_sklearn(y, pred, k), abs=1e-12)


def test_intervals_hold_the_estimate_and_narrow_with_more_images():
    rng = np.random.default_rng(2)
    widths = []
    for n in (200, 2000):
        y, pred = _predictions(rng, n, 0.85)
        ci = intervals(y, pred, num_classes=10)
        assert set(ci) == {"accuracy", "balanced_accuracy", "macro_f1"}
        for (lo, hi), estimate in zip(ci.values(), _sklearn(y, pred, 10)):
            assert lo <= estimate <= hi
        widths.append([hi - lo for lo, hi in ci.values()])
    assert all(big < small / 2 for small, big in zip(*widths))  # 10x the images: ~sqrt(10) = 3.2x narrower
    assert intervals(y, pred, seed=3) == intervals(y, pred, seed=3) != intervals(y, pred, seed=4)
    lo, hi = intervals(y, pred, level=0.5)["accuracy"]
    assert hi - lo < widths[1][0] / 2  # a 50% interval is a third of the 95% one's width


def test_paired_difference_calls_3_points_real_and_0_2_points_noise():
    rng = np.random.default_rng(3)
    y, pred_a = _predictions(rng, 2000, 0.85)
    wrong, right = np.flatnonzero(pred_a != y), np.flatnonzero(pred_a == y)

    def run_b(fixed, broken):  # run A with `fixed` of its mistakes put right and `broken` right answers made wrong
        pred = pred_a.copy()
        pred[wrong[:fixed]] = y[wrong[:fixed]]
        pred[right[:broken]] = (y[right[:broken]] + 1) % 10
        return pred

    real = paired_difference(y, pred_a, run_b(100, 40))  # +60 images = +3.0 points
    assert real["difference"] == pytest.approx(0.03) and real["significant"]
    assert (real["only_a_right"], real["only_b_right"], real["images"]) == (40, 100, 2000)
    assert real["interval"][0] > 0 and real["p_value"] < 1e-4
    assert real["verdict"].startswith("run B is 3.0 points more accurate than run A on the same 2,000 test images")
    assert real["verdict"].endswith("McNemar p < 0.0001): a real difference")

    noise = paired_difference(y, pred_a, run_b(44, 40), names=("baseline", "wider"))  # +4 images = +0.2 points
    assert noise["difference"] == pytest.approx(0.002) and not noise["significant"]
    assert noise["interval"][0] < 0 < noise["interval"][1] and noise["p_value"] > 0.5
    assert noise["verdict"].startswith("wider is 0.2 points more accurate than baseline")
    assert noise["verdict"].endswith("within noise, not a real difference")

    worse = paired_difference(y, run_b(100, 40), pred_a)  # the same pair the other way round
    assert worse["difference"] == pytest.approx(-0.03) and worse["significant"]
    assert "3.0 points less accurate" in worse["verdict"] and worse["p_value"] == real["p_value"]
    same = paired_difference(y, pred_a, pred_a)
    assert same["p_value"] == 1.0 and not same["significant"] and "exactly as accurate as" in same["verdict"]


def test_bad_input_is_refused_in_one_line():
    with pytest.raises(CnnfitError, match="3 predictions for 4 true labels"):
        intervals([0, 1, 1, 0], [0, 1, 1])
    with pytest.raises(CnnfitError, match="3 predictions for 4 true labels"):
        paired_difference([0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1])
    with pytest.raises(CnnfitError, match="class indices"):
        intervals([0.5, 1.0], [0, 1])
    with pytest.raises(CnnfitError, match="num_classes=2"):
        intervals([0, 2], [0, 1], num_classes=2)
    with pytest.raises(CnnfitError, match="no test images"):
        paired_difference([], [], [])
    with pytest.raises(CnnfitError, match="n=0 resamples"):
        intervals([0, 1], [0, 1], n=0)
    assert all(np.isnan(v).all() for v in intervals([], []).values())  # no images: nan, as metrics.py scores them
