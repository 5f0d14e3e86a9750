"""One entry point for every data source: a path, a MedMNIST name, or a CSV manifest."""
from __future__ import annotations

from pathlib import Path

from medsyn.data.folder import file_kind, read_folder, read_unlabeled
from medsyn.data.manifest import read_manifest
from medsyn.data.npz import find_medmnist_file, medmnist_suggestion, read_npz, split_medmnist_name
from medsyn.data.preprocess import Conform
from medsyn.data.types import SPLITS, LabeledImages
from medsyn.errors import DataError

UNKNOWN_FORMAT = "unknown format: expected .npz, a class-folder tree, DICOM, NIfTI or a .csv manifest"


def parse_spec(spec: str, split: str | None = None) -> tuple[str, str | None]:
    """'data.npz:test' -> ('data.npz', 'test'); a ':split' suffix is only taken when the whole spec is no file."""
    base, sep, suffix = str(spec).rpartition(":")
    if sep and suffix in SPLITS and base and not Path(spec).expanduser().exists():
        if split is not None and split != suffix:
            raise DataError(spec, f"two splits asked for: ':{suffix}' in the source and split={split!r}")
        return base, suffix
    if split is not None and split not in SPLITS:
        raise DataError(spec, f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    return str(spec), split


def load_source(
    spec: str,
    *,
    size: int | None = None,
    channels: int | None = None,
    interpolation: str = "bilinear",
    manifest: str | None = None,
    axis: int = 2,
    slices: tuple[int, int] | None = None,
    window: tuple[float, float] | None = None,
    split: str | None = None,
) -> LabeledImages:
    """Read any supported data source into one LabeledImages (float32 (N, C, S, S) in [0, 1]).

    Args:
        spec: a MedMNIST .npz path, a MedMNIST name ("breastmnist", "breastmnist_64") read from the
            medmnist cache, a class-folder tree, a .csv manifest, or (as one class) a flat folder of
            images or a single image, DICOM or NIfTI file; may end in ":train", ":val"
            or ":test" to keep one of the source's own splits.
        size: square side to resize to; None keeps the size (the most common one when mixed).
        channels: 1 or 3 to force grey or RGB; None keeps each source's own.
        interpolation: nearest, bilinear, bicubic, area or lanczos.
        manifest: a CSV manifest to read instead of scanning ``spec``; relative paths in it start
            from ``spec`` when that is a folder, else from the CSV's folder.
        axis: NIfTI slicing axis (0, 1 or 2).
        slices: NIfTI (lo, hi) slice range, Python-style (the brain-MRI paper keeps (30, 130)).
        window: (center, width) intensity window for DICOM and NIfTI; None uses the DICOM file's
            own window, else each file's or volume's min-max.
        split: "train", "val" or "test"; same as the spec suffix.

    Raises:
        DataError: the source is missing, of an unknown format, or holds bad data (file named).
        ConfigError: a bad option value (size, channels, interpolation).
    """
    conform = Conform.checked(size, channels, interpolation)
    path_text, split = parse_spec(spec, split)
    path = Path(path_text).expanduser()
    if manifest is not None:
        csv_path = Path(manifest).expanduser()
        if not csv_path.is_file():
            raise DataError(csv_path, "no such file or folder")
        base = path if path_text and path.is_dir() else None
        ds = read_manifest(csv_path, conform, base=base, window=window, axis=axis, slices=slices)
    elif path.exists():
        ds = _read_path(path, conform, window=window, axis=axis, slices=slices, split=split)
    elif split_medmnist_name(path_text) is not None:
        ds = read_npz(find_medmnist_file(path_text), conform, split=split)
        ds.source = path_text
    else:
        guess = medmnist_suggestion(path_text)
        hint = f" (did you mean the MedMNIST name {guess!r}?)" if guess else ""
        raise DataError(path_text, f"no such file or folder{hint}")
    return _select_split(ds, spec, split)


def _read_path(path: Path, conform: Conform, *, window, axis, slices, split) -> LabeledImages:
    if path.is_dir():
        return read_folder(path, conform, window=window, axis=axis, slices=slices)
    name = path.name.lower()
    if name.endswith(".npz"):
        return read_npz(path, conform, split=split)
    if name.endswith(".csv"):
        return read_manifest(path, conform, window=window, axis=axis, slices=slices)
    if file_kind(path) is not None:  # one PNG/JPEG/TIFF, DICOM or NIfTI file: one class
        return read_unlabeled(path, conform, window=window, axis=axis, slices=slices)
    raise DataError(path, UNKNOWN_FORMAT)


def _select_split(ds: LabeledImages, spec: str, split: str | None) -> LabeledImages:
    if split is None or ds.format == "medmnist-npz":  # the npz reader already kept only that split
        return ds
    if ds.splits is None:  # the seeded, patient-level split every medsyn command uses for this source
        from medsyn.data.splits import source_split

        ds = source_split(ds)
    chosen = ds.split(split)
    if len(chosen) == 0:
        present = ", ".join(s for s in SPLITS if (ds.splits == s).any())
        raise DataError(spec, f"has no {split!r} split (has: {present})")
    return chosen
