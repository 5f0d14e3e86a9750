"""The Python API (medsyn.api): the README's example runs as written, and samples are seeded."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import medsyn

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.usefixtures("one_thread")


def readme_example() -> str:
    text = README.read_text()
    found = re.search(r"<!-- python-api-example -->\n```python\n(.*?)```", text, re.S)
    assert found, "README lost its Python example"
    return found.group(1)


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("(24, 1, 32, 32) [")
    assert re.fullmatch(r"FID \d+\.\d+", out[1]) and float(out[1].split()[1]) > 0
    auc = float(out[2].split()[1])
    assert 0.0 <= auc <= 1.0
    run = medsyn.load_run(tmp_path / "run")
    assert run.step == 20 and len(run.class_names) == 3


def test_a_run_samples_the_same_images_for_the_same_seed_as_arrays_or_tensors(tmp_path, make_npz):
    run = medsyn.train_generator(make_npz(), tmp_path / "run", model="wgan-gp", steps=2, width=0.0625, batch=4, device="cpu")
    images, labels = run.sample(3, seed=5)
    again, _ = medsyn.load_run(tmp_path / "run").sample(3, seed=5)
    tensors, tensor_labels = run.sample(3, seed=5, tensors=True)
    assert images.shape == (9, 1, 28, 28) and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert np.array_equal(images, again) and torch.equal(tensors, torch.from_numpy(images))
    assert isinstance(tensor_labels, torch.Tensor) and not np.array_equal(images, run.sample(3, seed=6)[0])


def test_names_outside_the_api_are_attribute_errors():
    with pytest.raises(AttributeError, match="no attribute 'sampel'"):
        medsyn.sampel  # noqa: B018
