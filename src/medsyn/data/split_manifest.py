"""`medsyn data split`: write the split medsyn uses for a source into a CSV manifest.

A source without a split of its own (a class-folder tree, DICOM, NIfTI) gets medsyn's seeded
patient-level 70/10/20 split in every command (``splits.source_split``). Writing it down makes it
visible, editable and portable: the manifest (path, label, class_name, patient_id, split; one row
per file, so a volume's slices or a file's frames stay together) is read back with
``--manifest``, and then its ``split`` column is the source's own split.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from medsyn.atomic import write_text
from medsyn.data.splits import DEFAULT_RATIOS, SPLIT_SEED, WITHIN_FILE, has_own_split, patient_groups, patient_split
from medsyn.data.types import SPLITS, LabeledImages
from medsyn.errors import ConfigError


def split_rows(ds: LabeledImages, root: Path, splits: np.ndarray) -> list[dict[str, str]]:
    """One manifest row per file of ``ds``, with the split of its images (``patient_split``'s, so a
    file's frames or slices share one)."""
    groups = patient_groups(ds).astype(str)
    rows: dict[str, dict[str, str]] = {}
    for path, label, split, group, patient in zip(ds.paths, ds.labels, splits, groups, _patients(ds)):
        file = WITHIN_FILE.sub("", path)
        if file in rows:
            continue  # later frames or slices of the same file: the same row, the same split
        relative = Path(file).resolve()
        try:
            relative = relative.relative_to(root.resolve())
        except ValueError:
            pass
        rows[file] = {"path": str(relative), "label": str(int(label)), "class_name": ds.class_names[int(label)],
                      "patient_id": patient or (group if "<no patient id> file" in group else ""), "split": str(split)}
    return list(rows.values())


def _patients(ds: LabeledImages) -> list[str]:
    return [""] * len(ds) if ds.patient_ids is None else [str(p) for p in ds.patient_ids]


def write_split_manifest(ds: LabeledImages, root: Path, out: Path, ratios=DEFAULT_RATIOS,
                         seed: int = SPLIT_SEED) -> dict[str, int]:
    """Write the manifest (paths relative to ``root``, the data folder) and return images per split."""
    if has_own_split(ds):
        raise ConfigError(f"{ds.source} has its own split already (train/val/test); every medsyn command uses it")
    if ds.paths is None:
        raise ConfigError(f"{ds.source}: its images have no files of their own, so no manifest can list them")
    made = patient_split(ds, ratios=ratios, seed=seed)
    rows = split_rows(ds, root, made)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["path", "label", "class_name", "patient_id", "split"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(out, buffer.getvalue())
    return {name: int((made == name).sum()) for name in SPLITS}


def parse_ratios(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or any(v < 0 for v in values) or not np.isfinite(values).all() or sum(values) <= 0:
        raise ConfigError(f"--ratios takes three non-negative shares TRAIN,VAL,TEST (e.g. 0.7,0.1,0.2), got {text!r}")
    return values  # type: ignore[return-value]
