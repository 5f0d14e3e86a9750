"""Bad input: every problem is a DataError naming the offending file, never a raw library exception."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import write_dicom, write_nifti, write_png
from medsyn.data import load_source
from medsyn.errors import ConfigError, DataError


def _error(spec, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        load_source(str(spec), **kwargs)
    assert "\n" not in str(info.value), "problems are one line"
    return info.value


def _png_tree(root, broken_name: str, payload: bytes):
    write_png(root / "good" / "ok.png", np.zeros((4, 4), np.uint8))
    bad = root / "cyst" / broken_name
    bad.parent.mkdir(parents=True)
    bad.write_bytes(payload)
    return bad


def test_missing_path(tmp_path):
    err = _error(tmp_path / "nope.npz")
    assert err.path == str(tmp_path / "nope.npz") and err.problem == "no such file or folder"


def test_misspelt_medmnist_name_gets_a_hint():
    assert "did you mean the MedMNIST name 'breastmnist'" in _error("breastmnsit").problem


def test_unknown_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    err = _error(tmp_path / "notes.txt")
    assert err.problem == "unknown format: expected .npz, a class-folder tree, DICOM, NIfTI or a .csv manifest"


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty"])
def test_corrupt_png_names_the_file(tmp_path, kind):
    source = write_png(tmp_path / "src.png", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)).read_bytes()
    payload = {"truncated": source[: len(source) // 2], "garbage": b"\x89PNG not really", "empty": b""}[kind]
    bad = _png_tree(tmp_path / "set", "a.png", payload)
    err = _error(tmp_path / "set")
    assert err.path == str(bad) and err.problem.startswith("cannot decode image")
    if kind == "truncated":
        assert err.problem == "cannot decode image (truncated file)"


def test_dicom_without_pixel_data(tmp_path):
    bad = write_dicom(tmp_path / "set" / "a" / "x.dcm", None)
    err = _error(tmp_path / "set")
    assert err.path == str(bad) and err.problem == "DICOM file has no pixel data"


def test_dicom_truncated(tmp_path):
    good = write_dicom(tmp_path / "src.dcm", np.zeros((32, 32), np.uint16)).read_bytes()
    bad = tmp_path / "set" / "a" / "x.dcm"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(good[: len(good) - 1000])
    assert _error(tmp_path / "set").path == str(bad)


def test_nifti_with_nan(tmp_path):
    volume = np.zeros((4, 4, 4), np.float32)
    volume[1, 2, 3] = np.nan
    bad = write_nifti(tmp_path / "set" / "a" / "v.nii.gz", volume)
    err = _error(tmp_path / "set")
    assert err.path == str(bad) and "NaN" in err.problem


def test_nifti_4d_series_and_truncated(tmp_path):
    bad = write_nifti(tmp_path / "set" / "a" / "v.nii", np.zeros((4, 4, 4, 2)))
    assert "4D series" in _error(tmp_path / "set").problem
    source = write_nifti(tmp_path / "src.nii.gz", np.random.default_rng(0).random((16, 16, 16))).read_bytes()
    bad.unlink()
    cut = tmp_path / "set" / "a" / "cut.nii.gz"
    cut.write_bytes(source[: len(source) // 2])
    err = _error(tmp_path / "set")
    assert err.path == str(cut) and err.problem.startswith("cannot read NIfTI")


def test_nifti_slice_range_selects_nothing(tmp_path):
    write_nifti(tmp_path / "set" / "a" / "v.nii", np.zeros((4, 4, 20)))
    assert "select nothing from the 20 slices" in _error(tmp_path / "set", slices=(30, 130)).problem


def test_npz_with_nan_images(tmp_path):
    images = np.zeros((2, 4, 4), np.float32)
    images[0, 0, 0] = np.inf
    np.savez(tmp_path / "d.npz", train_images=images, train_labels=np.zeros(2))
    err = _error(tmp_path / "d.npz")
    assert err.path == str(tmp_path / "d.npz") and "NaN or infinite" in err.problem


@pytest.mark.parametrize("arrays, problem", [
    ({"train_images": np.zeros((2, 4, 4), np.uint8)}, "has train_images but no train_labels"),
    ({"train_images": np.zeros((2, 4, 4), np.uint8), "train_labels": np.zeros(3)},
     "train_images has 2 images but train_labels has 3 labels"),
    ({"train_images": np.zeros((2, 4, 4), np.uint8), "train_labels": np.array([0, -1])},
     "train_labels holds a negative label (-1)"),
    ({"images": np.zeros((2, 4, 4), np.uint8)}, "holds no train_images/val_images/test_images arrays"),
])
def test_npz_structure_errors(tmp_path, arrays, problem):
    np.savez(tmp_path / "d.npz", **arrays)
    assert problem in _error(tmp_path / "d.npz").problem


def test_npz_label_out_of_range_for_medmnist_names(tmp_path):
    np.savez(tmp_path / "breastmnist.npz", test_images=np.zeros((2, 4, 4), np.uint8), test_labels=np.array([0, 2]))
    assert _error(tmp_path / "breastmnist.npz").problem == "label 2 is out of range for breastmnist (2 classes)"


def test_npz_missing_split_and_corrupt_archive(tmp_path):
    np.savez(tmp_path / "d.npz", train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.zeros(2))
    assert _error(f"{tmp_path / 'd.npz'}:val").problem == "has no 'val' split (has: train)"
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 broken")
    assert _error(tmp_path / "bad.npz").problem.startswith("cannot read .npz")


def test_empty_class_folder(tmp_path):
    write_png(tmp_path / "a" / "1.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "readme.txt").write_text("no images here")
    err = _error(tmp_path)
    assert err.path == str(tmp_path / "b") and err.problem.startswith("empty class folder")


def test_folder_without_class_subfolders_is_one_class_and_without_images_an_error(tmp_path):
    write_png(tmp_path / "flat" / "1.png", np.zeros((2, 2), np.uint8))
    assert load_source(str(tmp_path / "flat")).class_names == ["flat"]
    (tmp_path / "empty").mkdir()
    err = _error(tmp_path / "empty")
    assert err.path == str(tmp_path / "empty") and err.problem.startswith("no class subfolders and no image files")


def test_csv_row_naming_missing_file(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "m.csv").write_text("path,label\na.png,x\nmissing.png,y\n")
    err = _error(tmp_path / "m.csv")
    assert err.path == str(tmp_path / "m.csv") and err.problem == "row 3: no such file missing.png"


def test_csv_without_required_columns(tmp_path):
    (tmp_path / "m.csv").write_text("file,y\na.png,x\n")
    err = _error(tmp_path / "m.csv")
    assert err.problem == "missing required column(s) path, label (has: file, y)"


def test_csv_negative_label_and_undecodable_file(tmp_path):
    write_png(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "m.csv").write_text("path,label\na.png,-1\n")
    assert _error(tmp_path / "m.csv").problem == "row 2: negative label -1"
    (tmp_path / "b.png").write_bytes(b"nonsense")
    (tmp_path / "m.csv").write_text("path,label\na.png,0\nb.png,1\n")
    assert _error(tmp_path / "m.csv").path == str(tmp_path / "b.png")


def test_bad_options_are_config_errors(tmp_path):
    write_png(tmp_path / "a" / "1.png", np.zeros((2, 2), np.uint8))
    with pytest.raises(ConfigError, match="unknown interpolation 'cubic'"):
        load_source(str(tmp_path), interpolation="cubic")
    with pytest.raises(ConfigError, match="channels must be 1 or 3"):
        load_source(str(tmp_path), channels=2)
    assert "unknown split 'dev'" in _error(tmp_path, split="dev").problem
