"""What an audit folder holds, and ``read_copies`` for the commands that act on it (``curate --drop-copies``)."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from medsyn import atomic
from medsyn.audit.figures import closest_pairs_png, distances_png
from medsyn.audit.page import write_page
from medsyn.audit.result import AuditResult
from medsyn.errors import RunError

AUDIT_JSON = "audit.json"
AUDIT_HTML = "audit.html"
COPIES_CSV = "copies.csv"
NEAREST_CSV = "nearest.csv"
CLOSEST_PNG = "closest_pairs.png"
DISTANCES_PNG = "distances.png"
COPY_COLUMNS = ("image", "index", "class", "nearest_train", "pixel_distance", "feature_distance", "flipped", "shift",
                "ssim_distance")


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*COPY_COLUMNS, "copy"], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "shift": " ".join(str(v) for v in row["shift"]),
                         "ssim_distance": "" if row["ssim_distance"] is None else row["ssim_distance"]})
    return buffer.getvalue()


def write_audit(folder: str | Path, result: AuditResult, synthetic: np.ndarray, train: np.ndarray,
                record: dict[str, Any] | None = None) -> Path:
    """audit.json (with ``record``: how the audit was asked for), audit.html, copies.csv, nearest.csv
    (every synthetic image), closest_pairs.png and distances.png into ``folder``.

    Args:
        synthetic, train: the images (N, C, S, S), for the contact sheet.
    """
    from medsyn.curate.store import images_digest

    folder = Path(folder)
    # the digest ties copies.csv to these very images: `curate --drop-copies` refuses an audit of another set
    atomic.write_json(folder / AUDIT_JSON, {**result.to_json(), "synthetic_images_digest": images_digest(synthetic),
                                            "run": record or {}})
    atomic.write_text(folder / COPIES_CSV, _csv_text(result.copy_rows()))
    atomic.write_text(folder / NEAREST_CSV, _csv_text(result.copy_rows(only_copies=False)))
    pairs = closest_pairs_png(folder / CLOSEST_PNG, result, synthetic, train)
    histograms = distances_png(folder / DISTANCES_PNG, result)
    write_page(folder / AUDIT_HTML, result, pairs, histograms)
    return folder


def audited_images_digest(audit_dir: str | Path) -> str | None:
    """sha256 of the pixels of the synthetic set an audit folder audited (``curate.store.images_digest``);
    None when its audit.json does not record it.

    Raises:
        RunError: ``audit_dir`` has no readable audit.json.
    """
    path = Path(audit_dir) / AUDIT_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("synthetic_images_digest")
    except (OSError, ValueError, AttributeError):
        raise RunError(f"{audit_dir}: no readable {AUDIT_JSON}; give a folder written by `medsyn audit`") from None


def read_copies(audit_dir: str | Path) -> set[str]:
    """The names of the synthetic images an audit flagged as copies (copies.csv's ``image`` column:
    the names ``medsyn curate`` gives the same set's images).

    Raises:
        RunError: ``audit_dir`` is not a folder written by ``medsyn audit``.
    """
    path = Path(audit_dir) / COPIES_CSV
    if not path.is_file():
        raise RunError(f"{audit_dir}: no {COPIES_CSV}; give a folder written by `medsyn audit`")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if "image" not in (reader.fieldnames or []):
            raise RunError(f"{path}: no 'image' column; not written by `medsyn audit`")
        return {row["image"] for row in reader}
