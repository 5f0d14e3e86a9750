"""CSV manifests: one row per file with path, label and optionally patient_id and split."""
from __future__ import annotations

import csv
import re
from pathlib import Path

from medsyn.data.folder import assemble, decode_file, file_kind
from medsyn.data.preprocess import Conform, DecodedImage
from medsyn.data.types import SPLITS, LabeledImages
from medsyn.errors import DataError

REQUIRED_COLUMNS = ("path", "label")
_INTEGER = re.compile(r"^[+-]?\d+$")


def _read_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header (lower-cased) and (row number, row) pairs; the header is row 1, as in a spreadsheet."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = [(reader.line_num, row) for row in reader
                    if any((v or "").strip() for k, v in row.items() if k is not None)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(csv_path, f"cannot read CSV ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        has = ", ".join(h for h in header if h) or "nothing"
        raise DataError(csv_path, f"missing required column(s) {', '.join(missing)} (has: {has})")
    if not rows:
        raise DataError(csv_path, "manifest has no rows")
    return header, rows


def _cell(row: dict[str, str], column: str) -> str:
    return (row.get(column) or "").strip()


def _class_names(csv_path: Path, rows: list[tuple[int, dict[str, str]]]) -> tuple[list[str], list[int]]:
    """Class names and one label index per row.

    Integer labels are indices; their names come from a class_name column or a classes.txt beside
    the CSV (both written by medsyn.imageio), else class_0, class_1, ... Text labels are class
    names, indexed in sorted order.
    """
    raw = [_cell(row, "label") for _, row in rows]
    for (line, _), value in zip(rows, raw):
        if not value:
            raise DataError(csv_path, f"row {line}: empty label")
    if not all(_INTEGER.match(v) for v in raw):
        names = sorted(set(raw))
        return names, [names.index(v) for v in raw]
    labels = [int(v) for v in raw]
    for (line, _), label in zip(rows, labels):
        if label < 0:
            raise DataError(csv_path, f"row {line}: negative label {label}")
    names = [f"class_{i}" for i in range(max(labels) + 1)]
    listing = csv_path.parent / "classes.txt"
    if listing.is_file():
        listed = [s.strip() for s in listing.read_text(encoding="utf-8").splitlines() if s.strip()]
        if len(listed) >= len(names):
            return listed, labels
    for (_, row), label in zip(rows, labels):
        if _cell(row, "class_name"):
            names[label] = _cell(row, "class_name")
    return names, labels


def _splits(csv_path: Path, rows: list[tuple[int, dict[str, str]]]) -> list[str] | None:
    values = [_cell(row, "split").lower() for _, row in rows]
    if not any(values):
        return None
    for (line, _), value in zip(rows, values):
        if value not in SPLITS:
            raise DataError(csv_path, f"row {line}: split must be one of {', '.join(SPLITS)}, got {value!r}")
    return values


def check_manifest(csv_path: Path, base: Path | None = None) -> list[Path]:
    """Validate columns, labels and that every listed file exists, without decoding anything.

    Returns the resolved file path of each row.
    """
    _, rows = _read_rows(csv_path)
    base = base or csv_path.parent
    resolved = []
    for line, row in rows:
        rel = _cell(row, "path")
        if not rel:
            raise DataError(csv_path, f"row {line}: empty path")
        path = Path(rel).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise DataError(csv_path, f"row {line}: no such file {rel}")
        if file_kind(path) is None:
            raise DataError(csv_path, f"row {line}: {rel} is not a PNG, JPEG, TIFF, BMP, DICOM or NIfTI file")
        resolved.append(path)
    _class_names(csv_path, rows)
    _splits(csv_path, rows)
    return resolved


def read_manifest(
    csv_path: Path,
    conform: Conform,
    base: Path | None = None,
    window: tuple[float, float] | None = None,
    axis: int = 2,
    slices: tuple[int, int] | None = None,
) -> LabeledImages:
    """Read the files a CSV manifest lists (images, DICOM and NIfTI may be mixed).

    Args:
        csv_path: CSV with columns path, label and optionally patient_id, split, class_name.
        conform: size, channels and interpolation for the returned images.
        base: folder that relative paths start from; defaults to the CSV's folder.
        window: (center, width) intensity window for DICOM and NIfTI files.
        axis: NIfTI slicing axis.
        slices: NIfTI (lo, hi) slice range.

    Raises:
        DataError: missing columns, a row naming a missing file (CSV path and row number), bad
            labels, or a file that cannot be decoded (that file named).
    """
    paths = check_manifest(csv_path, base)
    _, rows = _read_rows(csv_path)
    names, labels = _class_names(csv_path, rows)
    row_splits = _splits(csv_path, rows)
    decoded: list[DecodedImage] = []
    image_labels: list[int] = []
    image_splits: list[str] = []
    for i, ((_, row), path) in enumerate(zip(rows, paths)):
        items = decode_file(path, window=window, axis=axis, slices=slices,
                            patient_id=_cell(row, "patient_id") or None)
        decoded += items
        image_labels += [labels[i]] * len(items)
        image_splits += [row_splits[i] if row_splits else ""] * len(items)
    return assemble(decoded, image_labels, names, source=str(csv_path), conform=conform,
                    splits=image_splits if row_splits else None, format="manifest", window=window)
