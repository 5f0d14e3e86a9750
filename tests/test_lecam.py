"""LeCam regularisation (``lecam``): the penalty's formula, its anchors, and its place in training."""
from __future__ import annotations

import pytest
import torch

from medsyn.config import TrainConfig
from medsyn.errors import ConfigError
from medsyn.train.lecam import LeCamRegulariser
from medsyn.train.losses import build_loss


def test_penalty_is_the_squared_excess_over_the_other_sides_anchor():
    lecam = LeCamRegulariser(0.5)
    lecam.anchors = torch.tensor([0.2, 0.0])  # a_real, a_fake
    real, fake = torch.tensor([0.5, -1.0]), torch.tensor([0.3, -0.4])
    penalty, stats = lecam.penalty(real, fake)
    # reals above a_fake: (0.5 - 0)^2, the other none -> 0.125; fakes below a_real: (0.2 + 0.4)^2 -> 0.18
    assert stats["lecam"].item() == pytest.approx(0.125 + 0.18)
    assert penalty.item() == pytest.approx(0.5 * 0.305)


def test_the_first_update_sets_the_anchors_and_later_ones_average():
    lecam = LeCamRegulariser(0.3)
    assert lecam.penalty(torch.ones(3), torch.zeros(3)) == (0.0, {})  # no anchors yet: no penalty
    lecam.update(torch.tensor(1.0), torch.tensor(-1.0))
    assert lecam.anchors.tolist() == [1.0, -1.0]
    logged = lecam.update(torch.tensor(2.0), torch.tensor(1.0))
    assert lecam.anchors.tolist() == pytest.approx([0.99 * 1 + 0.01 * 2, 0.99 * -1 + 0.01 * 1])
    assert logged["lecam_anchor_fake"].item() == pytest.approx(-0.98)


def test_anchors_survive_a_state_round_trip():
    a, b = LeCamRegulariser(0.3), LeCamRegulariser(0.3)
    b.load_state_dict(a.state_dict())
    assert b.anchors is None
    a.update(torch.tensor(0.25), torch.tensor(-0.5))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.anchors, b.anchors)


def test_the_loss_adds_lecam_only_when_asked_and_pulls_the_scores_together():
    real = torch.rand(4, 1, 8, 8)
    fake = torch.rand(4, 1, 8, 8)
    weight = torch.tensor(3.0, requires_grad=True)

    def critic(images, labels):  # scores real high and fake low, by how far apart the anchors leave them
        return images.flatten(1).mean(1) * weight * (1 if images is real else -1), None

    plain = build_loss("hinge", TrainConfig(model="sngan"))
    assert plain.lecam is None and plain.state_dict() == {}
    assert plain.after_d_update(torch.nn.Identity(), {"d_real": torch.tensor(1.0), "d_fake": torch.tensor(0.0)}) == {}
    loss = build_loss("hinge", TrainConfig(model="sngan", lecam=0.3))
    _, first = loss.d_loss(critic, real, fake, None)
    assert "lecam" not in first  # the first update only sets the anchors
    loss.after_d_update(torch.nn.Identity(), first)
    assert loss.lecam.anchors.tolist() == pytest.approx([first["d_real"].item(), first["d_fake"].item()])
    total, stats = loss.d_loss(critic, real, fake, None)
    assert stats["lecam"] > 0
    (grad,) = torch.autograd.grad(total - plain.d_loss(critic, real, fake, None)[0], weight)
    assert grad > 0  # the penalty's pull: a larger separation of the scores costs more


def test_weight_clipping_and_lecam_share_the_one_hook_after_each_critic_update():
    """WGAN's clipping extends the base hook, so a clipped critic with LeCam gets both."""
    loss = build_loss("wgan-clip", TrainConfig(model="wgan", clip=0.05, lecam=0.3))
    D = torch.nn.Linear(8, 1)
    torch.nn.init.uniform_(D.weight, -1.0, 1.0)
    assert D.weight.abs().max() > 0.05
    logged = loss.after_d_update(D, {"d_real": torch.tensor(0.7), "d_fake": torch.tensor(-0.2)})
    assert all(p.abs().max() <= 0.05 for p in D.parameters())
    assert loss.lecam.anchors.tolist() == pytest.approx([0.7, -0.2])
    assert set(logged) == {"lecam_anchor_real", "lecam_anchor_fake"}


def test_lecam_is_checked_and_belongs_to_generator_gans(tmp_path, make_npz):
    with pytest.raises(ConfigError, match="lecam"):
        TrainConfig(lecam=-1.0)
    from medsyn.train.run import DataOptions, prepare_run

    with pytest.raises(ConfigError, match="lecam is a setting of generator GANs; simgan does not use it"):
        prepare_run(tmp_path / "run", [{"model": "simgan", "lecam": 0.3, "device": "cpu"}],
                    DataOptions(make_npz()), resume=False)
