"""PGGAN (brain-MRI paper, Table 1): stages, fade-in, its layers, its schedule, training and sampling."""
from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsyn.augment import build_preset
from medsyn.models import MODELS, ImageSpec, NetOptions, create_discriminator, create_generator
from medsyn.models.pggan import (
    EqualConv2d,
    EqualLinear,
    MinibatchStd,
    PixelNorm,
    growth_phases,
    progress_at,
    render_size,
    stage_count,
)
from medsyn.train.ema import ModelEma
from medsyn.train.losses import build_loss

TINY = NetOptions(z_dim=8, width=1 / 64)  # 8 channels everywhere: every stage runs in milliseconds
RUN = {"model": "pggan", "width": 1 / 64, "z_dim": 8, "batch": 4, "log_every": 1, "ckpt_every": 2,
       "grid_every": 2, "device": "cpu"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These networks are tiny: on a shared CPU, handing work to a second thread costs 10x the work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def networks(size: int, classes: int = 0, channels: int = 1):
    torch.manual_seed(0)
    spec = ImageSpec(size, channels, classes)
    return create_generator("pggan", spec, TINY), create_discriminator("pggan", spec, TINY)


def latents(n: int = 4, classes: int = 0):
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(n, TINY.z_dim, generator=generator)
    return z, (torch.arange(n) % classes if classes else None)


def at_stage(net, stage: int, alpha: float = 1.0):
    net.set_stage(stage, alpha)
    return net


# ---- shapes and fade-in ---------------------------------------------------------------------

@pytest.mark.parametrize("size,stages", [(32, 4), (64, 5), (256, 7), (28, 4), (240, 7)])
def test_every_stage_gives_full_size_images_and_scores(size, stages):
    G, D = networks(size, classes=3)
    assert G.stages == D.stages == stage_count(size) == stages
    z, labels = latents(classes=3)
    with torch.no_grad():
        for stage in range(stages):
            for alpha in (0.0, 0.5):
                images = at_stage(G, stage, alpha)(z, labels)
                assert images.shape == (4, 1, size, size), (stage, alpha)
                score, class_logits = at_stage(D, stage, alpha)(images, labels)
                assert score.shape == (4,) and class_logits is None and torch.isfinite(score).all()


@pytest.mark.parametrize("size", [32, 64])
def test_a_lower_stage_renders_its_side_upsampled(size):
    G, _ = networks(size)
    z, _ = latents()
    with torch.no_grad():
        for stage in range(G.stages):
            images = at_stage(G, stage)(z)
            block = size // (4 * 2**stage)
            coarse = images[..., ::block, ::block]
            assert torch.equal(images, coarse.repeat_interleave(block, -2).repeat_interleave(block, -1)), stage


@pytest.mark.parametrize("size", [32, 256])
def test_fade_in_is_continuous_and_starts_at_the_previous_stage(size):
    G, D = networks(size, classes=2)
    z, labels = latents(classes=2)
    real = torch.rand(4, 1, size, size) * 2 - 1
    with torch.no_grad():
        for stage in range(1, G.stages):
            previous = at_stage(G, stage - 1)(z, labels)
            assert torch.allclose(at_stage(G, stage, 0.0)(z, labels), previous, atol=1e-6), stage
            previous_score = at_stage(D, stage - 1)(real, labels)[0]
            assert torch.allclose(at_stage(D, stage, 0.0)(real, labels)[0], previous_score, atol=1e-5), stage
            for alpha in (0.0, 0.4, 0.9):
                base = at_stage(G, stage, alpha)(z, labels)
                change = [(at_stage(G, stage, alpha + d)(z, labels) - base).abs().max().item()
                          for d in (0.1, 0.01, 0.001)]
                # the output is linear in alpha: the change shrinks with the step, to nothing
                assert change[0] > 0, (stage, alpha)
                assert change[1] == pytest.approx(change[0] / 10, rel=1e-3), (stage, alpha, change)
                assert change[2] == pytest.approx(change[0] / 100, rel=1e-2), (stage, alpha, change)


# ---- the layers -----------------------------------------------------------------------------

def test_pixel_norm_gives_unit_mean_square_features():
    x = torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    out = PixelNorm()(x)
    assert torch.allclose(out.flatten(), torch.tensor([3.0, 4.0]) / math.sqrt(12.5))
    many = PixelNorm()(torch.randn(5, 16, 3, 3) * 7)
    assert torch.allclose(many.square().mean(1), torch.ones(5, 3, 3), atol=1e-5)


def test_minibatch_std_appends_the_mean_standard_deviation():
    # feature 0 is 0, 0, 2, 2 across the batch (std 1), feature 1 is constant (std 0)
    x = torch.tensor([[0.0, 1.0], [0.0, 1.0], [2.0, 1.0], [2.0, 1.0]]).view(4, 2, 1, 1).expand(4, 2, 2, 2)
    out = MinibatchStd()(x)
    assert out.shape == (4, 3, 2, 2) and torch.equal(out[:, :2], x)
    expected = (1.0 + math.sqrt(1e-8)) / 2
    assert torch.allclose(out[:, 2], torch.full((4, 2, 2), expected))
    # groups of four consecutive samples over eight, so a shard of four keeps its group whole
    eight = torch.tensor([0.0, 0, 2, 2, 10, 10, 10, 10]).view(8, 1, 1, 1)
    stat = MinibatchStd()(eight)[:, 1].flatten()
    assert torch.allclose(stat[:4], torch.ones(4)) and torch.allclose(stat[4:], torch.full((4,), 1e-4))
    assert torch.equal(MinibatchStd()(eight[4:]), MinibatchStd()(eight)[4:])
    assert MinibatchStd()(torch.randn(7, 2, 4, 4)).shape == (7, 3, 4, 4)  # not divisible: one group


def test_equalised_learning_rate_scales_unit_weights_at_run_time():
    torch.manual_seed(0)
    conv = EqualConv2d(64, 32, 3, padding=1)
    assert abs(conv.weight.std().item() - 1.0) < 0.02 and torch.all(conv.bias == 0)
    assert conv.scale == pytest.approx(math.sqrt(2 / (64 * 9)))
    x = torch.randn(2, 64, 5, 5)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight * conv.scale, conv.bias, padding=1))
    linear = EqualLinear(100, 10, gain=1.0)
    assert linear.scale == pytest.approx(0.1) and abs(linear.weight.std().item() - 1.0) < 0.05
    # He's constant keeps the activation scale: unit-variance input, variance ~2 out (before LReLU)
    out = EqualConv2d(256, 256, 3, padding=1)(torch.randn(8, 256, 8, 8))[..., 1:-1, 1:-1]
    assert 1.7 < out.var().item() < 2.3


def test_architecture_follows_table_1():
    spec, paper = ImageSpec(256, 1, 0), NetOptions(z_dim=512)
    G, D = create_generator("pggan", spec, paper), create_discriminator("pggan", spec, paper)
    assert G.first.project.in_features == 512 and G.first.project.out_features == 512 * 16
    convs = [(m.in_channels, m.out_channels) for m in G.grow.modules() if isinstance(m, EqualConv2d)]
    assert convs == [(512, 512), (512, 512), (512, 256), (256, 256), (256, 128), (128, 128), (128, 64), (64, 64),
                     (64, 32), (32, 32), (32, 16), (16, 16)]
    assert G.to_rgb["256"].out_channels == 1 and G.to_rgb["256"].kernel_size == (1, 1)
    assert sum(isinstance(m, PixelNorm) for m in G.modules()) == 1 + 2 + 2 * 6  # latent, 4x4 block, 2 per side
    shrink = [(m.in_channels, m.out_channels) for m in D.shrink.modules() if isinstance(m, EqualConv2d)]
    assert shrink == [(16, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256),
                      (256, 256), (256, 512), (512, 512), (512, 512)]
    final = [m for m in D.final.modules() if isinstance(m, EqualConv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size) for m in final] == [(513, 512, (3, 3)), (512, 512, (4, 4))]
    assert D.from_rgb["256"][0].out_channels == 16 and isinstance(D.head.score, EqualLinear)


# ---- progress ------------------------------------------------------------------------------

@pytest.mark.parametrize("total,stages", [(1000, 7), (130, 5), (3, 4)])
def test_progress_grows_monotonically_and_fades_from_zero(total, stages):
    seen = [progress_at(step, total, stages) for step in range(total)]
    assert seen[-1] == (stages - 1, 1.0)
    assert [s for s, _ in seen] == sorted(s for s, _ in seen)
    levels = [s - 1 + a for s, a in seen]  # stage s at alpha a sits between s - 1 and s
    assert levels == sorted(levels)
    assert progress_at(total, total, stages) == progress_at(10 * total, total, stages) == (stages - 1, 1.0)
    if total >= 100:
        assert seen[0] == (0, 1.0)
        first = {}
        for step, (stage, alpha) in enumerate(seen):
            first.setdefault(stage, (step, alpha))
        assert all(alpha == 0.0 for stage, (_, alpha) in first.items() if stage > 0)
        units = sum(u for *_, u in growth_phases(stages))
        assert first[1][0] == total // units  # 4x4 gets one unit of the run
        assert sum(stage == stages - 1 for stage, _ in seen) == pytest.approx(total * 3 / units, abs=2)


def test_stage_travels_with_state_dicts_and_the_ema_copy():
    G, _ = networks(64)
    G.set_progress(40, 100)
    stage, alpha = progress_at(40, 100, G.stages)
    assert (G.current_stage, float(G.alpha)) == (stage, pytest.approx(alpha))
    fresh, _ = networks(64)
    assert fresh.current_stage == fresh.stages - 1  # built outside training: the full network
    fresh.load_state_dict(G.state_dict())
    assert fresh.current_stage == stage and float(fresh.alpha) == pytest.approx(alpha)
    z, _ = latents()
    with torch.no_grad():
        assert torch.equal(fresh(z), G(z))
    ema = ModelEma(G, 0.999)
    assert ema.module.current_stage == stage
    with pytest.raises(ValueError, match="stage"):
        G.set_stage(G.stages, 1.0)


def test_registry_entry_follows_the_paper():
    spec = MODELS.get("pggan")
    assert "Han et al. 2019" in spec.paper and "Table 1" in spec.paper
    d = spec.train_defaults
    assert (d["lr_g"], d["lr_d"], d["betas"], d["batch"], d["critic_steps"], d["gp_weight"], d["z_dim"]) == (
        1e-3, 1e-3, (0.0, 0.99), 16, 1, 10.0, 512)
    assert d["optimizer"] == "adam" and d["z_dist"] == "normal" and d["augment"] == "pggan-crop"
    assert spec.size_note(240) == ("pggan renders 256x256 and centre-crops to 240x240; "
                                   "its critic pads images with black back to 256x256")
    assert spec.size_note(64) == "" and render_size(28) == 32


def test_drift_term_adds_a_thousandth_of_the_mean_squared_real_score():
    class Constant(torch.nn.Module):  # critic: 2 on real (positive) images, -1 on the rest, no gradient
        def forward(self, x, labels):
            return torch.where(x.flatten(1).mean(1) > 0, 2.0, -1.0) + 0 * x.sum((1, 2, 3)), None

    from medsyn.config import TrainConfig

    cfg = TrainConfig(gp_weight=10.0)
    real, fake = torch.ones(4, 1, 4, 4), -torch.ones(4, 1, 4, 4)
    loss, stats = build_loss("wgan-gp-drift", cfg).d_loss(Constant(), real, fake, None)
    plain, _ = build_loss("wgan-gp", cfg).d_loss(Constant(), real, fake, None)
    assert float(stats["drift"]) == 4.0 and float(stats["w_distance"]) == 3.0
    assert float(loss - plain) == pytest.approx(0.001 * 4.0, abs=1e-6)


# ---- the crop augmentation -----------------------------------------------------------------

def test_pggan_crop_is_at_most_15_px_and_resizes_the_window_back():
    assert build_preset("pggan-crop", 240).max_crop == 15.0 and build_preset("pggan-crop", 256).max_crop == 15.0
    assert build_preset("pggan-crop", 64).max_crop == pytest.approx(4.0)
    preset = build_preset("pggan-crop", 32)
    params = preset.sample_params(500, torch.Generator().manual_seed(0))
    scale = params.matrix[:, 0, 0]
    assert torch.equal(scale, params.matrix[:, 1, 1]) and (scale <= 1).all() and (scale >= 1 - 2 / 32 - 1e-6).all()
    # the window stays inside the image: no fill is ever read
    assert ((params.matrix[:, :, 2].abs() + scale[:, None]) <= 1 + 1e-6).all()
    # a window of the top-left half, resized back, is what F.interpolate makes of that half (but for
    # the last row and column, which also see the pixels just past the window, as they should)
    images = torch.rand(2, 1, 32, 32)
    params.matrix = torch.tensor([[0.5, 0.0, -0.5], [0.0, 0.5, -0.5]]).repeat(2, 1, 1)
    params.hflip, params.vflip = params.hflip[:2], params.vflip[:2]
    expected = F.interpolate(images[..., :16, :16], size=32, mode="bilinear", align_corners=False)
    cropped = preset.apply_params(images, params)
    torch.testing.assert_close(cropped[..., :-1, :-1], expected[..., :-1, :-1], atol=1e-5, rtol=0)


# ---- training and sampling through the real code paths -------------------------------------

@pytest.fixture
def toy_npz(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32), dtype=np.uint8)
    labels = np.repeat(np.arange(2), 6).reshape(-1, 1)
    path = tmp_path / "toy.npz"
    np.savez(path, train_images=images, train_labels=labels)
    return str(path)


def _train(run_dir, data, **overrides):
    from medsyn.train.run import DataOptions, execute_run, prepare_run

    layers = [{**RUN, **overrides}] if data else [overrides]
    prepared = prepare_run(run_dir, layers, DataOptions(data) if data else None, resume=data is None)
    return prepared, execute_run(prepared)


def _interrupted_run(run_dir, data, stop_step: int, **overrides):
    """A run stopped by Ctrl-C after ``stop_step`` steps, as a user would stop it: it saves a checkpoint."""
    from medsyn.train.run import DataOptions, execute_run, prepare_run

    prepared = prepare_run(run_dir, [{**RUN, **overrides}], DataOptions(data), resume=False)

    def interrupt(step, total, values, rate):
        if step == stop_step:
            os.kill(os.getpid(), signal.SIGINT)

    result = execute_run(prepared, interrupt)
    assert result.interrupted and result.step == stop_step


@pytest.mark.parametrize("per_class", [False, True])
def test_resume_equals_uninterrupted_run(tmp_path, toy_npz, per_class):
    # growth depends on the run length, so the split run must be one 6-step run stopped at 3
    straight, result = _train(tmp_path / "straight", toy_npz, steps=6, per_class=per_class)
    assert np.isfinite(list(result.last_stats.values())).all() and "drift" in result.last_stats
    _interrupted_run(tmp_path / "split", toy_npz, 3, steps=6, per_class=per_class)
    resumed, result = _train(tmp_path / "split", None)
    assert result.step == 6
    a, b = straight.trainer.state_dict(), resumed.trainer.state_dict()
    for key in ("generator", "discriminator", "generator_ema"):
        assert a[key].keys() == b[key].keys() and all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    stage_keys = [k for k in a["generator_ema"] if k.endswith("stage")]
    assert stage_keys and all(int(a["generator_ema"][k]) == 3 for k in stage_keys)  # the last step ran 32x32


def test_train_and_sample_commands(tmp_path, toy_npz):
    from typer.testing import CliRunner

    from medsyn.cli import app

    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", toy_npz, "--model", "pggan", "--steps", "4", "--out", str(run),
                                 "--device", "cpu", "--batch", "4", "--set", "width=0.015625", "--set", "z_dim=8"])
    assert result.exit_code == 0, result.output
    assert (run / "grid_latest.png").is_file()
    samples = tmp_path / "samples"
    result = runner.invoke(app, ["sample", str(run), "--n-per-class", "3", "--out", str(samples), "--device", "cpu",
                                 "--format", "npz"])
    assert result.exit_code == 0, result.output
    with np.load(samples / "samples.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    images = next(v for v in arrays.values() if v.ndim >= 3)
    assert images.shape[:3] == (6, 32, 32)


def test_a_run_stopped_early_samples_its_current_stage(tmp_path, toy_npz):
    from medsyn.sample import load_generator, synthesize

    _interrupted_run(tmp_path / "run", toy_npz, 2, steps=40, ckpt_every=100)
    loaded = load_generator(tmp_path / "run", device="cpu")
    assert loaded.generator.current_stage == 0  # steps 0-4 of 40 are the 4x4 stage
    images, _ = synthesize(loaded, 2, seed=0)
    assert images.shape == (4, 1, 32, 32)
    blocks = torch.as_tensor(images)[..., ::8, ::8].repeat_interleave(8, -2).repeat_interleave(8, -1)
    assert torch.equal(torch.as_tensor(images), blocks)  # 4x4 images, upsampled


@pytest.mark.slow
def test_pggan_learns_phantom_intensity_on_its_final_stage(tmp_path):
    """300 steps on 32x32 phantoms: the sampled mean intensity per class approaches the real one."""
    from medsyn.data import load_source
    from medsyn.data.phantoms import write_phantoms
    from medsyn.sample import load_generator, synthesize

    write_phantoms(tmp_path / "phantoms", size=32, per_class=100, seed=0)
    _train(tmp_path / "run", str(tmp_path / "phantoms"), steps=300, width=0.125, z_dim=64, batch=16, ckpt_every=300,
           log_every=50, grid_every=300)
    real = load_source(str(tmp_path / "phantoms"))
    images, labels = synthesize(load_generator(tmp_path / "run", device="cpu"), 64, seed=1)
    for k in range(len(real.class_names)):
        assert abs(images[labels == k].mean() - real.images[real.labels == k].mean()) < 0.1
