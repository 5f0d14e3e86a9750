"""No held-out image reaches training: image identities followed from the source through train,
sample, refine, curate, augment and every arm to the images a classifier trains on.

Each README workflow runs through the command line (in process). The classifier's training is
intercepted: its training set's real images, and every real image behind its synthetic images
(their provenance), are checked against the identities of the evaluation's val and test images.
Each leaky path (training on the test split) must be refused, so the checks are seen to bite.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from medsyn.cli import app
from medsyn.data import load_source, source_split
from medsyn.errors import DataError
from medsyn.imageio import write_image_folder
from medsyn.provenance import image_hashes, read_provenance

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["--device", "cpu", "--set", "width=0.0625", "--batch", "4", "--steps", "2"]


class Captured(Exception):
    """Raised by the intercepted classifier training, carrying its training set."""

    def __init__(self, train_set, val):
        self.train_set, self.val = train_set, val


@pytest.fixture
def capture(monkeypatch):
    from medsyn.evaluate import classify as evaluate_classify

    def intercept(name, train_set, val, **kwargs):
        raise Captured(train_set, val)

    monkeypatch.setattr(evaluate_classify, "train_classifier", intercept)


def run(*args) -> object:
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result


def held_out(source: str, size: int | None = None) -> set[str]:
    data = source_split(load_source(source, size=size))
    return set(image_hashes(data.split("val").images)) | set(image_hashes(data.split("test").images))


def classifier_training(*args) -> tuple:
    with pytest.raises(Captured) as caught:
        run("classify", *args, "--classifier", "lesion-cnn", "--epochs", "1", "--device", "cpu")
    return caught.value.train_set, caught.value.val


def assert_clean(train_set, synthetic: str | None, real: str, n_real: int) -> None:
    """The classifier's real images and every real image behind its synthetic ones avoid val and test."""
    banned = held_out(real)
    assert not set(image_hashes(train_set.images[:n_real])) & banned
    if synthetic is not None:
        records = read_provenance(synthetic)
        assert records, f"{synthetic} has no provenance"
        for record in records:
            assert record.image_hashes, record.role
            size = record.load["size"]
            assert not set(record.image_hashes) & held_out(real, size), record.role


@pytest.fixture
def own_data(tmp_path) -> str:
    """A class-folder tree without a split of its own: 3 classes x 10 images of 28x28."""
    rng = np.random.default_rng(0)
    images = rng.random((30, 1, 28, 28)).astype(np.float32)
    labels = np.repeat(np.arange(3), 10)
    write_image_folder(tmp_path / "real", images, labels, ["a", "b", "c"], stem="img")
    return str(tmp_path / "real")


@pytest.fixture
def medmnist(split_npz) -> str:
    return split_npz


@pytest.mark.parametrize("source", ["own_data", "medmnist"])
def test_train_sample_classify_keeps_held_out_images_out(tmp_path, capture, request, source):
    real = request.getfixturevalue(source)
    run("train", "--data", real, "--model", "dcgan", "--out", tmp_path / "run", *TINY)
    info = json.loads((tmp_path / "run" / "data.json").read_text())
    assert info["split"] == "train" and not set(info["image_hashes"]) & held_out(real)
    assert info["images"] == len(source_split(load_source(real)).split("train"))
    run("sample", tmp_path / "run", "--n-per-class", "4", "--out", tmp_path / "syn", "--device", "cpu")
    train_set, val = classifier_training("--data", real, "--synthetic", tmp_path / "syn", "--out", tmp_path / "cls")
    n_real = len(source_split(load_source(real)).split("train"))
    assert len(train_set) == n_real + 12
    assert_clean(train_set, str(tmp_path / "syn"), real, n_real)


def test_a_generator_trained_on_the_test_split_is_refused(tmp_path, medmnist):
    run("train", "--data", f"{medmnist}:test", "--model", "dcgan", "--out", tmp_path / "run", *TINY)
    run("sample", tmp_path / "run", "--n-per-class", "4", "--out", tmp_path / "syn", "--device", "cpu")
    with pytest.raises(DataError, match="held-out images .* 9 of its generator training images .* test split"):
        run("classify", "--data", medmnist, "--synthetic", tmp_path / "syn", "--classifier", "lesion-cnn",
            "--out", tmp_path / "cls", "--epochs", "1", "--device", "cpu")
    assert not (tmp_path / "cls").exists()


def test_two_step_pipeline_refine_and_curate_keep_held_out_images_out(tmp_path, capture, own_data):
    real = own_data
    run("train", "--data", real, "--model", "pggan", "--out", tmp_path / "pg", *TINY)
    run("sample", tmp_path / "pg", "--n-per-class", "6", "--out", tmp_path / "syn", "--device", "cpu")
    run("train", "--model", "unit", "--data", real, "--source", tmp_path / "syn", "--out", tmp_path / "unit",
        "--conditional", *TINY)
    run("refine", tmp_path / "unit", "--input", tmp_path / "syn", "--out", tmp_path / "refined", "--device", "cpu")
    roles = [r.role for r in read_provenance(tmp_path / "refined")]
    assert roles == ["generator training", "refiner training"]
    run("curate", tmp_path / "refined", "--real", real, "--features", "pixels", "--clusters", "2",
        "--discard-fraction", "0.2", "--out", tmp_path / "curated", "--device", "cpu")
    kept = tmp_path / "curated" / "kept"
    assert [r.role for r in read_provenance(kept)] == ["generator training", "refiner training", "curation reference"]
    train_set, _ = classifier_training("--data", real, "--synthetic", kept, "--out", tmp_path / "cls")
    assert_clean(train_set, str(kept), real, len(source_split(load_source(real)).split("train")))


def test_refining_or_curating_against_a_real_source_uses_its_train_split(tmp_path, own_data):
    run("train", "--data", own_data, "--model", "pggan", "--out", tmp_path / "pg", *TINY)
    run("sample", tmp_path / "pg", "--n-per-class", "6", "--out", tmp_path / "syn", "--device", "cpu")
    run("train", "--model", "simgan", "--data", own_data, "--source", tmp_path / "syn", "--out", tmp_path / "sim",
        "--conditional", *TINY)
    run("refine", tmp_path / "sim", "--input", own_data, "--out", tmp_path / "refined-real", "--device", "cpu")
    refined = load_source(str(tmp_path / "refined-real"))
    assert len(refined) == len(source_split(load_source(own_data)).split("train"))  # val and test not refined
    record = read_provenance(tmp_path / "refined-real")[0]
    assert record.role == "refined real images" and not set(record.image_hashes) & held_out(own_data)


def test_augment_keeps_the_split_and_copies_only_train_images(tmp_path, capture, medmnist):
    result = run("augment", medmnist, "--preset", "liver-lesion", "--copies", "2", "--out", tmp_path / "aug")
    assert "2 copies of each of the 24 train images" in result.output
    augmented = source_split(load_source(str(tmp_path / "aug")))
    assert [int((augmented.splits == s).sum()) for s in ("train", "val", "test")] == [24 * 3, 6, 9]
    train_set, val = classifier_training("--data", tmp_path / "aug", "--out", tmp_path / "cls")
    assert len(train_set) == 72 and len(val) == 6
    banned = held_out(medmnist)
    assert not set(image_hashes(train_set.images)) & banned  # copies are new images; originals must not be held out
    originals = set(image_hashes(load_source(f"{medmnist}:train").images))
    assert len(set(image_hashes(train_set.images)) & originals) == 24


def test_a_split_of_patients_on_both_sides_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((6, 1, 28, 28)).astype(np.float32)
    folder = tmp_path / "d"
    write_image_folder(folder, images, np.array([0, 0, 0, 1, 1, 1]), ["a", "b"], stem="img")
    rows = (folder / "manifest.csv").read_text().splitlines()
    header, body = rows[0] + ",patient_id,split", rows[1:]
    splits = ["train", "test", "train", "train", "val", "test"]
    (tmp_path / "m.csv").write_text("\n".join([header] + [f"{r},P{i // 2},{s}" for i, (r, s) in enumerate(zip(body, splits))]))
    with pytest.raises(DataError, match="patient 'P0' has images in the test and train splits"):
        source_split(load_source(str(folder), manifest=str(tmp_path / "m.csv")))


def test_data_split_writes_the_split_every_command_uses(tmp_path, own_data):
    run("data", "split", own_data, "--out", tmp_path / "split.csv")
    written = load_source(own_data, manifest=str(tmp_path / "split.csv"))
    made = source_split(load_source(own_data))
    assert list(written.splits) == list(made.splits)


def test_frames_of_one_anonymised_dicom_stay_on_one_side(tmp_path):
    from conftest import write_dicom

    rng = np.random.default_rng(0)
    for i in range(6):
        write_dicom(tmp_path / "d" / ("a" if i % 2 else "b") / f"v{i}.dcm",
                    rng.integers(0, 4000, (4, 16, 16)).astype(np.uint16), patient_id=None)
    data = source_split(load_source(str(tmp_path / "d"), size=28))
    for i in range(6):
        splits = {s for s, p in zip(data.splits, data.paths) if p.startswith(str(tmp_path / "d")) and f"v{i}.dcm" in p}
        assert len(splits) == 1, (i, splits)


@pytest.mark.parametrize("kind", ["source", "patient"])
def test_a_study_accepts_a_run_only_if_it_saw_none_of_its_held_out_images(tmp_path, medmnist, kind):
    from medsyn.study import StudyRunner
    from medsyn.study.config import study_from_dict

    run("train", "--data", medmnist, "--model", "dcgan", "--out", tmp_path / "clean", *TINY)
    run("train", "--data", f"{medmnist}:test", "--model", "dcgan", "--out", tmp_path / "leaky", *TINY)

    def study(run_dir):
        raw = {"name": "s", "data": {"source": medmnist}, "split": {"kind": kind}, "arms": ["real", "synthetic"],
               "generators": [{"name": "g", "run": str(run_dir)}], "classifiers": [{"name": "lesion-cnn"}],
               "fid": {"enabled": False}, "device": "cpu"}
        return StudyRunner(study_from_dict(raw, tmp_path), tmp_path / f"out-{run_dir.name}")

    with pytest.raises(DataError, match=r"generator 'g' trained on \d+ of the \d+ val and test images of fold 0"):
        study(tmp_path / "leaky").prepare()
    if kind == "source":  # the study holds out what the run held out
        study(tmp_path / "clean").prepare()
    else:  # a study-made patient split holds out other images, some of which the run trained on
        with pytest.raises(DataError, match="val and test images of fold 0"):
            study(tmp_path / "clean").prepare()
