"""Patient-level splits and k-fold: grouped, stratified, deterministic."""
from __future__ import annotations

import numpy as np
import pytest

from medsyn.data import LabeledImages, load_source, patient_kfold, patient_split, source_split
from medsyn.errors import ConfigError


def _patients_set(n_patients: int = 60, seed: int = 0, with_unknown: bool = True) -> LabeledImages:
    """Patients with 1-5 images each; every patient has one class; some images without an id."""
    rng = np.random.default_rng(seed)
    ids, labels = [], []
    for p in range(n_patients):
        count, label = int(rng.integers(1, 6)), p % 3
        ids += [f"P{p:03d}"] * count
        labels += [label] * count
    if with_unknown:
        ids += [""] * 9
        labels += [0, 1, 2] * 3
    n = len(labels)
    return LabeledImages(images=np.zeros((n, 1, 2, 2), np.float32), labels=np.array(labels, np.int64),
                         class_names=["a", "b", "c"], source="test", format="folder",
                         patient_ids=np.array(ids))


def _no_patient_in_two(groups: list[np.ndarray], ids: np.ndarray) -> None:
    known = [set(ids[g]) - {""} for g in groups]
    for i in range(len(known)):
        for j in range(i + 1, len(known)):
            assert not known[i] & known[j]


def test_patient_split_grouped_stratified_deterministic():
    ds = _patients_set()
    split = patient_split(ds, seed=0)
    assert split.dtype.kind == "U" and set(split) == {"train", "val", "test"}
    _no_patient_in_two([np.flatnonzero(split == s) for s in ("train", "val", "test")], ds.patient_ids)
    for s in ("train", "val", "test"):
        assert set(ds.labels[split == s]) == {0, 1, 2}  # every class in every split
    share = np.mean(split == "train")
    assert 0.6 < share < 0.8
    np.testing.assert_array_equal(split, patient_split(ds, seed=0))
    assert (split != patient_split(ds, seed=1)).any()


def test_images_without_patient_ids_are_their_own_patients(medmnist_dir):
    ds = load_source(str(medmnist_dir / "breastmnist.npz"))
    split = patient_split(ds, ratios=(0.7, 0.1, 0.2), seed=3)
    counts = {s: np.bincount(ds.labels[split == s]).tolist() for s in ("train", "val", "test")}
    assert counts == {"train": [147, 399], "val": [21, 57], "test": [42, 114]}  # 210*.7=147, 570*.7=399


def test_zero_ratio_split_stays_empty():
    split = patient_split(_patients_set(), ratios=(0.8, 0.0, 0.2))
    assert "val" not in set(split)
    with pytest.raises(ConfigError):
        patient_split(_patients_set(), ratios=(0.5, -0.1, 0.6))


def test_kfold_partitions_every_image_once():
    ds = _patients_set()
    folds = patient_kfold(ds, k=4, seed=0)
    assert len(folds) == 4
    tests = np.concatenate([test for _, test in folds])
    assert sorted(tests.tolist()) == list(range(len(ds)))
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == len(ds)
        _no_patient_in_two([train, test], ds.patient_ids)
        assert set(ds.labels[test]) == {0, 1, 2}
    again = patient_kfold(ds, k=4, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = patient_kfold(ds, k=4, seed=1)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(folds, other))


def test_kfold_more_folds_than_patients_is_an_error():
    ds = _patients_set(n_patients=2, with_unknown=False)
    assert len(patient_kfold(ds, k=2)) == 2 and all(len(t) for _, t in patient_kfold(ds, k=2))
    with pytest.raises(ConfigError, match="number of patients"):
        patient_kfold(ds, k=3)


def test_source_split_keeps_source_split_or_makes_one(medmnist_dir):
    npz = load_source(str(medmnist_dir / "breastmnist.npz"))
    assert source_split(npz) is npz
    ds = _patients_set()
    resolved = source_split(ds, seed=5)
    np.testing.assert_array_equal(resolved.splits, patient_split(ds, seed=5))
    assert ds.splits is None and "patient-level 70/10/20 split" in resolved.notices[-1]
