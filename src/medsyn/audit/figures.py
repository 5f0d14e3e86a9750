"""The audit's two figures: the closest synthetic/training pairs, and the nearest-distance histograms."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medsyn import atomic
from medsyn.audit.result import AuditResult
from medsyn.imageio import make_grid

PAIRS_PER_ROW = 4  # synthetic/training pairs side by side in one row of the contact sheet
SHOWN_SIDE = 64  # small images are enlarged (nearest) to this side so a person can see them
HISTOGRAM_BINS = 40
FLOOR = 1e-6  # distances below it (exact copies: 0) are drawn at it, on the log axis


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")  # no display: figures are files
    import matplotlib.pyplot as plt

    return plt


def _shown(images: np.ndarray) -> np.ndarray:
    factor = max(1, SHOWN_SIDE // images.shape[-1])
    return images.repeat(factor, axis=-2).repeat(factor, axis=-1) if factor > 1 else images


def closest_pairs_png(path: Path, result: AuditResult, synthetic: np.ndarray, train: np.ndarray) -> Path:
    """Contact sheet of the synthetic images nearest a training image: each synthetic image, then its
    nearest training image as it matched (flipped when the flip matched), with the pixel distance."""
    plt = _matplotlib()
    pix = result.pixel_nearest
    order = result.closest_pairs()
    rows = -(-len(order) // PAIRS_PER_ROW)
    fig, axes = plt.subplots(rows, PAIRS_PER_ROW, figsize=(PAIRS_PER_ROW * 2.3, rows * 1.45 + 0.4), dpi=110,
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order):
        partner = train[pix.index[i]]
        pair = make_grid(_shown(np.stack([synthetic[i], partner[..., ::-1] if pix.flipped[i] else partner])), nrow=2)
        ax.imshow(pair[0] if pair.shape[0] == 1 else np.moveaxis(pair, 0, -1), cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
        copy = bool(result.copies[i])
        ax.set_title(f"#{i} / train #{pix.index[i]}{' flipped' if pix.flipped[i] else ''}: {pix.distance[i]:.4f}"
                     f"{' COPY' if copy else ''}", fontsize=6.5, color="#a31515" if copy else "#222")
    fig.suptitle("closest pairs: synthetic (left), training (right); 1 - correlation at the best flip and shift",
                 fontsize=8)
    height = fig.get_size_inches()[1]
    # fixed margins, not tight_layout: that measures the text of 32 axes (half of the write's 2 s)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.75 / height, wspace=0.06, hspace=0.3)
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


def distances_png(path: Path, result: AuditResult) -> Path:
    """Histograms of nearest-training-image distances, synthetic against held-out, with the threshold."""
    plt = _matplotlib()
    spaces = [result.pixels] + ([result.features] if result.features is not None else [])
    fig, axes = plt.subplots(1, len(spaces), figsize=(5.5 * len(spaces), 3.6), dpi=110, squeeze=False)
    for ax, space in zip(axes[0], spaces):
        # log scale: copies sit orders of magnitude below new images; exact ones (0) in the first bin
        synthetic, held = (np.maximum(d, FLOOR) for d in (space.synthetic.distance, space.held.distance))
        top = max(float(max(synthetic.max(), held.max())), FLOOR * 10)
        bins = np.geomspace(FLOOR, top * 1.01, HISTOGRAM_BINS + 1)
        ax.hist(synthetic, bins=bins, alpha=0.55, label=f"synthetic -> train ({len(synthetic)})")
        ax.hist(held, bins=bins, alpha=0.55, label=f"held-out -> train ({len(held)})")
        ax.axvline(max(space.threshold, FLOOR), color="#a31515", linestyle="--",
                   label=f"held-out 1st percentile {space.threshold:.4g}")
        if space.space == "pixels":  # the copy rule decides in pixels only
            ax.axvline(max(space.copy_threshold, FLOOR), color="#a31515", linestyle=":",
                       label=f"copies: under half of it, {space.copy_threshold:.4g}")
        ax.set_xscale("log")
        kind = "1 - correlation at the best flip and shift" if space.space == "pixels" else "Euclidean distance"
        ax.set_title(f"{space.space}: distance to the nearest training image", fontsize=8)
        ax.set_xlabel(f"{kind} (log; under {FLOOR:g} drawn at {FLOOR:g})", fontsize=8)
        ax.set_ylabel("images", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
