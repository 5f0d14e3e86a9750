"""Audit speed: the nearest-neighbour searches of `medsyn audit` against plain all-pairs searches, in one process.

- features: ``medsyn.audit.neighbours.nearest_euclidean`` (float32 blocked matrix products) for
  --n-synthetic random 2048-d features against --n-train, against ``scipy.spatial.distance.cdist``
  (the full float64 matrix, then argmin) run on --baseline-queries of them and scaled up;
- pixels: ``medsyn.audit.pixel_neighbours.nearest_pixels`` (coarse principal-axes pass, then every
  flip and shift of 2 pixels of the best candidates) against ``nearest_pixels_exhaustive`` (one
  blocked product per each of the 50 flip/shift views), the baseline again on --baseline-queries
  queries and scaled up. The queries are real images the references do not hold (PneumoniaMNIST's
  test split, then its train images flipped, shifted and noised), the references its train and val
  images, at --size; the line also says how often the fast search found the exhaustive one's distance.

    python bench/audit_speed.py --n-synthetic 10000 --n-train 5000 --size 28

prints one line per search with the seconds of each and `ratio`, the baseline's time over medsyn's.
Measured on the 2-core CPU, shared with other jobs (load about 4), one thread: features 3.0 s against
cdist's 78.5 s (ratio 26.2); 28x28 pixels 9.8 s (12.0 s with SSIM) against 76.8 s (ratio 7.9), the
exhaustive distance found for 99.2% of the held-out queries; 64x64 pixels 28.0 s (50.5 s with SSIM)
against 623.5 s (ratio 22.3), 100%.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from medsyn.audit.neighbours import nearest_euclidean, one_thread
from medsyn.audit.pixel_neighbours import nearest_pixels, nearest_pixels_exhaustive
from medsyn.data import load_source
from bench_data import medmnist_file

SHARED = medmnist_file("pneumoniamnist.npz")


def timed(call):
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


def image_sets(data: str, n_synthetic: int, n_train: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(queries, references): the test images first, then flipped/shifted/noised train images; references:
    train and val images."""
    read = {split: load_source(f"{data}:{split}", size=size).images for split in ("train", "val", "test")}
    references = np.concatenate([read["train"], read["val"]])[:n_train]
    rng = np.random.default_rng(seed)
    extra = read["train"][rng.integers(0, len(read["train"]), max(0, n_synthetic - len(read["test"])))]
    extra = np.where(rng.random(len(extra))[:, None, None, None] < 0.5, extra[..., ::-1], extra)
    extra = np.roll(extra, tuple(rng.integers(-2, 3, 2)), axis=(2, 3))
    extra = np.clip(extra + rng.normal(0, 0.05, extra.shape), 0, 1).astype(np.float32)
    return np.concatenate([read["test"], extra])[:n_synthetic], references


def bench_features(n_synthetic: int, n_train: int, dim: int, baseline_queries: int, seed: int) -> None:
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(seed)
    queries = rng.normal(size=(n_synthetic, dim)).astype(np.float32)
    references = rng.normal(size=(n_train, dim)).astype(np.float32)
    ours, seconds = timed(lambda: nearest_euclidean(queries, references))
    head = queries[:baseline_queries]
    (index, base_seconds) = timed(lambda: cdist(head, references).argmin(axis=1))
    scaled = base_seconds * n_synthetic / len(head)
    same = float(np.mean(index == ours.index[:len(head)]))
    print(f"features {n_synthetic} x {n_train} ({dim}-d): medsyn {seconds:.2f} s; scipy cdist {scaled:.1f} s "
          f"({len(head)} queries in {base_seconds:.2f} s, scaled); same neighbour {100 * same:.1f} %; "
          f"ratio {scaled / seconds:.1f}", flush=True)


def bench_pixels(data: str, n_synthetic: int, n_train: int, size: int, baseline_queries: int, seed: int) -> None:
    queries, references = image_sets(data, n_synthetic, n_train, size, seed)
    ours, seconds = timed(lambda: nearest_pixels(queries, references))
    with_ssim, ssim_seconds = timed(lambda: nearest_pixels(queries, references, with_ssim=True))
    head = queries[:baseline_queries]
    exhaustive, base_seconds = timed(lambda: nearest_pixels_exhaustive(head, references))
    scaled = base_seconds * len(queries) / len(head)
    gap = ours.distance[:len(head)] - exhaustive.distance
    agree = float(np.mean(gap <= 1e-5))
    print(f"pixels {len(queries)} x {len(references)} ({size}x{size}, flips and shifts of 2): medsyn {seconds:.2f} s "
          f"({ssim_seconds:.2f} s with SSIM); exhaustive {scaled:.1f} s ({len(head)} queries in {base_seconds:.2f} s, "
          f"scaled); found the exhaustive distance for {100 * agree:.1f} % of {len(head)} held-out queries (largest "
          f"overestimate {gap.max():.4f}, never under: {bool(gap.min() > -1e-5)}); ratio {scaled / seconds:.1f}",
          flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-synthetic", type=int, default=10000, help="query images / feature rows")
    parser.add_argument("--n-train", type=int, default=5000, help="reference images / feature rows")
    parser.add_argument("--size", type=int, nargs="+", default=[28, 64], help="image sides of the pixel searches")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension (Inception pool3: 2048)")
    parser.add_argument("--baseline-queries", type=int, default=500, help="queries the baselines run on, then scaled")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both sides (default: one, as "
                                                                       "`medsyn audit` searches)")
    parser.add_argument("--data", default=str(SHARED), help="MedMNIST-style .npz with train, val and test splits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-features", action="store_true", help="time the pixel searches only")
    args = parser.parse_args(argv)
    with one_thread():
        if args.threads:
            torch.set_num_threads(args.threads)
        print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads, numpy {np.__version__}", flush=True)
        if not args.skip_features:
            bench_features(args.n_synthetic, args.n_train, args.dim, args.baseline_queries, args.seed)
        for size in args.size:
            bench_pixels(args.data, args.n_synthetic, args.n_train, size, args.baseline_queries, args.seed)


if __name__ == "__main__":
    sys.exit(main())
