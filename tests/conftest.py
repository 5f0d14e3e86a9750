"""Shared test fixtures: where the real data lives, and small writers for DICOM, NIfTI and PNG fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_DIR = Path(__file__).parents[1].parent / "shared"  # ../shared beside the repository


def pytest_configure(config):
    """Under pytest-xdist, one compute thread per worker: torch (and the `medsyn` subprocesses the
    tests start) would otherwise each use every core, and two workers on two cores would run four
    busy threads. A test that needs a thread count (torchrun's) sets its own."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ.setdefault("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real data folder (../shared/data); always present in CI, so a missing one fails."""
    path = SHARED_DIR / "data"
    assert path.is_dir(), f"shared data folder missing: {path}"
    return path


@pytest.fixture(scope="session")
def medmnist_dir(shared_data: Path) -> Path:
    """Folder with the real MedMNIST .npz files (breastmnist, breastmnist_64, retinamnist, pneumoniamnist)."""
    path = shared_data / "medmnist"
    assert path.is_dir(), f"MedMNIST data folder missing: {path}"
    return path


def write_png(path: Path, image) -> Path:
    """Write an array (uint16 grey -> 16-bit PNG) or a PIL image; creates parent folders."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(path)
    return path


def write_dicom(
    path: Path,
    pixels: np.ndarray | None,
    *,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple | None = None,
    photometric: str = "MONOCHROME2",
    patient_id: str | None = "P001",
) -> Path:
    """Write a 16-bit grey DICOM; pixels (H, W) or (frames, H, W) of unsigned ints, or None for no PixelData."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    if patient_id is not None:
        ds.PatientID = patient_id
    if pixels is not None:
        frames = pixels if pixels.ndim == 3 else pixels[None]
        ds.Rows, ds.Columns = frames.shape[1:]
        if pixels.ndim == 3:
            ds.NumberOfFrames = len(frames)
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(frames, dtype="<u2").tobytes()
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept or 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: Path, volume: np.ndarray) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(volume, dtype=np.float32), np.eye(4)), str(path))
    return path


@pytest.fixture
def make_npz(tmp_path):
    """Writes a MedMNIST-style .npz of random images (``classes`` x ``n_per_class``) and returns its path."""
    def make(size=28, channels=1, n_per_class=6, classes=3, name="toy.npz"):
        rng = np.random.default_rng(0)
        shape = (n_per_class * classes, size, size) + ((3,) if channels == 3 else ())
        images = rng.integers(0, 256, shape, dtype=np.uint8)
        labels = np.repeat(np.arange(classes), n_per_class).reshape(-1, 1)
        path = tmp_path / name
        np.savez(path, train_images=images, train_labels=labels)
        return str(path)
    return make


@pytest.fixture
def split_npz(tmp_path) -> str:
    """A MedMNIST-style .npz with its own split: 24 train, 6 val, 9 test images of 3 classes, 28x28."""
    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in (("train", 24), ("val", 6), ("test", 9)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 3).reshape(-1, 1)
    np.savez(tmp_path / "mnist.npz", **arrays)
    return str(tmp_path / "mnist.npz")


@pytest.fixture
def one_thread():
    """Tiny networks: a second intra-op thread only adds contention on a shared CPU (10x slower here)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
