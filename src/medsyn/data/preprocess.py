"""Decoded images -> one float32 (N, C, H, W) array in [0, 1]: intensity scaling, channels, resizing."""
from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from PIL import Image

from medsyn.errors import ConfigError


class Interpolation(StrEnum):
    """Resampling filters for resizing; PIL implements all five, so every reader resizes the same way."""

    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    AREA = "area"
    LANCZOS = "lanczos"


_PIL_FILTERS = {
    Interpolation.NEAREST: Image.Resampling.NEAREST,
    Interpolation.BILINEAR: Image.Resampling.BILINEAR,
    Interpolation.BICUBIC: Image.Resampling.BICUBIC,
    Interpolation.AREA: Image.Resampling.BOX,  # box filter = pixel-area averaging
    Interpolation.LANCZOS: Image.Resampling.LANCZOS,
}

# ITU-R BT.601 luma weights, the same ones PIL uses for RGB -> L.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Conform:
    """How every image of a source is brought to one shape.

    Attributes:
        size: square side in pixels; None keeps the size when all agree, else the most common one.
        channels: 1 or 3 to force grey or RGB; None keeps grey grey and colour colour.
        interpolation: resampling filter used whenever an image is resized.
    """

    size: int | None = None
    channels: int | None = None
    interpolation: Interpolation = Interpolation.BILINEAR

    @classmethod
    def checked(cls, size: int | None, channels: int | None, interpolation: str) -> "Conform":
        """Validate user-facing options; a bad value is a ConfigError naming the option."""
        if size is not None and (int(size) != size or size < 1):
            raise ConfigError(f"size must be a positive integer, got {size!r}")
        if channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
        try:
            interp = Interpolation(str(interpolation).lower())
        except ValueError:
            known = ", ".join(i.value for i in Interpolation)
            raise ConfigError(f"unknown interpolation {interpolation!r} (known: {known})") from None
        return cls(None if size is None else int(size), channels, interp)


@dataclass
class DecodedImage:
    """One image as a reader decoded it, before the set is brought to one shape.

    Attributes:
        pixels: float32 (C, H, W) in [0, 1], C is 1 (grey) or 3 (RGB).
        origin: the file it came from, with "#frame=N" / "#slice=N" for multi-image files.
        bit_depth: 8 or 16, the depth of the stored original.
        patient_id: known patient, or None.
        kind: the file kind it came from: "image", "dicom" or "nifti".
        range_fixed: the intensity range was chosen for this image (a window, or a float image's
            own range), so the set's 16-bit range fitting leaves it alone.
    """

    pixels: np.ndarray
    origin: str
    bit_depth: int = 8
    patient_id: str | None = None
    kind: str = "image"
    range_fixed: bool = False


def scale_by_depth(values: np.ndarray, bit_depth: int) -> np.ndarray:
    """Unsigned integers of a bit depth -> float32 in [0, 1] (255 or 65535 maps to 1)."""
    peak = 65535.0 if bit_depth == 16 else 255.0
    return (np.asarray(values, dtype=np.float32) / np.float32(peak)).clip(0.0, 1.0)


def window_bounds(window: tuple[float, float]) -> tuple[float, float]:
    """(low, high) of an intensity window given as (centre, width), as DICOM defines it."""
    centre, width = float(window[0]), float(window[1])
    return centre - width / 2, centre + width / 2


def scale_between(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear map of [low, high] onto [0, 1], clipped; a flat range (high <= low) gives zeros."""
    values = np.asarray(values, dtype=np.float64)
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    return ((values - low) / (high - low)).clip(0.0, 1.0).astype(np.float32)


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """(N, C, H, W) with C in {1, 3} -> the requested channel count (grey repeated, colour to luminance)."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1:
        return np.repeat(images, channels, axis=1)
    grey = np.tensordot(_LUMA, images, axes=([0], [1]))  # (N, H, W)
    return grey[:, None].astype(np.float32)


@functools.lru_cache(maxsize=64)
def _axis_weights(n_in: int, n_out: int, interpolation: Interpolation) -> np.ndarray:
    """PIL's resampling along one axis as an (n_out, n_in) matrix.

    PIL resizes separably and linearly, and skips the pass of an axis whose length is kept, so
    resizing an identity matrix along one axis yields exactly that pass's weights. Applying them
    with matmul resizes a whole batch at once with PIL's results (to float rounding).
    """
    identity = Image.fromarray(np.eye(n_in, dtype=np.float32))
    return np.asarray(identity.resize((n_in, n_out), resample=_PIL_FILTERS[interpolation]), dtype=np.float32)


def resize_batch(images: np.ndarray, side: int, interpolation: Interpolation) -> np.ndarray:
    """Resize (N, C, H, W) float images to (N, C, side, side), clipping filter overshoot back to [0, 1]."""
    rows = _axis_weights(images.shape[2], side, interpolation)
    cols = _axis_weights(images.shape[3], side, interpolation)
    out = np.matmul(np.matmul(rows, images.astype(np.float32, copy=False)), cols.T)
    return out.clip(0.0, 1.0).astype(np.float32, copy=False)


def resize_notice(resized: int, total: int, side: int, interpolation: Interpolation) -> str:
    return f"resized {resized} of {total} images to {side}x{side} ({interpolation.value})"


def conform_array(images: np.ndarray, conform: Conform) -> tuple[np.ndarray, list[str]]:
    """One same-shape (N, C, H, W) batch -> requested channels and square size; returns notices."""
    h, w = images.shape[2:]
    side = conform.size or max(h, w)
    notices = []
    if (h, w) != (side, side):
        # Resize before repeating grey to RGB: three times less work for the same result.
        images = resize_batch(images, side, conform.interpolation)
        notices.append(resize_notice(len(images), len(images), side, conform.interpolation))
    if conform.channels is not None:
        images = to_channels(images, conform.channels)
    return images.astype(np.float32, copy=False), notices


def stack_decoded(decoded: list[DecodedImage], conform: Conform) -> tuple[np.ndarray, list[str]]:
    """Many decoded images of possibly mixed sizes and channels -> one (N, C, S, S) array and notices.

    Without a requested size the most common size wins (a non-square one becomes square on its
    longer side, so no axis loses resolution); grey images mixed with colour ones become RGB.
    """
    notices: list[str] = []
    channels = conform.channels
    counts = Counter(d.pixels.shape[0] for d in decoded)
    if channels is None:
        channels = 3 if 3 in counts else 1
        if len(counts) > 1:
            notices.append(f"repeated {counts[1]} grey images to 3 channels to match the colour images")
    common_h, common_w = Counter(d.pixels.shape[1:] for d in decoded).most_common(1)[0][0]
    side = conform.size or max(common_h, common_w)
    out = np.empty((len(decoded), channels, side, side), dtype=np.float32)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, d in enumerate(decoded):
        by_shape.setdefault(d.pixels.shape, []).append(i)
    resized, sizes, stretched = 0, [], False
    for (_, h, w), index in by_shape.items():
        batch = np.stack([decoded[i].pixels for i in index])
        if (h, w) != (side, side):
            batch = resize_batch(batch, side, conform.interpolation)
            resized += len(index)
            sizes.append(f"{len(index)} of {h}x{w} (e.g. {decoded[index[0]].origin})")
            stretched |= max(side / h, side / w, h / side, w / side) > 2
        out[index] = to_channels(batch, channels)
    if resized:
        notice = resize_notice(resized, len(decoded), side, conform.interpolation) + ": " + "; ".join(sizes[:4])
        if conform.size is None:
            notice += " (the most common size; --set size=N chooses another)"
        notices.append(("warning: " + notice + "; some were scaled more than 2x") if stretched else notice)
    return out, notices
