"""Structural similarity (Wang et al. 2004) of image pairs in batches, as scikit-image computes it.

``skimage.metrics.structural_similarity(x, y, data_range=1, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)`` (scikit-image arrives with medmnist, but medsyn does not rely on it)
filters with an 11-tap Gaussian and averages the SSIM map where the window lies inside the image;
here the same window runs as two separable "valid" convolutions over a whole batch at once, which
is what the audit needs for thousands of pairs. Colour images average their channels, as
scikit-image's ``channel_axis`` does. tests/test_audit.py checks the two agree.
"""
from __future__ import annotations

import torch

SIGMA = 1.5  # Wang et al.'s Gaussian window
TRUNCATE = 3.5  # scikit-image's: radius int(3.5 * 1.5 + 0.5) = 5, an 11 x 11 window
K1, K2 = 0.01, 0.03  # Wang et al.'s stabilising constants, times the data range (1: images in [0, 1])


def window_side() -> int:
    return 2 * int(TRUNCATE * SIGMA + 0.5) + 1


def _banded(taps: torch.Tensor, length: int) -> torch.Tensor:
    """(length, length - len(taps) + 1): column j holds the taps at rows j..j+len(taps)-1 ("valid" filtering)."""
    out = torch.zeros(length, length - len(taps) + 1)
    for j in range(out.shape[1]):
        out[j:j + len(taps), j] = taps
    return out


def _blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """The Gaussian window over the last two axes, valid part only."""
    rows, cols = _banded(taps, x.shape[-2]), _banded(taps, x.shape[-1])
    return (rows.T @ (x @ cols))


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of each pair: x, y (N, C, H, W) in [0, 1] -> (N,) float32.

    Raises:
        ValueError: shapes differ, or the images are smaller than the 11 x 11 window.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"SSIM needs two (N, C, H, W) batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    side = window_side()
    if min(x.shape[-2:]) < side:
        raise ValueError(f"SSIM needs images of at least {side}x{side}, got {x.shape[-2]}x{x.shape[-1]}")
    radius = side // 2
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float64) ** 2 / (2 * SIGMA ** 2))
    taps = (taps / taps.sum()).to(torch.float32)
    x, y = x.float(), y.float()
    mu_x, mu_y, xx, yy, xy = _blur(torch.stack([x, y, x * x, y * y, x * y]), taps)
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    c1, c2 = K1 ** 2, K2 ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return value.mean(dim=(1, 2, 3))
