"""Patient-level splits: no patient's images on both sides of a train/test boundary.

Every medsyn command that trains, tunes or evaluates on a source uses one split of it, decided
once (``source_split``): the source's own (a MedMNIST file's, a manifest's ``split`` column, a
``train/val/test`` folder tree), checked for patients on both sides; otherwise the seeded
patient-level 70/10/20 split of ``patient_split`` with the fixed SPLIT_SEED, whatever the
command's own seed, so ``train``, ``sample``, ``refine``, ``curate``, ``augment`` and ``classify``
agree on which images are held out. ``medsyn data split`` writes it into a manifest.
"""
from __future__ import annotations

import dataclasses
import re

import numpy as np

from medsyn.data.types import SPLITS, LabeledImages
from medsyn.errors import ConfigError, DataError

DEFAULT_RATIOS = (0.7, 0.1, 0.2)
SPLIT_SEED = 0  # the split of a source without its own: one for every command, never the run's seed
WITHIN_FILE = re.compile(r"#(frame|slice)=\d+$")  # frames of a DICOM file, slices of a NIfTI volume


def patient_groups(ds: LabeledImages) -> np.ndarray:
    """One group key per image: its patient id; else its file, for the frames or slices of one
    volume (an anonymised multi-frame DICOM is one patient); else the image itself."""
    paths = ds.paths if ds.paths is not None else [""] * len(ds)
    own = np.array([f"<no patient id> file {WITHIN_FILE.sub('', p)}" if WITHIN_FILE.search(p)
                    else f"<no patient id> image {i}" for i, p in enumerate(paths)], dtype=object)
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


def check_patients_within_splits(ds: LabeledImages) -> None:
    """A given split (manifest column, folder tree) must keep every patient on one side.

    Raises:
        DataError: a patient (or a volume's file) has images in two splits, named with the splits.
    """
    if ds.splits is None:
        return
    groups = patient_groups(ds).astype(str)
    known = ~np.char.startswith(groups, "<no patient id> image")
    if not known.any():
        return
    keys, inverse = np.unique(groups[known], return_inverse=True)
    splits = np.asarray(ds.splits)[known]
    for g in range(len(keys)):
        present = sorted(set(splits[inverse == g].tolist()))
        if len(present) > 1:
            who = keys[g].replace("<no patient id> file ", "the frames of ")
            raise DataError(ds.source, f"patient {who!r} has images in the {' and '.join(present)} splits; a "
                                       "patient must be on one side, or held-out results are not independent "
                                       "(fix the split, or drop it and let medsyn make a patient-level one)")


def has_own_split(ds: LabeledImages) -> bool:
    return ds.splits is not None and all(s in SPLITS for s in np.unique(ds.splits))


def source_split(ds: LabeledImages, seed: int = SPLIT_SEED) -> LabeledImages:
    """ds with ``splits`` filled: the source's own split (patients checked), else ``patient_split``.

    Synthetic sets (``medsyn sample`` folders) are not split: every image may train.
    """
    if ds.format == "medsyn-samples":
        return dataclasses.replace(ds, splits=np.full(len(ds), "train"))
    if has_own_split(ds):
        check_patients_within_splits(ds)
        return ds
    level = "patient" if ds.patient_ids is not None else "image (no patient ids)"
    notice = (f"{ds.source} has no split of its own: medsyn uses its {level}-level 70/10/20 split stratified by "
              f"class (seed {seed}), the same in every command; `medsyn data split` writes it into a manifest")
    return dataclasses.replace(ds, splits=patient_split(ds, seed=seed), notices=[*ds.notices, notice])


def take_split(ds: LabeledImages, split: str, purpose: str) -> LabeledImages:
    """The rows of one split of a source split by ``source_split``, with what to tell the user
    appended to their ``notices``.

    Args:
        ds: a set with ``splits`` (``source_split``'s output, or one split of a source).
        split: "train" for anything that trains or tunes; another split only when asked for.
        purpose: what the command does with it, e.g. "training on", "scoring against".

    Returns:
        the split's rows; their notices end with a line naming the split and what is held out, and
        a "warning: ..." line when the rows are a split that evaluations hold out (val or test).

    Raises:
        DataError: the source has no images in that split.
    """
    counts = {name: int((ds.splits == name).sum()) for name in SPLITS}
    if counts.get(split, 0) == 0:
        present = ", ".join(f"{name} {n}" for name, n in counts.items() if n) or "none"
        raise DataError(ds.source, f"has no {split!r} images (its splits: {present})")
    chosen = ds.split(split)
    held = ", ".join(f"{name} {n}" for name, n in counts.items() if n and name != split)
    synthetic = " (synthetic images: all of them)" if ds.format == "medsyn-samples" else ""
    line = (f"{purpose} the {split} split of {ds.source}: {len(chosen)} images"
            + (f"; held out: {held}" if held else "") + synthetic)
    chosen.notices = [*chosen.notices, line]
    if split != "train" and ds.format != "medsyn-samples":
        chosen.notices.append(f"warning: {purpose} the {split} split of {ds.source}, which evaluations hold out: any "
                              f"result on those images is no longer independent (classify and studies refuse "
                              f"synthetic images made from them)")
    return chosen
