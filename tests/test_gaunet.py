"""gaunet: a U-Net generator that rewrites real images, judged in pairs {x_i, x_j} against {x_i, x_g}."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from medsyn.errors import DataError
from medsyn.models import MODELS, ImageSpec, NetOptions, create_discriminator, create_generator
from medsyn.models.gaunet import BatchRenorm2d
from medsyn.sample import load_generator, source_indices
from medsyn.train.checkpoint import save_checkpoint
from medsyn.train.ema import recalibrate_batch_norm
from medsyn.train.run import DataOptions, prepare_run

TINY = NetOptions(z_dim=16, width=1 / 16)
RUN = {"model": "gaunet", "width": 0.0625, "batch": 4, "log_every": 1, "ckpt_every": 2, "grid_every": 100,
       "device": "cpu"}


def medsyn(*args):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "medsyn", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def write_npz(path, classes=3, per_class=4, size=28):
    """Distinct random images (so each one can be found again by value), class-major labels."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (classes * per_class, size, size), dtype=np.uint8)
    np.savez(path, train_images=images, train_labels=np.repeat(np.arange(classes), per_class).reshape(-1, 1))
    return str(path)


@pytest.mark.parametrize("size,channels", [(28, 1), (40, 3), (64, 1)])
def test_generator_rewrites_sources_and_critic_scores_pairs(size, channels):
    torch.manual_seed(0)
    spec = ImageSpec(size, channels, 3)
    G, D = create_generator("gaunet", spec, TINY), create_discriminator("gaunet", spec, TINY)
    z, labels = torch.randn(3, TINY.z_dim), torch.arange(3)
    sources = torch.rand(3, channels, size, size) * 2 - 1
    fake = G(z, labels, sources)
    assert fake.shape == (3, channels, size, size) and fake.abs().max() <= 1
    score, class_logits = D(torch.cat([sources, fake], 1), labels)
    assert score.shape == (3,) and class_logits is None
    score.sum().backward()
    assert G.stem[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="sources"):
        G(z, labels)
    with pytest.raises(ValueError, match="pairs"):
        D(fake, labels)
    assert bool(MODELS.get("gaunet").size_note(size)) == (size % 16 != 0)


def test_generator_output_depends_on_source_noise_and_label():
    torch.manual_seed(0)
    G = create_generator("gaunet", ImageSpec(32, 1, 3), TINY)  # training mode: batch statistics, fresh weights
    z, labels, sources = torch.randn(4, TINY.z_dim), torch.tensor([0, 1, 2, 0]), torch.rand(4, 1, 32, 32) * 2 - 1

    def run(*inputs):
        torch.manual_seed(1)  # the same dropout masks
        return G(*inputs)

    base = run(z, labels, sources)
    torch.testing.assert_close(base, run(z, labels, sources))
    assert not torch.allclose(base, run(z, labels, sources.flip(0)))
    assert not torch.allclose(base, run(torch.randn(4, TINY.z_dim), labels, sources))
    assert not torch.allclose(base, run(z, (labels + 1) % 3, sources))


def test_paper_settings():
    spec = MODELS.get("gaunet")
    assert spec.inputs == "same-class-pairs" and spec.objective == "wgan-gp" and spec.conditioning == "always"
    assert {k: spec.train_defaults[k] for k in ("lr_g", "lr_d", "betas", "critic_steps", "gp_weight", "z_dist")} == {
        "lr_g": 1e-4, "lr_d": 1e-4, "betas": (0.0, 0.9), "critic_steps": 1, "gp_weight": 10.0, "z_dist": "normal"}
    G = create_generator("gaunet", ImageSpec(64, 1, 2), NetOptions())
    D = create_discriminator("gaunet", ImageSpec(64, 1, 2), NetOptions())
    renorms = [m for m in G.modules() if isinstance(m, BatchRenorm2d)]
    assert not [m for m in G.modules() if isinstance(m, nn.BatchNorm2d)] and len(renorms) > 32
    assert all(m.negative_slope == 0.01 for m in G.modules() if isinstance(m, nn.LeakyReLU))
    assert [m.out_channels for m in D.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)][1:] == [64] * 16
    assert D.features[0].in_channels == 2  # the pair [anchor, image]
    assert not [m for m in D.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_batch_renorm_is_batch_norm_during_warm_up():
    torch.manual_seed(0)
    renorm, reference = BatchRenorm2d(5), nn.BatchNorm2d(5)
    with torch.no_grad():
        renorm.weight.uniform_(0.5, 1.5), renorm.bias.uniform_(-1, 1)
    reference.load_state_dict(renorm.state_dict())
    for _ in range(3):
        x = torch.randn(6, 5, 4, 4) * 3 + 2
        assert renorm.limits() == (1.0, 0.0)
        torch.testing.assert_close(renorm(x), reference(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(renorm.running_mean, reference.running_mean)
    torch.testing.assert_close(renorm.running_var, reference.running_var)
    renorm.eval(), reference.eval()
    x = torch.randn(2, 5, 4, 4)
    torch.testing.assert_close(renorm(x), reference(x))  # eval: the running statistics


def test_batch_renorm_corrects_towards_running_statistics():
    renorm = BatchRenorm2d(1, warmup=0, ramp=1)
    renorm.num_batches_tracked.fill_(1)  # past the ramp: r in [1/3, 3], d in [-5, 5]
    renorm.running_mean.fill_(1.0), renorm.running_var.fill_(4.0 - renorm.eps)  # running sigma 2
    x = torch.tensor([0.0, 2.0, 4.0, 6.0]).view(4, 1, 1, 1)  # batch mean 3, sigma sqrt(5)
    sigma = (5.0 + renorm.eps) ** 0.5
    r, d = sigma / 2.0, (3.0 - 1.0) / 2.0
    expected = (x - 3.0) / sigma * r + d  # = (x - running mean) / running sigma: what eval mode gives
    torch.testing.assert_close(renorm(x), expected)
    torch.testing.assert_close(expected, (x - 1.0) / 2.0)
    assert renorm.limits() == (3.0, 5.0)


def test_batch_norm_recalibration_resets_renorm_statistics():
    G = create_generator("gaunet", ImageSpec(32, 1, 2), TINY)
    norms = [m for m in G.modules() if isinstance(m, BatchRenorm2d)]
    for m in norms:
        m.running_mean.fill_(9.0)

    def inputs(i):
        return torch.randn(8, TINY.z_dim), torch.arange(8) % 2, torch.rand(8, 1, 32, 32) * 2 - 1

    recalibrate_batch_norm(G, inputs, batches=2)
    assert not G.training and all(m.running_mean.abs().max() < 9.0 for m in norms)


class Recorder(nn.Module):
    """Passes calls through to a network and keeps copies of its inputs."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, *inputs):
        self.calls.append([x.detach().clone() if isinstance(x, torch.Tensor) else x for x in inputs])
        return self.net(*inputs)


def test_pair_critic_sees_same_class_pairs_in_a_training_step(tmp_path):
    data = write_npz(tmp_path / "toy.npz", classes=3, per_class=4)
    trainer = prepare_run(tmp_path / "run", [{**RUN, "steps": 1}], DataOptions(data), resume=False).trainer
    images, labels = trainer.batches.images, trainer.batches.labels
    # one process: the D step's D_step and the G step's bare D are the same network
    trainer.D_step = trainer.D = Recorder(trainer.D)
    trainer.G_step = Recorder(trainer.G_step)
    trainer.train_step()

    def index_of(image):  # every dataset image is distinct: find it by value
        hits = [i for i in range(len(images)) if torch.equal(images[i], image)]
        assert len(hits) == 1
        return hits[0]

    (z, g_labels, sources), = trainer.G_step.calls
    real_call, fake_call, penalty_call, g_call = trainer.D_step.calls  # d_loss: real, fake, penalty; then g_loss
    anchors = real_call[0][:, :1]
    assert real_call[0].shape[1] == 2 and torch.equal(real_call[0][:, 1:], sources)  # real pair {x_i, x_j}
    for anchor, source, label in zip(anchors, sources, g_labels):
        i, j = index_of(anchor), index_of(source)
        assert i != j and labels[i] == labels[j] == label  # another image of the same class
    fake = fake_call[0][:, 1:]
    # {x_i, x_g}; under bf16 autocast the anchor is cast to the fake's dtype (bf16) before the pair is joined
    assert all(torch.equal(call[0][:, :1], anchors.to(call[0].dtype)) for call in (fake_call, penalty_call, g_call))
    assert torch.equal(g_call[0][:, 1:], fake) and not torch.equal(fake, sources)
    # penalty interpolates between the pairs: x_g + alpha (x_j - x_g), one alpha per sample
    mixed, direction = (penalty_call[0][:, 1:] - fake).flatten(1), (sources - fake).flatten(1)
    alpha = (mixed * direction).sum(1, keepdim=True) / direction.square().sum(1, keepdim=True)
    assert ((alpha >= 0) & (alpha <= 1)).all()
    torch.testing.assert_close(mixed, alpha * direction, rtol=1e-4, atol=1e-5)
    assert all(torch.equal(call[1], g_labels) for call in trainer.D_step.calls)


def test_pairs_are_a_pure_function_of_seed_and_draw(tmp_path):
    data = write_npz(tmp_path / "toy.npz", classes=2, per_class=3)
    batches = prepare_run(tmp_path / "run", [{**RUN, "steps": 1}], DataOptions(data), resume=False).trainer.batches
    first = batches.draw_pairs(5)
    for _ in range(3):
        batches.draw_pairs(_)
    assert all(torch.equal(a, b) for a, b in zip(first, batches.draw_pairs(5)))
    assert torch.equal(first[0], batches.draw(5)[0])  # sources are the batch the other models draw


def untrained_run(tmp_path, data):
    prepared = prepare_run(tmp_path / "run", [{**RUN, "steps": 1}], DataOptions(data), resume=False)
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run", prepared.trainer.state_dict())
    return tmp_path / "run"


def test_sources_come_from_the_run_data_or_input_of_the_same_classes(tmp_path, monkeypatch):
    run = untrained_run(tmp_path, write_npz(tmp_path / "toy.npz", classes=3))
    monkeypatch.setattr("medsyn.sample.recalibrate_batch_norm", lambda G, inputs: G.eval())  # not tested here
    loaded = load_generator(run, "cpu")
    assert len(loaded.source_names) == 12 and loaded.source_names[5].endswith("toy.npz:train#5")
    assert torch.equal(loaded.sources.classes.counts, torch.tensor([4, 4, 4]))
    # image i of class k: its source depends on (seed, k, i) only
    assert torch.equal(source_indices(loaded, 1, 5, seed=3)[:2], source_indices(loaded, 1, 2, seed=3))
    assert (loaded.sources.classes.labels[source_indices(loaded, 2, 7, seed=0)] == 2).all()
    with pytest.raises(DataError, match=r"two_classes\.npz.*classes"):
        load_generator(run, "cpu", source_data=write_npz(tmp_path / "two_classes.npz", classes=2))


@pytest.mark.slow
def test_cli_trains_resumes_and_samples_with_sources(tmp_path):
    data = write_npz(tmp_path / "toy.npz", classes=2, per_class=4)
    args = ["--data", data, "--model", "gaunet", "--batch", "4", "--device", "cpu",
            "--set", "width=0.0625", "--set", "ckpt_every=2", "--set", "grid_every=2"]
    whole = medsyn("train", "--out", tmp_path / "whole", "--steps", 4, *args)
    assert whole.returncode == 0, whole.stderr
    part = medsyn("train", "--out", tmp_path / "part", "--steps", 2, *args)
    assert part.returncode == 0, part.stderr
    resumed = medsyn("train", "--out", tmp_path / "part", "--resume", "--steps", 4)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=False)
    b = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)
    for key in ("generator", "discriminator", "generator_ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert (tmp_path / "whole" / "grids" / "sources.png").is_file()

    sampled = medsyn("sample", tmp_path / "whole", "--n-per-class", 3, "--out", tmp_path / "s", "--device", "cpu")
    assert sampled.returncode == 0, sampled.stderr
    with open(tmp_path / "s" / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and all((tmp_path / "s" / r["path"]).is_file() for r in rows)
    labels = np.repeat(np.arange(2), 4)
    for row in rows:  # each synthetic image names a real image of its own class
        source, index = row["source"].rsplit("#", 1)
        assert source.endswith("toy.npz:train") and labels[int(index)] == int(row["label"])
    again = medsyn("sample", tmp_path / "whole", "--n-per-class", 3, "--out", tmp_path / "s2", "--device", "cpu",
                   "--input", data)  # the same images given explicitly: the same samples
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "s" / "manifest.csv").read_text() == (tmp_path / "s2" / "manifest.csv").read_text()
    other = write_npz(tmp_path / "two_classes.npz", classes=3)
    refused = medsyn("sample", tmp_path / "whole", "--n-per-class", 2, "--out", tmp_path / "s3", "--device", "cpu",
                     "--input", other)
    assert refused.returncode == 2, refused.stderr
    lines = [line for line in refused.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "two_classes.npz" in lines[0], refused.stderr
    assert not (tmp_path / "s3").exists()
