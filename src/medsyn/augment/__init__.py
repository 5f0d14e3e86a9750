"""Classic augmentation presets of the papers, seeded: online on batches, offline to disk; and the
discriminator augmentations DiffAugment and ADA (differentiable, on every image the critic sees)."""
from medsyn.augment import crop  # noqa: F401  (registers the pggan-crop preset)
from medsyn.augment.adaptive import AdaptiveAugment
from medsyn.augment.differentiable import POLICIES as DIFFAUG_POLICIES
from medsyn.augment.differentiable import DiffAugment, Uniform, default_uniform, parse_policy
from medsyn.augment.offline import AugmentedSet, augment_dataset, augment_with_provenance, write_augmented
from medsyn.augment.presets import (
    PRESETS,
    AugmentParams,
    BatchAugment,
    Fill,
    PresetName,
    build_preset,
    liver_lesion_paper_count,
)

__all__ = [
    "DIFFAUG_POLICIES",
    "PRESETS",
    "AdaptiveAugment",
    "AugmentParams",
    "AugmentedSet",
    "BatchAugment",
    "DiffAugment",
    "Fill",
    "PresetName",
    "Uniform",
    "augment_dataset",
    "augment_with_provenance",
    "build_preset",
    "default_uniform",
    "liver_lesion_paper_count",
    "parse_policy",
    "write_augmented",
]
