"""Nearest neighbours in pixel space: 1 - correlation, blind to a horizontal flip and small shifts.

The distance is 1 - the Pearson correlation of the pixels (Akbar et al. 2023), taken at the best
of the ways a GAN copies without copying exactly: a horizontal flip and a shift of up to
``max_shift`` pixels along each axis. The query's central crop (a ``max_shift`` border dropped)
is correlated with the reference's crop at every shift, flipped and not: 2 (2 s + 1)^2 = 50 views.

Scoring all 50 views of every reference is 50 full matrix products (``nearest_pixels_exhaustive``;
bench/audit_speed.py times it). Two passes instead:

1. coarse: every view of every reference (one convolution whose kernels are the axes) and every
   query's crop, projected on the first ``COARSE_DIMS`` principal axes of the references' crops
   (a seeded randomised SVD), rank the references by their best view, in cache-sized blocks;
2. exact: the ``candidates`` best references per query are correlated at every shift of the
   flip their best coarse view had, as one grouped convolution (the query's crop is the kernel).

A copy's best view projects almost exactly as the copy does, so its coarse score tops the list
and the exact pass finds it. A far pair's true best view can rank below the candidates: its
distance then comes out a little too large, never too small (measured against the exhaustive
search: equal for 99% of BreastMNIST's test images, 85% of the phantoms' textured 28x28 ones).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medsyn.audit.neighbours import Nearest, Progress
from medsyn.audit.ssim import ssim, window_side

MAX_SHIFT = 2  # pixels, each axis: memorising GANs reproduce training images up to a small shift
CANDIDATES = 16  # references per query the coarse pass hands to the exact one
COARSE_DIMS = 32  # principal axes of the coarse pass
COARSE_QUERIES, COARSE_REFERENCES = 128, 128  # a block of coarse scores: 128 x 128 x 50 floats, 3 MB
EXHAUSTIVE_FLOATS = 2 ** 25  # scores the exhaustive search holds at once (128 MB)
EXACT_BLOCK = 256  # queries whose candidates are correlated in one grouped convolution
SSIM_CANDIDATES = 5  # best-correlated references whose SSIM is computed
SVD_SEED = 0  # the randomised SVD's test vectors: fixed, so a search is the same every time


@dataclass(frozen=True)
class PixelNearest(Nearest):
    """``Nearest`` in pixels, with the view of the reference that matched best.

    Attributes:
        flipped: (N,) the reference matched horizontally flipped.
        shift: (N, 2) the (rows, columns) offset of the reference's crop from its centre.
        ssim_distance: (N,) the smallest 1 - SSIM between the query's crop and the best views of
            its ``SSIM_CANDIDATES`` best-correlated references; NaN when not computed.
    """

    flipped: np.ndarray
    shift: np.ndarray
    ssim_distance: np.ndarray


def views(max_shift: int) -> list[tuple[bool, int, int]]:
    """(flipped, rows, columns) of every view; the first flips none and shifts none."""
    shifts = range(-max_shift, max_shift + 1)
    return [(flip, dy, dx) for flip in (False, True) for dy in shifts for dx in shifts]


def _check_images(images: np.ndarray, name: str, max_shift: int) -> torch.Tensor:
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim != 4 or not len(arr) or arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"{name} must be a non-empty (N, C, S, S) array, got shape {arr.shape}")
    if arr.shape[-1] - 2 * max_shift < 4:
        raise ValueError(f"{name}: {arr.shape[-1]}x{arr.shape[-1]} images are too small for shifts of {max_shift}")
    return torch.from_numpy(np.ascontiguousarray(arr))


def _crop(images: torch.Tensor, margin: int, dy: int = 0, dx: int = 0) -> torch.Tensor:
    side = images.shape[-1]
    return images[..., margin + dy:side - margin + dy, margin + dx:side - margin + dx]


def _view(images: torch.Tensor, margin: int, flip: bool, dy: int, dx: int) -> torch.Tensor:
    return _crop(images.flip(-1) if flip else images, margin, dy, dx)


def _unit(rows: torch.Tensor) -> torch.Tensor:
    """Rows minus their mean, over their norm: their dot products are correlations (a flat row stays 0)."""
    rows = rows - rows.mean(dim=1, keepdim=True)
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _unit_length(rows: torch.Tensor) -> torch.Tensor:
    """Projections scaled to length 1: a copy then scores 1 whatever share of it the axes hold."""
    return rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)


def principal_axes(rows: torch.Tensor, dims: int) -> torch.Tensor:
    """(D, dims) leading right singular vectors of ``rows`` (M, D): a randomised SVD (Halko et al.
    2011, two power iterations) with fixed test vectors, so the same rows give the same axes."""
    dims = min(dims, *rows.shape)
    width = min(dims + 8, rows.shape[1])
    test = torch.randn(rows.shape[1], width, generator=torch.Generator().manual_seed(SVD_SEED))
    basis = torch.linalg.qr(rows @ test).Q
    for _ in range(2):
        basis = torch.linalg.qr(rows @ (rows.T @ basis)).Q
    return torch.linalg.svd(basis.T @ rows, full_matrices=False).Vh[:dims].T


def _window_statistics(both: torch.Tensor, margin: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(means, centred norms), each (2M, (2m+1)^2), of every shifted crop of every image, from window
    sums of integral images (float64: a variance is a small difference of large sums)."""
    side, crop = both.shape[-1], both.shape[-1] - 2 * margin
    count = crop * crop * both.shape[1]
    ends = torch.arange(crop, side + 1)
    starts = ends - crop

    def window_sums(values: torch.Tensor) -> torch.Tensor:
        table = F.pad(values.sum(dim=1).cumsum(1).cumsum(2), (1, 0, 1, 0))  # channels add up inside a crop
        return (table[:, ends][:, :, ends] - table[:, starts][:, :, ends]
                - table[:, ends][:, :, starts] + table[:, starts][:, :, starts]).flatten(1)

    x = both.double()
    sums = window_sums(x)
    variance = (window_sums(x * x) - sums * sums / count).clamp_min(0)
    return (sums / count).float(), variance.sqrt().float().clamp_min(1e-12)  # a flat crop: correlation 0


def _reference_views(both: torch.Tensor, means: torch.Tensor, margin: int, axes: torch.Tensor) -> torch.Tensor:
    """(M, V, dims): every view of every reference (``both`` holds the references, then the same flipped),
    centred and projected on ``axes``, scaled to length 1 (so the crop's own norm cancels). The axes are
    the kernels of one convolution, which projects every shifted crop at once (7x faster than a product
    per view, which would copy each crop first)."""
    n_ref, dims, (c, side) = len(both) // 2, axes.shape[1], both.shape[1:3]
    kernels = axes.T.reshape(dims, c, side - 2 * margin, side - 2 * margin)
    raw = torch.cat([F.conv2d(both[start:start + EXACT_BLOCK], kernels) for start in range(0, len(both), EXACT_BLOCK)])
    projected = raw.flatten(2).transpose(1, 2) - means[:, :, None] * axes.sum(dim=0)  # (2M, shifts, dims)
    both_flips = torch.cat([projected[:n_ref], projected[n_ref:]], dim=1)  # views: unflipped shifts, then flipped
    return _unit_length(both_flips.reshape(-1, dims)).view(n_ref, -1, dims)


def _candidates(q_coarse: torch.Tensor, coarse: torch.Tensor, k: int, exclude_self: bool,
                flipped_views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, k) best references by their best coarse view, and (N, k) whether that view is flipped.

    Scores go through blocks of COARSE_QUERIES x COARSE_REFERENCES x V, small enough to stay in cache
    while their maximum over the views is taken: three times faster than one product per block of
    queries against every view of every reference (memory-bound then).
    """
    n_ref, n_views, dims = coarse.shape
    flat = coarse.reshape(-1, dims)
    index = torch.empty(len(q_coarse), k, dtype=torch.long)
    flipped = torch.empty(len(q_coarse), k, dtype=torch.bool)
    for start in range(0, len(q_coarse), COARSE_QUERIES):
        block = q_coarse[start:start + COARSE_QUERIES]
        best = torch.empty(len(block), n_ref)
        for ref in range(0, n_ref, COARSE_REFERENCES):
            stop = min(n_ref, ref + COARSE_REFERENCES)
            best[:, ref:stop] = (block @ flat[ref * n_views:stop * n_views].T).view(len(block), -1, n_views).amax(2)
        if exclude_self:
            own = torch.arange(len(block))
            best[own, start + own] = -torch.inf
        chosen = best.topk(k, dim=1).indices
        index[start:start + len(block)] = chosen
        winning = torch.einsum("bkvd,bd->bkv", coarse[chosen], block).argmax(dim=2)  # for the k chosen only
        flipped[start:start + len(block)] = flipped_views[winning]
    return index, flipped


def nearest_pixels(queries: np.ndarray, references: np.ndarray, exclude_self: bool = False,
                   max_shift: int = MAX_SHIFT, candidates: int = CANDIDATES, with_ssim: bool = False,
                   on_rows: Progress | None = None) -> PixelNearest:
    """Each query image's nearest reference in 1 - correlation, at the reference's best flip and shift.

    Args:
        queries: (N, C, S, S) images in [0, 1].
        references: (M, C, S, S) images of the same shape.
        exclude_self: queries and references are one set: image i is not its own neighbour.
        max_shift: largest shift in pixels along each axis (0: whole images, flips only).
        candidates: references per query the coarse pass keeps for the exact one.
        with_ssim: also compute ``ssim_distance`` (needs crops of at least 11 x 11).
        on_rows: called with the number of query images after each block.

    Raises:
        ValueError: the shapes differ, or the images are too small for the crops.
    """
    q = _check_images(queries, "queries", max_shift)
    r = _check_images(references, "references", max_shift)
    if q.shape[1:] != r.shape[1:]:
        raise ValueError(f"queries {tuple(q.shape[1:])} and references {tuple(r.shape[1:])} differ in shape")
    if exclude_self and (len(r) < 2 or len(q) != len(r)):
        raise ValueError("a nearest other image needs one set of at least 2 images")
    k = min(candidates, len(r) - int(exclude_self))
    with torch.inference_mode():
        q_unit = _unit(_crop(q, max_shift).flatten(1))
        both = torch.cat([r, r.flip(-1)])  # flipped once: the exact pass gathers views from it by index
        means, norms = _window_statistics(both, max_shift)
        index, flipped = _coarse_pass(q, both, means, k, exclude_self, max_shift)
        return _exact(q, q_unit, both, norms, index + flipped.long() * len(r), max_shift, with_ssim, on_rows)


def _coarse_pass(q: torch.Tensor, both: torch.Tensor, means: torch.Tensor, k: int, exclude_self: bool,
                 margin: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidates: the references whose best view, projected on the principal axes, is nearest each query's."""
    n_ref = len(both) // 2
    axes = principal_axes(_unit(_crop(both[:n_ref], margin).flatten(1)), COARSE_DIMS)
    q_coarse = _unit_length(_unit(_crop(q, margin).flatten(1)) @ axes)
    flipped_views = torch.tensor([flip for flip, _, _ in views(margin)])
    return _candidates(q_coarse, _reference_views(both, means, margin, axes), k, exclude_self, flipped_views)


def _shift_correlations(q_unit: torch.Tensor, refs: torch.Tensor, norms: torch.Tensor, margin: int) -> torch.Tensor:
    """(B, K, (2m+1)^2) correlations of B query crops with every shift of their K (already flipped)
    references: a convolution with one group per query, whose kernel is the query's centred crop."""
    b, k, c, side = refs.shape[0], refs.shape[1], refs.shape[2], refs.shape[-1]
    kernel = q_unit.view(b, c, side - 2 * margin, side - 2 * margin)
    dots = F.conv2d(refs.transpose(0, 1).reshape(k, b * c, side, side), kernel, groups=b)  # (K, B, 2m+1, 2m+1)
    return dots.transpose(0, 1).reshape(b, k, -1) / norms


def _exact(q: torch.Tensor, q_unit: torch.Tensor, both: torch.Tensor, norms: torch.Tensor, index: torch.Tensor,
           margin: int, with_ssim: bool, on_rows: Progress | None) -> PixelNearest:
    """Correlate each query with every shift of its candidates (rows of ``both``: a reference, or one flipped)."""
    n, n_ref, width = len(q), len(both) // 2, 2 * margin + 1
    out_index, out_corr = np.empty(n, dtype=np.int64), np.empty(n)
    out_flip, out_shift, out_ssim = np.zeros(n, dtype=bool), np.zeros((n, 2), dtype=np.int64), np.full(n, np.nan)
    for start in range(0, n, EXACT_BLOCK):
        stop = min(n, start + EXACT_BLOCK)
        cand = index[start:stop]
        refs = both[cand]
        corr = _shift_correlations(q_unit[start:stop], refs, norms[cand], margin)
        per_ref, best_shift = corr.max(dim=2)
        order = per_ref.argsort(dim=1, descending=True, stable=True)
        rows = torch.arange(stop - start)
        best = cand[rows, order[:, 0]]
        out_index[start:stop] = (best % n_ref).numpy()
        out_flip[start:stop] = (best >= n_ref).numpy()
        out_corr[start:stop] = per_ref[rows, order[:, 0]].double().numpy()
        chosen = best_shift[rows, order[:, 0]]
        out_shift[start:stop] = torch.stack([chosen // width, chosen % width], 1).numpy() - margin
        if with_ssim and q.shape[-1] - 2 * margin >= window_side():
            top = order[:, :SSIM_CANDIDATES]
            out_ssim[start:stop] = _ssim_distances(q[start:stop], refs, top, best_shift, margin)
        if on_rows is not None:
            on_rows(stop - start)
    return PixelNearest(out_index, np.clip(1.0 - out_corr, 0.0, 2.0), out_flip, out_shift, out_ssim)


def _ssim_distances(block_q: torch.Tensor, refs: torch.Tensor, top: torch.Tensor, best_shift: torch.Tensor,
                    margin: int) -> np.ndarray:
    """The smallest 1 - SSIM of each query crop against the best shift of its ``top`` (already flipped) references."""
    width = 2 * margin + 1
    rows = torch.arange(len(block_q))[:, None].expand_as(top)
    chosen, shift = refs[rows, top], best_shift[rows, top]  # (B, T, C, S, S), (B, T)
    crops = torch.empty(*top.shape, *_crop(block_q, margin).shape[1:])
    for s in range(width * width):
        mask = shift == s
        if mask.any():
            crops[mask] = _crop(chosen[mask], margin, s // width - margin, s % width - margin)
    query = _crop(block_q, margin)[:, None].expand_as(crops)
    values = ssim(query.reshape(-1, *crops.shape[2:]), crops.reshape(-1, *crops.shape[2:]))
    return (1.0 - values.view(top.shape)).min(dim=1).values.double().numpy()


def nearest_pixels_exhaustive(queries: np.ndarray, references: np.ndarray, max_shift: int = MAX_SHIFT) -> Nearest:
    """``nearest_pixels`` without the coarse pass: every view of every reference, one matrix product per
    view. The reference the fast search is tested and benchmarked against."""
    q = _check_images(queries, "queries", max_shift)
    r = _check_images(references, "references", max_shift)
    best = torch.full((len(q),), -torch.inf)
    index = torch.zeros(len(q), dtype=torch.long)
    rows = max(1, EXHAUSTIVE_FLOATS // len(r))
    with torch.inference_mode():
        q_unit = _unit(_crop(q, max_shift).flatten(1))
        for flip, dy, dx in views(max_shift):
            view = _unit(_view(r, max_shift, flip, dy, dx).flatten(1))
            for start in range(0, len(q), rows):
                value, where = (q_unit[start:start + rows] @ view.T).max(dim=1)
                better = value > best[start:start + len(value)]
                best[start:start + len(value)][better] = value[better]
                index[start:start + len(value)][better] = where[better]
    return Nearest(index.numpy(), np.clip(1.0 - best.double().numpy(), 0.0, 2.0))
