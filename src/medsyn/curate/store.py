"""What curation reads and writes: clusters.csv, curate.json, discarded.csv and the kept/ sample folder."""
from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsyn.data.types import LabeledImages
from medsyn.errors import DataError, RunError
from medsyn.imageio import write_image_folder

CLUSTERS_CSV = "clusters.csv"
RECORD_JSON = "curate.json"
DISCARDED_CSV = "discarded.csv"
KEPT_DIR = "kept"
MANIFEST_OWN_COLUMNS = ("path", "label", "class_name")  # write_image_folder writes these itself


@dataclass
class Review:
    """A review run read back: the clusters and scores a person looked at.

    Attributes:
        images: image names as in clusters.csv (paths relative to the curated set).
        labels, clusters: class index and cluster per image.
        scores: automatic scores, or None when the review had no --real.
        record: the review's curate.json.
    """

    images: list[str]
    labels: np.ndarray
    clusters: np.ndarray
    scores: np.ndarray | None
    record: dict[str, Any]


def images_digest(images: np.ndarray) -> str:
    """sha256 of the pixels: ties a review to the exact images it clustered."""
    arr = np.ascontiguousarray(images)
    digest = hashlib.sha256(f"{arr.dtype.str}|{arr.shape}|".encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def image_names(ds: LabeledImages) -> list[str]:
    """Each image's path relative to the set's folder (as manifest.csv writes it), else 'file.npz#i'."""
    root = Path(ds.source).expanduser().resolve()
    if ds.paths is None:
        return [f"{root.name}#{i}" for i in range(len(ds))]
    names = []
    for origin in ds.paths:
        try:
            names.append(Path(origin).resolve().relative_to(root).as_posix())
        except ValueError:  # a manifest may list files outside the folder
            names.append(str(origin))
    return names


def input_manifest_rows(ds: LabeledImages, names: list[str]) -> list[dict[str, str]] | None:
    """The input's manifest.csv columns beyond path/label/class_name, one dict per image, matched by path.

    None when the set has no manifest (or it does not list every image): provenance such as a
    `medsyn sample` folder's checkpoint, seed and index then cannot be carried over.
    """
    source = Path(ds.source).expanduser()
    listing = (source if source.is_dir() else source.parent) / "manifest.csv"
    if not listing.is_file():
        return None
    try:
        with open(listing, newline="", encoding="utf-8-sig") as fh:
            rows = {(row.get("path") or "").strip(): row for row in csv.DictReader(fh)}
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not all(name in rows for name in names):
        return None
    return [{k: v for k, v in rows[name].items() if k and k not in MANIFEST_OWN_COLUMNS} for name in names]


def _score_cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


def write_clusters_csv(path: Path, names: list[str], labels: np.ndarray, class_names: list[str], ids: list[str],
                       scores: np.ndarray | None) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "class_name", "cluster", "score"])
        for i, name in enumerate(names):
            score = "" if scores is None else _score_cell(scores[i])
            writer.writerow([name, int(labels[i]), class_names[labels[i]], ids[i], score])


def write_discarded_csv(path: Path, names: list[str], labels: np.ndarray, class_names: list[str], ids: list[str],
                        scores: np.ndarray | None, reasons: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "class_name", "cluster", "score", "reason"])
        for i in (i for i, reason in enumerate(reasons) if reason):
            score = "" if scores is None else _score_cell(scores[i])
            writer.writerow([names[i], int(labels[i]), class_names[labels[i]], ids[i], score, reasons[i]])


def write_kept(folder: Path, ds: LabeledImages, keep: np.ndarray, names: list[str]) -> None:
    """The kept images as a sample folder (class folders, classes.txt, manifest.csv) that load_source reads.

    Manifest rows carry the input's own columns (a `medsyn sample` folder's model, checkpoint,
    step, seed, index) and a ``curated_from`` column naming the original image.
    """
    carried = input_manifest_rows(ds, names) or [{} for _ in names]
    rows = [{**carried[i], "curated_from": names[i]} for i in np.flatnonzero(keep)]
    write_image_folder(folder, ds.images[keep], ds.labels[keep], ds.class_names, bit_depth=ds.bit_depth, rows=rows,
                       stem="syn")


def write_record(path: Path, record: dict[str, Any]) -> None:
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def read_review(review: Path, ds: LabeledImages) -> Review:
    """A review run's clusters.csv and curate.json, checked against the set being curated now.

    Raises:
        RunError: not a review folder (no clusters.csv or curate.json).
        DataError: the set's images or classes differ from the ones reviewed.
    """
    review = Path(review)
    table, record_path = review / CLUSTERS_CSV, review / RECORD_JSON
    if not table.is_file() or not record_path.is_file():
        raise RunError(f"{review}: not a curate review folder (needs {CLUSTERS_CSV} and {RECORD_JSON})")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        with open(table, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        clusters = np.array([int(row["cluster"].rpartition("/")[2]) for row in rows], dtype=np.int64)
        labels = np.array([int(row["label"]) for row in rows], dtype=np.int64)
    except (OSError, ValueError, KeyError, csv.Error) as err:
        raise RunError(f"{table}: cannot read ({type(err).__name__}: {err})") from None
    if record.get("images_sha256") != images_digest(ds.images) or list(record.get("class_names", [])) != ds.class_names:
        raise DataError(ds.source, f"images differ from those reviewed in {review} ({record.get('input')}); "
                                   f"curate the set the review was made from")
    if len(rows) != len(ds) or not np.array_equal(labels, ds.labels):
        raise DataError(table, f"lists {len(rows)} images, {ds.source} has {len(ds)}")
    scored = all(row["score"] for row in rows)
    scores = np.array([float(row["score"]) for row in rows]) if scored else None
    return Review([row["image"] for row in rows], labels, clusters, scores, record)
