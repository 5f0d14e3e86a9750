"""Memorisation: how close each synthetic image comes to a training image, against how close new images come.

Distances (one space at a time: pixels or features) -> calibration -> decisions, as pure functions.

Calibration: the distance of each held-out image (a real image the generator never saw) to its
nearest training image says how close a *new* image gets. The threshold is the held-out 1st
percentile, taken so that at most 1% of the held-out images lie strictly below it (numpy's
``inverted_cdf``): a synthetic image below it is closer to a training image than 99% of new
images are.

The copy rule (``COPY_RULE``): a synthetic image is a copy when its pixel distance (1 -
correlation at the best flip and shift of 2 pixels) is strictly below half the held-out pixel
threshold. Why half: the 1st percentile of n held-out distances is an order statistic, and a new
image falls below the k-th smallest of n with probability k / (n + 1); on a small test split
(BreastMNIST's 47 new scans make it the minimum) that is 2% on average and 4 of 47 in one draw, so
the percentile alone calls new images copies. Half of it asks an image to be twice as close to a
training image as the closest 1% of new images are: copies, flipped, shifted, re-quantised or
noised (sigma a tenth of the images' spread) sit at distances under 0.03, new images from 0.065
on (BreastMNIST and phantoms), and the threshold (about 0.035) lies between with room both ways.
Images between the two thresholds are reported as "close" (not dropped, worth a look).
Pixels alone decide: a second test in features, OR-ed in, would double the share of new images
called copies, and a copy in pixels needs no network to be seen. Feature distances below their
own held-out threshold are reported beside it ("close in features").

Authenticity (Alaa et al. 2022): a synthetic image is authentic when it lies farther from its
nearest training image than that training image lies from its own nearest other training image.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medsyn.audit.neighbours import Nearest

PERCENTILE = 1.0  # the held-out percentile below which a synthetic image is close to a training image
COPY_MARGIN = 0.5  # a copy is closer than this fraction of that percentile (module docstring: why)
DUPLICATE_FRACTION = 0.1  # held-out images this much closer than the median held-out distance look like duplicates
COPY_RULE = ("copy: pixel distance (1 - Pearson correlation of the central crops, at the best of a horizontal flip "
             "and shifts of up to 2 pixels of the training image) strictly below half the held-out 1st percentile of the "
             "held-out-to-train pixel distances (at most 1% of held-out images lie below the percentile itself; "
             "images between half and the whole of it are reported as close, not copies)")


def held_out_threshold(held_distances: np.ndarray, percentile: float = PERCENTILE) -> float:
    """The distance at most ``percentile`` % of the held-out images lie strictly below.

    Raises:
        ValueError: no held-out distances.
    """
    held = np.asarray(held_distances, dtype=np.float64)
    if not len(held):
        raise ValueError("no held-out distances to calibrate with")
    return float(np.percentile(held, percentile, method="inverted_cdf"))


def authentic(synthetic: Nearest, train_self_distance: np.ndarray) -> np.ndarray:
    """(N,) bool: each synthetic image lies farther from its nearest training image than that image
    lies from its nearest other training image (Alaa et al. 2022's authenticity)."""
    return synthetic.distance > np.asarray(train_self_distance)[synthetic.index]


def likely_duplicates(held_distances: np.ndarray) -> np.ndarray:
    """(M,) bool: held-out images far closer to a training image than held-out images usually are
    (under DUPLICATE_FRACTION of the median): the data's own duplicates across its splits, which
    pull the threshold towards 0. A heuristic for a warning; the threshold keeps every image."""
    held = np.asarray(held_distances, dtype=np.float64)
    return held < DUPLICATE_FRACTION * np.median(held)


@dataclass(frozen=True)
class SpaceResult:
    """Memorisation numbers in one space.

    Attributes:
        space: "pixels" or the feature extractor's name.
        synthetic: each synthetic image's nearest training image.
        held: each held-out image's nearest training image (the calibration).
        train_self: each training image's nearest other training image (authenticity).
        threshold: the held-out 1st percentile.
        below_threshold: (N,) synthetic images strictly below it ("close").
        copy_threshold: ``COPY_MARGIN`` times the threshold.
        below_copy_threshold: (N,) synthetic images strictly below that (copies, in the pixel space).
        below_minimum: (N,) synthetic images closer than every held-out image.
        authentic: (N,) Alaa et al.'s authenticity per synthetic image.
    """

    space: str
    synthetic: Nearest
    held: Nearest
    train_self: Nearest
    threshold: float
    below_threshold: np.ndarray
    copy_threshold: float
    below_copy_threshold: np.ndarray
    below_minimum: np.ndarray
    authentic: np.ndarray

    def summary(self) -> dict:
        n = len(self.below_threshold)
        return {"space": self.space, "threshold_held_out_p1": self.threshold,
                "held_out_minimum": float(self.held.distance.min()),
                "held_out_median": float(np.median(self.held.distance)),
                "synthetic_median": float(np.median(self.synthetic.distance)),
                "below_threshold": int(self.below_threshold.sum()), "below_minimum": int(self.below_minimum.sum()),
                "share_below_threshold": float(self.below_threshold.sum() / n),
                "copy_threshold": self.copy_threshold, "below_copy_threshold": int(self.below_copy_threshold.sum()),
                "share_below_copy_threshold": float(self.below_copy_threshold.sum() / n),
                "authenticity": float(self.authentic.mean()),
                "held_out_likely_duplicates": int(likely_duplicates(self.held.distance).sum())}


def space_result(space: str, synthetic: Nearest, held: Nearest, train_self: Nearest) -> SpaceResult:
    """Calibrate one space's distances against the held-out images and decide per synthetic image."""
    threshold = held_out_threshold(held.distance)
    copy_threshold = COPY_MARGIN * threshold
    return SpaceResult(space, synthetic, held, train_self, threshold, synthetic.distance < threshold, copy_threshold,
                       synthetic.distance < copy_threshold, synthetic.distance < held.distance.min(),
                       authentic(synthetic, train_self.distance))


def per_class_copies(copies: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict[str, dict]:
    """Class name -> {"synthetic", "copies", "share"} of the synthetic images of that class."""
    table = {}
    for k, name in enumerate(class_names):
        in_class = labels == k
        count = int(in_class.sum())
        flagged = int(copies[in_class].sum())
        table[name] = {"synthetic": count, "copies": flagged, "share": flagged / count if count else float("nan")}
    return table
