"""Paired significance tests between training arms: McNemar's test with Holm's correction.

The brain-MRI paper compares its data-augmentation setups with McNemar's test on paired
per-image results and adjusts the p-values for multiple comparisons with Holm-Bonferroni.
"""
from __future__ import annotations

from itertools import combinations
from typing import NamedTuple

import numpy as np

EXACT_BELOW = 25  # discordant pairs under which the exact binomial test replaces the chi-square


class McNemarRow(NamedTuple):
    """One pairwise comparison: b = images only arm_a got right, c = only arm_b got right."""

    arm_a: str
    arm_b: str
    b: int
    c: int
    statistic: float
    p: float
    p_holm: float


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[float, float]:
    """McNemar's test on paired per-image outcomes of two classifiers on the same test images.

    Only discordant pairs carry information: b (a right, b wrong) and c (a wrong, b right).
    With fewer than 25 of them the chi-square approximation is poor, so the exact two-sided
    binomial test (b ~ Bin(b + c, 1/2)) is used, whose statistic is min(b, c); otherwise the
    chi-square test with continuity correction, (|b - c| - 1)^2 / (b + c). This is the usual
    rule (e.g. statsmodels' documentation; 25 is the threshold it suggests).

    Args:
        correct_a: (N,) bool, image i classified correctly by classifier a.
        correct_b: (N,) bool, the same images for classifier b.

    Returns:
        (statistic, p-value); (0.0, 1.0) when there is no discordant pair.
    """
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes must have the same length, got {a.shape} and {b.shape}")
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    discordant = int(table[0, 1] + table[1, 0])
    if discordant == 0:
        return 0.0, 1.0
    result = sm_mcnemar(table, exact=discordant < EXACT_BELOW, correction=True)
    return float(result.statistic), float(result.pvalue)


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (statsmodels ``multipletests(method="holm")``), same order."""
    from statsmodels.stats.multitest import multipletests

    pvalues = np.asarray(list(pvalues), dtype=np.float64)
    if len(pvalues) == 0:
        return pvalues
    return multipletests(pvalues, method="holm")[1]


def pairwise_mcnemar(y_true: np.ndarray, predictions: dict[str, np.ndarray]) -> list[McNemarRow]:
    """McNemar's test for every pair of arms, Holm-adjusted over all pairs.

    Args:
        y_true: (N,) labels of the shared test images.
        predictions: arm name -> (N,) predicted labels, in the same image order.

    Returns:
        One ``McNemarRow`` per pair, in the order of ``itertools.combinations`` over the arms.
    """
    y_true = np.asarray(y_true)
    correct = {arm: np.asarray(pred) == y_true for arm, pred in predictions.items()}
    rows = []
    for arm_a, arm_b in combinations(correct, 2):
        a, b = correct[arm_a], correct[arm_b]
        statistic, p = mcnemar(a, b)
        rows.append((arm_a, arm_b, int(np.sum(a & ~b)), int(np.sum(~a & b)), statistic, p))
    adjusted = holm([row[-1] for row in rows])
    return [McNemarRow(*row, float(p_holm)) for row, p_holm in zip(rows, adjusted)]
