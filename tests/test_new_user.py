"""Defects a new user met (issue 16): each test failed before its fix."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_nifti, write_png
from medsyn.cli import app
from medsyn.data import load_source
from medsyn.errors import DataError, RunError


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


# ---- formats ------------------------------------------------------------------------------------

def test_a_flat_folder_is_one_unlabeled_class(tmp_path):
    for i in range(3):
        write_png(tmp_path / "scans" / f"{i}.png", np.full((8, 8), 60 * i, np.uint8))
    data = load_source(str(tmp_path / "scans"))
    assert len(data) == 3 and data.class_names == ["scans"] and set(data.labels) == {0}
    assert any("without class subfolders" in n and "one class 'scans'" in n for n in data.notices)


def test_a_folder_with_neither_classes_nor_images_is_still_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images")
    with pytest.raises(DataError, match="no class subfolders and no image files"):
        load_source(str(tmp_path))


@pytest.mark.parametrize("kind", ["png", "dicom", "nifti"])
def test_a_single_file_is_one_class_named_after_it(tmp_path, kind):
    if kind == "png":
        path, frames = write_png(tmp_path / "knee.png", np.arange(64, dtype=np.uint8).reshape(8, 8)), 1
    elif kind == "dicom":
        from pydicom.data import get_testdata_file

        path, frames = get_testdata_file("CT_small.dcm"), 1  # shipped with pydicom
    else:
        path, frames = write_nifti(tmp_path / "brain.nii.gz", np.random.default_rng(0).random((8, 8, 5))), 5
    data = load_source(str(path))
    assert len(data) == frames and data.num_classes == 1
    assert any("a single file" in n and "one class" in n for n in data.notices)


def test_fid_takes_two_flat_folders(tmp_path):
    """FID needs no labels, as in torch-fidelity, clean-fid and pytorch-fid."""
    rng = np.random.default_rng(0)
    for side in ("a", "b"):
        for i in range(5):
            write_png(tmp_path / side / f"{i}.png", rng.integers(0, 255, (16, 16), dtype=np.uint8))
    result = invoke("fid", tmp_path / "a", tmp_path / "b", "--device", "cpu", "--cache", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    assert result.output.count("FID ") >= 1 and "KID " in result.output


def test_sixteen_bit_pngs_using_twelve_bits_are_scaled_by_the_data_not_by_65535(tmp_path):
    for i, peak in enumerate((4000, 2000)):
        write_png(tmp_path / "ct" / "a" / f"{i}.png", np.linspace(0, peak, 64).reshape(8, 8).astype(np.uint16))
    data = load_source(str(tmp_path / "ct"))
    assert data.images.max() == pytest.approx(1.0) and data.images[1].max() == pytest.approx(0.5, abs=1e-3)
    assert any("0..4000 of 0..65535" in n for n in data.notices)
    windowed = load_source(str(tmp_path / "ct"), window=(1000, 2000))  # 0..2000 onto 0..1
    assert windowed.images[1].max() == pytest.approx(1.0) and windowed.images[0].mean() > data.images[0].mean()
    far = load_source(str(tmp_path / "ct"), window=(40000, 100))
    assert any(n.startswith("warning: the window 40000,100 clips") for n in far.notices)


def test_full_range_sixteen_bit_images_are_left_as_they_are(tmp_path):
    write_png(tmp_path / "x" / "a" / "0.png", np.linspace(0, 65535, 64).reshape(8, 8).astype(np.uint16))
    data = load_source(str(tmp_path / "x"))
    assert data.images.max() == pytest.approx(1.0) and not any("0..65535" in n for n in data.notices)


def test_resizing_says_which_images_and_from_what_size(tmp_path):
    write_png(tmp_path / "d" / "a" / "big.png", np.zeros((64, 64), np.uint8))
    write_png(tmp_path / "d" / "a" / "big2.png", np.zeros((64, 64), np.uint8))
    write_png(tmp_path / "d" / "b" / "tiny.png", np.zeros((16, 16), np.uint8))
    notices = load_source(str(tmp_path / "d")).notices
    resized = [n for n in notices if "resized 1 of 3 images to 64x64" in n]
    assert resized and "1 of 16x16 (e.g. " in resized[0] and "tiny.png" in resized[0]
    assert resized[0].startswith("warning: ") and "more than 2x" in resized[0]


# ---- runs ---------------------------------------------------------------------------------------

def test_a_batch_larger_than_the_training_set_is_a_warning(tmp_path, make_npz):
    result = invoke("train", "--data", make_npz(n_per_class=4), "--model", "wgan-gp", "--out", tmp_path / "run", "--steps", "1",
                    "--set", "width=0.0625", "--device", "cpu")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "fewer than the batch of 64" in text and "--batch" in text


def test_an_existing_run_folder_error_mentions_resume(tmp_path, make_npz):
    args = ["train", "--data", make_npz(), "--model", "dcgan", "--out", tmp_path / "run", "--steps", "1",
            "--set", "width=0.0625", "--batch", "4", "--device", "cpu"]
    assert invoke(*args).exit_code == 0
    again = invoke(*args)
    assert isinstance(again.exception, RunError) and "pass --resume to continue it" in str(again.exception)


# ---- help and defaults --------------------------------------------------------------------------

def _options():
    import typer.main

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, path + [name])
        if not hasattr(command, "commands"):
            yield " ".join(path), command

    for path, command in walk(typer.main.get_command(app), []):
        for param in command.params:
            if param.param_type_name == "option":
                yield path, param


def test_every_option_of_every_command_has_help_and_says_its_default():
    options = list(_options())
    assert len(options) > 60
    assert [(p, o.opts[0]) for p, o in options if not o.help] == []
    unexplained = [(p, o.opts[0]) for p, o in options
                   if o.default is None and not o.required and not o.is_flag and "default" not in o.help.lower()
                   and "optional" not in o.help.lower()]
    assert unexplained == []


def test_flags_are_not_shown_as_taking_a_value():
    result = invoke("train", "--help")
    assert "--resume" in result.output and "<bool>" not in result.output


# ---- the papers' settings -----------------------------------------------------------------------

def test_models_default_to_their_papers_run_length_and_dcgan_to_one_generator_per_class():
    from medsyn.train.setup import resolve_config

    cfg, _ = resolve_config({"model": "dcgan"})
    assert cfg.epochs == 70 and cfg.steps is None and cfg.per_class
    cfg, _ = resolve_config({"model": "acgan"}, {"steps": 10})
    assert cfg.steps == 10 and cfg.epochs is None  # a given length replaces the paper's
    cfg, _ = resolve_config({"model": "dcgan"}, {"per_class": False})
    assert not cfg.per_class
    lines = {line.split()[0]: line for line in invoke("models").output.splitlines()}
    assert "default length: 70 epochs; one per class" in lines["dcgan"]
    assert "default length: 1400 epochs" in lines["wgan"] and "default length: 100 epochs" in lines["pggan"]


def test_the_run_header_says_dcgan_trains_one_generator_per_class_and_for_how_long(tmp_path, make_npz):
    from medsyn.train.run import DataOptions, prepare_run

    prepared = prepare_run(tmp_path / "run", [{"model": "dcgan", "width": 0.0625, "device": "cpu"}],
                           DataOptions(make_npz()), resume=False)
    text = " ".join(prepared.notices)
    assert "one generator per class, as its paper trained it (--conditional" in text
    assert "70 epochs, its paper's run length" in text


def test_no_user_text_names_papers_by_internal_numbers():
    import pathlib

    import medsyn

    root = pathlib.Path(medsyn.__file__).parent
    offending = [str(p.relative_to(root)) for p in root.rglob("*.py") if "seed paper" in p.read_text()]
    assert offending == []


def test_the_lung_ct_kernel_is_an_option_of_that_model_only():
    import torch

    from medsyn.errors import ConfigError
    from medsyn.train.setup import build_networks, resolve_config

    cfg, spec = resolve_config({"model": "lungct-gan", "kernel": 5, "width": 0.0625})
    nets = build_networks(spec, cfg, 40, 1, 0)
    kernels = {m.kernel_size for m in nets.generator.modules() if isinstance(m, torch.nn.ConvTranspose2d)}
    assert kernels == {(5, 5)} and nets.generator(torch.zeros(2, 100)).shape == (2, 1, 40, 40)
    with pytest.raises(ConfigError, match="kernel is a setting of lungct-gan"):
        resolve_config({"model": "dcgan", "kernel": 5})
    with pytest.raises(ConfigError, match="odd"):
        resolve_config({"model": "lungct-gan", "kernel": 4})


def test_an_acgan_discriminator_scores_the_test_split_as_a_classifier(tmp_path, split_npz):
    import json

    data = split_npz
    assert invoke("train", "--data", data, "--model", "acgan", "--out", tmp_path / "acgan", "--steps", "3",
                  "--set", "width=0.0625", "--batch", "4", "--device", "cpu").exit_code == 0
    result = invoke("classify", "--data", data, "--discriminator", tmp_path / "acgan", "--out", tmp_path / "cls",
                    "--device", "cpu")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "cls" / "metrics.json").read_text())
    assert metrics["n_test"] == 9 and metrics["classifier"] == "acgan discriminator"
    assert 0 <= metrics["test"]["auc"] <= 1 and len(metrics["test"]["confusion"]) == 3
    assert sorted(p.name for p in (tmp_path / "cls").iterdir()) == ["confusion.png", "metrics.json", "predictions.csv"]
    leaky = invoke("train", "--data", f"{data}:test", "--model", "acgan", "--out", tmp_path / "leaky", "--steps", "1",
                   "--set", "width=0.0625", "--batch", "4", "--device", "cpu")
    assert leaky.exit_code == 0
    refused = invoke("classify", "--data", data, "--discriminator", tmp_path / "leaky", "--out", tmp_path / "c2")
    assert isinstance(refused.exception, DataError) and "trained on held-out images" in str(refused.exception)
    dcgan = invoke("train", "--data", data, "--model", "wgan-gp", "--out", tmp_path / "wg", "--steps", "1",
                   "--set", "width=0.0625", "--batch", "4", "--device", "cpu")
    assert dcgan.exit_code == 0
    no_head = invoke("classify", "--data", data, "--discriminator", tmp_path / "wg", "--out", tmp_path / "c3")
    assert "has no class head" in str(no_head.exception)


def test_sigterm_stops_sampling_like_ctrl_c_and_leaves_nothing_half_written(tmp_path, make_npz):
    import subprocess
    import sys
    import time

    assert invoke("train", "--data", make_npz(), "--model", "wgan-gp", "--out", tmp_path / "run", "--steps", "1",
                  "--set", "width=0.0625", "--batch", "4", "--device", "cpu").exit_code == 0
    proc = subprocess.Popen([sys.executable, "-m", "medsyn", "sample", str(tmp_path / "run"), "--n-per-class",
                             "200000", "--out", str(tmp_path / "syn"), "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(5)  # imports done, synthesis under way (200,000 images a class take minutes)
    proc.terminate()  # SIGTERM
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]  # stopped as by Ctrl-C, not killed (-15)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "toy.npz"]  # no output, no temporary


def test_the_lung_ct_papers_zero_to_two_scaling_is_an_exact_shift_of_what_the_networks_see():
    import torch

    from medsyn.errors import ConfigError
    from medsyn.train.setup import build_networks, resolve_config

    base, spec = resolve_config({"model": "lungct-gan", "width": 0.0625})
    shifted, _ = resolve_config({"model": "lungct-gan", "width": 0.0625, "pixel_range": "0,2"})
    torch.manual_seed(0)
    plain = build_networks(spec, base, 40, 1, 0)
    torch.manual_seed(0)
    paper = build_networks(spec, shifted, 40, 1, 0)
    z, x = torch.rand(3, 100) * 2 - 1, torch.rand(3, 1, 40, 40) * 2 - 1
    plain.generator.eval(), paper.generator.eval(), plain.discriminator.eval(), paper.discriminator.eval()
    with torch.no_grad():  # same weights: G renders 1 higher in [0, 2], handed back in [-1, 1]; D sees x + 1
        assert torch.allclose(paper.generator(z), plain.generator(z) - 1)
        assert torch.allclose(paper.discriminator(x)[0], plain.discriminator(x + 1)[0])
    with pytest.raises(ConfigError, match="pixel_range"):
        resolve_config({"model": "lungct-gan", "pixel_range": "0,255"})


def test_classify_refuses_a_one_class_folder_before_training(tmp_path):
    for i in range(6):
        write_png(tmp_path / "flat" / f"{i}.png", np.full((8, 8), 40 * i, np.uint8))
    result = invoke("classify", "--data", tmp_path / "flat", "--classifier", "lesion-cnn", "--out", tmp_path / "c")
    assert isinstance(result.exception, DataError) and "has one class ('flat')" in str(result.exception)
    assert "training lesion-cnn" not in result.output and not (tmp_path / "c").exists()
