"""recompute_blocks: the refiners' residual blocks recomputed in the backward (activation
checkpointing) train the same networks as the plain step, batch norm statistics included."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import medsyn.models.refiners_base as refiners_base
from medsyn.config import build_config
from medsyn.errors import ConfigError
from medsyn.models import MODELS
from medsyn.models.refiners_base import recomputed
from medsyn.train.refiner import build_group
from medsyn.train.run import DataOptions, execute_run, prepare_run
from medsyn.train.setup import resolve_config

pytestmark = pytest.mark.usefixtures("one_thread")

SIMGAN_SHORT = {"pretrain_steps": 1, "refiner_steps": 2, "history_size": 4}  # every phase within 4 steps
TINY_RUN = {"width": 0.0625, "batch": 2, "log_every": 1, "ckpt_every": 2, "grid_every": 2, "device": "cpu"}


def _trained_group(name: str, recompute: bool, steps: int = 4, size: int = 20, **overrides):
    """A tiny refiner trained ``steps`` steps on fixed images, its networks seeded alike."""
    spec = MODELS.get(name)
    cfg = build_config(spec.train_defaults, {"width": 0.0625, "batch": 3, "recompute_blocks": recompute, **overrides})
    torch.manual_seed(0)
    group = build_group(spec, cfg, size, 1, torch.device("cpu"),
                        lambda params, lr: torch.optim.Adam(list(params), lr=1e-2))  # big steps: differences show
    images = torch.Generator().manual_seed(1)
    synthetic = torch.rand(cfg.batch, 1, size, size, generator=images) * 2 - 1
    real = torch.rand(cfg.batch, 1, size, size, generator=images) * 2 - 1
    for step in range(steps):
        torch.manual_seed(100 + step)  # as the trainer re-seeds every step: UNIT's VAE noise, MUNIT's styles
        group.train_step(step, synthetic, real)
    return group


def _state(group) -> dict[str, torch.Tensor]:
    o = group.objective
    return {**{f"G.{k}": v for k, v in o.translator.state_dict().items()},
            **{f"D.{k}": v for k, v in o.discriminator.state_dict().items()}}


def _count_recomputed(monkeypatch) -> list[int]:
    calls = [0]
    original = refiners_base.checkpoint

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(refiners_base, "checkpoint", counted)
    return calls


@pytest.mark.parametrize("name", ["simgan", "unit", "munit"])
def test_recomputed_blocks_give_the_plain_step(monkeypatch, name):
    """Parameters and buffers (SimGAN's batch norm running statistics and batch counts) after
    four steps, with every phase: SimGAN's pretraining, refiner and discriminator updates; UNIT's
    and MUNIT's decoders run once per stream, each with its own (MUNIT: AdaIN) parameters."""
    extra = SIMGAN_SHORT if name == "simgan" else {}
    plain = _state(_trained_group(name, False, **extra))
    calls = _count_recomputed(monkeypatch)
    recomputing = _state(_trained_group(name, True, **extra))
    assert calls[0] > 0  # the blocks were checkpointed
    assert plain.keys() == recomputing.keys()
    for key, value in plain.items():
        if value.is_floating_point():
            assert torch.allclose(value, recomputing[key], rtol=0, atol=1e-5), key
        else:
            assert torch.equal(value, recomputing[key]), key  # num_batches_tracked: one update per forward
    # not vacuous: four steps move the weights far more than the tolerance, and the statistics too
    start = _state(_trained_group(name, False, steps=0, **extra))
    assert max((plain[k] - start[k]).abs().max().item() for k in plain if plain[k].is_floating_point()) > 1e-2
    if name == "simgan":
        assert any("running_mean" in k and not torch.equal(plain[k], start[k]) for k in plain)


def test_recomputation_replays_dropout_and_keeps_batch_norm_statistics():
    """The helper itself, on a block with random numbers and batch norm."""
    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Conv2d(4, 2, 1))

    x = torch.randn(3, 2, 8, 8)
    results = []
    for recompute in (False, True):
        block = make()
        torch.manual_seed(7)
        out = recomputed(block, x, state=block) if recompute else block(x)
        after_forward = [b.clone() for b in block.buffers()]
        out.square().sum().backward()
        assert all(torch.equal(a, b) for a, b in zip(after_forward, block.buffers()))  # the backward left them
        results.append((out.detach(), [p.grad for p in block.parameters()], list(block.buffers())))
    (out_a, grads_a, buffers_a), (out_b, grads_b, buffers_b) = results
    assert torch.equal(out_a, out_b)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads_a, grads_b))  # the same dropout mask
    assert all(torch.equal(a, b) for a, b in zip(buffers_a, buffers_b))


def test_recompute_blocks_is_a_refiner_key_on_where_the_paper_size_needs_it():
    """SimGAN and MUNIT exceed 6 GB without it (docs/speed.md); UNIT does not."""
    assert resolve_config({"model": "simgan"})[0].recompute_blocks
    assert resolve_config({"model": "munit"})[0].recompute_blocks
    assert resolve_config({"model": "unit"})[0].recompute_blocks is False
    assert resolve_config({"model": "simgan", "recompute_blocks": "false"})[0].recompute_blocks is False
    assert resolve_config({"model": "unit", "recompute_blocks": True})[0].recompute_blocks
    with pytest.raises(ConfigError, match="recompute_blocks is a setting of refiners"):
        resolve_config({"model": "dcgan", "recompute_blocks": True})


@pytest.fixture
def image_sets(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name in ("real", "synthetic"):
        path = tmp_path / f"{name}.npz"
        np.savez(path, train_images=rng.integers(0, 256, (8, 20, 20), dtype=np.uint8),
                 train_labels=np.repeat(np.arange(2), 4).reshape(-1, 1))
        paths.append(str(path))
    return paths


def _run(run_dir, data, resume=False, **overrides):
    options = None if resume else DataOptions(data[0], refine_source=data[1])
    prepared = prepare_run(run_dir, [{**TINY_RUN, **overrides}], options, resume=resume)
    execute_run(prepared)
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def test_a_run_resumes_with_recompute_blocks_switched(tmp_path, image_sets):
    """It changes how a step runs, not what it learns: a plain run resumed with recomputation
    equals a plain run of the same length (to float rounding), and no key-change error."""
    straight = _run(tmp_path / "straight", image_sets, model="simgan", steps=4, recompute_blocks=False, **SIMGAN_SHORT)
    _run(tmp_path / "split", image_sets, model="simgan", steps=2, recompute_blocks=False, **SIMGAN_SHORT)
    resumed = _run(tmp_path / "split", image_sets, resume=True, steps=4, recompute_blocks=True)
    assert resumed["config"]["recompute_blocks"] is True and resumed["step"] == 4
    for a, b in zip(straight["refiners"], resumed["refiners"], strict=True):
        for net in ("generator", "discriminator"):
            for key, value in a[net].items():
                assert torch.allclose(value.float(), b[net][key].float(), rtol=0, atol=1e-5), (net, key)
