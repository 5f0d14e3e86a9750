"""Readers: real MedMNIST files, PNG folders (8/16-bit, colour modes), DICOM, NIfTI, CSV manifests."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

import medsyn.data.npz as npz_module
from conftest import write_dicom, write_nifti, write_png
from medsyn.data import describe, load_source
from medsyn.errors import DataError
from medsyn.imageio import write_image_folder

# --- real MedMNIST files -------------------------------------------------------------------------


def test_breastmnist_28_flat_labels(medmnist_dir):
    ds = load_source(str(medmnist_dir / "breastmnist.npz"))
    raw = np.load(medmnist_dir / "breastmnist.npz")
    assert ds.images.shape == (780, 1, 28, 28) and ds.images.dtype == np.float32
    assert ds.labels.dtype == np.int64 and ds.format == "medmnist-npz" and ds.bit_depth == 8
    assert ds.class_names == ["malignant", "normal, benign"]
    assert [int((ds.splits == s).sum()) for s in ("train", "val", "test")] == [546, 78, 156]
    assert ds.split("train").class_counts() == [147, 399]
    np.testing.assert_array_equal(ds.images[0, 0], raw["train_images"][0] / np.float32(255))
    np.testing.assert_array_equal(ds.labels[546:624], raw["val_labels"])


def test_breastmnist_64_test_suffix_and_split_kwarg(medmnist_dir):
    path = medmnist_dir / "breastmnist_64.npz"
    by_suffix = load_source(f"{path}:test")
    by_kwarg = load_source(str(path), split="test")
    assert by_suffix.images.shape == (156, 1, 64, 64)
    assert set(by_suffix.splits) == {"test"} and by_suffix.class_counts() == [42, 114]
    np.testing.assert_array_equal(by_suffix.images, by_kwarg.images)
    np.testing.assert_array_equal(by_suffix.labels, np.load(path)["test_labels"][:, 0])


def test_retinamnist_rgb_five_classes(medmnist_dir):
    ds = load_source(str(medmnist_dir / "retinamnist.npz"))
    assert ds.images.shape == (1600, 3, 28, 28) and ds.num_classes == 5
    assert [int((ds.splits == s).sum()) for s in ("train", "val", "test")] == [1080, 120, 400]
    assert ds.split("train").class_counts() == [486, 128, 206, 194, 66]
    grey = load_source(str(medmnist_dir / "retinamnist.npz:val"), channels=1)
    rgb = ds.split("val").images
    expected = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    assert grey.images.shape == (120, 1, 28, 28)
    np.testing.assert_allclose(grey.images[:, 0], expected, atol=1e-6)


def test_pneumoniamnist_counts_and_describe(medmnist_dir):
    ds = load_source(str(medmnist_dir / "pneumoniamnist.npz"))
    assert [int((ds.splits == s).sum()) for s in ("train", "val", "test")] == [4708, 524, 624]
    assert ds.split("train").class_counts() == [1214, 3494]
    rows = dict(describe(ds))
    assert rows["images"] == "5856" and rows["splits"] == "train 4708, val 524, test 624"
    assert rows["split train"] == "4708: normal 1214; pneumonia 3494"
    assert rows["image size"] == "28x28" and rows["channels"] == "1 (grey)"


def test_resize_to_size_adds_notice_and_channels_three(medmnist_dir):
    ds = load_source(str(medmnist_dir / "breastmnist.npz:val"), size=64, channels=3, interpolation="nearest")
    assert ds.images.shape == (78, 3, 64, 64)
    assert ds.notices == ["resized 78 of 78 images to 64x64 (nearest)"]
    raw = np.load(medmnist_dir / "breastmnist.npz")["val_images"][0] / np.float32(255)
    assert set(np.unique(ds.images[0, 1])) <= set(np.unique(raw))  # nearest invents no values


def test_medmnist_name_reads_cache(tmp_path, monkeypatch, medmnist_dir):
    (tmp_path / "breastmnist_64.npz").symlink_to(medmnist_dir / "breastmnist_64.npz")
    monkeypatch.setattr(npz_module, "medmnist_root", lambda: tmp_path)
    ds = load_source("breastmnist_64:val")
    assert ds.images.shape == (78, 1, 64, 64) and ds.source == "breastmnist_64"
    assert ds.class_names == ["malignant", "normal, benign"]


def test_medmnist_name_not_cached_offline(tmp_path, monkeypatch):
    def offline(*args):
        raise RuntimeError("Automatic download failed!")

    monkeypatch.setattr(npz_module, "medmnist_root", lambda: tmp_path)
    monkeypatch.setattr(npz_module, "_download_medmnist", offline)
    with pytest.raises(DataError, match="not cached .* pass the path of the .npz file"):
        load_source("pneumoniamnist:test")


def test_generic_npz_uint16_and_partial_splits(tmp_path):
    images = np.array([[[0, 65535]], [[32768, 1]]], dtype=np.uint16)
    np.savez(tmp_path / "scans.npz", test_images=images, test_labels=np.array([[0], [2]]))
    ds = load_source(str(tmp_path / "scans.npz"))
    assert ds.class_names == ["class_0", "class_1", "class_2"] and ds.bit_depth == 16
    assert list(ds.splits) == ["test", "test"]
    np.testing.assert_allclose(ds.images[:, 0, 0, 0], [0.0, 32768 / 65535], atol=1e-7)  # 1x2 resized to 2x2


# --- PNG class folders ----------------------------------------------------------------------------


def test_png_folder_8bit_sorted_classes_and_ignored_files(tmp_path):
    a = np.array([[0, 51], [102, 255]], dtype=np.uint8)
    write_png(tmp_path / "cyst" / "a.png", a)
    write_png(tmp_path / "cyst" / "sub" / "b.png", 255 - a)
    write_png(tmp_path / "benign" / "c.png", a)
    write_png(tmp_path / "benign" / ".hidden.png", a)
    write_png(tmp_path / ".cache" / "d.png", a)
    (tmp_path / "benign" / "notes.txt").write_text("not an image")
    (tmp_path / "manifest.csv").write_text("path,label\n")
    ds = load_source(str(tmp_path))
    assert ds.class_names == ["benign", "cyst"] and ds.labels.tolist() == [0, 1, 1]
    assert ds.images.shape == (3, 1, 2, 2) and ds.format == "folder" and ds.splits is None
    np.testing.assert_array_equal(ds.images[1, 0], a / np.float32(255))
    assert ds.paths[2].endswith("cyst/sub/b.png")


def test_16bit_round_trip_keeps_classes_txt_order(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 65536, size=(4, 1, 5, 5)).astype(np.float32) / 65535
    names = ["normal", "benign tumour", "malignant"]  # label order is not alphabetical
    write_image_folder(tmp_path / "set", images, np.array([2, 0, 1, 2]), names, bit_depth=16)
    ds = load_source(str(tmp_path / "set"))
    assert ds.class_names == names and ds.bit_depth == 16
    order = np.argsort([p.split("/")[-1] for p in ds.paths])  # img_0..3 back in writing order
    assert ds.labels[order].tolist() == [2, 0, 1, 2]
    np.testing.assert_allclose(ds.images[order], images, atol=0.5 / 65535)


def test_folder_takes_patient_ids_from_its_manifest(tmp_path):
    rows = [{"patient_id": p} for p in ("P1", "P1", "P2")]
    write_image_folder(tmp_path, np.zeros((3, 1, 4, 4), np.float32), np.array([0, 1, 1]), ["a", "b"], rows=rows)
    ds = load_source(str(tmp_path))
    assert sorted(ds.patient_ids.tolist()) == ["P1", "P1", "P2"] and dict(describe(ds))["patients"] == "2"


def test_colour_modes(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
    write_png(tmp_path / "x" / "rgb.png", rgb)
    write_png(tmp_path / "x" / "rgba.png", Image.fromarray(rgb).convert("RGBA"))
    write_png(tmp_path / "y" / "palette.png", Image.fromarray(rgb).convert("P"))
    write_png(tmp_path / "y" / "la.png", Image.fromarray(rgb[..., 0]).convert("LA"))
    ds = load_source(str(tmp_path))
    assert ds.images.shape == (4, 3, 2, 2)
    assert ds.notices == ["repeated 1 grey images to 3 channels to match the colour images"]
    for i in range(3):  # rgb, rgba (alpha dropped), palette
        np.testing.assert_array_equal(ds.images[[0, 1, 3][i]], np.moveaxis(rgb, -1, 0) / np.float32(255))
    np.testing.assert_array_equal(ds.images[2, 2], rgb[..., 0] / np.float32(255))  # LA -> grey -> repeated
    grey = load_source(str(tmp_path), channels=1)
    assert grey.images.shape == (4, 1, 2, 2) and grey.notices == []


def test_mixed_sizes_resized_to_most_common(tmp_path):
    for i in range(2):
        write_png(tmp_path / "a" / f"{i}.png", np.full((8, 8), 100, np.uint8))
    write_png(tmp_path / "b" / "wide.png", np.full((4, 12), 200, np.uint8))
    ds = load_source(str(tmp_path), interpolation="bicubic")
    assert ds.images.shape == (3, 1, 8, 8)
    assert len(ds.notices) == 1 and ds.notices[0].startswith("resized 1 of 3 images to 8x8 (bicubic): 1 of 4x12 (e.g. ")
    assert "wide.png" in ds.notices[0] and "the most common size" in ds.notices[0]
    np.testing.assert_allclose(ds.images[2], 200 / 255, atol=1e-6)  # a flat image stays flat


def test_split_tree_keeps_splits(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("a", "b"):
            for i in range(n):
                write_png(tmp_path / split / cls / f"{i}.png", np.zeros((4, 4), np.uint8))
    ds = load_source(str(tmp_path))
    assert ds.class_names == ["a", "b"] and len(ds) == 10
    assert sorted(set(ds.splits)) == ["test", "train"]
    assert load_source(f"{tmp_path}:test").class_counts() == [2, 2]


# --- DICOM --------------------------------------------------------------------------------------


def test_dicom_rescale_window_inversion_frames(tmp_path):
    stored = np.array([[0, 50], [100, 150]], dtype=np.uint16)
    write_dicom(tmp_path / "a" / "win.dcm", stored, slope=2, intercept=-100, window=(50, 200))
    write_dicom(tmp_path / "b" / "mono1", stored, photometric="MONOCHROME1", patient_id="P2")  # no .dcm: DICM magic
    write_dicom(tmp_path / "b" / "multi.dcm", np.stack([stored, stored + 10, stored + 20]),
                window=([50, 999], [200, 999]), patient_id=None)
    ds = load_source(str(tmp_path))
    assert ds.format == "dicom" and ds.bit_depth == 16 and ds.images.shape == (5, 1, 2, 2)
    # values: 2 * stored - 100 = [-100, 0, 100, 200], window [-50, 150]
    np.testing.assert_allclose(ds.images[0, 0], [[0, 0.25], [0.75, 1]])
    # MONOCHROME1 without window: min-max then inverted
    np.testing.assert_allclose(ds.images[1, 0], [[1, 2 / 3], [1 / 3, 0]], atol=1e-6)
    # multi-frame: first of the multi-valued window, (v + 50) / 200
    np.testing.assert_allclose(ds.images[3, 0], np.clip((stored + 10 + 50) / 200, 0, 1), atol=1e-6)
    assert ds.paths[2].endswith("multi.dcm#frame=0") and ds.paths[4].endswith("multi.dcm#frame=2")
    assert ds.patient_ids.tolist() == ["P001", "P2", "", "", ""]
    windowed = load_source(str(tmp_path), window=(0, 400))
    np.testing.assert_allclose(windowed.images[0, 0], [[0.25, 0.5], [0.75, 1.0]])


# --- NIfTI --------------------------------------------------------------------------------------


def test_nifti_slices_scaling_and_patients(tmp_path):
    volume = np.arange(4 * 4 * 10, dtype=np.float32).reshape(4, 4, 10) - 20
    write_nifti(tmp_path / "tumour" / "sub-01.nii.gz", volume)
    write_nifti(tmp_path / "healthy" / "sub-02.nii", volume[..., None])  # 4D with one volume is fine
    ds = load_source(str(tmp_path), slices=(2, 5))
    assert ds.format == "nifti" and ds.bit_depth == 16 and ds.images.shape == (6, 1, 4, 4)
    assert ds.paths[3].endswith("sub-01.nii.gz#slice=2") and ds.paths[5].endswith("#slice=4")
    assert ds.patient_ids.tolist() == ["sub-02"] * 3 + ["sub-01"] * 3
    # the whole volume is min-max scaled: -20 -> 0, 139 -> 1
    np.testing.assert_allclose(ds.images[4, 0], (volume[:, :, 3] + 20) / 159, atol=1e-6)
    along_0 = load_source(str(tmp_path), axis=0, slices=(-2, None))
    assert along_0.images.shape == (4, 1, 10, 10) and along_0.paths[0].endswith("#slice=2")
    assert len(along_0.notices) == 1  # 4x10 slices made square, stretched 2.5x: a warning
    assert along_0.notices[0].startswith("warning: resized 4 of 4 images to 10x10 (bilinear): 4 of 4x10 (e.g. ")
    windowed = load_source(str(tmp_path), slices=(0, 1), window=(0, 40))
    np.testing.assert_allclose(windowed.images[0, 0], np.clip((volume[:, :, 0] + 20) / 40, 0, 1), atol=1e-6)


# --- CSV manifests ------------------------------------------------------------------------------


def test_manifest_mixed_files_names_and_patients(tmp_path):
    write_png(tmp_path / "imgs" / "a.png", np.full((4, 4), 255, np.uint8))
    write_dicom(tmp_path / "imgs" / "b.dcm", np.arange(16, dtype=np.uint16).reshape(4, 4), patient_id="X")
    write_nifti(tmp_path / "vols" / "c.nii.gz", np.ones((4, 4, 3)))
    rows = [("imgs/a.png", "tumour", "p1"), ("imgs/b.dcm", "normal", ""), ("vols/c.nii.gz", "tumour", "p3")]
    with open(tmp_path / "list.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "patient_id"), *rows])
    ds = load_source(str(tmp_path / "list.csv"))
    assert ds.class_names == ["normal", "tumour"] and ds.labels.tolist() == [1, 0, 1, 1, 1]
    assert ds.patient_ids.tolist() == ["p1", "X", "p3", "p3", "p3"] and ds.format == "manifest"
    assert dict(describe(ds))["patients"] == "3"
    same = load_source(str(tmp_path), manifest=str(tmp_path / "list.csv"))
    np.testing.assert_array_equal(same.images, ds.images)


def test_manifest_integer_labels_take_written_class_names(tmp_path):
    images = np.zeros((3, 1, 4, 4), np.float32)
    write_image_folder(tmp_path, images, np.array([0, 1, 1]), ["malignant", "normal, benign"])
    ds = load_source(str(tmp_path / "manifest.csv"))
    assert ds.class_names == ["malignant", "normal, benign"] and ds.class_counts() == [1, 2]
    (tmp_path / "classes.txt").unlink()
    with open(tmp_path / "plain.csv", "w") as fh:
        fh.write("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in
                                          zip(load_source(str(tmp_path / "manifest.csv")).paths, [2, 0, 2])))
    assert load_source(str(tmp_path / "plain.csv")).class_names == ["class_0", "class_1", "class_2"]


def test_describe_rows(tmp_path):
    write_dicom(tmp_path / "a" / "1.dcm", np.zeros((2, 2), np.uint16), patient_id="P1")
    write_png(tmp_path / "b" / "2.png", np.zeros((2, 2), np.uint8))
    rows = describe(load_source(str(tmp_path)))
    assert rows[:6] == [("source", str(tmp_path)), ("format", "folder"), ("images", "2"), ("classes", "2"),
                        ("class 0", "a: 1"), ("class 1", "b: 1")]
    assert ("bit depth", "16") in rows
    assert dict(rows)["splits"].startswith("none in the source; every medsyn command uses its patient-level split")
    assert ("patients", "1 (+1 images without a patient id)") in rows


def test_a_split_of_a_source_without_splits_is_the_split_every_command_uses(tmp_path):
    from medsyn.data import source_split

    for i in range(10):
        write_png(tmp_path / "ab"[i % 2] / f"{i}.png", np.full((2, 2), i, np.uint8))
    test = load_source(str(tmp_path), split="test")
    expected = source_split(load_source(str(tmp_path))).split("test")
    assert len(test) >= 2 and test.paths == expected.paths
    assert any("has no split of its own" in n for n in test.notices)
    write_png(tmp_path / "one" / "a" / "1.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(DataError, match="has no 'test' split"):  # one image: all of it trains
        load_source(str(tmp_path / "one"), split="test")
