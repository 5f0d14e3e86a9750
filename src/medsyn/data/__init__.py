"""Data readers: MedMNIST .npz, class-folder trees, DICOM, NIfTI and CSV manifests, plus patient splits.

Everything comes back as one LabeledImages (float32 (N, C, H, W) in [0, 1], int64 labels).
"""
from medsyn.data.info import describe
from medsyn.data.loader import load_source
from medsyn.data.preprocess import Interpolation
from medsyn.data.splits import patient_kfold, patient_split, source_split
from medsyn.data.types import SPLITS, LabeledImages

__all__ = [
    "SPLITS",
    "Interpolation",
    "LabeledImages",
    "describe",
    "load_source",
    "patient_kfold",
    "patient_split",
    "source_split",
]
