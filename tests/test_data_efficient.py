"""Data-efficient training options (diffaug, ada_target, r1, spectral_norm, hinge) on every generator:
they train, the discriminator sees augmented images in every call, ADA resumes exactly, and no
augmentation leaks into the samples."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medsyn.models import MODELS
from medsyn.sample import load_generator, synthesize
from medsyn.train.critic_input import CriticAugment
from medsyn.train.run import DataOptions, execute_run, prepare_run

GENERATORS = [n for n in MODELS if MODELS.get(n).role == "generator"]
TINY = {"width": 0.0625, "batch": 4, "log_every": 1, "ckpt_every": 100, "grid_every": 100, "device": "cpu"}
EFFICIENT = {"diffaug": "color,translation,cutout", "ada_target": 0.6, "ada_kimg": 0.02, "r1": 1.0, "r1_every": 1,
             "spectral_norm": True, "lecam": 0.3}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: a second thread only adds contention


def _train(run_dir, data, resume=False, **overrides):
    options = None if resume else DataOptions(data)
    prepared = prepare_run(run_dir, [{**TINY, **overrides}], options, resume=resume)
    return prepared, execute_run(prepared)


@pytest.mark.parametrize("name", GENERATORS)
def test_every_generator_trains_with_every_option(tmp_path, make_npz, name):
    objective = {"objective": "hinge"} if MODELS.get(name).objective == "bce" else {}
    prepared, result = _train(tmp_path / "run", make_npz(), model=name, steps=2, **EFFICIENT, **objective)
    stats = result.last_stats
    assert result.step == 2 and np.isfinite(list(stats.values())).all()
    assert "r1" in stats and "ada_p" in stats  # R1 on every update (r1_every=1), ADA's p shown
    assert stats["lecam"] >= 0 and "lecam_anchor_real" in stats  # LeCam from the second update on
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert any("parametrizations" in key for key in state["discriminator"])  # spectral norm on D's weights
    assert not any("parametrizations" in key for key in state["generator"])
    assert state["augment"]["ada"]["p"] == pytest.approx(stats["ada_p"])
    assert state["loss"]["lecam"]["anchors"].tolist() == pytest.approx(
        [stats["lecam_anchor_real"], stats["lecam_anchor_fake"]])
    assert state["model"]["objective"] == (objective or {"objective": MODELS.get(name).objective})["objective"]


def test_the_discriminator_sees_augmented_images_in_every_call():
    """Real, fake, WGAN-GP interpolates and R1's reals all pass through the augmentation, in D and G steps."""
    from medsyn.config import TrainConfig
    from medsyn.train.distributed import SINGLE
    from medsyn.train.inputs import NoiseInputs, StepBatch
    from medsyn.train.losses import StepContext, build_loss

    seen = []

    def D(images, labels):
        seen.append(images)
        return images.flatten(1).mean(1) * 3, None

    # a transform whose output is recognisable (all 7s) and still passes gradients to its input
    critic_input = lambda images: images * 0 + 7.0 + images - images.detach()  # noqa: E731
    real = torch.rand(4, 1, 8, 8, requires_grad=False)
    fake = torch.rand(4, 1, 8, 8, requires_grad=True)
    inputs = NoiseInputs(None, None, SINGLE, 1)
    critic = inputs.critic(D, StepBatch(real, torch.zeros(4, dtype=torch.long)), critic_input)
    loss = build_loss("wgan-gp", TrainConfig(r1=1.0, r1_every=1))
    d_loss, stats = loss.d_loss(critic, real, fake.detach(), None, StepContext(0))
    g_loss, _ = loss.g_loss(critic, fake, None, StepContext(0))
    assert len(seen) == 4 and "gp" in stats and "r1" in stats  # real, fake, interpolates; G's fake
    assert all(bool((x == 7.0).all()) for x in seen)
    g_loss.backward()
    assert fake.grad is not None and torch.isfinite(fake.grad).all()  # gradients reach G through the transform


def test_resume_with_ada_and_diffaug_is_exact(tmp_path, make_npz):
    data = make_npz()
    settings = {**EFFICIENT, "ada_target": 0.1}  # a low target: p rises from the first adjustment
    straight, _ = _train(tmp_path / "straight", data, steps=8, **settings)
    _train(tmp_path / "split", data, steps=3, **settings)  # stops mid-way between two ADA adjustments
    resumed, _ = _train(tmp_path / "split", None, resume=True, steps=8)
    a, b = straight.trainer.state_dict(), resumed.trainer.state_dict()
    assert a["augment"]["ada"]["p"] > 0, "ADA's p should have moved in 8 steps with ada_kimg=0.02"
    assert a["augment"]["ada"]["p"] == b["augment"]["ada"]["p"]
    assert torch.equal(a["augment"]["ada"]["accumulators"], b["augment"]["ada"]["accumulators"])
    for key in ("generator", "discriminator", "generator_ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key


# ---- leaks: the samples must not carry what the augmentation adds ---------------------------------
def _leak_run(tmp_path, kind: str, leaky: bool, steps: int) -> np.ndarray:
    """Train a tiny DCGAN on images without the augmentation's features; its samples in [0, 1].

    ``leaky`` moves the augmentation onto the real images only (what a wrong implementation does,
    like a classic preset): the discriminator then tells real from fake by the augmentation, and
    the generator learns to draw it. It shows that the checks below can fail.
    """
    rng = np.random.default_rng(0)
    if kind == "diffaug":  # bright, flat images: no dark borders, no grey squares
        images = rng.uniform(0.85, 0.95, (64, 28, 28))
        settings = {"diffaug": "translation,cutout"}
    else:  # bright at the top, dark at the bottom, in every image: one orientation
        images = np.linspace(0.9, 0.1, 28)[None, :, None] + rng.normal(0, 0.02, (64, 28, 28))
        settings = {"ada_target": 0.6, "ada_kimg": 1e9}  # p set below, then held
    path = tmp_path / f"{kind}.npz"
    np.savez(path, train_images=(images.clip(0, 1) * 255).astype(np.uint8), train_labels=np.zeros((64, 1), int))
    run = tmp_path / f"run-{kind}-{leaky}"
    prepared = prepare_run(run, [{"model": "dcgan", "width": 0.0625, "batch": 16, "steps": steps, "device": "cpu",
                                  "amp": False, **settings}], DataOptions(str(path)), False)
    trainer = prepared.trainer
    if kind == "ada":
        trainer.critic_input.ada.p = 0.6  # high enough to rotate most images the discriminator sees
    if leaky:
        augment = trainer.critic_input
        trainer.inputs.augment = lambda x: (augment(x * 2 - 1) + 1) / 2
        trainer.critic_input = CriticAugment()
    execute_run(prepared)
    samples, _ = synthesize(load_generator(run, "cpu"), 64, seed=0)
    return samples[:, 0]


def _orientation(samples: np.ndarray) -> tuple[float, float]:
    """(share drawn bright-top as the data, share drawn with another orientation)."""
    top, bottom = samples[:, :10].mean((1, 2)), samples[:, -10:].mean((1, 2))
    left, right = samples[:, :, :10].mean((1, 2)), samples[:, :, -10:].mean((1, 2))
    contrast = np.stack([top - bottom, bottom - top, left - right, right - left], 1)
    clear = contrast.max(1) > 0.2
    return float((clear & (contrast.argmax(1) == 0)).mean()), float((clear & (contrast.argmax(1) != 0)).mean())


def test_diffaugment_translation_and_cutout_do_not_leak(tmp_path):
    clean = _leak_run(tmp_path, "diffaug", leaky=False, steps=200)
    leaky = _leak_run(tmp_path, "diffaug", leaky=True, steps=200)
    # measured: 0.5% of clean sample pixels below 0.7 (none in the data), 20% with the leak
    assert (clean < 0.7).mean() < 0.03
    assert (leaky < 0.7).mean() > 0.1


def test_ada_rotations_at_high_p_do_not_leak(tmp_path):
    right, wrong = _orientation(_leak_run(tmp_path, "ada", leaky=False, steps=500))
    assert right >= 0.9 and wrong <= 0.02  # measured: 100% right, 0% turned


@pytest.mark.slow
def test_ada_leak_check_sees_a_leak(tmp_path):
    """The control of the test above: rotations applied to real images only are learned (97% turned)."""
    _, wrong = _orientation(_leak_run(tmp_path, "ada", leaky=True, steps=500))
    assert wrong >= 0.3


@pytest.mark.parametrize("name", ["simgan", "unit"])
def test_refiners_train_with_diffaugment_and_spectral_norm(tmp_path, make_npz, name):
    from medsyn.imageio import write_image_folder

    real = make_npz()
    images = np.random.default_rng(0).random((12, 1, 28, 28)).astype(np.float32)
    rows = [{"model": "dcgan", "seed": 0, "index": i} for i in range(12)]  # a sample folder's manifest
    write_image_folder(tmp_path / "syn", images, np.repeat(np.arange(3), 4), ["class_0", "class_1", "class_2"],
                       rows=rows, stem="syn")
    options = DataOptions(real, refine_source=str(tmp_path / "syn"))
    settings = {**TINY, "model": name, "steps": 2, "per_class": False, "diffaug": "translation,cutout",
                "spectral_norm": True}
    if name == "simgan":
        settings["pretrain_steps"] = 0  # the discriminator (and its augmentation) from the first step
    prepared = prepare_run(tmp_path / "run", [settings], options, resume=False)
    result = execute_run(prepared)
    assert result.step == 2 and np.isfinite(list(result.last_stats.values())).all()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert any("parametrizations" in key for key in state["refiners"][0]["discriminator"])
