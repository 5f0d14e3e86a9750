"""The one in-memory form every reader produces and every later stage consumes."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class LabeledImages:
    """A labeled image set, already decoded and brought to one size.

    Attributes:
        images: float32 array (N, C, H, W) with intensities scaled to [0, 1].
        labels: int64 array (N,), values in [0, len(class_names)).
        class_names: one name per class index.
        source: the path or name the set was read from (for messages and provenance).
        format: reader that produced it: "medmnist-npz", "folder", "dicom", "nifti", "phantoms", "medsyn-samples".
        bit_depth: 8 or 16, the depth of the stored originals (PNG output keeps 16-bit data 16-bit).
        splits: optional str array (N,) of "train"/"val"/"test" when the source defines its own split.
        patient_ids: optional str array (N,) when a manifest or the format knows patients.
        paths: optional per-image origin (file path, or "file.nii.gz#slice=42").
        notices: human-readable notes made while reading (e.g. "resized 3 images from 70x70 to 64x64").
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    source: str
    format: str
    bit_depth: int = 8
    splits: np.ndarray | None = None
    patient_ids: np.ndarray | None = None
    paths: list[str] | None = None
    notices: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        assert self.images.ndim == 4, "images must be (N, C, H, W)"
        assert len(self.images) == len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        """Side length; medsyn works on square images (readers resize to square)."""
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=self.num_classes).tolist()

    def subset(self, index: np.ndarray) -> "LabeledImages":
        """Rows selected by an integer or boolean index; metadata carried along."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        paths = None if self.paths is None else [self.paths[i] for i in np.arange(len(self))[index]]
        return LabeledImages(
            images=self.images[index], labels=self.labels[index], class_names=list(self.class_names),
            source=self.source, format=self.format, bit_depth=self.bit_depth,
            splits=pick(self.splits), patient_ids=pick(self.patient_ids), paths=paths,
            notices=list(self.notices),
        )

    def split(self, name: str) -> "LabeledImages":
        """The rows of one of the source's own splits ("train", "val", "test")."""
        if self.splits is None:
            raise ValueError(f"{self.source} defines no splits")
        return self.subset(self.splits == name)
