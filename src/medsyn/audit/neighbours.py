"""Nearest neighbours over all pairs in feature space, as blocked matrix products.

Feature space: Euclidean distance, |q|^2 + |r|^2 - 2 q.r in float32 row blocks; the winner's
distance is then recomputed exactly in float64, so a copy's distance is 0 and not rounding noise.

Pixel space (1 - correlation, blind to flips and small shifts) is in ``pixel_neighbours``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

BLOCK_ROWS = 1024  # query rows per matrix product: 1024 x 10,000 float32 is 40 MB

Progress = Callable[[int], None]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch and numpy on one thread while the searches run, as medsyn's FID statistics do: on this
    2-core machine, shared with other jobs, nearest_pixels took 12.9 s with one thread and 85 s with
    torch's two (10,000 x 5,000 28x28 images); many small tensor operations suffer most."""
    import torch

    from medsyn.metrics.fid import one_blas_thread

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with one_blas_thread():
            yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Nearest:
    """Each query's nearest reference.

    Attributes:
        index: (N,) index of the nearest reference.
        distance: (N,) float64 distance to it.
    """

    index: np.ndarray
    distance: np.ndarray


def _rows(features: np.ndarray, name: str) -> np.ndarray:
    feats = np.asarray(features, dtype=np.float32)
    if feats.ndim != 2 or not len(feats):
        raise ValueError(f"{name} must be a non-empty 2-D array (N, D), got shape {feats.shape}")
    return feats


def nearest_euclidean(queries: np.ndarray, references: np.ndarray, exclude_self: bool = False,
                      on_rows: Progress | None = None) -> Nearest:
    """Each query row's nearest reference row in Euclidean distance.

    Args:
        queries: (N, D) features.
        references: (M, D) features.
        exclude_self: queries and references are one set: row i is not its own neighbour.
        on_rows: called with the number of query rows after each block.

    Raises:
        ValueError: not 2-D, empty, dimensions differ, or one reference row and ``exclude_self``.
    """
    q, r = _rows(queries, "queries"), _rows(references, "references")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"queries and references differ in dimension: {q.shape[1]} vs {r.shape[1]}")
    if exclude_self and len(r) < 2:
        raise ValueError("a nearest other point needs at least 2 points")
    r_norms = np.einsum("ij,ij->i", r, r)
    index, distance = np.empty(len(q), dtype=np.int64), np.empty(len(q))
    for start in range(0, len(q), BLOCK_ROWS):
        block = q[start:start + BLOCK_ROWS]
        sq = block @ r.T
        sq *= -2
        sq += r_norms[None, :]  # |q|^2 is the same along a row: it does not change the argmin
        if exclude_self:
            rows = np.arange(len(block))
            sq[rows, start + rows] = np.inf
        stop = start + len(block)
        index[start:stop] = sq.argmin(axis=1)
        exact = np.asarray(queries[start:stop], dtype=np.float64) - np.asarray(references[index[start:stop]],
                                                                               dtype=np.float64)
        distance[start:stop] = np.sqrt(np.einsum("ij,ij->i", exact, exact))
        if on_rows is not None:
            on_rows(len(block))
    return Nearest(index, distance)
