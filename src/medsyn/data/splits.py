"""Patient-level splits: no patient's images on both sides of a train/test boundary."""
from __future__ import annotations

import dataclasses

import numpy as np

from medsyn.data.types import SPLITS, LabeledImages
from medsyn.errors import ConfigError

DEFAULT_RATIOS = (0.7, 0.1, 0.2)


def patient_groups(ds: LabeledImages) -> np.ndarray:
    """One group key per image: its patient id, or the image itself when the patient is unknown."""
    own = np.array([f"<no patient id> image {i}" for i in range(len(ds))], dtype=object)
    if ds.patient_ids is None:
        return own
    ids = np.asarray(ds.patient_ids).astype(str).astype(object)
    return np.where(ids == "", own, ids)


def _checked_ratios(ratios) -> np.ndarray:
    values = np.asarray(ratios, dtype=np.float64)
    if values.shape != (3,) or not np.isfinite(values).all() or (values < 0).any() or values.sum() <= 0:
        raise ConfigError(f"split ratios must be three non-negative numbers (train, val, test), got {ratios!r}")
    return values / values.sum()


def _assign_groups(ds: LabeledImages, shares: np.ndarray, seed: int) -> np.ndarray:
    """Bin index per image: patients kept whole, stratified by each patient's most frequent class.

    Within a class, patients are shuffled (seeded), taken largest first, and each goes to the bin
    furthest below its share of that class's images; ties go to the bin furthest below its share
    of all images, so small bins still receive someone. A zero share never receives anyone.
    """
    _, group = np.unique(patient_groups(ds).astype(str), return_inverse=True)
    group = group.reshape(-1)
    n_groups = int(group.max()) + 1 if len(group) else 0
    sizes = np.bincount(group, minlength=n_groups)
    per_class = np.zeros((n_groups, max(ds.num_classes, int(ds.labels.max(initial=0)) + 1)), dtype=np.int64)
    np.add.at(per_class, (group, ds.labels), 1)
    majority = per_class.argmax(axis=1)
    rng = np.random.default_rng(seed)
    closed = np.where(shares > 0, 0.0, -np.inf)
    overall_target, overall = shares * len(ds), np.zeros(len(shares))
    assigned = np.zeros(n_groups, dtype=np.int64)
    for label in range(per_class.shape[1]):
        members = rng.permutation(np.flatnonzero(majority == label))
        members = members[np.argsort(-sizes[members], kind="stable")]
        target, filled = shares * sizes[members].sum(), np.zeros(len(shares))
        for g in members:
            tie_break = 1e-6 * (overall_target - overall) / max(len(ds), 1)
            choice = int(np.argmax(target - filled + tie_break + closed))
            assigned[g] = choice
            filled[choice] += sizes[g]
            overall[choice] += sizes[g]
    return assigned[group]


def patient_split(ds: LabeledImages, ratios=DEFAULT_RATIOS, seed: int = 0) -> np.ndarray:
    """Assign every image to "train", "val" or "test", keeping each patient in one split.

    Stratified by class as far as whole patients allow; images without a patient id count as
    their own patient.

    Args:
        ds: the labeled set.
        ratios: (train, val, test) shares; normalised, zeros allowed.
        seed: shuffling seed; the same seed gives the same split.

    Returns:
        str array (N,) of split names.
    """
    return np.array(SPLITS)[_assign_groups(ds, _checked_ratios(ratios), seed)]


def patient_kfold(ds: LabeledImages, k: int = 3, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """k folds of (train_idx, test_idx), grouped by patient and stratified by class where possible.

    Every image is in exactly one test fold and no patient is on both sides of a fold.
    Deterministic for a seed.

    Raises:
        ConfigError: k < 2 or more folds than patients.
    """
    n_groups = len(np.unique(patient_groups(ds).astype(str)))
    if int(k) != k or k < 2 or k > n_groups:
        raise ConfigError(f"k must be an integer from 2 to the number of patients ({n_groups}), got {k!r}")
    fold = _assign_groups(ds, np.full(int(k), 1.0 / k), seed)
    return [(np.flatnonzero(fold != i), np.flatnonzero(fold == i)) for i in range(int(k))]


def resolve_split(ds: LabeledImages, seed: int = 0) -> LabeledImages:
    """ds with ``splits`` filled: the source's own split when it has one, else ``patient_split``."""
    if ds.splits is not None and all(s in SPLITS for s in np.unique(ds.splits)):
        return ds
    level = "patient" if ds.patient_ids is not None else "image"
    notice = f"the source has no split: made a {level}-level 70/10/20 split stratified by class (seed {seed})"
    return dataclasses.replace(ds, splits=patient_split(ds, seed=seed), notices=[*ds.notices, notice])
