"""Experiment arms (real / classic / synthetic / both), t-SNE and fidelity views, and `medsyn classify`."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError, DataError
from medsyn.evaluate.arms import Arm, arm_for, build_arm, check_compatible


def bars(counts, size=16, channels=1, seed=0, source="real", names=("horizontal", "vertical")) -> LabeledImages:
    """Class 0: a horizontal bar, class 1: a vertical bar, at random places, over noise."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    images = rng.uniform(0, 0.3, (len(labels), channels, size, size)).astype(np.float32)
    for i, label in enumerate(labels):
        r, c = rng.integers(3, size - 7, 2)
        if label == 0:
            images[i, :, r:r + 2, c - 2:c + 6] = 1.0
        else:
            images[i, :, r - 2:r + 6, c:c + 2] = 1.0
    return LabeledImages(images, labels.astype(np.int64), list(names)[:len(counts)], source, "test")


@pytest.fixture(scope="module")
def real():
    return bars([30, 10], seed=0, source="real-train")


@pytest.fixture(scope="module")
def pool():
    return bars([50, 40], seed=1, source="gan-samples")


def test_real_arm_is_the_real_set(real):
    arm = build_arm("real", real, seed=0)
    assert np.array_equal(arm.images, real.images) and np.array_equal(arm.labels, real.labels)


def test_classic_arm_adds_copies_after_the_originals(real):
    arm = build_arm("classic", real, classic_preset="brain-mri", classic_copies=2, seed=0)
    assert len(arm) == 3 * len(real) and np.array_equal(arm.images[:len(real)], real.images)
    assert np.array_equal(arm.labels, np.tile(real.labels, 3))
    assert not np.array_equal(arm.images[len(real):2 * len(real)], real.images)


@pytest.mark.parametrize("volume, per_class", [(7, [7, 7]), (0.5, [15, 5]), (1.0, [30, 10]), (None, [40, 40])])
def test_synthetic_arm_takes_a_count_or_a_multiple_of_each_class(real, pool, volume, per_class):
    # The real set has 30 and 10 images: 0.5x adds half of each class, as --help says.
    arm = build_arm("synthetic", real, synthetic=pool, volume=volume, seed=0)
    added = arm.labels[len(real):]
    assert np.bincount(added, minlength=2).tolist() == per_class
    assert np.array_equal(arm.images[:len(real)], real.images)


def test_synthetic_choice_is_seeded(real, pool):
    a, b, c = (build_arm("synthetic", real, synthetic=pool, volume=5, seed=s).images for s in (3, 3, 4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_classic_plus_synthetic(real, pool):
    arm = build_arm("classic+synthetic", real, synthetic=pool, classic_preset="liver-lesion", classic_copies=1,
                    volume=5, seed=0)
    assert len(arm) == 2 * len(real) + 10
    assert arm_for(classic=True, synthetic=True) == Arm.CLASSIC_SYNTHETIC and arm_for(False, False) == Arm.REAL


def test_too_small_a_pool_and_missing_inputs_are_errors(real, pool):
    with pytest.raises(DataError, match="gan-samples: has only 40 images of class 'vertical'"):
        build_arm("synthetic", real, synthetic=pool, volume=41, seed=0)
    with pytest.raises(ConfigError, match="synthetic image set"):
        build_arm("synthetic", real, volume=5)
    with pytest.raises(ConfigError, match="classic augmentation preset"):
        build_arm("classic", real)
    with pytest.raises(ConfigError, match="unknown arm"):
        build_arm("synthetic-only", real)
    with pytest.raises(ConfigError, match="volume"):
        build_arm("synthetic", real, synthetic=pool, volume=-1)


@pytest.mark.parametrize("other, fragment", [
    (bars([5, 5], source="gan", names=("malignant", "benign")), "classes"),
    (bars([5, 5], size=20, source="gan"), "20x20"),
    (bars([5, 5], channels=3, source="gan"), "3 channel"),
])
def test_incompatible_synthetic_set_names_both_sources(real, other, fragment):
    with pytest.raises(DataError, match=fragment) as err:
        check_compatible(real, other)
    assert str(err.value).startswith("gan:") and "real-train" in str(err.value)
    with pytest.raises(DataError):
        build_arm("synthetic", real, synthetic=other, volume=2)


# ---- views through a real-trained classifier ---------------------------------------------------

@pytest.fixture(scope="module")
def trained(real):
    from medsyn.evaluate.classify import train_classifier

    torch.set_num_threads(1)  # a shared 2-core machine: one thread avoids waiting on a busy sibling
    return train_classifier("lesion-cnn", real, bars([6, 6], seed=5, source="val"), epochs=3, seed=0, device="cpu",
                            overrides={"optimizer": "adam", "batch": 16})


def test_tsne_is_seeded_and_writes_a_png(trained, real, pool, tmp_path):
    from medsyn.evaluate.tsne import embed_sets, plot_tsne

    classic = build_arm("classic", real, classic_preset="brain-mri", classic_copies=1, seed=0)
    sets = {"real": real, "classic": classic.subset(np.arange(len(real), len(classic))), "dcgan": pool}
    a, b = (embed_sets(trained, sets, per_class=8, seed=1) for _ in range(2))
    assert np.array_equal(a.coords, b.coords) and a.coords.shape == (3 * (8 + 8), 2)
    assert sorted(set(a.origin)) == ["classic", "dcgan", "real"]
    path = plot_tsne(trained, sets, tmp_path / "fig" / "tsne.png", seed=1, per_class=8)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(path.parent.glob(".*"))


def test_pixel_tsne_embeds_the_pixels_as_the_brain_mri_paper(real, pool, tmp_path):
    from medsyn.evaluate.tsne import embed_sets, plot_tsne

    sets = {"real": real, "dcgan": pool}
    a, b = (embed_sets(None, sets, per_class=8, seed=1, perplexity=100, iterations=250) for _ in range(2))
    assert np.array_equal(a.coords, b.coords) and a.coords.shape == (2 * 2 * 8, 2)
    assert a.class_names == list(real.class_names)
    shuffled = {"real": real.subset(np.arange(len(real))[::-1]), "dcgan": pool}
    assert not np.array_equal(embed_sets(None, shuffled, per_class=8, seed=2, iterations=250).coords, a.coords)
    path = plot_tsne(None, sets, tmp_path / "tsne_pixels.png", seed=1, per_class=8)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_label_fidelity_and_domain_frechet(trained, real, pool):
    from medsyn.evaluate.fidelity import domain_frechet, label_fidelity

    fidelity = label_fidelity(trained, pool)
    assert list(fidelity) == ["horizontal", "vertical"] and all(0 <= v <= 1 for v in fidelity.values())
    pytest.importorskip("medsyn.metrics.fid")
    assert domain_frechet(trained, real, real) == pytest.approx(0, abs=1e-3)
    assert domain_frechet(trained, real, pool) > 0


# ---- the command line ----------------------------------------------------------------------------

def medsyn(*args):
    env = {**os.environ, "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "medsyn", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def write_npz(path, splits: dict[str, LabeledImages]):
    arrays = {"class_names": np.array(next(iter(splits.values())).class_names)}
    for name, ds in splits.items():
        arrays[f"{name}_images"] = np.rint(ds.images[:, 0] * 255).astype(np.uint8)
        arrays[f"{name}_labels"] = ds.labels
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def tiny_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify")
    real = write_npz(root / "tiny.npz", {"train": bars([20, 20], size=28, seed=0), "val": bars([5, 5], size=28, seed=1),
                                         "test": bars([10, 10], size=28, seed=2)})
    good = write_npz(root / "synthetic.npz", {"train": bars([12, 12], size=28, seed=3)})
    bad = write_npz(root / "bad.npz", {"train": bars([12, 12], size=20, seed=3)})
    return root, real, good, bad


def test_classify_command_end_to_end(tiny_sources):
    root, real, good, _ = tiny_sources
    out = root / "run"
    result = medsyn("classify", "--data", real, "--synthetic", good, "--volume", "0.5x", "--classic", "brain-mri",
                    "--copies", "1", "--classifier", "lesion-cnn", "--epochs", "2", "--out", out, "--device", "cpu",
                    "--set", "optimizer=adam", "--set", "batch=16")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("test AUC ") and "95% CI" in lines[0]
    assert [line.split()[0] for line in lines[1:4]] == ["accuracy", "precision", "recall"]
    assert "sensitivity" in lines[4] and "specificity" in lines[4]
    assert sorted(p.name for p in out.iterdir()) == ["classifier.pt", "confusion.png", "metrics.json", "predictions.csv"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["arm"] == "classic+synthetic" and metrics["n_train"] == 2 * 40 + 2 * 10 and metrics["n_test"] == 20
    assert metrics["warnings"] == [] or "predicted" in metrics["warnings"][0]
    assert metrics["test"]["auc"] == pytest.approx(float(lines[0].split()[2]), abs=1e-4)
    assert (out / "predictions.csv").read_text().splitlines()[0] == "index,true,predicted,prob_horizontal,prob_vertical"


def test_classify_bad_synthetic_set_is_one_line_exit_2(tiny_sources):
    root, real, _, bad = tiny_sources
    result = medsyn("classify", "--data", real, "--synthetic", bad, "--classifier", "lesion-cnn", "--epochs", "1",
                    "--out", root / "x")
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "bad.npz" in lines[0] and "20x20" in lines[0] and "tiny.npz" in lines[0]
    assert not (root / "x").exists()


@pytest.mark.parametrize("extra, fragment", [
    (["--set", "lr_decay_att=0.5,0.7"], "did you mean 'lr_decay_at'"),
    (["--volume", "lots", "--synthetic", "x"], "--volume"),
    (["--classifier", "resnet-18"], "did you mean 'resnet18'"),
    (["--copies", "2"], "--copies needs --classic"),
])
def test_classify_config_errors_in_process(tiny_sources, monkeypatch, capsys, extra, fragment):
    # The same main() the console script runs, in this process (a subprocess costs seconds of imports).
    from medsyn.cli import main

    root, real, _, _ = tiny_sources
    monkeypatch.setattr(sys, "argv", ["medsyn", "classify", "--data", str(real), "--classifier", "lesion-cnn",
                                      "--out", str(root / "y"), *extra])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], lines


def test_classify_warns_when_the_classifier_predicts_one_class(tiny_sources, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from medsyn.cli import app
    from medsyn.evaluate import classify as evaluate_classify

    root, real, _, _ = tiny_sources

    def always_vertical(trained, data):  # what an untrained network often does: one class for every image
        return np.tile([0.2, 0.8], (len(data), 1))

    monkeypatch.setattr(evaluate_classify, "predict_proba", always_vertical)
    result = CliRunner().invoke(app, ["classify", "--data", str(real), "--classifier", "lesion-cnn", "--epochs", "1",
                                      "--out", str(tmp_path / "run"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "warning: the classifier predicted 'vertical' for all 20 test images" in " ".join(result.output.split())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(metrics["warnings"]) == 1 and "'vertical'" in metrics["warnings"][0]
