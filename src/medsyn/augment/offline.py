"""Offline augmentation: an augmented copy of a labeled set, in memory or written to disk.

Row order of the result is block by block: all originals (copy 0) first, then copy 1 of every
image, then copy 2, ... Parameters for a whole copy are drawn at once from one generator seeded
with ``seed`` and then applied in batches, so the result does not depend on the batch size.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsyn.augment.presets import BatchAugment, build_preset
from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError
from medsyn.imageio import atomic_dir, class_dir_name, save_grid, write_image_folder

GRID_ROWS = 8  # source images per class shown in grid_<class>.png
GRID_COPIES = 7  # augmented copies shown beside each original


@dataclass
class AugmentedSet:
    """An augmented set and, per row, where it came from.

    Attributes:
        data: the augmented LabeledImages (format "augmented").
        source_index: (M,) row of the source set each image was made from.
        copy: (M,) 0 for an original, k >= 1 for the k-th augmented copy.
    """

    data: LabeledImages
    source_index: np.ndarray
    copy: np.ndarray


def resolve_copies(augment: BatchAugment, copies: int | None) -> int:
    """``copies``, or the preset's paper count when None (liver-lesion: 480)."""
    if copies is None:
        if augment.paper_copies is None:
            raise ConfigError(f"preset '{augment.name}' has no copy count in its paper; give copies explicitly")
        return augment.paper_copies
    if copies < 0:
        raise ConfigError(f"copies must be >= 0, got {copies}")
    return int(copies)


def augment_images(
    images: np.ndarray, augment: BatchAugment, copies: int, seed: int = 0, batch_size: int = 256
) -> list[np.ndarray]:
    """``copies`` augmented versions of a float32 (N, C, H, W) array, one array per copy."""
    generator = torch.Generator().manual_seed(seed)
    source = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    blocks = []
    with torch.no_grad():
        for _ in range(copies):
            params = augment.sample_params(len(source), generator)
            out = np.empty(source.shape, dtype=np.float32)
            for start in range(0, len(source), batch_size):
                stop = start + batch_size
                out[start:stop] = augment.apply_params(source[start:stop], params[start:stop]).numpy()
            blocks.append(out)
    return blocks


def augment_with_provenance(
    ds: LabeledImages, preset: str, copies: int | None, seed: int = 0,
    include_original: bool = True, batch_size: int = 256,
) -> AugmentedSet:
    """Like ``augment_dataset``, also returning each row's source index and copy number."""
    augment = build_preset(preset, ds.size)
    copies = resolve_copies(augment, copies)
    n = len(ds)
    blocks = augment_images(ds.images, augment, copies, seed, batch_size)
    if include_original:
        blocks.insert(0, np.asarray(ds.images, dtype=np.float32))
    copy = np.repeat(np.arange(0 if include_original else 1, copies + 1), n)
    source_index = np.tile(np.arange(n), len(blocks))
    repeat = lambda a: None if a is None else a[source_index]  # noqa: E731
    paths = None if ds.paths is None else [
        ds.paths[i] if k == 0 else f"{ds.paths[i]}#aug={k}" for i, k in zip(source_index, copy)
    ]
    data = LabeledImages(
        images=np.concatenate(blocks) if blocks else ds.images[:0].astype(np.float32),
        labels=ds.labels[source_index],
        class_names=list(ds.class_names),
        source=ds.source,
        format="augmented",
        bit_depth=ds.bit_depth,
        splits=repeat(ds.splits),
        patient_ids=repeat(ds.patient_ids),  # copies stay with their patient, so patient-level splits hold
        paths=paths,
        notices=[*ds.notices, f"augmented with preset {preset!r}: {copies} copies per image, seed {seed}"],
    )
    return AugmentedSet(data=data, source_index=source_index, copy=copy)


def augment_dataset(
    ds: LabeledImages, preset: str, copies: int | None, seed: int = 0,
    include_original: bool = True, batch_size: int = 256,
) -> LabeledImages:
    """Originals (optionally) plus ``copies`` augmented versions of every image.

    Args:
        ds: the set to augment; labels, splits and patient ids are repeated, never changed.
        preset: registry name ("liver-lesion", "brain-mri", "retina").
        copies: augmented copies per image; None means the paper's count where the preset has one
            (liver-lesion: 480 = 30 x (1 + 3 + 7 + 5)), otherwise a ConfigError.
        seed: seeds the one generator all parameters are drawn from.
        include_original: put the originals (copy 0) first.
        batch_size: images augmented at once (memory only; results do not depend on it).

    Returns:
        A new LabeledImages with format "augmented", rows ordered copy by copy (see module doc),
        and paths "orig_path#aug=k" for copies when the source has paths.
    """
    return augment_with_provenance(ds, preset, copies, seed, include_original, batch_size).data


def write_augmented(src: LabeledImages, out: Path, preset: str, copies: int | None, seed: int = 0) -> Path:
    """Write originals plus augmented copies as a class-folder set, atomically, and return ``out``.

    With splits (give ``source_split``'s output), only train images get copies: val and test
    images are written once, as they are, and the manifest's ``split`` column keeps every image in
    its split, so a later ``classify`` on the folder holds out the same images and no copy of a
    held-out image lands in training.

    ``out`` gets ``<class>/aug_<i>.png``, ``classes.txt`` and ``manifest.csv`` (columns path, label,
    class_name, source_index, copy (0 = original), preset, seed, and source_path / split /
    patient_id when the source has them), plus ``grid_<class>.png`` per class: each row an original
    followed by its first augmented copies.
    """
    result = originals_and_train_copies(src, preset, copies, seed)
    rows = _manifest_rows(src, result, preset, seed)
    with atomic_dir(out) as tmp:
        data = result.data
        write_image_folder(tmp, data.images, data.labels, data.class_names, data.bit_depth, rows=rows, stem="aug")
        _write_grids(tmp, src, result)
    return Path(out)


def originals_and_train_copies(src: LabeledImages, preset: str, copies: int | None, seed: int) -> AugmentedSet:
    """Every original (copy 0, in source order), then the copies of the train images only."""
    train = np.flatnonzero(src.splits == "train") if src.splits is not None else np.arange(len(src))
    made = augment_with_provenance(src.subset(train), preset, copies, seed, include_original=False)
    source_index = np.concatenate([np.arange(len(src)), train[made.source_index]]).astype(np.int64)
    copy = np.concatenate([np.zeros(len(src), dtype=np.int64), made.copy])
    paths = None if src.paths is None else [
        src.paths[i] if k == 0 else f"{src.paths[i]}#aug={k}" for i, k in zip(source_index, copy)]
    pick = lambda a: None if a is None else a[source_index]  # noqa: E731
    data = LabeledImages(
        images=np.concatenate([np.asarray(src.images, dtype=np.float32), made.data.images]),
        labels=src.labels[source_index], class_names=list(src.class_names), source=src.source, format="augmented",
        bit_depth=src.bit_depth, splits=pick(src.splits), patient_ids=pick(src.patient_ids), paths=paths,
        notices=made.data.notices)
    return AugmentedSet(data=data, source_index=source_index, copy=copy)


def _manifest_rows(src: LabeledImages, result: AugmentedSet, preset: str, seed: int) -> list[dict]:
    rows = []
    for i, k in zip(result.source_index.tolist(), result.copy.tolist()):
        row = {"source_index": i, "copy": k, "preset": preset, "seed": seed}
        if src.paths is not None:
            row["source_path"] = src.paths[i]
        if src.splits is not None:
            row["split"] = str(src.splits[i])
        if src.patient_ids is not None:
            row["patient_id"] = str(src.patient_ids[i])
        rows.append(row)
    return rows


def _write_grids(folder: Path, src: LabeledImages, result: AugmentedSet) -> None:
    """One grid per class: up to GRID_ROWS augmented originals, each followed by up to GRID_COPIES copies."""
    shown = min(GRID_COPIES, int(result.copy.max(initial=0)))
    row_of = {(int(i), int(k)): r for r, (i, k) in enumerate(zip(result.source_index, result.copy)) if k <= shown}
    for label, name in enumerate(src.class_names):
        members = [i for i in np.flatnonzero(src.labels == label) if (int(i), shown) in row_of][:GRID_ROWS]
        if not members:
            continue
        rows = [result.data.images[row_of[(int(i), k)]] for i in members for k in range(shown + 1)]
        save_grid(folder / f"grid_{class_dir_name(name)}.png", np.stack(rows), nrow=shown + 1)
