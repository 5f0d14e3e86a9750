"""DICOM files -> grey images: rescale slope/intercept, window, MONOCHROME1 inversion, one image per frame."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medsyn.data.preprocess import DecodedImage, scale_between, window_bounds
from medsyn.errors import DataError

_MAGIC_OFFSET = 128  # the DICOM preamble is 128 bytes, then "DICM"


def has_dicom_magic(path: Path) -> bool:
    """True when the file carries the DICM marker after its preamble (DICOM files often lack .dcm)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(_MAGIC_OFFSET)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _first(value) -> float:
    """WindowCenter/WindowWidth may be multi-valued; the first pair is the default view."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def _window_bounds(path: Path, ds, values: np.ndarray, window: tuple[float, float] | None) -> tuple[float, float]:
    """(low, high) of the intensity window: the caller's, else the file's, else the data's range."""
    if window is None and "WindowCenter" in ds and "WindowWidth" in ds:
        try:
            window = (_first(ds.WindowCenter), _first(ds.WindowWidth))
        except (TypeError, ValueError, IndexError):
            window = None  # unreadable window tags: fall back to min-max like files without them
    if window is None:
        return float(values.min()), float(values.max())
    if not float(window[1]) > 0:
        raise DataError(path, f"window width must be positive, got {float(window[1]):g}")
    return window_bounds(window)


def _read_dataset(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    if path.stat().st_size == 0:
        raise DataError(path, "empty file")
    try:
        return pydicom.dcmread(path, force=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(path, f"cannot read DICOM ({type(exc).__name__}: {exc})") from None


def _pixel_array(path: Path, ds) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if not has_dicom_magic(path) and "SOPClassUID" not in ds:
            raise DataError(path, "not a DICOM file (no DICM marker, no pixel data)")
        raise DataError(path, "DICOM file has no pixel data")
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types for bad or compressed data
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(path, f"cannot decode DICOM pixel data ({problem})") from None


def read_dicom(path: Path, window: tuple[float, float] | None = None) -> list[DecodedImage]:
    """Decode one DICOM file into one image per frame.

    Grey data: stored values -> RescaleSlope * v + RescaleIntercept -> window (the ``window``
    argument as (center, width), else the file's first WindowCenter/WindowWidth, else the file's
    min-max) mapped linearly from [center - width/2, center + width/2] onto [0, 1] and clipped ->
    inverted for MONOCHROME1. Colour data is scaled by its bit depth. Frames share one window.

    Raises:
        DataError: unreadable file, no pixel data, undecodable pixels or non-finite values.
    """
    ds = _read_dataset(path)
    pixels = _pixel_array(path, ds)
    try:
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.get("BitsStored", 8) or 8)
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        monochrome1 = str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"
        # An anonymised file may lack PatientID; its study (one patient's examination) still groups its
        # images, so patient-level splits keep a study's slices together.
        study = str(ds.get("StudyInstanceUID", "") or "").strip()
        patient = str(ds.get("PatientID", "") or "").strip() or (f"study {study}" if study else None)
    except (TypeError, ValueError) as exc:
        raise DataError(path, f"bad DICOM header value ({exc})") from None
    depth = 16 if bits > 8 else 8
    if frames == 1 or pixels.ndim == (3 if samples > 1 else 2):
        pixels = pixels[None]
    if samples > 1:
        peak = float(2 ** min(bits, 16) - 1)
        planes = np.moveaxis(pixels.astype(np.float32) / np.float32(peak), -1, 1)[:, :3].clip(0.0, 1.0)
    else:
        values = pixels.astype(np.float64) * slope + intercept
        if not np.isfinite(values).all():
            raise DataError(path, "DICOM pixel data holds NaN or infinite values")
        low, high = _window_bounds(path, ds, values, window)
        planes = scale_between(values, low, high)
        if monochrome1:
            planes = 1.0 - planes  # MONOCHROME1 stores bright as low values
        planes = planes[:, None]
    multi = len(planes) > 1
    return [
        DecodedImage(pixels=np.ascontiguousarray(plane, dtype=np.float32),
                     origin=f"{path}#frame={i}" if multi else str(path), bit_depth=depth,
                     patient_id=patient, kind="dicom")
        for i, plane in enumerate(planes)
    ]
