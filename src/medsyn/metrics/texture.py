"""Fixed-pattern coherence: does an image set's fine texture sit at the same pixels in every image?

A generator that cannot make stochastic detail tends to draw one texture everywhere: the same
checkerboard, stripes or faint frames at the same positions in every sample. FID sees this only
indirectly, and a single image does not show it; the set's mean does. With hp(x) = x minus its
Gaussian blur (sigma ``SIGMA`` pixels), the fine texture of each image:

    coherence = std over pixels of hp(mean image) / (rms over images of std over pixels of hp(x_i) / sqrt(n))

If each image's texture is independent of the others' (real CT noise, speckle), averaging n
images shrinks it by sqrt(n) and coherence is about 1. If every image carries the same texture,
averaging keeps it and coherence reaches sqrt(n). Real sets score a little above 1 because their
lesions and anatomy sit at similar places; compare a synthetic set with real images of the same n.
Colour images are averaged over channels first.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

SIGMA = 2.0  # pixels: keeps structure finer than about 5 pixels, the scale of noise and checkerboards


def fine_texture(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) or (N, H, W) -> (N, H, W) float64: each image minus its Gaussian blur."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 4:
        x = x.mean(axis=1)
    if x.ndim != 3:
        raise ValueError(f"images must be (N, C, H, W) or (N, H, W), got shape {np.shape(images)}")
    return x - gaussian_filter(x, sigma=(0, SIGMA, SIGMA), mode="reflect")


def fixed_pattern_coherence(images: np.ndarray) -> float:
    """About 1 for independent textures, sqrt(n) for one texture repeated; NaN for fewer than two images or flat ones."""
    texture = fine_texture(images)
    n = len(texture)
    per_image = np.sqrt((texture.reshape(n, -1).var(axis=1)).mean()) if n else 0.0
    if n < 2 or per_image == 0:
        return float("nan")
    return float(texture.mean(axis=0).std() / (per_image / np.sqrt(n)))
