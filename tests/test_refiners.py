"""Refiners (simgan, unit, munit): history buffer, SimGAN schedule, UNIT/MUNIT reconstruction,
train + resume equals an uninterrupted run, `medsyn refine` output, and the --source checks."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from torch import nn

from medsyn.config import build_config
from medsyn.errors import ConfigError, DataError, RunError
from medsyn.imageio import write_image_folder
from medsyn.models import MODELS
from medsyn.models.base import NetOptions
from medsyn.models.refiners_perceptual import OFF_NOTICE, PerceptualLoss, load_vgg19_features
from medsyn.models.refiners_simgan import HistoryBuffer
from medsyn.refine import write_refined
from medsyn.sample import write_samples
from medsyn.train.refiner import build_group
from medsyn.train.run import DataOptions, execute_run, prepare_run

REFINERS = ("simgan", "unit", "munit")
TINY = {"width": 0.0625, "batch": 2, "log_every": 1, "ckpt_every": 2, "grid_every": 2, "device": "cpu"}
SIMGAN_SHORT = {"pretrain_steps": 1, "refiner_steps": 2, "history_size": 4}  # every phase within 4 steps
NET = NetOptions(width=0.0625)


pytestmark = pytest.mark.usefixtures("one_thread")


def sgd(params, lr):
    return torch.optim.SGD(list(params), lr=lr)


def adam(params, lr):
    return torch.optim.Adam(list(params), lr=lr, betas=(0.5, 0.999))


def objective_for(name: str, size: int = 28, make_optimizer=sgd, **overrides):
    """A refiner's objective and optimisers (a RefinerGroup), with the tests' tiny width."""
    spec = MODELS.get(name)
    cfg = build_config(spec.train_defaults, {"width": NET.width, **overrides})
    return build_group(spec, cfg, size, 1, torch.device("cpu"), make_optimizer)


@pytest.fixture
def image_sets(tmp_path):
    """A real .npz and a synthetic sample folder (with a manifest like `medsyn sample` writes), 2 classes x 4."""
    rng = np.random.default_rng(0)
    real = tmp_path / "real.npz"
    np.savez(real, train_images=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
             train_labels=np.repeat(np.arange(2), 4).reshape(-1, 1))
    synthetic = tmp_path / "synthetic"
    images = rng.random((8, 1, 28, 28)).astype(np.float32)
    labels = np.repeat(np.arange(2), 4)
    rows = [{"model": "dcgan", "seed": 7, "index": i % 4} for i in range(8)]
    write_image_folder(synthetic, images, labels, ["class_0", "class_1"], rows=rows, stem="syn")
    return str(real), str(synthetic)


def train(run_dir, real, synthetic, resume=False, **overrides):
    options = None if resume else DataOptions(real, refine_source=synthetic)
    prepared = prepare_run(run_dir, [{**TINY, **overrides}], options, resume=resume)
    return prepared, execute_run(prepared)


# ---- SimGAN ------------------------------------------------------------------------------------
def test_history_buffer_fills_then_mixes_half_and_half():
    torch.manual_seed(0)
    buffer = HistoryBuffer(capacity=4)
    batch = lambda *values: torch.tensor(values, dtype=torch.float32).view(-1, 1, 1, 1)  # noqa: E731
    assert buffer.mix(batch(1, 2, 3, 4)).flatten().tolist() == [1, 2, 3, 4]  # empty: the batch alone
    assert buffer.count == 2 and buffer.images[:2].flatten().tolist() == [1, 2]  # half of it kept
    mixed = buffer.mix(batch(5, 6, 7, 8)).flatten().tolist()
    assert mixed[:2] == [5, 6] and set(mixed[2:]) <= {1, 2}  # current half + history half
    assert buffer.count == 4 and buffer.images.flatten().tolist() == [1, 2, 5, 6]  # filled in order
    mixed = buffer.mix(batch(9, 10, 11, 12)).flatten().tolist()
    assert mixed[:2] == [9, 10] and set(mixed[2:]) <= {1, 2, 5, 6}
    held = buffer.images.flatten().tolist()  # full: two random entries replaced by the newest refined images
    assert buffer.count == 4 and {9, 10} <= set(held) and len(set(held) & {1, 2, 5, 6}) == 2
    restored = HistoryBuffer(capacity=4)
    restored.load_state_dict(buffer.state_dict(), like=torch.zeros(1))
    assert restored.count == 4 and torch.equal(restored.images, buffer.images)
    assert torch.equal(HistoryBuffer(0).mix(batch(1, 2)), batch(1, 2))  # capacity 0: no history


def test_simgan_schedule_regulariser_first_then_five_refiner_updates_per_d_update():
    torch.manual_seed(0)
    objective = objective_for("simgan", pretrain_steps=3, refiner_steps=5, history_size=8, batch=2)
    synthetic, real = torch.rand(2, 1, 28, 28) * 2 - 1, torch.rand(2, 1, 28, 28) * 2 - 1
    d_changed, adversarial = [], []
    for step in range(14):
        before = [p.clone() for p in objective.objective.discriminator.parameters()]
        stats = objective.train_step(step, synthetic, real)
        d_changed.append(any(not torch.equal(a, b) for a, b in zip(before, objective.objective.discriminator.parameters())))
        adversarial.append("loss_realism" in stats)
    assert adversarial == [False] * 3 + [True] * 11  # the regulariser alone for pretrain_steps
    assert [s for s, changed in enumerate(d_changed) if changed] == [7, 12]  # after every 5th refiner update
    assert objective.objective.d_updates == 2 and objective.objective.history.count == 2


# ---- UNIT / MUNIT ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["unit", "munit"])
def test_unit_munit_reconstruct_within_domain_and_the_loss_falls(name):
    torch.manual_seed(0)
    objective = objective_for(name, size=30, make_optimizer=lambda p, lr: adam(p, 2e-3))  # 30: padded to 32, cropped back
    synthetic, real = torch.rand(1, 1, 30, 30) * 2 - 1, torch.rand(1, 1, 30, 30) * 2 - 1
    streams = objective.objective.translations(synthetic, real)
    for key in ("x_aa", "x_bb", "x_ab", "x_ba", "x_aba", "x_bab"):
        assert streams[key].shape == (1, 1, 30, 30), key
    style = torch.randn(1, objective.objective.translator.style_dim) if objective.objective.translator.style_dim else None
    assert objective.objective.translator.refine(synthetic, style).shape == (1, 1, 30, 30)

    def recon() -> float:
        torch.manual_seed(1)  # the same VAE noise for both measurements
        with torch.no_grad():
            return float(objective.objective.losses(synthetic, real)["recon"])

    first = recon()
    for step in range(10):
        objective.train_step(step, synthetic, real)
    assert recon() < 0.85 * first  # unit: ~0.5x, munit: ~0.76x after 10 steps
    assert objective.objective.notices == [OFF_NOTICE]  # no perceptual_weights given


def test_perceptual_term_compares_instance_normalised_features(tmp_path):
    torch.manual_seed(0)
    features = nn.Conv2d(3, 4, 3, bias=False)  # linear and unpadded: an intensity change is a pure style change
    loss = PerceptualLoss(features, input_size=32)
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    assert float(loss(x, x)) == 0.0
    assert float(loss(x, x * 0.5 + 0.1)) < 1e-5 < 0.1 < float(loss(x, torch.flip(x, dims=[-1])))  # style off, content on
    with pytest.raises(ConfigError, match="not a file"):
        load_vgg19_features(tmp_path / "missing.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a state dict")
    with pytest.raises(ConfigError, match="not a torchvision VGG-19"):
        load_vgg19_features(tmp_path / "bad.pth")


# ---- runs: train, resume, refine ---------------------------------------------------------------
def _refiner_states(prepared):
    return [group.state_dict() for group in prepared.trainer.groups]


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


@pytest.mark.parametrize("name", REFINERS)
def test_refiner_trains_resumes_exactly_and_refines(tmp_path, image_sets, name):
    real, synthetic = image_sets
    # SimGAN covers one refiner per class (its default); UNIT/MUNIT train one for all classes, to stay fast
    extra = SIMGAN_SHORT if name == "simgan" else {"per_class": False}
    straight, result = train(tmp_path / "straight", real, synthetic, model=name, steps=4, **extra)
    assert result.step == 4 and np.isfinite(list(result.last_stats.values())).all()
    assert (tmp_path / "straight" / "grid_latest.png").is_file()
    train(tmp_path / "split", real, synthetic, model=name, steps=2, **extra)
    resumed, result = train(tmp_path / "split", None, None, resume=True, steps=4)  # no --data, no --source
    assert result.step == 4
    assert _equal(_refiner_states(straight), _refiner_states(resumed))  # incl. optimisers and SimGAN's history

    out = write_refined(tmp_path / "split", synthetic, tmp_path / "refined", device="cpu")
    with open(out / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and [r["label"] for r in rows] == ["0"] * 4 + ["1"] * 4  # labels pass through
    assert rows[0]["model"] == "dcgan" and rows[0]["seed"] == "7" and rows[5]["index"] == "1"  # input columns kept
    assert rows[0]["refiner"] == name and rows[0]["refiner_step"] == "4" and len(rows[0]["refiner_checkpoint_sha256"]) == 64
    assert rows[0]["input_path"].endswith("syn_00000.png")
    assert sorted(p.name for p in out.glob("grid_*.png")) == ["grid_class_0.png", "grid_class_1.png"]
    assert (out / "class_1" / "ref_00007.png").is_file() and not list(tmp_path.glob(".refined.tmp-*"))
    again = write_refined(tmp_path / "split", synthetic, tmp_path / "again", device="cpu")
    assert (again / "class_0" / "ref_00000.png").read_bytes() == (out / "class_0" / "ref_00000.png").read_bytes()


def test_source_is_checked_before_anything_is_written(tmp_path, image_sets):
    real, synthetic = image_sets
    with pytest.raises(ConfigError, match="--source is for refiners"):
        prepare_run(tmp_path / "a", [{**TINY, "model": "dcgan"}], DataOptions(real, refine_source=synthetic), False)
    with pytest.raises(ConfigError, match="--source SYNTHETIC is required"):
        prepare_run(tmp_path / "a", [{**TINY, "model": "simgan"}], DataOptions(real), False)
    rng = np.random.default_rng(1)
    small = tmp_path / "small.npz"
    np.savez(small, train_images=rng.integers(0, 256, (8, 32, 32), dtype=np.uint8),
             train_labels=np.repeat(np.arange(2), 4).reshape(-1, 1))
    with pytest.raises(DataError, match="32x32x1 but the real ones are 28x28x1"):
        prepare_run(tmp_path / "a", [{**TINY, "model": "unit"}], DataOptions(real, refine_source=str(small)), False)
    three = tmp_path / "three.npz"
    np.savez(three, train_images=rng.integers(0, 256, (9, 28, 28), dtype=np.uint8),
             train_labels=np.repeat(np.arange(3), 3).reshape(-1, 1))
    with pytest.raises(DataError, match="differ from the real data's"):
        prepare_run(tmp_path / "a", [{**TINY, "model": "munit"}], DataOptions(real, refine_source=str(three)), False)
    assert not (tmp_path / "a").exists()


def test_refine_rejects_bad_input_and_generator_runs(tmp_path, image_sets):
    real, synthetic = image_sets
    train(tmp_path / "run", real, synthetic, model="simgan", steps=1, **SIMGAN_SHORT)
    with pytest.raises(RunError, match="makes no images of its own; apply it with `medsyn refine"):
        write_samples(tmp_path / "run", tmp_path / "samples", n_per_class=1, device="cpu")
    rng = np.random.default_rng(2)
    other = tmp_path / "other.npz"
    np.savez(other, train_images=rng.integers(0, 256, (4, 32, 32), dtype=np.uint8), train_labels=np.zeros((4, 1)))
    with pytest.raises(DataError, match="trained on 28x28x1"):
        write_refined(tmp_path / "run", str(other), tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    state["model"]["role"] = "generator"
    torch.save(state, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(RunError, match="use `medsyn sample`"):
        write_refined(tmp_path / "run", synthetic, tmp_path / "out", device="cpu")


def test_refiners_are_listed_with_their_paper():
    for name in REFINERS:
        spec = MODELS.get(name)
        assert spec.role == "refiner" and "Han et al. 2019" in spec.paper
        build_config(spec.train_defaults)  # the paper's defaults are valid config keys
