"""Classic augmentation presets of the papers, seeded: online on batches, offline to disk."""
from medsyn.augment import crop  # noqa: F401  (registers the pggan-crop preset)
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
    "PRESETS",
    "AugmentParams",
    "AugmentedSet",
    "BatchAugment",
    "Fill",
    "PresetName",
    "augment_dataset",
    "augment_with_provenance",
    "build_preset",
    "liver_lesion_paper_count",
    "write_augmented",
]
