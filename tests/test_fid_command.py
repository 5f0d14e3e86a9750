"""`medsyn fid A B`: its sides (data, sample folders, runs), the real-vs-real floor, its output and bad input."""
import os
import subprocess
import sys

import numpy as np
import pytest

from medsyn.data import load_source
from medsyn.errors import ConfigError


@pytest.fixture(scope="module")
def breast_train(medmnist_dir):
    """64 real BreastMNIST train images (28x28 grey)."""
    return load_source(f"{medmnist_dir / 'breastmnist.npz'}:train").subset(np.arange(64))


def test_run_folder_side_samples_as_many_per_class_as_the_other_side(tmp_path, medmnist_dir):
    from medsyn.commands.fid import is_run_folder, sample_run_side
    from medsyn.train.run import DataOptions, execute_run, prepare_run

    data = str(medmnist_dir / "breastmnist.npz")
    layers = [{"steps": 1, "width": 0.0625, "batch": 8, "device": "cpu"}]
    execute_run(prepare_run(tmp_path / "run", layers, DataOptions(data), resume=False))
    assert is_run_folder(str(tmp_path / "run")) and not is_run_folder(data)
    real = load_source(f"{data}:test").subset(np.r_[np.arange(5), np.arange(100, 112)])
    side = sample_run_side(str(tmp_path / "run"), real, None, seed=0, device="cpu")
    assert side.origin is None and side.images.class_counts() == real.class_counts()
    assert side.images.images.shape[1:] == real.images.shape[1:] and side.images.class_names == real.class_names


def test_per_class_counts_for_a_run_side(breast_train):
    from medsyn.commands.fid import per_class_counts

    train = breast_train  # 64 images: 15 malignant, 49 normal or benign
    assert per_class_counts(train.class_names, train, None) == train.class_counts()
    assert per_class_counts(["a", "b", "c"], train, None) == [22, 22, 22]  # other classes: the total spread evenly
    assert per_class_counts(train.class_names, None, 5) == [5, 5]
    with pytest.raises(ConfigError, match="give --n"):
        per_class_counts(train.class_names, None, None)


def test_a_runs_training_side_keeps_the_split_it_was_trained_on(medmnist_dir):
    from medsyn.commands.fid import Side, training_side
    from medsyn.config import build_config

    path = medmnist_dir / "breastmnist.npz"
    load = lambda source: {"source": source, "manifest": None, "axis": 2, "slices": None, "window": None}  # noqa: E731
    run = lambda source: Side(None, None, None, (load(source), build_config({}, {"device": "cpu"})))  # noqa: E731
    other = Side(None, str(path.resolve()), "test")
    whole = training_side(run(str(path)), other)  # trained on the file: its train split (the config's)
    assert whole.split == "train" and len(whole.images) == 546 and whole.origin == other.origin
    test = training_side(run(f"{path}:test"), other)  # trained on `x.npz:test`: that split, not the config's
    assert test.split == "test" and len(test.images) == 156
    assert training_side(run(str(medmnist_dir / "retinamnist.npz")), other) is None


def test_floor_pools_disjoint_splits_of_one_dataset():
    from medsyn.commands.fid import Side, floor_pool, floor_sizes

    fa, fb = np.zeros((5, 2)), np.ones((3, 2))
    side = lambda origin, split: Side(None, origin, split)  # noqa: E731
    assert floor_pool(side("/d/x.npz", "train"), side("/d/x.npz", "test"), fa, fb).shape == (8, 2)
    assert floor_pool(side("/d/x.npz", None), side("/d/x.npz", "test"), fa, fb) is fa
    assert floor_pool(side("/d/x.npz", "test"), side("/d/x.npz", None), fa, fb) is fb
    assert floor_pool(side("/d/x.npz", "train"), side("/d/y.npz", "test"), fa, fb) is None
    assert floor_pool(side(None, None), side(None, None), fa, fb) is None
    assert floor_sizes(5, 3, 8) == (5, 3) and floor_sizes(6, 6, 8) == (4, 4)


def test_sample_folders_are_synthetic_sides(tmp_path):
    from medsyn.commands.fid import is_sample_folder

    (tmp_path / "syn").mkdir()
    (tmp_path / "syn" / "manifest.csv").write_text("path,label,class_name,model,checkpoint_sha256,step,seed,index\n")
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "manifest.csv").write_text("path,label,patient_id\n")
    assert is_sample_folder(tmp_path / "syn") and not is_sample_folder(tmp_path / "real")
    assert not is_sample_folder(tmp_path)


def medsyn(*args, env=None):
    return subprocess.run([sys.executable, "-m", "medsyn", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=300)


def test_fid_command_prints_fid_kid_and_the_real_floor(tmp_path, medmnist_dir):
    with np.load(medmnist_dir / "breastmnist.npz") as arrays:
        np.savez(tmp_path / "tiny.npz", **{f"{s}_{k}": arrays[f"{s}_{k}"][:2] for s in ("train", "test")
                                             for k in ("images", "labels")})
    result = medsyn("fid", f"{tmp_path / 'tiny.npz'}:train", f"{tmp_path / 'tiny.npz'}:test", "--device", "cpu",
                    "--cache", tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("FID ") and float(lines[0].split()[1]) > 0
    assert lines[1].startswith("KID ") and lines[1].endswith("(every subset is the whole sets: no spread)")
    assert lines[2].startswith("FID floor (real vs real) ")
    assert "not more than the 2048 feature dimensions" in result.stderr and "img/s" in result.stderr
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2


def test_a_run_against_its_own_dataset_gets_the_floor_from_its_training_images(tmp_path, medmnist_dir):
    from medsyn.train.run import DataOptions, execute_run, prepare_run

    with np.load(medmnist_dir / "breastmnist.npz") as arrays:
        keep = {"train": np.r_[0:3, 10:13], "test": np.r_[0:2, 20:22]}  # both classes in each split
        parts = {f"{s}_{k}": arrays[f"{s}_{k}"][rows] for s, rows in keep.items() for k in ("images", "labels")}
    np.savez(tmp_path / "tiny.npz", **parts)
    layers = [{"steps": 1, "width": 0.0625, "batch": 2, "device": "cpu"}]
    execute_run(prepare_run(tmp_path / "run", layers, DataOptions(str(tmp_path / "tiny.npz")), resume=False))
    common = ["--device", "cpu", "--cache", tmp_path / "cache"]
    against_test = medsyn("fid", tmp_path / "run", f"{tmp_path / 'tiny.npz'}:test", *common)
    assert against_test.returncode == 0, against_test.stderr
    lines = against_test.stdout.strip().splitlines()
    assert lines[2].startswith("FID floor (real vs real) ") and float(lines[2].split()[-1]) > 0
    assert "features floor" in against_test.stderr  # the run's 6 training images, pooled with the 4 test ones
    unequal = medsyn("fid", f"{tmp_path / 'tiny.npz'}:train", f"{tmp_path / 'tiny.npz'}:test", *common)
    assert " ± " in unequal.stdout.splitlines()[1]  # 6 vs 4: KID subsets of 4 differ, so they have a spread
    np.savez(tmp_path / "other.npz", **parts)  # the same pixels under another name: not the run's dataset
    elsewhere = medsyn("fid", tmp_path / "run", f"{tmp_path / 'other.npz'}:test", *common)
    assert elsewhere.returncode == 0 and len(elsewhere.stdout.strip().splitlines()) == 2, elsewhere.stderr


@pytest.mark.parametrize("args, fragment", [
    (["missing.npz", "{tiny}"], "missing.npz: no such file"),
    (["{tiny}", "{tiny}", "--weights", "{bad}"], "cannot be loaded as TorchScript"),
])
def test_fid_command_bad_input_is_one_line(tmp_path, args, fragment):
    np.savez(tmp_path / "t.npz", train_images=np.zeros((3, 28, 28), np.uint8), train_labels=np.zeros((3, 1)))
    (tmp_path / "bad.pt").write_bytes(b"junk")
    args = [a.format(tiny=tmp_path / "t.npz", bad=tmp_path / "bad.pt") for a in args]
    result = medsyn("fid", *args, "--device", "cpu", "--cache", tmp_path / "cache")
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], result.stderr


def test_fid_command_refuses_tiny_sets_and_a_stray_n_before_any_work(tmp_path):
    from medsyn.commands.fid import fid_command

    np.savez(tmp_path / "t.npz", train_images=np.zeros((3, 28, 28), np.uint8), train_labels=np.zeros((3, 1)))
    np.savez(tmp_path / "one.npz", train_images=np.zeros((1, 28, 28), np.uint8), train_labels=np.zeros((1, 1)))
    options = dict(extractor="inception", batch=32, device="cpu", weights=tmp_path / "never-read.pt", resize="bilinear",
                   n=None, seed=0, cache=tmp_path / "cache")
    with pytest.raises(ConfigError, match="one.npz: FID needs at least 2 images per set, got 1"):
        fid_command(str(tmp_path / "t.npz"), str(tmp_path / "one.npz"), **options)
    with pytest.raises(ConfigError, match="--n sets how many images to sample from a run folder"):
        fid_command(str(tmp_path / "t.npz"), str(tmp_path / "t.npz"), **{**options, "n": 5})


def test_bad_extractor_and_resize_names_are_config_errors():
    from medsyn.metrics.features import EXTRACTORS, parse_resize

    with pytest.raises(ConfigError, match="did you mean 'inception'"):
        EXTRACTORS.get("inceptoin")
    with pytest.raises(ConfigError, match="unknown resize mode 'lanczos'.*tf-legacy"):
        parse_resize("lanczos")
