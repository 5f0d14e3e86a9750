"""Classification metrics agree with scikit-learn; bootstrap and t intervals behave."""
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from medsyn.metrics.classification import (
    auc_score, bootstrap_ci, bootstrap_cis, classification_metrics, mean_ci, scalar_metrics,
)


def predictions(n: int, k: int, seed: int = 0):
    """Labels and informative but imperfect probabilities (with ties, as real rounded outputs have)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, np.round(proba, 2) / np.round(proba, 2).sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_metrics_match_scikit_learn(k):
    y, proba = predictions(300, k, seed=k)
    pred = proba.argmax(axis=1)
    m = classification_metrics(y, proba)
    assert m["n"] == 300
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro", zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    expected_auc = skm.roc_auc_score(y, proba[:, 1]) if k == 2 else skm.roc_auc_score(y, proba, multi_class="ovr", average="macro")
    assert m["auc"] == pytest.approx(expected_auc, abs=1e-12)
    cm = skm.confusion_matrix(y, pred, labels=range(k))
    assert m["confusion"] == cm.tolist()
    assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred, average=None, labels=range(k)).tolist())
    for c in range(k):  # specificity of c = recall of "not c"
        assert m["specificity"][c] == pytest.approx(skm.recall_score(y != c, pred != c))


def test_hand_checked_binary_case():
    y = np.array([0, 0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.7, 0.3]])
    m = classification_metrics(y, proba)
    assert m["confusion"] == [[2, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx([2 / 3, 1 / 2]) and m["specificity"] == pytest.approx([1 / 2, 2 / 3])
    assert m["auc"] == pytest.approx(4 / 6)  # positives 0.8, 0.3 vs negatives 0.1, 0.4, 0.7: 4 of 6 pairs ordered


def test_missing_class_gives_nan_auc_not_an_error():
    y = np.zeros(4, dtype=int)
    proba = np.tile([0.7, 0.2, 0.1], (4, 1))
    m = classification_metrics(y, proba)
    assert math.isnan(m["auc"]) and math.isnan(m["sensitivity"][1]) and m["accuracy"] == 1.0
    assert math.isnan(auc_score(np.array([1, 1]), np.array([[0.4, 0.6], [0.1, 0.9]])))


def test_bootstrap_contains_estimate_and_is_seeded():
    y, proba = predictions(200, 3, seed=1)
    point = scalar_metrics(y, proba)
    for metric in ("accuracy", "auc", "precision", "recall", "sensitivity_2", "specificity_0"):
        lo, hi = bootstrap_ci(y, proba, metric, n_boot=300, seed=4)
        assert lo <= point[metric] <= hi and hi - lo < 0.3, metric
    assert bootstrap_ci(y, proba, "auc", n_boot=300, seed=4) == bootstrap_ci(y, proba, "auc", n_boot=300, seed=4)
    assert bootstrap_ci(y, proba, "auc", n_boot=300, seed=4) != bootstrap_ci(y, proba, "auc", n_boot=300, seed=5)
    narrow, wide = bootstrap_ci(y, proba, "auc", 300, 4, level=0.5), bootstrap_ci(y, proba, "auc", 300, 4, level=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    every = bootstrap_cis(y, proba, n_boot=50, seed=0)
    assert set(every) == set(point)
    with pytest.raises(KeyError):
        bootstrap_ci(y, proba, "f1", n_boot=5)


def test_bootstrap_skips_resamples_missing_a_class_for_auc():
    # One positive in 40: many resamples lack it; AUC comes only from those that have it.
    y = np.zeros(40, dtype=int)
    y[0] = 1
    proba = np.column_stack([np.linspace(0.9, 0.1, 40), np.linspace(0.1, 0.9, 40)])
    proba[0] = [0.05, 0.95]
    assert bootstrap_ci(y, proba, "auc", n_boot=200, seed=0) == (1.0, 1.0)


def test_bootstrap_over_seeds_resamples_runs_too_and_stays_inside_zero_and_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    sharp = np.column_stack([1 - y * 0.9 - 0.05, y * 0.9 + 0.05])  # right on every image
    noisy = rng.dirichlet([1, 1], 60)  # chance
    one = bootstrap_cis(y, sharp, ["accuracy", "auc"], n_boot=200, seed=1)
    assert bootstrap_cis(y, [sharp], ["accuracy", "auc"], n_boot=200, seed=1) == one  # one seed: images only
    both = bootstrap_cis(y, [sharp, noisy, sharp], ["accuracy", "auc", "sensitivity_1"], n_boot=400, seed=1)
    for name, (lo, hi) in both.items():
        assert 0.0 <= lo <= hi <= 1.0, name
    # the mean over the three runs lies inside, and the interval is wider than the images alone give,
    # because a resample may draw the chance run zero to three times
    mean_acc = np.mean([(p.argmax(1) == y).mean() for p in (sharp, noisy, sharp)])
    lo, hi = both["accuracy"]
    assert lo < mean_acc < hi and hi - lo > 0.3
    assert hi == pytest.approx(1.0)  # a resample of the sharp run alone scores 1
    assert both == bootstrap_cis(y, [sharp, noisy, sharp], ["accuracy", "auc", "sensitivity_1"], n_boot=400, seed=1)


def test_mean_ci_is_a_t_interval():
    from scipy import stats

    values = [0.80, 0.84, 0.79, 0.86, 0.83]
    mean, lo, hi = mean_ci(values)
    half = stats.t.ppf(0.975, 4) * np.std(values, ddof=1) / np.sqrt(5)
    assert mean == pytest.approx(np.mean(values)) and (lo, hi) == pytest.approx((mean - half, mean + half))
    assert mean_ci([0.9]) == (0.9, 0.9, 0.9)


def test_one_class_warning_names_the_class_only_when_every_prediction_is_it():
    from medsyn.metrics.classification import one_class_warning

    assert one_class_warning([[0, 234], [0, 390]], ["normal", "pneumonia"]).startswith(
        "the classifier predicted 'pneumonia' for all 624 test images")
    assert one_class_warning([[200, 34], [100, 290]], ["normal", "pneumonia"]) is None
    assert one_class_warning([[1, 0, 0], [0, 0, 0], [3, 0, 0]], ["a", "b", "c"]).startswith("the classifier predicted 'a'")
