"""The embedded phantom dataset: shape, determinism, prefix stability, files on disk, radiology."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from medsyn.data.phantoms import CLASS_NAMES, make_phantoms, make_phantoms_with_masks, write_phantoms
from medsyn.errors import ConfigError, RunError


def to_hu(images: np.ndarray) -> np.ndarray:
    """Undo the soft-tissue window (centre 60, width 350) to compare densities in HU."""
    return (images - 0.5) * 350.0 + 60.0


@pytest.mark.parametrize("size", [28, 64, 256])
def test_shape_dtype_range(size):
    data = make_phantoms(size=size, per_class=1 if size == 256 else 2, seed=0)
    n = 3 if size == 256 else 6
    assert data.images.shape == (n, 1, size, size)
    assert data.images.dtype == np.float32 and data.labels.dtype == np.int64
    assert data.images.min() >= 0.0 and data.images.max() <= 1.0
    assert np.isfinite(data.images).all()
    assert 0.3 < data.images.mean() < 0.8  # mostly liver in a soft-tissue window, not blank


def test_metadata_labels_and_balance():
    data = make_phantoms(size=32, per_class=4, seed=0)
    assert data.class_names == list(CLASS_NAMES)
    assert data.labels.tolist() == [0, 1, 2] * 4  # interleaved classes
    assert data.class_counts() == [4, 4, 4]
    assert data.format == "phantoms" and data.bit_depth == 8 and data.channels == 1
    assert data.splits is None and data.paths is None
    assert data.patient_ids.tolist() == [f"P{i:04d}" for i in range(12)]


def test_deterministic_and_seed_dependent():
    a = make_phantoms(size=40, per_class=3, seed=5)
    b = make_phantoms(size=40, per_class=3, seed=5)
    c = make_phantoms(size=40, per_class=3, seed=6)
    assert np.array_equal(a.images, b.images)
    assert not np.allclose(a.images, c.images)
    # every image differs from every other (no repeated child seeds)
    flat = a.images.reshape(len(a), -1)
    assert len({row.tobytes() for row in flat}) == len(a)


def test_image_i_does_not_depend_on_per_class():
    small = make_phantoms(size=36, per_class=2, seed=3)
    large = make_phantoms(size=36, per_class=5, seed=3)
    assert np.array_equal(small.images, large.images[: len(small)])
    assert np.array_equal(small.labels, large.labels[: len(small)])


def test_same_lesions_at_every_size():
    # geometry is in ROI coordinates, so lesion area and mean brightness barely move with size
    _, masks28 = make_phantoms_with_masks(size=28, per_class=4, seed=0)
    data64, masks64 = make_phantoms_with_masks(size=64, per_class=4, seed=0)
    data28 = make_phantoms(size=28, per_class=4, seed=0)
    area28, area64 = masks28["lesion"].mean((1, 2)), masks64["lesion"].mean((1, 2))
    assert np.abs(area28 - area64).max() < 0.03
    assert np.abs(data28.images.mean((1, 2, 3)) - data64.images.mean((1, 2, 3))).max() < 0.01


@pytest.mark.parametrize("kwargs", [
    {"size": 27}, {"size": 257}, {"size": 64.0}, {"size": "64"}, {"size": True},
    {"per_class": 0}, {"per_class": -3}, {"seed": -1}, {"seed": 1.5},
])
def test_bad_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        make_phantoms(**{"size": 32, "per_class": 1, **kwargs})


def test_write_phantoms(tmp_path):
    out = write_phantoms(tmp_path / "phantoms", size=32, per_class=3, seed=2)
    assert out == tmp_path / "phantoms"
    assert [p.name for p in tmp_path.iterdir()] == ["phantoms"]  # no leftover temp folder
    data = make_phantoms(size=32, per_class=3, seed=2)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([*CLASS_NAMES, "classes.txt", "manifest.csv", *(f"grid_{c}.png" for c in CLASS_NAMES)])
    assert (out / "classes.txt").read_text().split() == list(CLASS_NAMES)
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == ["path", "label", "class_name", "patient_id"]
    assert len(rows) == len(data)
    for i, row in enumerate(rows):
        assert int(row["label"]) == data.labels[i] and row["class_name"] == CLASS_NAMES[data.labels[i]]
        assert row["patient_id"] == data.patient_ids[i]
        with Image.open(out / row["path"]) as png:
            assert png.mode == "L" and png.size == (32, 32)
            pixels = np.asarray(png)
        assert np.array_equal(pixels, np.rint(data.images[i, 0] * 255).astype(np.uint8))
    for c in CLASS_NAMES:
        assert len(list((out / c).glob("*.png"))) == 3


def test_write_phantoms_refuses_existing_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    with pytest.raises(RunError):
        write_phantoms(tmp_path / "taken", size=28, per_class=1)
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]


def test_radiology_density_ordering():
    data, masks = make_phantoms_with_masks(size=64, per_class=30, seed=0)
    hu = to_hu(data.images[:, 0])

    def per_image(label, mask, stat=np.mean):
        return np.array([stat(hu[i][masks[mask][i]]) for i in np.flatnonzero(data.labels == label)])

    liver = np.array([hu[i][~masks["lesion"][i]].mean() for i in range(len(data))])
    cyst, meta, hema = range(3)
    assert 90 < liver.mean() < 140  # enhanced parenchyma in the portal phase
    assert per_image(cyst, "core").mean() < 25  # water density
    assert per_image(cyst, "core").mean() + 20 < per_image(meta, "core").mean()  # soft tissue vs water
    assert per_image(meta, "core").mean() + 30 < liver.mean()  # metastases are hypo-attenuating
    assert per_image(hema, "core").mean() + 30 < liver.mean()  # so is the hemangioma body
    assert per_image(hema, "rim").mean() > per_image(hema, "core").mean() + 15  # peripheral enhancement
    # nodules at blood-pool density: the brightest rim pixels exceed the liver and the metastases' rims
    p95 = lambda a: np.percentile(a, 95)  # noqa: E731
    assert per_image(hema, "rim", p95).mean() > liver[data.labels == hema].mean() + 25
    assert per_image(hema, "rim", p95).mean() > per_image(meta, "rim", p95).mean() + 25
