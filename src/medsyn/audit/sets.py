"""``audit_sets``: three labeled sets -> features -> nearest neighbours -> calibration -> AuditResult."""
from __future__ import annotations

from typing import Callable

import numpy as np

from medsyn.audit.discriminator import Scorer
from medsyn.audit.fidelity import prdc_table
from medsyn.audit.membership import Attack, gan_leaks, membership_auc
from medsyn.audit.memorisation import DUPLICATE_FRACTION, likely_duplicates, space_result
from medsyn.audit.neighbours import nearest_euclidean, one_thread
from medsyn.audit.pixel_neighbours import nearest_pixels
from medsyn.audit.result import AuditResult
from medsyn.data.types import LabeledImages
from medsyn.errors import DataError

# track(label, total) -> advance(count): how a caller shows progress (the command: bars with img/s)
Track = Callable[[str, int], Callable[[int], None]]


def _silent(label: str, total: int) -> Callable[[int], None]:
    return lambda count: None


def check_sets(synthetic: LabeledImages, train: LabeledImages, held: LabeledImages) -> None:
    """Refuse sets that cannot be compared: other classes, sizes or channels, or too few images.

    Raises:
        DataError: naming the set and what differs.
    """
    from medsyn.evaluate.arms import check_compatible

    check_compatible(train, synthetic)
    check_compatible(train, held)
    for data, least, role in ((synthetic, 1, "synthetic"), (train, 2, "training"), (held, 1, "held-out")):
        if len(data) < least:
            raise DataError(data.source, f"has {len(data)} {role} images; the audit needs at least {least}")


def _features(sets: list[LabeledImages], extractor, cache, batch: int, device, track: Track) -> list[np.ndarray]:
    from medsyn.metrics.fid import compute_features

    out = []
    for label, data in zip(("synthetic", "train", "held-out"), sets):
        advance = track(f"features {label}", len(data))
        done = [0]

        def counted(count: int) -> None:
            done[0] += count
            advance(count)

        out.append(compute_features(data, extractor, cache=cache, batch=batch, device=device, on_batch=counted))
        if done[0] < len(data):  # read from the cache
            advance(len(data) - done[0])
    return out


def _searches(space: str, search, synthetic, train, held, track: Track, **pixel_only):
    """The five searches every space needs: synthetic, held-out and training images to the training set
    (memorisation, calibration, authenticity), training and held-out images to the synthetic set (membership)."""
    def run(label, queries, references, **options):
        return search(queries, references, on_rows=track(f"{space}: {label}", len(queries)), **options)

    return (run("nearest train: synthetic", synthetic, train, **pixel_only),
            run("nearest train: held-out", held, train, **pixel_only),
            run("nearest train: train", train, train, exclude_self=True),
            run("nearest synthetic: train", train, synthetic),
            run("nearest synthetic: held-out", held, synthetic))


def audit_sets(synthetic: LabeledImages, train: LabeledImages, held: LabeledImages, extractor=None, *,
               features: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, cache=None, batch: int = 32,
               device="cpu", seed: int = 0, discriminator: Scorer | None = None, names: list[str] | None = None,
               track: Track | None = None) -> AuditResult:
    """Audit a synthetic set for fidelity, diversity, copies of its training images and membership leaks.

    Args:
        synthetic: the images to audit.
        train: the images the generator was trained on (same classes, size and channels).
        held: real images the generator never saw; they calibrate what "close" means.
        extractor: a ``FeatureExtractor`` (Inception, a domain classifier, pixels); None with
            ``features`` given or for a pixel-only audit (no fidelity numbers then).
        features: precomputed (synthetic, train, held) features instead of ``extractor``.
        cache: a ``FeatureCache`` for the extractor's features.
        batch, device: of the feature network.
        seed: seeds the bootstrap intervals of the membership AUCs.
        discriminator: the run's discriminator as a scorer (``discriminator_scorer``) for LOGAN.
        names: the synthetic images' names (default: as ``medsyn curate`` names them).
        track: progress reporting, see ``Track``.

    Raises:
        DataError: the sets cannot be compared (``check_sets``).
    """
    from medsyn.curate.store import image_names

    check_sets(synthetic, train, held)
    track = track or _silent
    if features is None and extractor is not None:
        features = tuple(_features([synthetic, train, held], extractor, cache, batch, device, track))
    with one_thread():
        pix = _searches("pixels", nearest_pixels, synthetic.images, train.images, held.images, track, with_ssim=True)
        pixels = space_result("pixels", *pix[:3])
        membership = [gan_leaks(pix[3].distance, pix[4].distance, "pixels", seed)]
        feature_space, fidelity, feature_name = None, None, None
        if features is not None:
            feature_name = getattr(extractor, "name", None) or "given"
            feat = _searches("features", nearest_euclidean, *features, track)
            feature_space = space_result(f"features ({feature_name})", *feat[:3])
            membership.append(gan_leaks(feat[3].distance, feat[4].distance, feature_space.space, seed))
            fidelity = prdc_table(features[1], train.labels, features[0], synthetic.labels, list(train.class_names))
    if discriminator is not None:
        membership.append(membership_auc(discriminator(train), discriminator(held), Attack.LOGAN, "discriminator",
                                         seed))
    sizes = {"synthetic": len(synthetic), "train": len(train), "held_out": len(held),
             "per_class": {name: {"synthetic": s, "train": t, "held_out": h} for name, s, t, h in
                           zip(train.class_names, synthetic.class_counts(), train.class_counts(), held.class_counts())},
             "image": {"size": train.size, "channels": train.channels}}
    sources = {"synthetic": _described(synthetic), "train": _described(train), "held_out": _described(held)}
    return AuditResult(names or image_names(synthetic), synthetic.labels, list(train.class_names), sizes, sources,
                       pixels, feature_space, feature_name, fidelity, membership, seed, _warnings(pixels))


def _described(data: LabeledImages) -> str:
    """The source, with the split when the set is one split of it (``x.npz:test``)."""
    splits = set(np.unique(data.splits).tolist()) if data.splits is not None and len(data) else set()
    return f"{data.source}:{splits.pop()}" if len(splits) == 1 and data.format != "medsyn-samples" else data.source


def _warnings(pixels) -> list[str]:
    duplicates = int(likely_duplicates(pixels.held.distance).sum())
    if not duplicates:
        return []
    return [f"warning: {duplicates} of the {len(pixels.held.distance)} held-out images are nearly identical to a "
            f"training image (pixel distance under {DUPLICATE_FRACTION:g} of the held-out median): the data's "
            f"splits share images, so the copy threshold (half the held-out 1st percentile, {pixels.copy_threshold:.4g}) flags "
            f"only near-exact copies and the membership AUCs lean towards 0.5; de-duplicate the held-out set "
            f"against the training set"]
