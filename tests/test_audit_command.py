"""`medsyn audit`: end to end on small data and on a run folder, its outputs, and bad input as one-line errors."""
import json
import sys

import numpy as np
import pytest

from medsyn.errors import ConfigError, DataError

OUTPUTS = ("audit.json", "audit.html", "copies.csv", "nearest.csv", "closest_pairs.png", "distances.png")


@pytest.fixture(scope="module")
def small(medmnist_dir, tmp_path_factory):
    """real/breastmnist.npz (120 train, 40 test images) and syn/breastmnist.npz (30 val images, then 6
    training images copied exactly): named as BreastMNIST, so both carry its class names."""
    root = tmp_path_factory.mktemp("audit")
    with np.load(medmnist_dir / "breastmnist.npz") as arrays:
        train = {k: arrays[f"train_{k}"][:120] for k in ("images", "labels")}
        test = {k: arrays[f"test_{k}"][:40] for k in ("images", "labels")}
        val = {k: arrays[f"val_{k}"][:30] for k in ("images", "labels")}
    (root / "real").mkdir()
    np.savez(root / "real" / "breastmnist.npz", **{f"train_{k}": v for k, v in train.items()},
             **{f"test_{k}": v for k, v in test.items()})
    (root / "syn").mkdir()
    np.savez(root / "syn" / "breastmnist.npz", train_images=np.concatenate([val["images"], train["images"][:6]]),
             train_labels=np.concatenate([val["labels"], train["labels"][:6]]))
    return root


def medsyn(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the `medsyn` entry point, run in this process: a subprocess would
    spend most of the test importing torch again."""
    from medsyn import cli

    monkeypatch.setattr(sys, "argv", ["medsyn", *map(str, args)])
    with pytest.raises(SystemExit) as stop:
        cli.main()
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


def audit(synthetic, out, **options):
    from medsyn.commands.audit import audit_command

    given = dict(real=None, holdout=None, features="pixels", weights=None, n=None, seed=0, device="cpu", batch=32,
                 cache=None) | options
    audit_command(str(synthetic), out=out, **given)


def test_audit_command_writes_the_report_and_prints_the_verdict(small, tmp_path, monkeypatch, capsys):
    code, out, err = medsyn(monkeypatch, capsys, "audit", small / "syn" / "breastmnist.npz", "--real",
                            small / "real" / "breastmnist.npz", "--out", tmp_path / "audit", "--features", "pixels",
                            "--cache", tmp_path / "cache")
    assert code == 0, err
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("copies ") and " of 36 (" in verdict and "membership AUC" in verdict
    assert all((tmp_path / "audit" / name).is_file() for name in OUTPUTS)
    assert "img/s" in err and "held-out: 40 images" in err and "Traceback" not in err
    assert "held-out images are nearly identical to a training image" in err  # BreastMNIST's splits share scans
    record = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert record["sizes"]["synthetic"] == 36 and record["sizes"]["train"] == 120 and record["sizes"]["held_out"] == 40
    assert record["verdict"] == verdict and record["run"]["holdout"].endswith("breastmnist.npz:test")
    from medsyn.audit import read_copies

    assert {f"breastmnist.npz#{i}" for i in range(30, 36)} <= read_copies(tmp_path / "audit")


@pytest.mark.parametrize("synthetic, fragment", [("{tmp}/missing.npz", "missing.npz: no such file"),
                                                 ("{syn}", "already exists; choose another --out")])
def test_bad_input_is_a_one_line_error(small, tmp_path, monkeypatch, capsys, synthetic, fragment):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "audit.json").write_text("{}")
    out = tmp_path / ("taken" if "already" in fragment else "out")
    given = synthetic.format(tmp=tmp_path, syn=small / "syn" / "breastmnist.npz")
    code, _, err = medsyn(monkeypatch, capsys, "audit", given, "--real", small / "real" / "breastmnist.npz",
                          "--out", out, "--features", "pixels")
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert fragment in lines[0] and "Traceback" not in err and not (tmp_path / "out").exists()


def test_bad_sets_are_refused_before_any_work(small, tmp_path, medmnist_dir):
    real = str(small / "real" / "breastmnist.npz")
    (tmp_path / "other").mkdir()
    with np.load(small / "syn" / "breastmnist.npz") as arrays:
        np.savez(tmp_path / "other" / "toy.npz", **arrays)  # not a MedMNIST name: classes class_0, class_1
    with pytest.raises(DataError, match=r"classes \['class_0', 'class_1'\] differ"):
        audit(tmp_path / "other" / "toy.npz", tmp_path / "a", real=real)
    with pytest.raises(DataError, match="images are 64x64, the real data .* is 28x28"):
        audit(f"{medmnist_dir / 'breastmnist_64.npz'}:val", tmp_path / "b", real=real)
    with pytest.raises(ConfigError, match="--real is needed"):
        audit(small / "syn" / "breastmnist.npz", tmp_path / "c")
    with pytest.raises(ConfigError, match="--n sets how many images to sample from a run folder"):
        audit(small / "syn" / "breastmnist.npz", tmp_path / "d", real=real, n=5)
    with pytest.raises(ConfigError, match="unknown --features 'pixel'"):
        audit(small / "syn" / "breastmnist.npz", tmp_path / "e", real=real, features="pixel")
    with pytest.raises(ConfigError, match="is the split the generator was trained on"):
        audit(small / "syn" / "breastmnist.npz", tmp_path / "f", real=real, holdout=f"{real}:train")
    assert not any((tmp_path / name).exists() for name in "abcdef")


def test_a_run_folder_is_sampled_audited_and_attacked_with_its_discriminator(small, tmp_path):
    from medsyn.train.run import DataOptions, execute_run, prepare_run

    real = small / "real" / "breastmnist.npz"
    # dcgan: the quickest run to train and load here, and one discriminator per class (LOGAN gives each its class)
    layers = [{"model": "dcgan", "steps": 1, "width": 0.0625, "batch": 8, "device": "cpu"}]
    execute_run(prepare_run(tmp_path / "run", layers, DataOptions(str(real)), resume=False))
    # held-out images the run trained on (its training images in another file) are refused before sampling
    with np.load(real) as arrays:
        np.savez(tmp_path / "breastmnist.npz", test_images=arrays["train_images"][:10],
                 test_labels=arrays["train_labels"][:10], train_images=arrays["test_images"],
                 train_labels=arrays["test_labels"])
    with pytest.raises(DataError, match="10 of its 10 images are pixel for pixel images the generator was trained on"):
        audit(tmp_path / "run", tmp_path / "refused", n=5, holdout=f"{tmp_path / 'breastmnist.npz'}:test")
    assert not (tmp_path / "refused").exists()
    # a few held-out images that are also training images (BreastMNIST holds one scan in both splits) are
    # left out with a warning, not counted as new images
    with np.load(real) as arrays:
        (tmp_path / "dup").mkdir()
        np.savez(tmp_path / "dup" / "breastmnist.npz",
                 test_images=np.concatenate([arrays["test_images"], arrays["train_images"][:1]]),
                 test_labels=np.concatenate([arrays["test_labels"], arrays["train_labels"][:1]]),
                 train_images=arrays["train_images"], train_labels=arrays["train_labels"])
    audit(tmp_path / "run", tmp_path / "dup-audit", n=5, holdout=f"{tmp_path / 'dup' / 'breastmnist.npz'}:test")
    record = json.loads((tmp_path / "dup-audit" / "audit.json").read_text())
    assert record["sizes"]["held_out"] == 40
    assert any("1 of the held-out images are pixel for pixel training images" in n for n in record["run"]["notices"])
    audit(tmp_path / "run", tmp_path / "audit", n=20)  # training images and held-out ones: the run's own
    record = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert record["sizes"]["synthetic"] == 40 and record["sizes"]["train"] == 120 and record["sizes"]["held_out"] == 40
    assert [m["attack"] for m in record["membership"]] == ["gan-leaks", "gan-leaks", "logan"]
    assert all(0 <= m["auc"] <= 1 and m["ci_low"] <= m["auc"] <= m["ci_high"] for m in record["membership"])
    assert any("provenance: none of the 40 held-out images" in line for line in record["run"]["notices"])


def test_curate_drops_the_copies_an_audit_found_and_records_them(small, tmp_path, monkeypatch, capsys):
    from medsyn.audit import read_copies
    from medsyn.data import load_source

    syn = small / "syn" / "breastmnist.npz"
    audit(syn, tmp_path / "audit", real=str(small / "real" / "breastmnist.npz"))
    copies = read_copies(tmp_path / "audit")
    code, out, err = medsyn(monkeypatch, capsys, "curate", syn, "--drop-copies", tmp_path / "audit", "--features",
                            "pixels", "--clusters", "2", "--out", tmp_path / "curated")
    assert code == 0, err
    kept = load_source(str(tmp_path / "curated" / "kept"))
    assert len(kept) == 36 - len(copies) and len(copies) >= 6  # the six planted training images at least
    discarded = (tmp_path / "curated" / "discarded.csv").read_text()
    assert discarded.count("copy of a training image") == len(copies)
    record = json.loads((tmp_path / "curated" / "curate.json").read_text())
    assert record["copies_dropped"] == len(copies) and record["drop_copies"] == str(tmp_path / "audit")
    # an audit of another set is refused: its images differ
    other = tmp_path / "other.npz"
    with np.load(syn) as arrays:
        np.savez(other, train_images=arrays["train_images"][::-1], train_labels=arrays["train_labels"][::-1])
    code, out, err = medsyn(monkeypatch, capsys, "curate", other, "--drop-copies", tmp_path / "audit", "--features",
                            "pixels", "--clusters", "2", "--out", tmp_path / "curated2")
    assert code == 2 and "audits another set" in err and "Traceback" not in err
