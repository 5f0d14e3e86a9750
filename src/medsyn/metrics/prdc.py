"""Precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020), on features.

Each real (fake) point owns a ball whose radius is the distance to its k-th nearest other point of
its own set; the ``prdc`` package (clovaai) defines the four numbers from those balls:

- precision: share of fake points inside at least one real ball (fidelity);
- recall: share of real points inside at least one fake ball (diversity);
- density: real balls containing a fake point, per fake point, divided by k (can exceed 1);
- coverage: share of real points whose ball holds at least one fake point.

Distances are computed in row blocks through matrix products (|a|^2 + |b|^2 - 2ab, clamped at 0),
so no N x M matrix larger than a block is ever held, and balls are compared in squared distance.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

BLOCK_ROWS = 2048  # rows of the distance matrix computed at once: 2048 x 10,000 float64 is 160 MB


def _as_features(features: np.ndarray, name: str) -> np.ndarray:
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return feats


def _pair(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    real, fake = _as_features(real, "real features"), _as_features(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in dimension: {real.shape[1]} vs {fake.shape[1]}")
    if len(fake) == 0:
        raise ValueError("fake features: the set is empty")
    return real, fake


def _check_k(features: np.ndarray, k: int, name: str) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(features) <= k:
        raise ValueError(f"{name}: {len(features)} points, but the k={k} nearest neighbours of a point "
                         f"need at least {k + 1}")


def _squared_blocks(a: np.ndarray, b: np.ndarray, rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray]]:
    """(start, squared distances of a[start:start+rows] to every row of b), clamped at 0."""
    b_norms = np.einsum("ij,ij->i", b, b)
    for start in range(0, len(a), rows):
        block = a[start:start + rows]
        sq = block @ b.T
        sq *= -2
        sq += np.einsum("ij,ij->i", block, block)[:, None]
        sq += b_norms[None, :]
        np.maximum(sq, 0, out=sq)
        yield start, sq


def _squared_radii(features: np.ndarray, k: int) -> np.ndarray:
    radii = np.empty(len(features))
    for start, sq in _squared_blocks(features, features):
        rows = np.arange(len(sq))
        sq[rows, start + rows] = np.inf  # a point is not its own neighbour
        radii[start:start + len(sq)] = np.partition(sq, k - 1, axis=1)[:, k - 1]
    return radii


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance of each point to its k-th nearest other point of the same set.

    Args:
        features: (N, D) array.
        k: neighbour rank, at least 1.

    Returns:
        float64 array (N,).

    Raises:
        ValueError: the set has k points or fewer, or is not a finite 2-D array.
    """
    feats = _as_features(features, "features")
    _check_k(feats, k, "features")
    return np.sqrt(_squared_radii(feats, k))


def _ball_counts(real: np.ndarray, fake: np.ndarray, real_sq: np.ndarray | None, fake_sq: np.ndarray | None
                 ) -> dict[str, np.ndarray]:
    """One pass over real-row blocks of the real x fake distances, accumulating what the scores need.

    Returns (only those the given radii allow): ``in_real`` (M,) real balls holding each fake point,
    ``in_fake`` (N,) whether each real point lies in some fake ball, ``covered`` (N,) whether each
    real ball holds a fake point.
    """
    out: dict[str, np.ndarray] = {}
    if real_sq is not None:
        out["in_real"], out["covered"] = np.zeros(len(fake), dtype=np.int64), np.zeros(len(real), dtype=bool)
    if fake_sq is not None:
        out["in_fake"] = np.zeros(len(real), dtype=bool)
    for start, sq in _squared_blocks(real, fake):
        stop = start + len(sq)
        if real_sq is not None:
            inside = sq < real_sq[start:stop, None]
            out["in_real"] += inside.sum(axis=0)
            out["covered"][start:stop] = inside.any(axis=1)  # some fake point, hence the nearest, in the ball
        if fake_sq is not None:
            out["in_fake"][start:stop] = (sq < fake_sq[None, :]).any(axis=1)
    return out


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of fake against real features.

    Args:
        real: (N, D) features of real images.
        fake: (M, D) features of generated images.
        k: neighbour rank of the balls (the paper uses 3).

    Raises:
        ValueError: a set has k points or fewer, or the dimensions differ.
    """
    real, fake = _pair(real, fake)
    _check_k(real, k, "real features")
    _check_k(fake, k, "fake features")
    counts = _ball_counts(real, fake, _squared_radii(real, k), _squared_radii(fake, k))
    return float((counts["in_real"] > 0).mean()), float(counts["in_fake"].mean())


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020): only real balls, so outlying real points weigh less.

    Args:
        real: (N, D) features of real images; needs more than k points.
        fake: (M, D) features of generated images; any number of at least 1.
        k: neighbour rank of the real balls (the paper uses 5).

    Raises:
        ValueError: the real set has k points or fewer, the fake set is empty, or the dimensions differ.
    """
    real, fake = _pair(real, fake)
    _check_k(real, k, "real features")
    counts = _ball_counts(real, fake, _squared_radii(real, k), None)
    return float(counts["in_real"].mean() / k), float(counts["covered"].mean())


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """All four with one k, in one pass over the distances, as the ``prdc`` package's ``compute_prdc``.

    Returns:
        {"precision", "recall", "density", "coverage"} as floats.
    """
    real, fake = _pair(real, fake)
    _check_k(real, k, "real features")
    _check_k(fake, k, "fake features")
    counts = _ball_counts(real, fake, _squared_radii(real, k), _squared_radii(fake, k))
    return {"precision": float((counts["in_real"] > 0).mean()), "recall": float(counts["in_fake"].mean()),
            "density": float(counts["in_real"].mean() / k), "coverage": float(counts["covered"].mean())}
