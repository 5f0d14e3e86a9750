"""FID and KID as staged pure functions: images -> features -> statistics -> score.

``fid_between`` and ``fid_floor`` chain the stages (with the feature cache) for callers that hold
two image sets; every stage is also usable alone, e.g. with features from another extractor.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.linalg
import torch

from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError
from medsyn.metrics.cache import FeatureCache, feature_key
from medsyn.metrics.features import FeatureExtractor, extract_features

KID_SUBSET_SIZE = 1000  # the usual KID subset (Binkowski et al.; clean-fid, torch-fidelity); smaller sets use all
KID_SUBSETS = 100
KID_WHOLE_KERNEL_MAX = 4096  # larger sets: kernels per subset (the whole ones would need > 400 MB)


class SmallSampleWarning(UserWarning):
    """A set is too small for a full-rank covariance, or for the usual KID subset size."""


@dataclass
class FidResult:
    """FID and KID between two image sets.

    Attributes:
        fid: Frechet distance between the Gaussian fits of the two feature sets.
        kid_mean: KID (unbiased MMD^2, cubic polynomial kernel), mean over subsets.
        kid_std: its standard deviation over subsets.
        n_a: images in the first set.
        n_b: images in the second set.
        notices: human-readable caveats (small sets, adapted KID subset size).
    """

    fid: float
    kid_mean: float
    kid_std: float
    n_a: int
    n_b: int
    notices: list[str] = field(default_factory=list)


# ---- statistics and scores (pure) --------------------------------------------------------------

def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, D) features -> (mean (D,), covariance (D, D)), both float64.

    Raises:
        ConfigError: fewer than 2 feature rows (no covariance).
    """
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ConfigError(f"FID needs at least 2 images per set, got {len(feats)}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), the quantity pytorch-fid computes.

    The trace of the root comes from ``trace_sqrt_product`` (symmetric eigensolvers) rather than
    pytorch-fid's scipy.linalg.sqrtm of the product; they agree to about 1e-8 relative, and the
    test suite checks this against pytorch-fid's function.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics of different dimensions: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^1/2) for symmetric positive semi-definite S1 and S2.

    With S1 = R R^T (R from S1's eigendecomposition), S1 S2 has the eigenvalues of the symmetric
    PSD matrix R^T S2 R, so the trace of its root is the sum of their square roots. Two symmetric
    eigensolvers take ~3 s at D = 2001 on one core where sqrtm's Schur method on the non-symmetric
    product takes ~18 s, and there is no complex part to drop and no singular product to offset:
    eigenvalues that rounding pushes below zero are clipped to 0.
    """
    eigenvalues, vectors = scipy.linalg.eigh(sigma1)
    root = vectors * np.sqrt(np.clip(eigenvalues, 0, None))
    inner = root.T @ sigma2 @ root
    inner = (inner + inner.T) / 2  # symmetric to rounding, so that eigvalsh reads both triangles alike
    return float(np.sqrt(np.clip(scipy.linalg.eigvalsh(inner), 0, None)).sum())


def shared_subspace(feats_a: np.ndarray, feats_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both feature sets in an orthonormal basis of the span of their centred rows and mean difference.

    FID is invariant to rotations of feature space, and nothing of either Gaussian fit lies outside
    that span, so FID of the returned coordinates equals FID of the inputs exactly. It pays when
    N_a + N_b is below D: sqrtm costs O(D^3), ~30 s at D=2048 on two cores, and far less in
    N_a + N_b dimensions. Returns the inputs (as float64) when no reduction is possible.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    span = np.concatenate([a - mu_a, b - mu_b, (mu_a - mu_b)[None]])
    if len(span) >= a.shape[1]:
        return a, b
    basis, _ = np.linalg.qr(span.T)  # (D, N_a + N_b + 1), orthonormal columns covering every row of span
    return a @ basis, b @ basis


def kid(feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = KID_SUBSETS, subset_size: int | None = None,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3, over random subsets.

    Args:
        feats_a: (N_a, D) features.
        feats_b: (N_b, D) features.
        subsets: number of random subset pairs (drawn without replacement within a subset).
        subset_size: images per subset; None uses min(1000, N_a, N_b). Always capped at the smaller set.
        seed: seeds the subset draws.

    Returns:
        (mean, std) of the subset estimates.
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    m = min(subset_size or KID_SUBSET_SIZE, len(a), len(b))
    if m < 2:
        raise ConfigError(f"KID needs at least 2 images per set, got {len(a)} and {len(b)}")
    d = a.shape[1]
    kernel = lambda x, y: (x @ y.T / d + 1) ** 3  # noqa: E731
    # Sets of up to a few thousand: the three kernel matrices once (<= 400 MB), each subset a gather
    # from them, instead of three fresh (m x D) products per subset (100 x 12 GFLOP at m = 1000).
    whole = max(len(a), len(b)) <= KID_WHOLE_KERNEL_MAX
    if whole:
        k_aa, k_bb, k_ab = kernel(a, a), kernel(b, b), kernel(a, b)
    rng = np.random.default_rng(seed)
    estimates = np.empty(subsets)
    for i in range(subsets):
        ia, ib = rng.choice(len(a), m, replace=False), rng.choice(len(b), m, replace=False)
        if whole:
            k_xx, k_yy, k_xy = k_aa[np.ix_(ia, ia)], k_bb[np.ix_(ib, ib)], k_ab[np.ix_(ia, ib)]
        else:
            x, y = a[ia], b[ib]
            k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        estimates[i] = within - 2 * k_xy.sum() / (m * m)
    return float(estimates.mean()), float(estimates.std())


def small_set_notices(n_a: int, n_b: int, dim: int) -> list[str]:
    """Caveats for sets smaller than the feature dimension or than the usual KID subset."""
    notices = []
    for label, n in (("A", n_a), ("B", n_b)):
        if n <= dim:
            notices.append(f"set {label} has {n} images, not more than the {dim} feature dimensions: its covariance "
                           f"is not full rank, so FID is biased upward; compare FIDs only between sets of equal size")
    if min(n_a, n_b) < KID_SUBSET_SIZE:
        notices.append(f"KID subsets of {min(n_a, n_b)} images (the smaller set), not {KID_SUBSET_SIZE}")
    return notices


def kid_subsets_differ(n_a: int, n_b: int) -> bool:
    """Whether KID's random subsets differ from one another: equal sets no larger than the subset size
    are used whole by every subset, so the estimate has no subset spread to report."""
    return not n_a == n_b <= KID_SUBSET_SIZE


def fid_from_features(feats_a: np.ndarray, feats_b: np.ndarray, *, kid_subsets: int = KID_SUBSETS,
                      kid_subset_size: int | None = None, seed: int = 0) -> FidResult:
    """Two feature sets -> FidResult (FID, KID, sizes, notices). Small-set notices are also warned.

    FID is computed in the sets' shared subspace (exact, see ``shared_subspace``); KID on the
    features as given, since its kernel depends on D.
    """
    if min(len(feats_a), len(feats_b)) < 2:
        raise ConfigError(f"FID needs at least 2 images per set, got {len(feats_a)} and {len(feats_b)}")
    notices = small_set_notices(len(feats_a), len(feats_b), np.shape(feats_a)[1])
    for notice in notices:
        warnings.warn(notice, SmallSampleWarning, stacklevel=2)
    with one_blas_thread():
        coords_a, coords_b = shared_subspace(feats_a, feats_b)
        mu_a, sigma_a = feature_statistics(coords_a)
        mu_b, sigma_b = feature_statistics(coords_b)
        fid = frechet_distance(mu_a, sigma_a, mu_b, sigma_b)
        kid_mean, kid_std = kid(feats_a, feats_b, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    return FidResult(fid, kid_mean, kid_std, len(feats_a), len(feats_b), notices)


def one_blas_thread() -> contextlib.AbstractContextManager:
    """Limit numpy/scipy's BLAS to one thread for the score stage.

    Measured on the shared 2-core machine: 546 vs 156 Inception features took 13 s (subspace),
    15 s (sqrtm) and 18 s (KID) with OpenBLAS's two spinning threads competing with other jobs,
    and 0.4, 0.6 and 0.9 s with one thread. threadpoolctl comes with scikit-learn.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn, a dependency, requires it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def floor_from_features(features: np.ndarray, sizes: tuple[int, int], seed: int = 0,
                        kid_subsets: int = KID_SUBSETS) -> FidResult:
    """FID/KID between two disjoint random subsets of one real feature set: the score of "no difference".

    Args:
        features: (N, D) features of real images.
        sizes: (n1, n2) with n1 + n2 <= N; use the compared sets' sizes, as FID depends on them.
        seed: seeds the split (and the KID subsets).
    """
    n1, n2 = sizes
    if min(n1, n2) < 2 or n1 + n2 > len(features):
        raise ConfigError(f"FID floor needs two disjoint sets of at least 2 images; {n1} + {n2} requested "
                          f"from {len(features)} real images")
    order = np.random.default_rng(seed).permutation(len(features))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)  # the caller already hears about its own set sizes
        return fid_from_features(features[order[:n1]], features[order[n1:n1 + n2]], kid_subsets=kid_subsets,
                                 seed=seed)


# ---- images -> result, with the cache ----------------------------------------------------------

def _images(data: LabeledImages | np.ndarray) -> np.ndarray:
    return data.images if isinstance(data, LabeledImages) else np.asarray(data)


def compute_features(images: LabeledImages | np.ndarray, extractor: FeatureExtractor, *,
                     cache: FeatureCache | None = None, batch: int = 32, device: torch.device | str = "cpu",
                     on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Features of one image set, read from ``cache`` when the same pixels went through the same extractor.

    ``on_batch`` hears only about computed batches, so a cache hit calls it not at all.

    Raises:
        ConfigError: the set is empty.
    """
    arr = _images(images)
    if len(arr) == 0:
        source = images.source if isinstance(images, LabeledImages) else "image set"
        raise ConfigError(f"{source}: no images to compute features of")
    key = feature_key(arr, extractor.key) if cache is not None else None
    if cache is not None and (hit := cache.load(key, len(arr))) is not None:
        return hit
    feats = extract_features(extractor, arr, batch=batch, device=device, on_batch=on_batch)
    if cache is not None:
        cache.save(key, feats)
    return feats


def fid_between(a: LabeledImages | np.ndarray, b: LabeledImages | np.ndarray, extractor: FeatureExtractor, *,
                cache: FeatureCache | None = None, batch: int = 32, device: torch.device | str = "cpu",
                kid_subsets: int = KID_SUBSETS, seed: int = 0,
                on_batch: Callable[[int], None] | None = None) -> FidResult:
    """FID and KID between two image sets (float (N, C, H, W) in [0, 1]).

    Args:
        a: first set (LabeledImages or array).
        b: second set.
        extractor: e.g. ``InceptionExtractor()`` or ``ModuleFeatureExtractor(classifier, "clf-run3")``.
        cache: a FeatureCache, or None to always compute.
        batch: images per forward pass.
        device: where the extractor runs.
        kid_subsets: KID subset pairs.
        seed: seeds the KID subsets.
        on_batch: progress callback, called with image counts (both sets).

    Raises:
        ConfigError: a set is empty or has fewer than 2 images.
    """
    options = dict(cache=cache, batch=batch, device=device, on_batch=on_batch)
    feats_a = compute_features(a, extractor, **options)
    feats_b = compute_features(b, extractor, **options)
    return fid_from_features(feats_a, feats_b, kid_subsets=kid_subsets, seed=seed)


def fid_floor(real: LabeledImages | np.ndarray, n: int | tuple[int, int], extractor: FeatureExtractor, seed: int = 0,
              *, cache: FeatureCache | None = None, batch: int = 32, device: torch.device | str = "cpu",
              kid_subsets: int = KID_SUBSETS, on_batch: Callable[[int], None] | None = None) -> FidResult:
    """FID/KID between two disjoint random subsets of real images, sized like the sets being compared.

    Features of the whole real set are computed (and cached) once, so other seeds and sizes are free.

    Args:
        real: real images.
        n: size of each subset, or (n1, n2); n1 + n2 must not exceed len(real).
        extractor: as for ``fid_between``.
        seed: seeds the split.
    """
    sizes = (n, n) if isinstance(n, int) else tuple(n)
    feats = compute_features(real, extractor, cache=cache, batch=batch, device=device, on_batch=on_batch)
    return floor_from_features(feats, sizes, seed=seed, kid_subsets=kid_subsets)
