"""What an audit found: one dataclass that the command, the report and studies read alike."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from medsyn.audit.memorisation import COPY_RULE, SpaceResult, held_out_threshold, per_class_copies
from medsyn.audit.membership import MembershipResult
from medsyn.audit.pixel_neighbours import MAX_SHIFT, PixelNearest

CLOSEST_PAIRS = 32  # synthetic/training pairs shown in the contact sheet


@dataclass
class AuditResult:
    """An audit of a synthetic set against its generator's training images and held-out images.

    Attributes:
        names: each synthetic image's name (as ``medsyn curate`` names it; copies.csv's ``image``).
        labels: (N,) class index of each synthetic image.
        class_names: the classes.
        sizes: {"synthetic", "train", "held_out"} image counts, and per class.
        sources: {"synthetic", "train", "held_out"} where the sets came from.
        pixels: memorisation in pixel space (the copy rule's).
        features: memorisation in feature space, or None for a pixel-only audit.
        feature_name: the extractor's name (None without one).
        fidelity: ``fidelity.prdc_table`` in feature space, or None.
        membership: every attack that ran.
        seed: seeds the bootstrap intervals.
        warnings: what the reader must know to trust the numbers (data duplicates, unchecked provenance).
    """

    names: list[str]
    labels: np.ndarray
    class_names: list[str]
    sizes: dict
    sources: dict
    pixels: SpaceResult
    features: SpaceResult | None
    feature_name: str | None
    fidelity: dict | None
    membership: list[MembershipResult]
    seed: int
    warnings: list[str] = field(default_factory=list)

    @property
    def copies(self) -> np.ndarray:
        """(N,) bool: the synthetic images the copy rule flags."""
        return self.pixels.below_copy_threshold

    @property
    def pixel_nearest(self) -> PixelNearest:
        return self.pixels.synthetic  # type: ignore[return-value]

    def verdict(self) -> str:
        """One line: copies and the membership AUCs, e.g.
        ``copies 0 of 2000 (0.0%), membership AUC 0.51 [0.47, 0.55] (pixels)``."""
        n, flagged = len(self.copies), int(self.copies.sum())
        attacks = ", ".join(f"{m.describe()} ({m.space})" for m in self.membership)
        close = int(self.pixels.below_threshold.sum()) - flagged
        near = f", {close} more close" if close else ""
        return f"copies {flagged} of {n} ({100 * flagged / n:.1f}%){near}, membership AUC {attacks}"

    def ssim_threshold(self) -> float | None:
        """The held-out 1st percentile of 1 - SSIM (reported, not part of the rule)."""
        held = self.pixels.held
        values = getattr(held, "ssim_distance", None)
        if values is None or np.isnan(values).all():
            return None
        return held_out_threshold(values[~np.isnan(values)])

    def copy_rows(self, only_copies: bool = True) -> list[dict]:
        """One dict per synthetic image (copies only by default): name, class, nearest training image, distances."""
        pix = self.pixel_nearest
        chosen = np.flatnonzero(self.copies) if only_copies else np.arange(len(self.names))
        rows = []
        for i in chosen:
            row = {"index": int(i), "image": self.names[i], "class": self.class_names[self.labels[i]],
                   "nearest_train": int(pix.index[i]), "pixel_distance": float(pix.distance[i]),
                   "flipped": bool(pix.flipped[i]), "shift": [int(v) for v in pix.shift[i]],
                   "ssim_distance": _finite(pix.ssim_distance[i]), "copy": bool(self.copies[i])}
            if self.features is not None:
                row |= {"feature_nearest_train": int(self.features.synthetic.index[i]),
                        "feature_distance": float(self.features.synthetic.distance[i])}
            rows.append(row)
        return rows

    def closest_pairs(self, count: int = CLOSEST_PAIRS) -> np.ndarray:
        """Indices of the synthetic images nearest (in pixels) to a training image, nearest first."""
        return np.argsort(self.pixel_nearest.distance, kind="stable")[:count]

    def per_class(self) -> dict[str, dict]:
        """Class name -> synthetic count, copies, their share, and the class-matched fidelity numbers."""
        table = per_class_copies(self.copies, self.labels, self.class_names)
        for name, row in table.items():
            scores = (self.fidelity or {}).get("per_class", {}).get(name)
            row.update(scores or {})
        return table

    def to_json(self) -> dict:
        """Every number of the audit as plain JSON (NaN where undefined)."""
        memorisation = {"pixels": {**self.pixels.summary(), "max_shift": MAX_SHIFT,
                                   "ssim_threshold_held_out_p1": self.ssim_threshold()}}
        if self.features is not None:
            memorisation["features"] = {**self.features.summary(), "rule": "reported only: close in features"}
        n = len(self.copies)
        return {
            "verdict": self.verdict(), "copy_rule": COPY_RULE, "sizes": self.sizes, "sources": self.sources,
            "class_names": list(self.class_names), "seed": self.seed, "features": self.feature_name,
            "fidelity": self.fidelity, "memorisation": memorisation,
            "copies": {"count": int(self.copies.sum()), "share": float(self.copies.sum() / n),
                       "threshold": self.pixels.copy_threshold, "close": int(self.pixels.below_threshold.sum()),
                       "close_threshold": self.pixels.threshold, "per_class": per_class_copies(self.copies, self.labels,
                                                                                          self.class_names),
                       "list": self.copy_rows()},
            "per_class": self.per_class(),
            "membership": [m.to_json() for m in self.membership],
            "warnings": list(self.warnings),
        }


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
