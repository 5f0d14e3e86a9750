"""What the real-only classifier of a fold says about the synthetic sets: label fidelity, domain
Fréchet distance against its real-vs-real floor, and the t-SNE figures (its features and the pixels)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medsyn.data.types import LabeledImages
from medsyn.study.folds import Fold, take_rows

TSNE_PER_ORIGIN = 300  # points per origin (real, classic, each generator) in the t-SNE plot


def fidelity(trained, fold: Fold, synthetic: dict[str, LabeledImages]) -> dict:
    """Per generator: the classifier's per-class accuracy on its images, and the domain FD of half the
    real training images against as many synthetic ones, with the other half as the floor."""
    from medsyn.evaluate.fidelity import domain_frechet, label_fidelity

    # equal-sized sets for the domain FD and its real-vs-real floor (Frechet distances are size-biased)
    m = len(fold.train) // 2
    order = np.random.default_rng(fold.index).permutation(len(fold.train))
    half_a, half_b = fold.train.subset(np.sort(order[:m])), fold.train.subset(np.sort(order[m:2 * m]))
    floor = domain_frechet(trained, half_a, half_b)
    out = {}
    for name, images in synthetic.items():
        out[name] = {"label_fidelity": label_fidelity(trained, images),
                     "domain_fd": domain_frechet(trained, half_a, take_rows(images, m, seed=fold.index)),
                     "domain_fd_floor": floor}
    return out


def tsne_figures(trained, fold: Fold, seed: int, classic_preset: str | None, classic_copies: int,
                 synthetic: dict[str, LabeledImages], figures: Path) -> Path:
    """t-SNE of the classifier's features and of the pixels, for real, classic and each synthetic set;
    returns the features figure (the pixels one is beside it)."""
    from medsyn.evaluate.arms import build_arm
    from medsyn.evaluate.tsne import plot_tsne

    sets = {"real": take_rows(fold.train, TSNE_PER_ORIGIN, seed)}
    if classic_preset:
        classic = build_arm("classic", fold.train, synthetic=None, classic_preset=classic_preset,
                            classic_copies=classic_copies, volume=None, seed=seed)
        sets["classic"] = take_rows(classic.subset(np.arange(len(fold.train), len(classic))), TSNE_PER_ORIGIN, seed)
    for name, images in synthetic.items():
        sets[name] = take_rows(images, TSNE_PER_ORIGIN, seed)
    path = figures / "tsne.png"
    plot_tsne(trained, sets, path, seed=seed)
    plot_tsne(None, sets, figures / "tsne_pixels.png", seed=seed)  # as the brain-MRI paper
    return path
