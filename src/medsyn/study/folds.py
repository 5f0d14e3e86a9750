"""A study's data and its train/val/test folds (the source's own split, a patient split, or patient k-fold)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsyn import atomic
from medsyn.data import load_source, patient_kfold, patient_split, source_split
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
        split_names = source_split(data).splits  # the split every medsyn command uses on this source
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


def check_run_held_out(cfg: StudyConfig, folds: list[Fold], data: LabeledImages, name: str, run_dir: Path) -> list[str]:
    """Refuse a finished run (generator ``name``) that trained on any val or test image of a fold;
    the warnings to print when that cannot be checked.

    Raises:
        DataError: the run's training images include held-out images of a fold (counted).
    """
    import json

    from medsyn.errors import DataError
    from medsyn.provenance import record_of_run

    record = record_of_run(run_dir, json.loads((run_dir / "data.json").read_text()), "generator training")
    if not record.image_hashes:
        return [f"warning: generator {name!r}: {run_dir} records no image identities (trained before medsyn "
                "recorded them): medsyn cannot check it saw no held-out image"]
    held = held_out_identities(cfg, folds, data, record.load["size"], record.load["channels"],
                               record.load.get("interpolation", "bilinear"))
    if held is None:
        return [f"warning: generator {name!r}: the phantoms are rendered at {data.size}px and {run_dir} trained at "
                f"{record.load['size']}px: cannot check"]
    trained = set(record.image_hashes)
    for fold, identities in zip(folds, held):
        shared = len(trained & identities)
        if shared:
            raise DataError(run_dir, f"generator {name!r} trained on {shared} of the {len(fold.val) + len(fold.test)} "
                                     f"val and test images of fold {fold.index}; a study can only use a run trained "
                                     "on its training images (give model: to train one per fold)")
    return []


def held_out_identities(cfg: StudyConfig, folds: list[Fold], data: LabeledImages, size: int, channels: int,
                        interpolation: str) -> list[set[str]] | None:
    """Per fold, the identities (medsyn.provenance) of its val and test images, read at the given
    geometry as a run read its training images; None when they cannot be read that way (the
    built-in phantoms are rendered at one size, not read)."""
    from medsyn.provenance import image_hashes

    if (size, channels, interpolation) != (data.size, data.channels, "bilinear"):
        if cfg.data.source == "phantoms":
            return None
        data = load_source(resolve_source(cfg), size=size, channels=channels, interpolation=interpolation)
        folds = make_folds(cfg, data)
    return [set(image_hashes(fold.val.images)) | set(image_hashes(fold.test.images)) for fold in folds]


def split_notices(cfg: StudyConfig, data: LabeledImages) -> list[str]:
    """What the study's split keeps apart, said before it runs."""
    from medsyn.data.splits import has_own_split

    kind = cfg.split.kind
    if kind == "source" and has_own_split(data):
        return [f"split: {data.source}'s own train/val/test split"]
    if data.patient_ids is None:
        what = {"kfold": f"{cfg.split.folds}-fold cross-validation", "patient": "a 70/10/20 split",
                "source": "medsyn's 70/10/20 split"}[kind]
        return [f"warning: {what} of {data.source} by image: it has no patient ids, so images of one patient can be "
                "on both sides of a fold (give a manifest with a patient_id column to keep patients whole)"]
    return [f"split: {kind} by patient ({len(set(data.patient_ids.tolist()))} patients), stratified by class"]


def take_rows(ds: LabeledImages, limit: int, seed: int) -> LabeledImages:
    """At most ``limit`` rows, chosen with a seed and kept in their original order."""
    if len(ds) <= limit:
        return ds
    pick = np.sort(np.random.default_rng(seed).permutation(len(ds))[:limit])
    return ds.subset(pick)


def join_sets(a: LabeledImages, b: LabeledImages) -> LabeledImages:
    """``a``'s rows then ``b``'s, with ``a``'s classes, source and format."""
    return LabeledImages(np.concatenate([a.images, b.images]), np.concatenate([a.labels, b.labels]),
                         list(a.class_names), a.source, a.format, a.bit_depth)
