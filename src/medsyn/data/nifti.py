"""NIfTI volumes -> 2D slices along one axis, each volume scaled to [0, 1] as a whole."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medsyn.data.preprocess import DecodedImage, scale_between, window_bounds
from medsyn.errors import DataError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
PERCENTILES = (0.5, 99.5)  # robust range: a few hot voxels must not darken the whole volume


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(path: Path) -> str:
    """'sub-01_T1w.nii.gz' -> 'sub-01_T1w' (the default patient id of a volume)."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _load_volume(path: Path) -> np.ndarray:
    import nibabel as nib

    if path.stat().st_size == 0:
        raise DataError(path, "empty file")
    try:
        volume = np.asarray(nib.load(str(path)).get_fdata(dtype=np.float32))
    except Exception as exc:  # noqa: BLE001 - nibabel, gzip and zlib raise many types for bad files
        text = str(exc).replace(str(path), path.name)  # the DataError names the file already
        problem = text.splitlines()[0] if text else type(exc).__name__
        raise DataError(path, f"cannot read NIfTI ({problem})") from None
    while volume.ndim > 3 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if volume.ndim == 2:
        volume = volume[..., None]
    if volume.ndim != 3:
        raise DataError(path, f"volume has shape {volume.shape}; expected 3D (a 4D series must have 1 volume)")
    if not np.isfinite(volume).all():
        raise DataError(path, "volume holds NaN or infinite values")
    return volume


def _intensity_range(volume: np.ndarray, window: tuple[float, float] | None, intensity: str) -> tuple[float, float]:
    if window is not None:
        return window_bounds(window)
    if intensity == "percentile":
        low, high = np.percentile(volume, PERCENTILES)
        return float(low), float(high)
    return float(volume.min()), float(volume.max())


def read_nifti(
    path: Path,
    axis: int = 2,
    slices: tuple[int | None, int | None] | None = None,
    window: tuple[float, float] | None = None,
    intensity: str = "minmax",
    patient_id: str | None = None,
) -> list[DecodedImage]:
    """Cut a NIfTI volume into 2D grey slices.

    Args:
        path: a .nii or .nii.gz file.
        axis: volume axis to slice along (0, 1 or 2).
        slices: (lo, hi) slice indices kept, Python-style (hi exclusive, negatives count from the end).
        window: (center, width) intensity window, e.g. for CT in HU; overrides ``intensity``.
        intensity: "minmax" or "percentile" (0.5-99.5) scaling of the whole volume.
        patient_id: the volume's patient; defaults to the file name without .nii/.nii.gz.

    Raises:
        DataError: unreadable file, 4D series, NaNs, or a slice range that selects nothing.
    """
    if axis not in (0, 1, 2):
        raise DataError(path, f"axis must be 0, 1 or 2, got {axis}")
    if intensity not in ("minmax", "percentile"):
        raise DataError(path, f"intensity scaling must be 'minmax' or 'percentile', got {intensity!r}")
    if window is not None and not float(window[1]) > 0:
        raise DataError(path, f"window width must be positive, got {float(window[1]):g}")
    volume = _load_volume(path)
    depth = volume.shape[axis]
    bounds = (None, None) if slices is None else tuple(None if v is None else int(v) for v in slices)
    kept = range(depth)[slice(*bounds)]
    if len(kept) == 0:
        text = ":".join("" if v is None else str(v) for v in bounds)
        raise DataError(path, f"slices {text} select nothing from the {depth} slices along axis {axis}")
    low, high = _intensity_range(volume, window, intensity)
    patient = patient_id or nifti_stem(path)
    return [
        DecodedImage(pixels=scale_between(np.take(volume, k, axis=axis), low, high)[None],
                     origin=f"{path}#slice={k}", bit_depth=16, patient_id=patient, kind="nifti")
        for k in kept
    ]
