"""Class-folder trees (root/<class>/**/<file>) of PNG/JPEG/TIFF/BMP, DICOM or NIfTI files."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from medsyn.data.dicom import has_dicom_magic, read_dicom
from medsyn.data.nifti import is_nifti, read_nifti
from medsyn.data.preprocess import Conform, DecodedImage, scale_between, scale_by_depth, stack_decoded, window_bounds
from medsyn.data.types import SPLITS, LabeledImages
from medsyn.errors import DataError
from medsyn.imageio import class_dir_name

_FRAME_SUFFIX = re.compile(r"#(frame|slice)=\d+$")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def file_kind(path: Path) -> str | None:
    """'image', 'dicom', 'nifti' or None (not a file this package reads)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix == ".dcm" or (suffix in ("", ".ima") and has_dicom_magic(path)):
        return "dicom"
    if is_nifti(path):
        return "nifti"
    return None


def decode_image(path: Path, window: tuple[float, float] | None = None) -> DecodedImage:
    """Decode one 2D image file (8- or 16-bit; grey, grey+alpha, RGB, RGBA, palette); alpha is dropped.

    ``window`` (centre, width) maps the stored values (0..255 or 0..65535) centre - width/2 ..
    centre + width/2 onto [0, 1], as for DICOM; without it the stored depth's full range is used.
    """
    if path.stat().st_size == 0:
        raise DataError(path, "cannot decode image (empty file)")
    try:
        with Image.open(path) as img:
            img.load()
            pixels, depth = _pixels_of(img)
    except UnidentifiedImageError:
        raise DataError(path, "cannot decode image (not a format PIL recognises, or a damaged header)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        text = str(exc).replace(str(path), path.name)
        problem = text.splitlines()[0] if text else type(exc).__name__
        problem = "truncated file" if "truncat" in problem.lower() else problem
        raise DataError(path, f"cannot decode image ({problem})") from None
    if not np.isfinite(pixels).all():
        raise DataError(path, "image holds NaN or infinite values")
    fixed = img.mode == "F"
    if window is not None and not fixed:
        stored = pixels.astype(np.float64) * (65535.0 if depth == 16 else 255.0)
        pixels, fixed = scale_between(stored, *window_bounds(window)), True
    return DecodedImage(pixels=pixels, origin=str(path), bit_depth=depth, range_fixed=fixed)


SIXTEEN_BIT_DIM = 0.25  # a 16-bit set whose brightest pixel is below a quarter of 65535 is rescaled


def fit_sixteen_bit_range(decoded: list[DecodedImage]) -> list[str]:
    """Rescale a set's 16-bit images that use a small part of 0..65535, in place; the notices to print.

    Scanners and exporters often store 12 bits (0..4095) or less in 16-bit PNG/TIFF; divided by
    65535 those images are nearly black. One factor for the whole set (its brightest pixel becomes
    white) keeps intensities comparable between images, unlike a per-image min-max.
    """
    sixteen = [d for d in decoded if d.kind == "image" and d.bit_depth == 16 and not d.range_fixed]
    if not sixteen:
        return []
    peak = max(float(d.pixels.max()) for d in sixteen)
    if peak <= 0 or peak >= SIXTEEN_BIT_DIM:
        return []
    for item in sixteen:
        item.pixels = np.clip(item.pixels / peak, 0.0, 1.0).astype(np.float32)
    stored = round(peak * 65535)
    return [f"16-bit images hold values 0..{stored} of 0..65535: scaled by the data's own maximum ({stored} is "
            f"white) so they are not nearly black; --window CENTRE,WIDTH sets the range instead"]


def window_clipping_warning(decoded: list[DecodedImage], window: tuple[float, float] | None) -> list[str]:
    """A warning when a given --window clips most pixels of the set to black or white."""
    if window is None or not decoded:
        return []
    clipped = np.mean([float(((d.pixels <= 0.0) | (d.pixels >= 1.0)).mean()) for d in decoded])
    if clipped <= 0.5:
        return []
    return [f"warning: the window {window[0]:g},{window[1]:g} clips {clipped:.0%} of the pixels to black or white: "
            f"it is far from the data's range; `medsyn data info` shows the images, a wider --window keeps detail"]


def _pixels_of(img: Image.Image) -> tuple[np.ndarray, int]:
    """A loaded PIL image -> float32 (C, H, W) in [0, 1] and its stored bit depth."""
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        return scale_by_depth(np.asarray(img).astype(np.float64).clip(0, 65535), 16)[None], 16
    if mode == "F":
        values = np.asarray(img, dtype=np.float64)
        finite = values[np.isfinite(values)]
        inside = finite.size == 0 or (finite.min() >= 0 and finite.max() <= 1)
        scaled = values if inside else scale_between(values, finite.min(), finite.max())
        return np.asarray(scaled, dtype=np.float32)[None], 16
    if mode in ("P", "PA"):
        rgb = np.asarray(img.convert("RGB"))
        # A palette of greys is a grey image; keep it one channel like an L image.
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return scale_by_depth(rgb[..., 0], 8)[None], 8
        return np.moveaxis(scale_by_depth(rgb, 8), -1, 0), 8
    if mode in ("1", "L", "LA", "La"):
        return scale_by_depth(np.asarray(img.convert("L")), 8)[None], 8
    return np.moveaxis(scale_by_depth(np.asarray(img.convert("RGB")), 8), -1, 0), 8


def decode_file(
    path: Path,
    window: tuple[float, float] | None = None,
    axis: int = 2,
    slices: tuple[int, int] | None = None,
    patient_id: str | None = None,
) -> list[DecodedImage]:
    """Every image a file holds (several for multi-frame DICOM and NIfTI volumes), by file kind.

    ``patient_id`` (a manifest's) overrides what the file itself says.
    """
    kind = file_kind(path)
    if kind == "image":
        decoded = [decode_image(path, window=window)]
    elif kind == "dicom":
        decoded = read_dicom(path, window=window)
    elif kind == "nifti":
        decoded = read_nifti(path, axis=axis, slices=slices, window=window, patient_id=patient_id)
    else:
        raise DataError(path, "unknown file type: expected PNG, JPEG, TIFF, BMP, DICOM or NIfTI")
    if patient_id:
        for item in decoded:
            item.patient_id = patient_id
    return decoded


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _class_files(class_dir: Path) -> list[Path]:
    files = (p for p in class_dir.rglob("*") if p.is_file() and _visible(p, class_dir))
    return sorted(p for p in files if file_kind(p) is not None)


def _class_order(root: Path, folder_names: list[str]) -> tuple[list[str], dict[str, int]]:
    """Class names in label order and folder name -> label; classes.txt wins over sorted names."""
    listing = root / "classes.txt"
    if not listing.is_file():
        names = sorted(set(folder_names))
        return names, {name: i for i, name in enumerate(names)}
    names = [line.strip() for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        safe = class_dir_name(name)
        index.update({safe: i, f"{i:02d}_{safe}": i, name: i})
    unknown = sorted(set(folder_names) - set(index))
    if unknown:
        raise DataError(root / unknown[0], "class folder is not listed in classes.txt")
    return names, index


def _split_tree(root: Path, subdirs: list[Path]) -> bool:
    """True for root/train/<class>/..., root/test/<class>/... layouts (the split is kept)."""
    return bool(subdirs) and all(d.name in SPLITS for d in subdirs) and all(_subfolders(d) for d in subdirs)


def read_folder(
    root: Path,
    conform: Conform,
    window: tuple[float, float] | None = None,
    axis: int = 2,
    slices: tuple[int, int] | None = None,
) -> LabeledImages:
    """Read root/<class>/**/<file>, or root/<split>/<class>/**/<file>, into one labeled set.

    Class order comes from root/classes.txt when present (folder names as ``class_dir_name``
    writes them, optionally prefixed "NN_"), else from the sorted folder names. Hidden files and
    folders are skipped, and so are files of other types (and manifest.csv/classes.txt at the root).

    Raises:
        DataError: no class subfolders, an empty class folder, or a file that cannot be decoded.
    """
    subdirs = _subfolders(root)
    parts = [(d.name, _subfolders(d)) for d in subdirs] if _split_tree(root, subdirs) else [(None, subdirs)]
    class_dirs = [d for _, dirs in parts for d in dirs]
    if not class_dirs:
        if any(p.is_file() and file_kind(p) is not None for p in root.iterdir()):
            return read_unlabeled(root, conform, window=window, axis=axis, slices=slices)
        raise DataError(root, f"no class subfolders and no image files (expected {root.name}/<class>/<image files>, "
                              f"or image files directly in it for one unlabeled class)")
    names, label_of = _class_order(root, [d.name for d in class_dirs])
    decoded: list[DecodedImage] = []
    labels: list[int] = []
    splits: list[str] = []
    empty_listed: list[str] = []
    for split, dirs in parts:
        for class_dir in dirs:
            files = _class_files(class_dir)
            if not files:
                if (root / "classes.txt").is_file():
                    empty_listed.append(class_dir.name)  # declared in classes.txt: a class with no images
                    continue
                raise DataError(class_dir, "empty class folder: no image, DICOM or NIfTI files")
            for path in files:
                items = decode_file(path, window=window, axis=axis, slices=slices)
                decoded += items
                labels += [label_of[class_dir.name]] * len(items)
                splits += [split or ""] * len(items)
    if not decoded:
        raise DataError(root, "no image, DICOM or NIfTI files in any class folder")
    rows = _manifest_rows(root)
    listed_splits = _from_root_manifest(root, rows, decoded)
    tree_splits = parts[0][0] is not None
    # a flat class tree may still have a split: the manifest beside it (e.g. `medsyn augment` output keeps its source's)
    own_splits = splits if tree_splits else listed_splits
    notices = [f"class folder {name} is empty" for name in empty_listed]
    synthetic = (root / PROVENANCE).is_file() or _lists_checkpoints(rows)
    return assemble(decoded, labels, names, source=str(root), conform=conform, splits=own_splits, notices=notices,
                    format="medsyn-samples" if synthetic else None, window=window)


def read_unlabeled(
    path: Path,
    conform: Conform,
    window: tuple[float, float] | None = None,
    axis: int = 2,
    slices: tuple[int, int] | None = None,
) -> LabeledImages:
    """A flat folder of image files, or one image, DICOM or NIfTI file, as one class named after it.

    FID, curation and unconditional training need no labels; commands that do (classify, studies)
    refuse a set of one class. A notice says how the images were labelled.
    """
    files = _class_files(path) if path.is_dir() else [path]
    decoded = [item for f in files for item in decode_file(f, window=window, axis=axis, slices=slices)]
    if not decoded:
        raise DataError(path, "no image, DICOM or NIfTI files")
    name = path.name if path.is_dir() else path.name.split(".")[0]
    what = "a folder without class subfolders" if path.is_dir() else "a single file"
    notice = (f"{path} is {what}: its {len(decoded)} image(s) are read as one class {name!r} (for labels, put "
              f"each class in its own folder or pass a CSV manifest)")
    return assemble(decoded, [0] * len(decoded), [name], source=str(path), conform=conform, notices=[notice],
                    window=window)


PROVENANCE = "provenance.json"  # written by medsyn sample, refine and curate: the folder holds synthetic images


def _manifest_rows(root: Path) -> list[dict[str, str]] | None:
    listing = root / "manifest.csv"
    if not listing.is_file():
        return None
    try:
        with open(listing, newline="", encoding="utf-8-sig") as fh:
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def _lists_checkpoints(rows: list[dict[str, str]] | None) -> bool:
    """A sample folder written before provenance.json existed: its manifest names the generator (model,
    checkpoint_sha256 columns, as `medsyn sample` writes them)."""
    return bool(rows) and bool({"model", "checkpoint_sha256"} & set(rows[0]))


def _from_root_manifest(root: Path, rows: list[dict[str, str]] | None, decoded: list[DecodedImage]) -> list[str] | None:
    """Take patient ids (and, when every file has one, splits) from root/manifest.csv as medsyn writes it.

    A folder tree cannot say which images share a patient or which split an image belongs to,
    but the manifest written beside it can, and patient-level splits need that. An unreadable
    manifest is ignored: it is optional.
    """
    if not rows:
        return None
    by_file = {str((root / (row.get("path") or "").strip()).resolve()): row
               for row in rows if (row.get("path") or "").strip()}
    splits = []
    for item in decoded:
        row = by_file.get(str(Path(_FRAME_SUFFIX.sub("", item.origin)).resolve()), {})
        patient = (row.get("patient_id") or "").strip()
        if patient:
            item.patient_id = patient
        splits.append((row.get("split") or "").strip().lower())
    return splits if all(s in SPLITS for s in splits) else None


def assemble(
    decoded: list[DecodedImage],
    labels: list[int],
    class_names: list[str],
    source: str,
    conform: Conform,
    splits: list[str] | None = None,
    notices: list[str] | None = None,
    format: str | None = None,
    window: tuple[float, float] | None = None,
) -> LabeledImages:
    """Decoded images with labels -> LabeledImages (format named after the file kinds unless given)."""
    range_notices = fit_sixteen_bit_range(decoded) + window_clipping_warning(decoded, window)
    images, shape_notices = stack_decoded(decoded, conform)
    ids = [d.patient_id for d in decoded]
    kinds = {d.kind for d in decoded}
    return LabeledImages(
        images=images, labels=np.asarray(labels, dtype=np.int64), class_names=list(class_names),
        source=source, format=format or (kinds.pop() if len(kinds) == 1 and "image" not in kinds else "folder"),
        bit_depth=max(d.bit_depth for d in decoded), splits=None if splits is None else np.array(splits),
        patient_ids=None if not any(ids) else np.array([i or "" for i in ids]),
        paths=[d.origin for d in decoded], notices=[*(notices or []), *range_notices, *shape_notices],
    )
