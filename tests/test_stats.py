"""McNemar's test and Holm's correction against statsmodels, and on tables checkable by hand."""
import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

from medsyn.metrics.stats import holm, mcnemar, pairwise_mcnemar


def paired(both: int, only_a: int, only_b: int, neither: int):
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither, dtype=bool)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither, dtype=bool)
    return a, b


def test_small_discordant_count_uses_the_exact_binomial_test():
    # b = 1, c = 9: two-sided p = 2 * P(X <= 1 | Bin(10, 1/2)) = 2 * (1 + 10) / 1024.
    statistic, p = mcnemar(*paired(30, 1, 9, 5))
    assert statistic == 1 and p == pytest.approx(22 / 1024)


def test_large_discordant_count_uses_chi_square_with_continuity_correction():
    # b = 10, c = 30: (|10 - 30| - 1)^2 / 40 = 9.025, p from chi-square with 1 degree of freedom.
    from scipy.stats import chi2

    statistic, p = mcnemar(*paired(50, 10, 30, 10))
    assert statistic == pytest.approx(361 / 40) and p == pytest.approx(chi2.sf(361 / 40, 1))
    reference = sm_mcnemar([[50, 10], [30, 10]], exact=False, correction=True)
    assert (statistic, p) == pytest.approx((reference.statistic, reference.pvalue))


@pytest.mark.parametrize("b, c", [(0, 3), (5, 5), (12, 12), (20, 4), (40, 60)])
def test_agrees_with_statsmodels(b, c):
    table = [[17, b], [c, 8]]
    reference = sm_mcnemar(table, exact=b + c < 25, correction=True)
    assert mcnemar(*paired(17, b, c, 8)) == pytest.approx((reference.statistic, reference.pvalue))


def test_no_discordant_pair_means_no_evidence():
    assert mcnemar(*paired(10, 0, 0, 3)) == (0.0, 1.0)
    with pytest.raises(ValueError):
        mcnemar(np.ones(3, bool), np.ones(4, bool))


def test_holm_matches_statsmodels_and_a_hand_computation():
    p = [0.01, 0.04, 0.03, 0.5]
    # sorted 0.01, 0.03, 0.04, 0.5 times 4, 3, 2, 1 -> 0.04, 0.09, 0.08 -> monotone 0.09, 0.5
    assert holm(p) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    assert len(holm([])) == 0


def test_pairwise_mcnemar_covers_every_pair_with_holm():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    preds = {arm: np.where(rng.random(120) < acc, y, 1 - y) for arm, acc in
             (("real", 0.7), ("classic", 0.75), ("synthetic", 0.9))}
    rows = pairwise_mcnemar(y, preds)
    assert [(r.arm_a, r.arm_b) for r in rows] == [("real", "classic"), ("real", "synthetic"), ("classic", "synthetic")]
    for r in rows:
        a, b = preds[r.arm_a] == y, preds[r.arm_b] == y
        assert (r.b, r.c) == (np.sum(a & ~b), np.sum(~a & b))
        assert (r.statistic, r.p) == pytest.approx(mcnemar(a, b))
    assert [r.p_holm for r in rows] == pytest.approx(holm([r.p for r in rows]).tolist())
    assert rows[1].p_holm < 0.05  # 0.7 vs 0.9 accuracy on 120 images is a clear difference
