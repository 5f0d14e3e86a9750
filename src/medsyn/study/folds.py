"""A study's data and its train/val/test folds (the source's own split, a patient split, or patient k-fold)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsyn import atomic
from medsyn.data import load_source, patient_kfold, patient_split, resolve_split
from medsyn.data.phantoms import make_phantoms
from medsyn.data.types import LabeledImages
from medsyn.imageio import to_uint
from medsyn.study.config import StudyConfig

VAL_SHARE_OF_TRAIN = 1 / 8  # a 7:1 train:val carve of each k-fold training part, as the U-Net paper's 7:1:2


@dataclass
class Fold:
    index: int
    train: LabeledImages
    val: LabeledImages
    test: LabeledImages
    test_index: np.ndarray  # rows of the full data set on test, so k-fold predictions can be pooled


def resolve_source(cfg: StudyConfig) -> str:
    """The data source spec, with a relative path taken from the YAML's folder when it exists there."""
    spec = cfg.data.source
    path, _, split = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    candidate = Path(cfg.base_dir) / path
    if not Path(path).is_absolute() and candidate.exists():
        return str(candidate) + (f":{split}" if split else "")
    return spec


def load_study_data(cfg: StudyConfig) -> LabeledImages:
    if cfg.data.source == "phantoms":
        return make_phantoms(size=cfg.data.size or 64, per_class=cfg.data.per_class, seed=cfg.data.seed)
    return load_source(resolve_source(cfg), size=cfg.data.size, channels=cfg.data.channels)


def cap_per_class(ds: LabeledImages, cap: int | None, seed: int) -> LabeledImages:
    """At most ``cap`` images of each class (seeded choice, original order kept)."""
    if cap is None:
        return ds
    rng = np.random.default_rng(seed)
    keep = [np.sort(rng.permutation(np.flatnonzero(ds.labels == k))[:cap]) for k in range(ds.num_classes)]
    return ds.subset(np.sort(np.concatenate(keep)))


def make_folds(cfg: StudyConfig, data: LabeledImages, train_cap: int | None = None) -> list[Fold]:
    seed = cfg.split.seed
    if cfg.split.kind == "kfold":
        folds = []
        for i, (train_idx, test_idx) in enumerate(patient_kfold(data, cfg.split.folds, seed=seed)):
            part = data.subset(train_idx)
            inner = patient_split(part, ratios=(1 - VAL_SHARE_OF_TRAIN, VAL_SHARE_OF_TRAIN, 0.0), seed=seed + i)
            folds.append(Fold(i, cap_per_class(part.subset(inner == "train"), train_cap, seed),
                              part.subset(inner == "val"), data.subset(test_idx), test_idx))
        return folds
    if cfg.split.kind == "patient":
        split_names = patient_split(data, seed=seed)
    else:
        split_names = resolve_split(data, seed=seed).splits
    pick = {name: np.flatnonzero(split_names == name) for name in ("train", "val", "test")}
    return [Fold(0, cap_per_class(data.subset(pick["train"]), train_cap, seed), data.subset(pick["val"]),
                 data.subset(pick["test"]), pick["test"])]


def write_fold_npz(ds: LabeledImages, path: Path) -> Path:
    """A fold's training images as a MedMNIST-style npz with class names, so a GAN run can name its data."""
    if path.exists():
        return path
    images = np.stack([to_uint(img, ds.bit_depth) for img in ds.images])
    # suffix: np.savez_compressed appends ".npz" to any other name, which would leave the rename nothing to move
    return atomic.write_with(path, lambda tmp: np.savez_compressed(
        tmp, train_images=images, train_labels=ds.labels.reshape(-1, 1), class_names=np.array(ds.class_names)),
        suffix=".npz")
