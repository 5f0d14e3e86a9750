"""micro_batch: the discriminator judges a step's batch in passes, and the update is the whole batch's."""
from __future__ import annotations

import pytest
import torch

from medsyn.errors import ConfigError
from medsyn.models import MODELS
from medsyn.train.micro_batch import pass_multiple, passes
from medsyn.train.run import DataOptions, execute_run, prepare_run

TINY = {"width": 0.0625, "batch": 8, "log_every": 1, "ckpt_every": 100, "grid_every": 100, "device": "cpu",
        "steps": 2, "amp": False}

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(run_dir, data, **overrides):
    execute_run(prepare_run(run_dir, [{**TINY, **overrides}], DataOptions(data), resume=False))
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)


def _max_difference(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].is_floating_point())


def test_passes_cover_the_batch_in_order():
    assert passes(10, None) == [slice(0, 10)]
    assert passes(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]


@pytest.mark.parametrize("options", [{}, {"lecam": 0.3}], ids=["plain", "lecam"])
def test_passes_give_the_whole_batch_update(tmp_path, make_npz, options):
    """WGAN-GP's layer-norm critic, with the gradient penalty on each pass's interpolates; LeCam's
    anchors move once per update, from the whole batch's mean scores."""
    data = make_npz()
    whole = _train(tmp_path / "whole", data, model="wgan-gp", **options)
    split = _train(tmp_path / "split", data, model="wgan-gp", micro_batch=2, **options)
    if options:
        assert _max_difference(whole["loss"]["lecam"], split["loss"]["lecam"]) < 1e-5
    # Float sums in another order differ by ~1e-7; Adam divides each gradient by its own running
    # scale, so where a gradient is near zero that rounding can move a weight by a good part of
    # a step (1e-4 here): bound the difference against what one step moves the weights.
    shorter = _train(tmp_path / "short", data, model="wgan-gp", steps=1, **options)
    moved = _max_difference(whole["generator"], shorter["generator"])
    assert moved > 1e-3  # not vacuous: a step moves the weights far more than the passes changed them
    for net in ("generator", "discriminator"):
        assert _max_difference(whole[net], split[net]) < 1e-3 * moved, net


def test_spectral_norm_and_r1_passes_stay_close(tmp_path, make_npz):
    """Spectral norm's power iteration runs once per forward, so passes refine sigma a little more
    than one whole-batch forward: close to, not equal to, the whole batch's update."""
    data, options = make_npz(), {"model": "sngan", "objective": "hinge", "r1": 1.0, "r1_every": 1}
    whole = _train(tmp_path / "whole", data, **options)
    split = _train(tmp_path / "split", data, micro_batch=4, **options)
    shorter = _train(tmp_path / "short", data, steps=1, **options)
    moved = _max_difference(whole["generator"], shorter["generator"])
    assert _max_difference(whole["generator"], split["generator"]) < 0.2 * moved


def test_gaunet_pairs_are_split_with_their_anchors(tmp_path, make_npz):
    state = _train(tmp_path / "run", make_npz(), model="gaunet", micro_batch=4, steps=1)
    assert state["step"] == 1
    assert all(torch.isfinite(v).all() for v in state["generator"].values() if v.is_floating_point())


def test_batch_norm_discriminators_are_refused(tmp_path, make_npz):
    with pytest.raises(ConfigError, match="batch norm"):
        _train(tmp_path / "run", make_npz(), model="dcgan", micro_batch=4, per_class=False)


def test_pggan_passes_keep_minibatch_groups_whole(tmp_path, make_npz):
    from medsyn.models.base import ImageSpec, NetOptions
    from medsyn.models import create_discriminator

    assert pass_multiple(create_discriminator("pggan", ImageSpec(32, 1, 2), NetOptions(width=0.0625))) == 4
    with pytest.raises(ConfigError, match="multiple of 4"):
        _train(tmp_path / "run", make_npz(), model="pggan", micro_batch=6)


def test_micro_batch_must_be_positive():
    from medsyn.config import TrainConfig

    with pytest.raises(ConfigError, match="micro_batch"):
        TrainConfig(micro_batch=0)

