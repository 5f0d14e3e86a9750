"""Training sets of the experiment arms, as in the brain-MRI paper's DA setups.

``real`` is the real training split; ``classic`` adds classic-augmentation copies of it;
``synthetic`` adds GAN images; ``classic+synthetic`` adds both. ``tstr`` (train on synthetic, test on
real) is the GAN images alone: the direct test of whether a generator learned the classes. Synthetic
images are taken per class by the same volume rule in every arm, so adding them never changes the
class balance the GAN was given.
"""
from __future__ import annotations

from enum import StrEnum

import numpy as np

from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError, DataError


class Arm(StrEnum):
    """The brain-MRI paper's four training sets and TSTR; the one definition every command and study uses."""

    REAL = "real"
    CLASSIC = "classic"
    SYNTHETIC = "synthetic"
    CLASSIC_SYNTHETIC = "classic+synthetic"
    TSTR = "tstr"  # synthetic images alone; model selection still on the real validation split

    @property
    def uses_real(self) -> bool:
        return self is not Arm.TSTR

    @property
    def uses_classic(self) -> bool:
        return self in (Arm.CLASSIC, Arm.CLASSIC_SYNTHETIC)

    @property
    def uses_synthetic(self) -> bool:
        return self in (Arm.SYNTHETIC, Arm.CLASSIC_SYNTHETIC, Arm.TSTR)

    @property
    def without_classic(self) -> "Arm":
        """The arm's images before classic copies are added (for augmentation on the fly instead)."""
        return {Arm.CLASSIC: Arm.REAL, Arm.CLASSIC_SYNTHETIC: Arm.SYNTHETIC}.get(self, self)

    @classmethod
    def parse(cls, text: str) -> "Arm":
        """The arm named ``text``; a ConfigError listing the arms otherwise."""
        try:
            return cls(text)
        except ValueError:
            raise ConfigError(f"unknown arm {text!r}; known: {', '.join(a.value for a in cls)}") from None


def arm_for(classic: bool, synthetic: bool) -> Arm:
    """The arm a command line asks for: real, plus classic and/or synthetic images (never tstr, a study arm)."""
    return [[Arm.REAL, Arm.SYNTHETIC], [Arm.CLASSIC, Arm.CLASSIC_SYNTHETIC]][bool(classic)][bool(synthetic)]


def check_compatible(real: LabeledImages, synthetic: LabeledImages) -> None:
    """Refuse a synthetic set that cannot join the real one: other classes, image size or channels.

    Raises:
        DataError: naming both sources and what differs.
    """
    where = f"real data {real.source}"
    if list(real.class_names) != list(synthetic.class_names):
        raise DataError(synthetic.source, f"classes {list(synthetic.class_names)} differ from the {where} "
                                          f"{list(real.class_names)} (same names in the same order needed)")
    if real.size != synthetic.size:
        raise DataError(synthetic.source, f"images are {synthetic.size}x{synthetic.size}, the {where} is "
                                          f"{real.size}x{real.size}; sample at the real size")
    if real.channels != synthetic.channels:
        raise DataError(synthetic.source, f"images have {synthetic.channels} channel(s), the {where} has {real.channels}")


def synthetic_per_class(real_train: LabeledImages, synthetic: LabeledImages,
                        volume: int | float | None) -> np.ndarray:
    """Synthetic images to take from each class (an int array, one count per class).

    Args:
        real_train: the real training set.
        synthetic: the synthetic pool.
        volume: an int is the same count for every class; a float multiplies each class's own
            real count (1.0 doubles every class, as the liver-lesion paper's Fig. 8 adds synthetic
            lesions per class); None takes the most the pool allows with equal classes.

    Raises:
        ConfigError: a non-positive volume.
        DataError: the pool has too few images of some class.
    """
    available = np.bincount(synthetic.labels, minlength=synthetic.num_classes)
    if volume is None:
        return np.full(synthetic.num_classes, int(available.min()))
    if isinstance(volume, bool) or not isinstance(volume, (int, float, np.integer, np.floating)) or volume <= 0:
        raise ConfigError(f"volume must be a positive count or multiple, got {volume!r}")
    if isinstance(volume, (float, np.floating)):
        real_counts = real_train.class_counts()
        wanted = np.array([max(1, round(float(volume) * n)) if n else 0 for n in real_counts])
    else:
        wanted = np.full(synthetic.num_classes, int(volume))
    short = int(np.argmax(wanted - available))
    if available[short] < wanted[short]:
        raise DataError(synthetic.source, f"has only {available[short]} images of class "
                                          f"{synthetic.class_names[short]!r}; the volume asks for {wanted[short]}")
    return wanted


def take_per_class(synthetic: LabeledImages, per_class: np.ndarray, seed: int) -> LabeledImages:
    """``per_class[k]`` images of class k, drawn without replacement (seeded), class-major."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(synthetic.labels == k))[:int(n)] for k, n in enumerate(per_class)]
    return synthetic.subset(np.sort(np.concatenate(picks)))


def concat(parts: list[LabeledImages], source: str) -> LabeledImages:
    """One set from several with the same classes and geometry (patient ids kept only if all have them)."""
    first = parts[0]
    ids = None
    if all(p.patient_ids is not None for p in parts):
        ids = np.concatenate([np.asarray(p.patient_ids).astype(str) for p in parts])
    return LabeledImages(
        images=np.concatenate([p.images for p in parts]).astype(np.float32, copy=False),
        labels=np.concatenate([p.labels for p in parts]).astype(np.int64, copy=False),
        class_names=list(first.class_names), source=source, format="arm", bit_depth=first.bit_depth,
        patient_ids=ids, notices=[n for p in parts for n in p.notices],
    )


def build_arm(
    arm: str, real_train: LabeledImages, *, synthetic: LabeledImages | None = None,
    classic_preset: str | None = None, classic_copies: int | None = 1, volume: int | float | None = None,
    seed: int = 0,
) -> LabeledImages:
    """The training set of one arm.

    Args:
        arm: "real", "classic", "synthetic", "classic+synthetic" or "tstr" (synthetic images only).
        real_train: the real training split (never the validation or test images); for tstr only the
            reference of the volume and of the classes, none of its images is taken.
        synthetic: the labeled synthetic pool (arms with synthetic images).
        classic_preset: classic augmentation preset (arms with classic images).
        classic_copies: augmented copies per real image; None: the preset's paper count.
        volume: synthetic images per class (int) or a multiple of each class's real count (float);
            None takes the largest balanced subset of the pool.
        seed: seeds the augmentation and the choice of synthetic images.

    Returns:
        real images first (none for tstr), then classic copies, then synthetic images.

    Raises:
        ConfigError: unknown arm, or a preset/synthetic set missing for the arm.
        DataError: a synthetic set that does not fit the real one, or too small for the volume.
    """
    arm = Arm.parse(arm)
    parts = [real_train] if arm.uses_real else []
    if arm.uses_classic:
        if not classic_preset:
            raise ConfigError(f"arm {arm.value!r} needs a classic augmentation preset")
        from medsyn.augment import augment_dataset

        parts = [augment_dataset(real_train, classic_preset, classic_copies, seed=seed, include_original=True)]
    if arm.uses_synthetic:
        if synthetic is None:
            raise ConfigError(f"arm {arm.value!r} needs a synthetic image set")
        check_compatible(real_train, synthetic)
        parts.append(take_per_class(synthetic, synthetic_per_class(real_train, synthetic, volume), seed))
    return concat(parts, source=f"{real_train.source} [{arm.value}]")
