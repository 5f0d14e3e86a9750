"""The liver-lesion paper's classic-augmentation sweep, and how its number of copies is chosen.

Frid-Adar et al. (2018) trained their lesion CNN on classic-augmented sets of growing size, took the
point where accuracy stopped improving (the fewest augmented images at saturation) as the optimal
classic set, and added synthetic images on top of it. A study with ``classic: {copies: [1, 2, 4]}``
does the same on every fold, and chooses on that fold's validation images only: a test image must
never choose a setting it is then used to judge.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

CHOICE_METRIC = "validation accuracy"  # the paper's Fig. 8 measure, read on validation instead of test
TIE_BREAK = "fewest copies"  # the paper's optimal point: the smallest augmented set at saturation


def sweep_key(classifier: str, seed: int, fold: int, copies: int) -> str:
    """The unit of one classic arm with ``copies`` copies. Keyed by the number itself, so adding values
    to the sweep later reuses every unit already finished."""
    return f"sweep/{classifier}/seed{seed}/fold{fold}/copies{copies}"


def accuracy(y_true: np.ndarray, proba: np.ndarray) -> float:
    return float(np.mean(np.asarray(proba).argmax(axis=1) == np.asarray(y_true)))


def choose_copies(units: list[dict[str, Any]]) -> int:
    """The number of copies whose classifiers scored the best mean validation accuracy over seeds;
    on a tie, the fewest copies.

    Args:
        units: the sweep units of one classifier on one fold (every seed and every number of copies).
            Only their ``classic_copies`` and ``val_accuracy`` are read; their test predictions play
            no part in the choice.

    Raises:
        ValueError: no units.
    """
    if not units:
        raise ValueError("choose_copies needs the sweep's units")
    scores: dict[int, list[float]] = defaultdict(list)
    for unit in units:
        scores[int(unit["classic_copies"])].append(float(unit["val_accuracy"]))
    mean = {copies: float(np.mean(values)) for copies, values in scores.items()}
    best = max(mean.values())
    return min(copies for copies, score in mean.items() if score >= best - 1e-12)  # float noise is a tie


def choice_on_disk(store, classifier: str, seeds, fold: int, values) -> tuple[list[str], int] | None:
    """The sweep's unit keys of ``classifier`` on ``fold`` and the copies they choose, once every one
    of them is in ``store`` (a study's UnitStore); None while some are missing."""
    keys = [sweep_key(classifier, seed, fold, copies) for seed in seeds for copies in values]
    if not all(store.has(key) for key in keys):
        return None
    return keys, choose_copies([store.load(key) for key in keys])
