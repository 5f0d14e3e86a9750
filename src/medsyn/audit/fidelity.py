"""Fidelity and diversity in feature space: precision and recall (Kynkäänniemi et al. 2019, k = 3),
density and coverage (Naeem et al. 2020, k = 5), overall and class-matched (synthetic class k
against real class k). The real side is the training set, the distribution the generator learnt.
The computation is ``medsyn.metrics.prdc``'s blocked one, tested against the ``prdc`` package.
"""
from __future__ import annotations

import numpy as np

from medsyn.metrics.prdc import density_coverage, precision_recall

K_PRECISION_RECALL = 3  # Kynkäänniemi et al.'s k
K_DENSITY_COVERAGE = 5  # Naeem et al.'s k
METRICS = ("precision", "recall", "density", "coverage")


def prdc_scores(real: np.ndarray, fake: np.ndarray) -> dict[str, float] | None:
    """The four numbers with the papers' own k, or None when a set is too small for its k-NN balls."""
    if len(real) <= K_DENSITY_COVERAGE or len(fake) <= K_PRECISION_RECALL:
        return None
    precision, recall = precision_recall(real, fake, K_PRECISION_RECALL)
    density, coverage = density_coverage(real, fake, K_DENSITY_COVERAGE)
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def prdc_table(real: np.ndarray, real_labels: np.ndarray, fake: np.ndarray, fake_labels: np.ndarray,
               class_names: list[str]) -> dict:
    """{"overall": scores, "per_class": {class name: scores or None}, "k": {...}}; None where a set is too small
    (more than 5 real and 3 synthetic images of a class are needed)."""
    per_class = {name: prdc_scores(real[real_labels == k], fake[fake_labels == k])
                 for k, name in enumerate(class_names)}
    return {"overall": prdc_scores(real, fake), "per_class": per_class,
            "k": {"precision_recall": K_PRECISION_RECALL, "density_coverage": K_DENSITY_COVERAGE}}
