"""Precision, recall, density and coverage: equal to the reference package (clovaai's prdc), and sane."""
import contextlib
import io
import time

import numpy as np
import pytest

from medsyn.metrics.prdc import density_coverage, knn_radii, prdc, precision_recall


def reference(real, fake, k):
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the set sizes
        return {key: float(value) for key, value in compute_prdc(real, fake, k).items()}


def features(n, m, d, seed, shift=0.3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(m, d)) * 1.1 + shift


@pytest.mark.parametrize("n, m, d", [(50, 50, 8), (200, 120, 64), (90, 300, 2048), (2100, 40, 16)])
@pytest.mark.parametrize("k", [3, 5])
def test_equal_to_the_reference_package(n, m, d, k):
    real, fake = features(n, m, d, seed=n + m + d + k)
    expected = reference(real, fake, k)
    got = prdc(real, fake, k)
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    assert precision_recall(real, fake, k) == (got["precision"], got["recall"])
    assert density_coverage(real, fake, k) == (got["density"], got["coverage"])


def test_blocks_do_not_change_the_radii(monkeypatch):
    """2100 rows span two blocks; the radii equal a brute-force k-th nearest other point."""
    feats = np.random.default_rng(0).normal(size=(2100, 5))
    full = np.sqrt(((feats[:300, None] - feats[None]) ** 2).sum(-1))
    full[np.arange(300), np.arange(300)] = np.inf
    np.testing.assert_allclose(knn_radii(feats, 3)[:300], np.sort(full, axis=1)[:, 2], rtol=1e-9)
    import medsyn.metrics.prdc as module

    whole = knn_radii(feats[:300], 4)
    monkeypatch.setattr(module, "BLOCK_ROWS", 7)
    np.testing.assert_allclose(knn_radii(feats[:300], 4), whole, rtol=1e-12)
    assert prdc(feats[:100], feats[100:180], 3) == pytest.approx(reference(feats[:100], feats[100:180], 3), abs=1e-12)


def test_identical_sets_are_perfect_and_far_apart_clusters_score_zero():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(64, 32))
    same = prdc(real, real.copy(), k=3)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    # each real ball holds its own point and its k-1 nearest others: N k memberships over M = N points, / k
    assert same["density"] == pytest.approx(1.0)
    far = prdc(real, rng.normal(size=(48, 32)) + 1000.0, k=3)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_results_are_python_floats_and_radii_float64():
    real, fake = features(20, 20, 4, seed=2)
    assert all(type(v) is float for v in prdc(real.astype(np.float32), fake.astype(np.float32)).values())
    assert knn_radii(real.astype(np.float32), 2).dtype == np.float64


@pytest.mark.parametrize("call, message", [
    (lambda r, f: knn_radii(r[:3], 3), "features: 3 points, but the k=3 nearest neighbours of a point need at least 4"),
    (lambda r, f: precision_recall(r, f[:3], 3), "fake features: 3 points"),
    (lambda r, f: precision_recall(r[:5], f, 5), "real features: 5 points"),
    (lambda r, f: density_coverage(r[:5], f, 5), "real features: 5 points"),
    (lambda r, f: prdc(r, f[:2], 3), "fake features: 2 points"),
    (lambda r, f: prdc(r, f[:, :3]), "differ in dimension: 4 vs 3"),
    (lambda r, f: prdc(r, f, k=0), "k must be at least 1"),
])
def test_too_small_or_mismatched_sets_are_clear_errors(call, message):
    real, fake = features(10, 10, 4, seed=3)
    with pytest.raises(ValueError, match=message):
        call(real, fake)


def test_density_and_coverage_need_only_the_real_balls():
    real, fake = features(10, 1, 4, seed=4)
    density, coverage = density_coverage(real, fake, k=5)
    assert 0.0 <= coverage <= 1.0 and density >= 0.0


@pytest.mark.slow
def test_inception_sized_sets_take_seconds():
    rng = np.random.default_rng(5)
    real, fake = rng.normal(size=(10_000, 2048)).astype(np.float32), rng.normal(size=(5_000, 2048)).astype(np.float32)
    started = time.perf_counter()
    prdc(real, fake, 3)
    assert time.perf_counter() - started < 120
