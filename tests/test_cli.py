"""The command line as a user meets it: help, listings, one-line errors with exit status 2, end to end."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import write_dicom, write_png


def medsyn(*args, cwd=None):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "medsyn", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_every_command_has_help():
    import typer
    from typer.testing import CliRunner

    from medsyn.cli import app

    assert "Usage" in medsyn("--help").stdout  # the installed entry point
    # Every registered command and sub-command, found from the app itself so a new one is covered;
    # in-process, as a subprocess per command spent most of its time importing torch.
    # (typer's groups are not click.Group in every typer version: recurse on `commands`)
    def command_paths(group, prefix: list[str]):
        for name, command in group.commands.items():
            yield [*prefix, name]
            if getattr(command, "commands", None):
                yield from command_paths(command, [*prefix, name])

    commands = list(command_paths(typer.main.get_command(app), []))
    assert {("data", "phantoms"), ("train",), ("study",), ("audit",)} <= {tuple(c) for c in commands}
    runner = CliRunner()
    for command in commands:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, command


def test_augmentation_help_lists_every_registered_preset():
    from medsyn.augment import PRESETS
    from medsyn.ui import PRESET_NAMES

    assert PRESET_NAMES.split(" | ") == list(PRESETS)
    for command in (["augment"], ["classify"]):
        assert PRESET_NAMES in " ".join(medsyn(*command, "--help").stdout.split()), command


def test_models_lists_every_model_with_its_paper():
    from medsyn.models import MODELS

    lines = medsyn("models").stdout.strip().splitlines()
    models, recipes = lines[:len(MODELS.names())], lines[len(MODELS.names()):]
    assert [line.split()[0] for line in models] == MODELS.names()
    assert "Frid-Adar" in lines[0] and "Capturing Variabilities from Computed Tomography" in lines[MODELS.names().index("lungct-gan")]
    assert not any("Chuquicusma" in line or "seed paper" in line for line in lines)
    assert recipes and recipes[0].startswith("recipe small-data (the default of `medsyn train` without --model)")
    assert "model sngan" in recipes[0]


def test_data_info_on_real_medmnist(medmnist_dir):
    out = medsyn("data", "info", medmnist_dir / "breastmnist_64.npz").stdout
    assert "64x64" in out and "train 546, val 78, test 156" in out and "malignant 147" in out


@pytest.fixture
def bad_inputs(tmp_path):
    (tmp_path / "corrupt" / "a").mkdir(parents=True)
    (tmp_path / "corrupt" / "a" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    write_png(tmp_path / "corrupt" / "b" / "y.png", np.zeros((8, 8), np.uint8))
    np.savez(tmp_path / "nan.npz", train_images=np.full((4, 28, 28), np.nan), train_labels=np.zeros((4, 1)))
    np.savez(tmp_path / "nolabels.npz", train_images=np.zeros((4, 28, 28), np.uint8))
    write_dicom(tmp_path / "dcm" / "a" / "n.dcm", None)
    write_dicom(tmp_path / "dcm" / "b" / "ok.dcm", np.zeros((8, 8), np.uint16))
    return tmp_path


@pytest.mark.parametrize("source, fragment", [
    ("missing", "no such file"),
    ("corrupt", "x.png"),
    ("nan.npz", "nan.npz"),
    ("nolabels.npz", "train_labels"),
    ("dcm", "n.dcm"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(bad_inputs, source, fragment):
    path = bad_inputs / source
    assert_one_line_error(medsyn("data", "info", path), fragment)
    run = bad_inputs / f"run-{source}"
    assert_one_line_error(medsyn("train", "--data", path, "--out", run, "--steps", "1"), fragment)
    assert not run.exists()


def test_bad_config_and_unknown_model(tmp_path, medmnist_dir):
    data = medmnist_dir / "breastmnist.npz"
    assert_one_line_error(medsyn("train", "--data", data, "--out", tmp_path / "r", "--set", "lr_gg=1"), "did you mean 'lr_g'")
    assert_one_line_error(medsyn("train", "--data", data, "--out", tmp_path / "r", "--model", "dcgna"), "did you mean 'dcgan'")
    assert not (tmp_path / "r").exists()


def test_train_resume_sample_end_to_end(tmp_path, medmnist_dir):
    run, samples = tmp_path / "run", tmp_path / "synthetic"
    tiny = ["--set", "width=0.0625", "--batch", "8", "--device", "cpu"]
    first = medsyn("train", "--data", medmnist_dir / "breastmnist.npz", "--out", run, "--steps", "2", *tiny)
    assert first.returncode == 0, first.stderr
    again = medsyn("train", "--out", run, "--resume", "--steps", "3", "--device", "cpu")
    assert again.returncode == 0, again.stderr
    assert "steps 2->3" in again.stderr
    result = medsyn("sample", run, "--n-per-class", "3", "--out", samples, "--seed", "1")
    assert result.returncode == 0, result.stderr
    pngs = sorted(p.relative_to(samples).as_posix() for p in samples.rglob("*.png") if not p.name.startswith("grid_"))
    assert len(pngs) == 6 and (samples / "classes.txt").read_text().splitlines() == ["malignant", "normal, benign"]
    # the synthetic folder reads back as a dataset with the same class order
    info = medsyn("data", "info", samples).stdout
    assert "malignant: 3" in info and "normal, benign: 3" in info
    npz = medsyn("sample", run, "--n-per-class", "2", "--out", tmp_path / "npz", "--format", "npz")
    assert npz.returncode == 0, npz.stderr
    with np.load(tmp_path / "npz" / "samples.npz") as arrays:
        assert arrays["train_images"].shape == (4, 28, 28) and arrays["train_labels"].ravel().tolist() == [0, 0, 1, 1]
    assert_one_line_error(medsyn("sample", run, "--n-per-class", "2", "--out", samples), "already exists")


def test_progress_in_a_log_file_is_plain_timed_lines():
    """stderr to a file (nohup, SLURM): no live bar that only shows at exit, but a line per interval and at the end."""
    import io

    from rich.console import Console

    from medsyn.ui import LogProgress

    def run(every):
        log = io.StringIO()
        with LogProgress(Console(file=log, width=200), every=every) as bar:
            task = bar.add_task("features real", total=4, info="")
            for done in range(1, 5):
                bar.update(task, completed=done, info=f"{done}.0 img/s")
            bar.update(task, completed=4, info="after the end")  # a finished task is not logged again
            hidden = bar.add_task("hidden", total=1, info="", visible=False)
            bar.update(hidden, completed=1)
        return log.getvalue().splitlines()

    assert run(every=3600) == ["features real: 4/4 elapsed 00:00:00 4.0 img/s"]
    assert [line.split(": ")[1].split()[0] for line in run(every=0)] == ["1/4", "2/4", "3/4", "4/4"]


def test_a_command_run_into_a_log_reports_progress_lines(tmp_path, medmnist_dir):
    with np.load(medmnist_dir / "breastmnist.npz") as arrays:
        np.savez(tmp_path / "few.npz", val_images=arrays["val_images"][:6], val_labels=arrays["val_labels"][:6])
    data = f"{tmp_path / 'few.npz'}:val"
    result = subprocess.run([sys.executable, "-m", "medsyn", "fid", data, data, "--cache", str(tmp_path / "cache")],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "30"})
    assert result.returncode == 0, result.stderr
    # whole lines even where the terminal width would have broken them: logs are read with grep
    assert any(line.startswith("features A: 6/6 elapsed") and line.endswith("img/s")
               for line in result.stderr.splitlines()), result.stderr
