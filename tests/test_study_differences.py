"""Paired differences against real and classic (bootstrap over test images and seeds), the TSTR arm,
and how both reach results.json, the verdicts and the report."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError
from medsyn.evaluate.arms import Arm, build_arm
from medsyn.metrics.classification import paired_bootstrap_difference
from medsyn.study import StudyRunner
from medsyn.study.config import ARMS, study_from_dict
from medsyn.study.results import _verdicts

from test_study import TINY


@pytest.fixture(autouse=True)
def fewer_bootstrap_resamples(monkeypatch):
    """1000 resamples per pair cost most of a tiny study; 50 still exercise them."""
    monkeypatch.setattr("medsyn.study.results.BOOTSTRAP", 50)


def _proba(y: np.ndarray, right: np.ndarray, k: int = 2) -> np.ndarray:
    """Probabilities that put 0.7 on the true class where ``right``, on the next class otherwise."""
    predicted = np.where(right, y, (y + 1) % k)
    proba = np.full((len(y), k), 0.3 / (k - 1))
    proba[np.arange(len(y)), predicted] = 0.7
    return proba


def _planted(n: int = 200, seed: int = 0):
    """A reference right on half the images and an arm right on 30% more of them (80%)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    order = rng.permutation(n)
    reference = _proba(y, np.isin(np.arange(n), order[:n // 2]))
    arm = _proba(y, np.isin(np.arange(n), order[:int(0.8 * n)]))
    return y, arm, reference


def test_identical_predictions_differ_by_zero_with_a_zero_interval():
    y, arm, _ = _planted()
    out = paired_bootstrap_difference(y, [arm, arm], [arm.copy(), arm.copy()], n_boot=50)
    assert out == {"auc": (0.0, 0.0, 0.0), "accuracy": (0.0, 0.0, 0.0)}


def test_a_planted_improvement_has_an_interval_above_zero_that_holds_the_delta():
    y, arm, reference = _planted()
    out = paired_bootstrap_difference(y, [arm], [reference], n_boot=200)
    delta, lo, hi = out["accuracy"]
    assert delta == pytest.approx(0.3) and 0 < lo <= delta <= hi
    delta, lo, hi = out["auc"]
    assert 0 < lo <= delta <= hi


def test_the_same_seed_gives_the_same_interval_another_seed_another():
    y, arm, reference = _planted()
    first = paired_bootstrap_difference(y, [arm], [reference], n_boot=50, seed=0)
    assert paired_bootstrap_difference(y, [arm], [reference], n_boot=50, seed=0) == first
    assert paired_bootstrap_difference(y, [arm], [reference], n_boot=50, seed=1) != first


def test_the_point_estimate_is_the_mean_over_seeds_of_scikit_learns_difference():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 90)
    arm = [rng.dirichlet(np.ones(3), 90) for _ in range(2)]
    reference = [rng.dirichlet(np.ones(3), 90) for _ in range(2)]
    out = paired_bootstrap_difference(y, arm, reference, n_boot=20)

    def auc(p):
        return roc_auc_score(y, p, multi_class="ovr", average="macro")

    def acc(p):
        return accuracy_score(y, p.argmax(axis=1))

    assert out["auc"][0] == pytest.approx(np.mean([auc(a) - auc(r) for a, r in zip(arm, reference)]), abs=1e-12)
    assert out["accuracy"][0] == pytest.approx(np.mean([acc(a) - acc(r) for a, r in zip(arm, reference)]), abs=1e-12)


def test_resamples_that_miss_a_class_are_skipped_for_auc_not_a_crash():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 2])  # most resamples miss class 2
    rng = np.random.default_rng(0)
    arm, reference = rng.dirichlet(np.ones(3), 10), rng.dirichlet(np.ones(3), 10)
    out = paired_bootstrap_difference(y, [arm], [reference], n_boot=50)
    assert all(np.isfinite(v) for v in out["accuracy"]) and np.isfinite(out["auc"][0])


def test_both_arms_need_the_same_seeds():
    y, arm, reference = _planted()
    with pytest.raises(ValueError, match="same seeds"):
        paired_bootstrap_difference(y, [arm, arm], [reference], n_boot=5)


def _images(counts, seed: int, source: str) -> LabeledImages:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    images = rng.uniform(0, 1, (len(labels), 1, 8, 8)).astype(np.float32)
    return LabeledImages(images, labels, ["a", "b"], source, "test")


@pytest.mark.parametrize("volume, per_class", [(1.0, [30, 10]), (0.5, [15, 5]), (7, [7, 7])])
def test_tstr_trains_on_synthetic_images_alone_by_the_volume_rule(volume, per_class):
    real, pool = _images([30, 10], 0, "real-train"), _images([50, 40], 1, "gan-samples")
    arm = build_arm("tstr", real, synthetic=pool, volume=volume, seed=0)
    assert np.bincount(arm.labels, minlength=2).tolist() == per_class
    pool_images = {img.tobytes() for img in pool.images}
    real_images = {img.tobytes() for img in real.images}
    assert all(img.tobytes() in pool_images and img.tobytes() not in real_images for img in arm.images)


def test_tstr_is_a_synthetic_arm_listed_by_hand():
    assert Arm.parse("tstr") is Arm.TSTR and Arm.TSTR.uses_synthetic and not Arm.TSTR.uses_classic
    assert Arm.TSTR not in ARMS and len(ARMS) == 4
    with pytest.raises(ConfigError, match="tstr"):  # the known arms are listed
        Arm.parse("trts")
    with pytest.raises(ConfigError, match="needs a synthetic image set"):
        build_arm("tstr", _images([3, 3], 0, "real"))


def test_a_significant_mcnemar_with_an_interval_across_zero_is_no_significant_difference():
    def row(label, accuracy):
        return {"classifier": "c", "label": label, "arm": label.split("[")[0], "generator": "[" in label or None,
                "auc": 0.8, "accuracy": accuracy, "confusion": [[5, 1], [1, 5]]}

    rows = [row("real", 0.7), row("synthetic[g]x1", 0.8), row("classic+synthetic[g]x1", 0.6)]
    tests = [{"classifier": "c", "seed": 0, "arm_a": "real", "arm_b": b, "p_holm": 0.001}
             for b in ("synthetic[g]x1", "classic+synthetic[g]x1")]

    def diff(arm, lo, hi):
        return {"classifier": "c", "arm": arm, "reference": "real", "metric": "accuracy", "delta": (lo + hi) / 2,
                "ci": [lo, hi]}

    words = {v["arm"]: v["verdict"] for v in _verdicts(rows, tests, [diff("synthetic[g]x1", -0.01, 0.2),
                                                                       diff("classic+synthetic[g]x1", -0.2, -0.01)])}
    assert words == {"synthetic[g]x1": "no significant difference", "classic+synthetic[g]x1": "hurt"}
    words = {v["arm"]: v["verdict"] for v in _verdicts(rows, tests, [diff("synthetic[g]x1", 0.01, 0.2)])}
    assert words["synthetic[g]x1"] == "helped"


def test_a_tiny_study_with_tstr_reports_paired_differences_against_real_and_classic(tmp_path):
    from medsyn.report import write_report

    raw = {**TINY, "arms": ["real", "classic", "synthetic", "classic+synthetic", "tstr"], "volumes": [1], "tsne": False}
    out = tmp_path / "out"
    results = StudyRunner(study_from_dict(raw, tmp_path), out).run()

    labels = {r["label"]: r for r in results["arms"]}
    assert labels["tstr[dc]x1"]["n_train"] == labels["real"]["n_train"]  # volume 1: each class's real count, no real
    pairs = {(d["arm"], d["reference"], d["metric"]): d for d in results["differences"]}
    against_real = {"classic", "synthetic[dc]x1", "classic+synthetic[dc]x1", "tstr[dc]x1"}
    against_classic = {"synthetic[dc]x1", "classic+synthetic[dc]x1", "tstr[dc]x1"}
    expected = {(a, "real", m) for a in against_real for m in ("auc", "accuracy")}
    expected |= {(a, "classic", m) for a in against_classic for m in ("auc", "accuracy")}
    assert set(pairs) == expected
    for d in results["differences"]:
        assert d["seeds"] == 1 and d["n_test"] == 30 and d["ci"][0] <= d["ci"][1]
        assert d["p_holm"] is None or 0 <= d["p_holm"] <= 1
    real, synthetic = labels["real"], labels["synthetic[dc]x1"]
    assert pairs[("synthetic[dc]x1", "real", "auc")]["delta"] == pytest.approx(synthetic["auc"] - real["auc"])

    verdicts = {(v["arm"], v["reference"]): v for v in results["verdicts"]}
    assert set(verdicts) == {("synthetic[dc]x1", "real"), ("synthetic[dc]x1", "classic"),
                             ("classic+synthetic[dc]x1", "real"), ("classic+synthetic[dc]x1", "classic"),
                             ("tstr[dc]x1", "real")}
    tstr = verdicts[("tstr[dc]x1", "real")]
    assert tstr["comparison"] == "tstr" and tstr["verdict"].startswith("TSTR: AUC ") and "of real" in tstr["verdict"]
    for key, v in verdicts.items():
        assert v["delta_auc_ci"] == pairs[(*key, "auc")]["ci"] and v["delta_accuracy_ci"] == pairs[(*key, "accuracy")]["ci"]
        if v["comparison"] == "augmentation":
            assert v["verdict"] in {"helped", "hurt", "no significant difference",
                                    "not comparable: an arm predicts one class for every test image"}

    with open(out / "table_differences.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(results["differences"]) and table[0]["reference"] in ("real", "classic")
    assert json.loads((out / "results.json").read_text())["differences"] == results["differences"]
    page = write_report(out).read_text()
    assert "Paired differences against real and classic" in page and "paired bootstrap over test images and seeds" in page
    assert "TSTR: AUC" in page


def test_arm_intervals_resample_images_and_seeds_and_stay_between_zero_and_one():
    """Three seeds, one of them wrong on most images: a t interval over the seeds ran past 1."""
    from medsyn.study.results import _arm_rows

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    rights = [rng.random(120) < p for p in (0.97, 0.4, 0.95)]
    units = {seed: [{"arm": "real", "generator": None, "volume": None, "n_train": 50, "test_index": np.arange(120),
                     "y_true": y, "proba": _proba(y, right), "val_auc": 0.9}] for seed, right in enumerate(rights)}
    (row,) = _arm_rows({("cnn", "real"): units}, [0, 1, 2])
    assert row["seeds"] == 3 and row["accuracy_ci_kind"] == "bootstrap over test images and 3 seeds"
    assert row["accuracy"] == pytest.approx(np.mean([r.mean() for r in rights]))
    for metric in ("accuracy", "precision", "recall", "auc"):
        lo, hi = row[f"{metric}_ci"]
        assert 0 <= lo <= row[metric] <= hi <= 1, metric
    assert row["accuracy_ci"][1] - row["accuracy_ci"][0] > 0.2  # the bad seed is drawn 0-3 times
    for name in ("sensitivity", "specificity"):
        assert len(row[f"{name}_ci"]) == 2
        assert all(0 <= lo <= v <= hi <= 1 for v, (lo, hi) in zip(row[name], row[f"{name}_ci"]))
