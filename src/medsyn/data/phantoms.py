"""Procedural CT-like liver-lesion ROIs: the offline default dataset.

The three classes follow the liver-lesion study of Frid-Adar et al. (portal-phase CT, square
ROIs around the lesion, intensities in [0, 1]):

* cyst: non-enhancing, water attenuation (0-15 HU), circumscribed, homogeneous;
* metastasis: hypo-attenuating soft tissue (40-80 HU), ill-defined irregular margin,
  heterogeneous, sometimes an enhancing rim, central necrosis or denser spots;
* hemangioma: hypo-attenuating, lobulated, with discontinuous peripheral nodular enhancement
  at blood-pool density (150-200 HU) and sometimes partial centripetal fill-in.

Each image is drawn in Hounsfield units on liver parenchyma (100-130 HU, low-frequency
heterogeneity, correlated noise of varying level, sometimes a portal vessel or the liver edge)
and mapped through a soft-tissue window. All geometry lives in normalised ROI coordinates and
all texture is a band-limited Fourier series defined in cycles per ROI, so the same image is
rendered at any size from 28 to 256 without aliasing. Image ``i`` of a class comes from its own
child seed, so it does not depend on how many images are asked for.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.special import erfc

from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError
from medsyn.imageio import atomic_dir, save_grid, write_image_folder

CLASS_NAMES = ("cyst", "metastasis", "hemangioma")
MIN_SIZE, MAX_SIZE = 28, 256
WINDOW_CENTRE_HU = 60.0  # soft-tissue window: liver sits at ~0.65, water at ~0.35, fat near 0
WINDOW_WIDTH_HU = 350.0
FIELD_PERIOD = 2  # random fields repeat every 2 ROI widths (an integer, for the FFT): no repetition in view
GRID_EXAMPLES = 16  # images per class in the grid_<class>.png previews

Spectrum = Callable[[np.ndarray], np.ndarray]
Rng = np.random.Generator
Polar = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # xe, ye, theta, rel from _Lesion.polar


def _check_args(size: int, per_class: int, seed: int) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(size) or not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"phantom size must be an integer from {MIN_SIZE} to {MAX_SIZE}, got {size!r}")
    if not is_int(per_class) or per_class < 1:
        raise ConfigError(f"phantom per_class must be a positive integer, got {per_class!r}")
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"phantom seed must be a non-negative integer, got {seed!r}")


# --------------------------------------------------------------------------- random fields


def _random_field(rng: np.random.Generator, size: int, max_cycles: float, spectrum: Spectrum) -> np.ndarray:
    """A unit-variance Gaussian random field with the given power spectrum (cycles per ROI).

    The coefficients are always drawn for the full frequency grid up to ``max_cycles``, so the
    random stream and the field do not depend on the image size; frequencies the pixel grid
    cannot carry are dropped (band-limiting instead of aliasing) and the rest rescaled to unit
    variance. Synthesis is an FFT over one period (FIELD_PERIOD * size pixels), which is fast
    and stays off the multithreaded BLAS that stalls on a busy machine.
    """
    kmax = int(round(max_cycles * FIELD_PERIOD))
    k = np.arange(-kmax, kmax + 1)
    power = spectrum(np.hypot(k[:, None], k[None, :]) / FIELD_PERIOD)
    power[kmax, kmax] = 0.0  # no DC term: the mean level is set explicitly
    coef = (rng.standard_normal(power.shape) + 1j * rng.standard_normal(power.shape)) * np.sqrt(power)
    period = FIELD_PERIOD * size
    keep = np.abs(k) / FIELD_PERIOD <= 0.85 * size / 2.0  # stay below Nyquist
    kept, wrapped = k[keep], k[keep] % period
    shift = np.exp(1j * np.pi * kept / period)  # half a pixel: sample at pixel centres
    # separable inverse FFT that transforms only the rows and columns actually needed
    rows = np.zeros((len(kept), period), dtype=complex)
    rows[:, wrapped] = coef[np.ix_(keep, keep)] * np.outer(shift, shift)
    cols = np.zeros((period, size), dtype=complex)
    cols[wrapped] = np.fft.ifft(rows, axis=1, norm="forward")[:, :size]
    field = np.fft.ifft(cols, axis=0, norm="forward")[:size].real
    return field / np.sqrt(max(power[np.ix_(keep, keep)].sum(), 1e-12))


def _lowpass(cutoff: float) -> Spectrum:
    return lambda f: np.exp(-((f / cutoff) ** 2))


def _bandpass(peak: float) -> Spectrum:
    # ramp times Gaussian roll-off: the shape of a filtered-back-projection noise power spectrum
    return lambda f: f * np.exp(-((f / peak) ** 2))


def _soft_inside(dist: np.ndarray, blur: float) -> np.ndarray:
    """1 inside (dist < 0), 0 outside, with an error-function edge of width ``blur``."""
    return 0.5 * erfc(dist / (blur * np.sqrt(2.0)))


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Lesion:
    """A lobulated ellipse in normalised coordinates ([-1, 1] across the ROI)."""

    cx: float
    cy: float
    radius: float
    aspect: float
    angle: float
    orders: np.ndarray
    amps: np.ndarray
    phases: np.ndarray

    def boundary(self, theta: np.ndarray) -> np.ndarray:
        wobble = (self.amps[:, None] * np.cos(self.orders[:, None] * np.ravel(theta) + self.phases[:, None])).sum(0)
        return self.radius * (1.0 + wobble.reshape(np.shape(theta)))

    def polar(self, x: np.ndarray, y: np.ndarray) -> Polar:
        """(xe, ye, theta, rel): lesion-frame coordinates, angle, and radius relative to the boundary.

        The boundary radius at each pixel's angle is ``hypot(xe, ye) / rel``.
        """
        c, s = np.cos(self.angle), np.sin(self.angle)
        dx, dy = x - self.cx, y - self.cy
        xe = (c * dx + s * dy) / np.sqrt(self.aspect)  # area-preserving squash to a circle
        ye = (-s * dx + c * dy) * np.sqrt(self.aspect)
        theta = np.arctan2(ye, xe)
        return xe, ye, theta, np.hypot(xe, ye) / self.boundary(theta)

    def point(self, rel: float, theta: float) -> tuple[float, float]:
        """Lesion-frame position at relative radius ``rel`` along angle ``theta``."""
        r = rel * float(self.boundary(np.array(theta)))
        return r * np.cos(theta), r * np.sin(theta)

    def extent(self) -> float:
        return self.radius * np.sqrt(self.aspect) * (1.0 + self.amps.sum())


def _draw_lesion(rng: np.random.Generator, r_range: tuple[float, float], aspect_max: float,
                 max_order: int, amp_max: float) -> _Lesion:
    """Random size, off-centre position, ellipticity and lobulation (harmonics 2..max_order)."""
    orders = np.arange(2, max_order + 1)
    jitter, direction = 0.14 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
    return _Lesion(
        cx=jitter * np.cos(direction), cy=jitter * np.sin(direction),
        radius=rng.uniform(*r_range),  # radius 0.25-0.6 = diameter 25-60 % of the ROI
        aspect=rng.uniform(1.0, aspect_max), angle=rng.uniform(0, np.pi),
        orders=orders, amps=rng.uniform(0, amp_max, len(orders)) / np.sqrt(orders - 1),
        phases=rng.uniform(0, 2 * np.pi, len(orders)),
    )


def _curve_distance(x: np.ndarray, y: np.ndarray, angle: float, offset: float, bend: float) -> np.ndarray:
    """Approximate distance to the parabola v = offset + bend * u^2 in a frame rotated by ``angle``."""
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    return np.abs(v - offset - bend * u * u) / np.sqrt(1.0 + (2.0 * bend * u) ** 2)


# --------------------------------------------------------------------------- background


def _background(rng: np.random.Generator, size: int, x: np.ndarray, y: np.ndarray,
                lesion: _Lesion, px: float) -> tuple[np.ndarray, float]:
    """Enhanced liver parenchyma in HU (map, mean level), with an occasional portal vessel and liver edge."""
    liver = rng.uniform(100, 130)  # portal-phase parenchyma
    hu = liver + rng.uniform(3, 8) * _random_field(rng, size, 5, _lowpass(rng.uniform(1.5, 3.0)))
    if rng.uniform() < 0.45:  # portal vessel branch: a bright tube, later hidden behind the lesion
        for _ in range(1 + (rng.uniform() < 0.3)):
            angle, offset, bend = rng.uniform(0, np.pi), rng.uniform(-1.0, 1.0), rng.normal(0, 0.3)
            dist = _curve_distance(x, y, angle, offset, bend)
            width = rng.uniform(0.035, 0.09) * (1.0 + rng.uniform(-0.3, 0.3) * x)  # tapering calibre
            tube = _soft_inside(dist - width, max(0.02, 0.4 * px))
            hu += (rng.uniform(140, 180) - hu) * tube
    if rng.uniform() < 0.3:  # liver edge in a corner: fat or a neighbouring organ beyond it
        phi = np.pi / 4 + np.pi / 2 * rng.integers(4) + rng.uniform(-0.5, 0.5)
        normal = np.array([np.cos(phi), np.sin(phi)])
        reach = normal @ [lesion.cx, lesion.cy] + lesion.extent() + 0.15
        offset, bulge = rng.uniform(max(reach, 0.8), 1.35), rng.uniform(2.0, 6.0)
        centre = normal * (offset - bulge)  # the liver is the inside of a large circle
        outside = 1.0 - _soft_inside(np.hypot(x - centre[0], y - centre[1]) - bulge, max(0.02, 0.4 * px))
        other = rng.uniform(-110, -80) if rng.uniform() < 0.7 else rng.uniform(30, 55)
        hu += (other - hu) * outside
    return hu, liver


# --------------------------------------------------------------------------- the three classes


@dataclass
class _Interior:
    """Lesion interior in HU and how its margin blends into the liver."""

    hu: np.ndarray
    blur: float  # margin blur width, normalised units
    ragged: float  # amplitude of the random margin displacement, normalised units


def _cyst(rng: Rng, size: int, lesion: _Lesion, polar: Polar, liver: float) -> _Interior:
    water = rng.uniform(0, 18) + (rng.uniform(0, 12) if lesion.radius < 0.35 else 0.0)  # partial volume
    texture = rng.uniform(0.5, 2.5) * _random_field(rng, size, 9, _lowpass(4.0))
    blurred = rng.uniform() < 0.25  # thick slice through a curved wall: a softer margin
    blur = rng.uniform(0.025, 0.045) if blurred else rng.uniform(0.008, 0.025)
    return _Interior(water + texture, blur=blur, ragged=0.0)


def _metastasis(rng: Rng, size: int, lesion: _Lesion, polar: Polar, liver: float) -> _Interior:
    xe, ye, theta, rel = polar
    cyst_like = rng.uniform() < 0.3  # small, darker, fairly well-defined: the hard cases
    core = rng.uniform(18, 40) if cyst_like else min(rng.uniform(40, 80), liver - 35)  # stays visible
    texture_std = rng.uniform(2, 5) if cyst_like else rng.uniform(4, 12)
    hu = core + texture_std * _random_field(rng, size, 9, _lowpass(rng.uniform(3.0, 6.0)))
    if rng.uniform() < 0.4:  # enhancing rim: continuous, only mildly uneven around the lesion
        ring = np.exp(-(((rel - rng.uniform(0.72, 0.88)) / rng.uniform(0.12, 0.22)) ** 2))
        ring *= 0.8 + 0.2 * np.cos(theta - rng.uniform(0, 2 * np.pi))
        hu += (liver + rng.uniform(-5, 30) - hu) * ring  # about as dense as the liver or a bit more
    if rng.uniform() < 0.3:  # central necrosis
        hu -= rng.uniform(15, 35) * _soft_inside(rel - rng.uniform(0.3, 0.6), 0.12)
    if rng.uniform() < 0.1:  # denser spots (vessels, calcification) that mimic hemangioma nodules
        for _ in range(rng.integers(1, 4)):
            nx, ny = lesion.point(rng.uniform(0.2, 0.7), rng.uniform(0, 2 * np.pi))
            spot = _soft_inside(np.hypot(xe - nx, ye - ny) - rng.uniform(0.03, 0.06), 0.02)
            hu += rng.uniform(30, 70) * spot
    blur = rng.uniform(0.015, 0.035) if cyst_like else lesion.radius * rng.uniform(0.1, 0.25)
    return _Interior(hu, blur=blur, ragged=rng.uniform(0.01, 0.03) if cyst_like else rng.uniform(0.03, 0.07))


def _hemangioma(rng: Rng, size: int, lesion: _Lesion, polar: Polar, liver: float) -> _Interior:
    xe, ye, theta, rel = polar
    body = min(rng.uniform(35, 75), liver - 35)  # hypo-attenuating in the portal phase
    hu = body + rng.uniform(2, 6) * _random_field(rng, size, 9, _lowpass(4.0))
    faint = rng.uniform() < 0.25  # weak nodules, easily taken for a metastasis
    angles = []
    for centre in rng.uniform(0, 2 * np.pi, rng.integers(1, 4)):  # clusters leave gaps: discontinuous
        angles += list(centre + rng.uniform(-0.45, 0.45, rng.integers(2, 4)))
    if rng.uniform() < 0.4:  # partial centripetal fill-in spreading inwards from the nodules
        near = np.max([np.exp(4.0 * (np.cos(theta - a) - 1.0)) for a in angles], axis=0)
        inner = rng.uniform(0.4, 0.75)
        ramp = np.clip((rel - inner) / (0.95 - inner), 0.0, 1.0)
        filled = liver + rng.uniform(10, 50)  # pooled contrast: brighter than the liver, below the nodules
        hu += (filled - hu) * rng.uniform(0.6, 1.0) * near * ramp * ramp * (3 - 2 * ramp)
    for a in angles:  # peripheral nodules at blood-pool density, abutting the margin
        nx, ny = lesion.point(rng.uniform(0.7, 0.86), a)
        nodule_r = max(0.045, lesion.radius * rng.uniform(0.14, 0.26))
        nodule = _soft_inside(np.hypot(xe - nx, ye - ny) - nodule_r, 0.3 * nodule_r)
        peak = liver + rng.uniform(15, 35) if faint else rng.uniform(150, 200)  # blood-pool density
        hu += (peak - hu) * nodule
    return _Interior(hu, blur=rng.uniform(0.02, 0.05), ragged=rng.uniform(0.0, 0.02))


_CLASSES = (  # renderer, radius range, max aspect ratio, highest harmonic, lobulation amplitude
    (_cyst, (0.25, 0.55), 1.35, 4, 0.04),
    (_metastasis, (0.25, 0.6), 1.5, 7, 0.12),
    (_hemangioma, (0.25, 0.6), 1.4, 5, 0.09),
)


def _render(label: int, size: int, seed_seq: np.random.SeedSequence) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One (size, size) image in [0, 1] and its lesion, core and rim masks."""
    rng = np.random.default_rng(seed_seq)
    renderer, r_range, aspect_max, max_order, amp_max = _CLASSES[label]
    coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
    x, y = np.meshgrid(coords, coords)
    px = 2.0 / size  # one pixel in normalised units
    lesion = _draw_lesion(rng, r_range, aspect_max, max_order, amp_max)
    hu, liver = _background(rng, size, x, y, lesion, px)
    polar = lesion.polar(x, y)
    inside = renderer(rng, size, lesion, polar, liver)
    xe, ye, _, rel = polar
    dist = np.hypot(xe, ye) * (1.0 - 1.0 / np.maximum(rel, 1e-6))  # radial distance past the boundary
    dist += inside.ragged * _random_field(rng, size, 8, _lowpass(5.0))
    alpha = _soft_inside(dist, np.hypot(inside.blur, 0.4 * px))
    hu = hu * (1 - alpha) + inside.hu * alpha
    noise_std = rng.uniform(18, 26) if rng.uniform() < 0.2 else rng.uniform(8, 18)  # a fifth are noisy scans
    hu += noise_std * _random_field(rng, size, 24, _bandpass(rng.uniform(8.0, 14.0)))
    image = np.clip((hu - WINDOW_CENTRE_HU) / WINDOW_WIDTH_HU + 0.5, 0.0, 1.0)
    lesion_mask = alpha > 0.5
    masks = {"lesion": lesion_mask, "core": lesion_mask & (rel < 0.5), "rim": lesion_mask & (rel >= 0.7)}
    return image.astype(np.float32), masks


# --------------------------------------------------------------------------- public API


def make_phantoms_with_masks(size: int = 64, per_class: int = 60, seed: int = 0
                             ) -> tuple[LabeledImages, dict[str, np.ndarray]]:
    """Like :func:`make_phantoms`, plus boolean masks (N, H, W) for tests and segmentation.

    Returns:
        The image set, and masks ``"lesion"`` (the lesion), ``"core"`` (inner half of its radius)
        and ``"rim"`` (outer 30 % of its radius, inside the margin).
    """
    _check_args(size, per_class, seed)
    n = per_class * len(CLASS_NAMES)
    labels = np.arange(n, dtype=np.int64) % len(CLASS_NAMES)  # interleaved: a smaller set is a prefix
    images = np.empty((n, 1, size, size), dtype=np.float32)
    masks = {k: np.empty((n, size, size), dtype=bool) for k in ("lesion", "core", "rim")}
    for i, label in enumerate(labels):
        child = np.random.SeedSequence(seed, spawn_key=(int(label), i // len(CLASS_NAMES)))
        images[i, 0], found = _render(int(label), size, child)
        for k, m in found.items():
            masks[k][i] = m
    data = LabeledImages(
        images=images, labels=labels, class_names=list(CLASS_NAMES), source=f"phantoms(seed={seed})",
        format="phantoms", bit_depth=8, patient_ids=np.array([f"P{i:04d}" for i in range(n)]),
    )
    return data, masks


def make_phantoms(size: int = 64, per_class: int = 60, seed: int = 0) -> LabeledImages:
    """Synthetic CT liver-lesion ROIs: cyst, metastasis, hemangioma, one lesion per patient.

    Args:
        size: side length in pixels, 28 to 256; the same lesions are rendered at every size.
        per_class: images per class; classes are interleaved (cyst, metastasis, hemangioma, ...)
            and each image has its own child seed, so a smaller set is a prefix of a larger one.
        seed: non-negative seed; the output is identical bit for bit for the same arguments.

    Returns:
        LabeledImages with format "phantoms", one channel, bit_depth 8, patient ids "P0000"...

    Raises:
        ConfigError: size, per_class or seed out of range.
    """
    return make_phantoms_with_masks(size, per_class, seed)[0]


def write_phantoms(out: str | Path, size: int = 64, per_class: int = 60, seed: int = 0) -> Path:
    """Write phantoms as class folders of 8-bit PNG with ``manifest.csv`` and per-class grids.

    The folder appears atomically; ``manifest.csv`` has columns path, label, class_name,
    patient_id, and ``grid_<class>.png`` at the root shows the first 16 images of each class.

    Raises:
        ConfigError: bad arguments. RunError: ``out`` exists and is not empty.
    """
    data = make_phantoms(size, per_class, seed)
    out = Path(out)
    with atomic_dir(out) as tmp:
        rows = [{"patient_id": pid} for pid in data.patient_ids]
        write_image_folder(tmp, data.images, data.labels, data.class_names, bit_depth=8, rows=rows)
        for label, name in enumerate(data.class_names):
            save_grid(tmp / f"grid_{name}.png", data.images[data.labels == label][:GRID_EXAMPLES], nrow=8)
    return out
