"""One loss object per GAN objective; the trainer calls ``d_loss``, ``g_loss`` and ``after_d_update``.

Discriminators return ``(score, class_logits)``; ``score`` is a logit for BCE (the papers' final
sigmoid lives here, in ``softplus``, for numerical stability), a margin score for hinge and a critic
value for the Wasserstein objectives. Terms that do not depend on the objective are added by the
base class: the auxiliary class cross-entropy whenever the discriminator has a classifier head
(ACGAN, Odena et al. 2017), the R1 penalty when ``r1`` > 0 and LeCam's when ``lecam`` > 0.

Nothing is set on a loss object from outside: what changes from one update to the next (which
critic update this is, how the batch is sharded under torchrun) arrives as a ``StepContext``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from medsyn.config import Objective, TrainConfig
from medsyn.registry import Registry
from medsyn.train.distributed import SINGLE, Distributed
from medsyn.train.lecam import LeCamRegulariser

Critic = Callable[[Tensor, Tensor | None], tuple[Tensor, Tensor | None]]  # D as a loss calls it
Stats = dict[str, Tensor]

DRIFT_WEIGHT = 0.001  # Karras et al. 2018, Appendix A.1: epsilon_drift


@dataclass(frozen=True)
class StepContext:
    """Where a discriminator (or generator) update stands in the run.

    Attributes:
        update: index of the critic update in the run (step x critic_steps + phase); lazy
            regularisers run when it is a multiple of their interval.
        dist: the torchrun process this is (SINGLE outside torchrun).
        blocks: equal blocks in the global batch (one per class in per-class mode), for sharding.
    """

    update: int = 0
    dist: Distributed = SINGLE
    blocks: int = 1

    def uniform(self, n: int, k: int, device: torch.device) -> Tensor:
        """U[0, 1) of shape (n, k) for this rank's n samples, as a one-process run draws them."""
        full = torch.rand(n * self.dist.world_size, k, device=device)
        return self.dist.shard(full, self.blocks)


class GanLoss(ABC):
    """Base of every objective: the adversarial terms come from the subclass; this adds the
    auxiliary classifier, R1 and LeCam terms, which do not depend on the objective.

    Args:
        r1: R1 weight gamma (penalty gamma/2 E|grad_x D(x_real)|^2); 0 turns it off.
        r1_every: compute R1 on every r1_every-th critic update only, weighted r1_every times.
        lecam: LeCam weight lambda (medsyn.train.lecam); 0 turns it off.
    """

    def __init__(self, r1: float = 0.0, r1_every: int = 1, lecam: float = 0.0):
        self.r1, self.r1_every = r1, r1_every
        self.lecam = LeCamRegulariser(lecam) if lecam > 0 else None

    # ---- what an objective defines ---------------------------------------------------------------
    @abstractmethod
    def critic_terms(self, real_score: Tensor, fake_score: Tensor) -> tuple[Tensor, Stats]:
        """The critic's adversarial loss from its scores of real and generated images, and its statistics."""

    @abstractmethod
    def generator_term(self, fake_score: Tensor) -> Tensor:
        """The generator's adversarial loss from the critic's scores of generated images."""

    def penalties(self, critic: Critic, real: Tensor, fake: Tensor, labels: Tensor | None, real_score: Tensor,
                  step: StepContext) -> tuple[Tensor | float, Stats]:
        """Objective-specific regularisers of the critic (the gradient penalty, the drift term)."""
        return 0.0, {}

    # ---- after each discriminator update: LeCam's anchors, WGAN's clipping -----------------------
    def after_d_update(self, D: torch.nn.Module, stats: Stats, dist: Distributed = SINGLE) -> Stats:
        """The one hook after each discriminator update, given D and the update's statistics (the
        whole batch's mean ``d_real`` and ``d_fake`` on this process): moves LeCam's anchors;
        subclasses that act on D's weights (WGAN's clipping) extend it. Returns what to log."""
        if self.lecam is None:
            return {}
        return self.lecam.update(stats["d_real"], stats["d_fake"], dist)

    def state_dict(self) -> dict[str, Any]:
        return {} if self.lecam is None else {"lecam": self.lecam.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.lecam is not None and "lecam" in state:
            self.lecam.load_state_dict(state["lecam"])

    # ---- what the trainer calls --------------------------------------------------------------------
    def d_loss(self, critic: Critic, real: Tensor, fake: Tensor, labels: Tensor | None,
               step: StepContext = StepContext()) -> tuple[Tensor, Stats]:
        r1_due = self.r1 > 0 and step.update % self.r1_every == 0
        if r1_due:
            real = real.detach().requires_grad_(True)
        real_score, real_cls = critic(real, labels)
        fake_score, fake_cls = critic(fake, labels)
        loss, stats = self.critic_terms(real_score, fake_score)
        stats.update(d_real=real_score.detach().float().mean(), d_fake=fake_score.detach().float().mean())
        penalty, penalty_stats = self.penalties(critic, real, fake, labels, real_score, step)
        loss = loss + penalty
        stats.update(penalty_stats)
        if self.lecam is not None:
            penalty, penalty_stats = self.lecam.penalty(real_score, fake_score)
            loss = loss + penalty
            stats.update(penalty_stats)
        if real_cls is not None:
            klass = F.cross_entropy(real_cls.float(), labels) + F.cross_entropy(fake_cls.float(), labels)
            loss = loss + klass
            stats.update(loss_cls=klass.detach(), d_acc=(real_cls.argmax(1) == labels).float().mean().detach())
        if r1_due:
            (grad,) = torch.autograd.grad(real_score.float().sum(), real, create_graph=True)
            r1 = grad.flatten(1).float().square().sum(1).mean()
            loss = loss + self.r1 / 2 * self.r1_every * r1
            stats["r1"] = r1.detach()
        # mean sign of D on real images: ADA's overfitting heuristic r_t (Karras et al. 2020, Eq. 1)
        stats["real_sign"] = real_score.detach().float().sign().mean()
        return loss, {"loss_d": loss.detach(), **stats}

    def g_loss(self, critic: Critic, fake: Tensor, labels: Tensor | None,
               step: StepContext = StepContext()) -> tuple[Tensor, Stats]:
        fake_score, fake_cls = critic(fake, labels)
        loss = self.generator_term(fake_score)
        if fake_cls is not None:
            loss = loss + F.cross_entropy(fake_cls.float(), labels)
        return loss, {"loss_g": loss.detach()}


class NonSaturatingLoss(GanLoss):
    """The GAN of Goodfellow et al. (BCE), as the papers' dcgan, gan, cgan, lungct-gan and acgan use it."""

    def critic_terms(self, real_score, fake_score):
        return F.softplus(-real_score).mean() + F.softplus(fake_score).mean(), {}

    def generator_term(self, fake_score):
        return F.softplus(-fake_score).mean()  # non-saturating: maximise log D(G(z))


class HingeLoss(GanLoss):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): D pushes real scores above 1 and fakes below -1."""

    def critic_terms(self, real_score, fake_score):
        return F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean(), {}

    def generator_term(self, fake_score):
        return -fake_score.mean()


class WassersteinLoss(GanLoss):
    """The Wasserstein critic objective (Arjovsky et al. 2017); a Lipschitz constraint comes from a subclass."""

    def critic_terms(self, real_score, fake_score):
        distance = real_score.mean() - fake_score.mean()
        return -distance, {"w_distance": distance.detach()}

    def generator_term(self, fake_score):
        return -fake_score.mean()


class WeightClippingLoss(WassersteinLoss):
    """WGAN as in the retina paper: critic weights clipped to [-clip, clip] after every update."""

    def __init__(self, clip: float, **regularisers):
        super().__init__(**regularisers)
        self.clip = clip

    def after_d_update(self, D: torch.nn.Module, stats: Stats, dist: Distributed = SINGLE) -> Stats:
        with torch.no_grad():
            params = list(D.parameters())
            torch._foreach_clamp_min_(params, -self.clip)
            torch._foreach_clamp_max_(params, self.clip)
        return super().after_d_update(D, stats, dist)


class GradientPenaltyLoss(WassersteinLoss):
    """WGAN-GP (Gulrajani et al. 2017): a penalty on the critic's gradient norm at interpolates.

    With ``drift_weight`` > 0 (objective "wgan-gp-drift", pggan) it adds PGGAN's drift penalty
    ``drift_weight * E[D(x_real)^2]`` (Karras et al. 2018, App. A.1): the Wasserstein loss fixes
    only differences of critic values, so they can wander off zero together; the drift term keeps
    them near it. The brain-MRI paper used PGGAN's code.

    Args:
        gp_weight: lambda of the penalty.
        drift_weight: epsilon_drift (0: no drift term).
        gp_every: the penalty on every gp_every-th critic update, weighted gp_every times (lazy).
    """

    def __init__(self, gp_weight: float, drift_weight: float = 0.0, gp_every: int = 1, **regularisers):
        super().__init__(**regularisers)
        self.gp_weight, self.drift_weight, self.gp_every = gp_weight, drift_weight, gp_every

    def penalties(self, critic, real, fake, labels, real_score, step):
        loss, stats = 0.0, {}
        if step.update % self.gp_every == 0:  # lazy: every gp_every-th critic update, weighted to match
            penalty = self.gradient_penalty(critic, real.detach(), fake, labels, step)
            loss = loss + self.gp_weight * self.gp_every * penalty
            stats["gp"] = penalty.detach()
        if self.drift_weight:
            drift = real_score.float().square().mean()
            loss = loss + self.drift_weight * drift
            stats["drift"] = drift.detach()
        return loss, stats

    def gradient_penalty(self, critic: Critic, real: Tensor, fake: Tensor, labels: Tensor | None,
                         step: StepContext) -> Tensor:
        alpha = step.uniform(real.shape[0], 1, real.device).to(real.dtype).view(-1, 1, 1, 1)
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        score, _ = critic(mixed, labels)
        (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
        return (grad.flatten(1).float().norm(2, dim=1) - 1).square().mean()


LOSSES: Registry[Callable[[TrainConfig, dict], GanLoss]] = Registry("objective")
LOSSES.register(Objective.BCE, lambda cfg, reg: NonSaturatingLoss(**reg))
LOSSES.register(Objective.HINGE, lambda cfg, reg: HingeLoss(**reg))
LOSSES.register(Objective.WGAN_CLIP, lambda cfg, reg: WeightClippingLoss(cfg.clip, **reg))
LOSSES.register(Objective.WGAN_GP, lambda cfg, reg: GradientPenaltyLoss(cfg.gp_weight, gp_every=cfg.gp_every, **reg))
LOSSES.register(Objective.WGAN_GP_DRIFT,
                lambda cfg, reg: GradientPenaltyLoss(cfg.gp_weight, DRIFT_WEIGHT, cfg.gp_every, **reg))


def objective_families(objective: Objective) -> frozenset[str]:
    """Config-key tags an objective reads (see config.only_for)."""
    return frozenset({
        Objective.WGAN_CLIP: {"weight-clipping"},
        Objective.WGAN_GP: {"gradient-penalty"},
        Objective.WGAN_GP_DRIFT: {"gradient-penalty"},
    }.get(objective, set()))


def build_loss(objective: Objective | str, cfg: TrainConfig) -> GanLoss:
    """The loss object of ``objective`` with the run's regularisers (R1, LeCam)."""
    return LOSSES.get(str(objective))(cfg, {"r1": cfg.r1, "r1_every": cfg.r1_every, "lecam": cfg.lecam})
