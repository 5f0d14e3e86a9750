"""A labeled set -> (field, value) rows for `medsyn data info` (the CLI renders them)."""
from __future__ import annotations

import numpy as np

from medsyn.data.types import SPLITS, LabeledImages

_CHANNEL_NAMES = {1: "grey", 3: "RGB"}


def _class_breakdown(ds: LabeledImages, mask: np.ndarray) -> str:
    counts = np.bincount(ds.labels[mask], minlength=ds.num_classes)
    return "; ".join(f"{name} {int(n)}" for name, n in zip(ds.class_names, counts))


def describe(ds: LabeledImages) -> list[tuple[str, str]]:
    """Facts about a set as (field, value) rows, numbers exact.

    Rows: source, format, images, classes, one "class i" row per class (name and count), image
    size, channels, bit depth, splits (counts, then one row per split with its class counts),
    patients when known, and one "notice" row per reading notice.
    """
    rows = [
        ("source", ds.source),
        ("format", ds.format),
        ("images", str(len(ds))),
        ("classes", str(ds.num_classes)),
    ]
    for i, (name, count) in enumerate(zip(ds.class_names, ds.class_counts())):
        rows.append((f"class {i}", f"{name}: {count}"))
    rows += [
        ("image size", f"{ds.images.shape[2]}x{ds.images.shape[3]}"),
        ("channels", f"{ds.channels} ({_CHANNEL_NAMES.get(ds.channels, 'other')})"),
        ("bit depth", str(ds.bit_depth)),
    ]
    if ds.format == "medsyn-samples":
        rows.append(("splits", "none: a synthetic set (provenance.json); every image may train"))
    elif ds.splits is None:
        from medsyn.data.splits import SPLIT_SEED, patient_split

        made = patient_split(ds, seed=SPLIT_SEED)
        counts = ", ".join(f"{s} {int((made == s).sum())}" for s in SPLITS)
        rows.append(("splits", f"none in the source; every medsyn command uses its patient-level split "
                               f"{counts} (seed {SPLIT_SEED}; `medsyn data split` writes it to a manifest)"))
    else:
        names = [s for s in SPLITS if (ds.splits == s).any()]
        rows.append(("splits", ", ".join(f"{s} {int((ds.splits == s).sum())}" for s in names)))
        for s in names:
            mask = ds.splits == s
            rows.append((f"split {s}", f"{int(mask.sum())}: {_class_breakdown(ds, mask)}"))
    if ds.patient_ids is not None:
        ids = np.asarray(ds.patient_ids).astype(str)
        known = ids[ids != ""]
        unknown = len(ids) - len(known)
        text = str(len(np.unique(known)))
        rows.append(("patients", text + (f" (+{unknown} images without a patient id)" if unknown else "")))
    rows += [("notice", notice) for notice in ds.notices]
    return rows
