"""One loss object per GAN objective. The loop only calls ``d_loss``, ``g_loss`` and ``after_d_step``.

Discriminators return ``(score, class_logits)``; ``score`` is a logit for the BCE objectives
(the papers' final sigmoid lives here, in ``softplus``, for numerical stability) and a critic
value for the Wasserstein objectives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsyn.registry import Registry
from medsyn.train.distributed import SINGLE, Distributed


class GanLoss:
    """Base: the non-saturating GAN of Goodfellow et al. (BCE), used by dcgan, gan, cgan, lungct-gan."""

    # Under torchrun each rank holds a shard of the global batch; the Trainer sets these so that
    # noise a loss draws per sample is drawn for the global batch and sharded the same way.
    ctx: Distributed = SINGLE
    blocks: int = 1
    update: int = 0  # index of the critic update in the run (step x critic_steps + phase); the loop sets it

    def uniform_per_sample(self, like: Tensor) -> Tensor:
        """U[0, 1) of shape (N, 1, 1, 1) for this rank's N samples, as a one-process run draws them."""
        full = torch.rand(like.shape[0] * self.ctx.world_size, 1, 1, 1, device=like.device, dtype=like.dtype)
        return self.ctx.shard(full, self.blocks)

    def d_loss(self, D: nn.Module, real: Tensor, fake: Tensor, labels: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        real_score, _ = D(real, labels)
        fake_score, _ = D(fake, labels)
        loss = F.softplus(-real_score).mean() + F.softplus(fake_score).mean()
        return loss, {"loss_d": loss.detach(), "d_real": real_score.detach().mean(), "d_fake": fake_score.detach().mean()}

    def g_loss(self, D: nn.Module, fake: Tensor, labels: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        fake_score, _ = D(fake, labels)
        loss = F.softplus(-fake_score).mean()  # non-saturating: maximise log D(G(z))
        return loss, {"loss_g": loss.detach()}

    def after_d_step(self, D: nn.Module) -> None:
        """Hook after each discriminator update (weight clipping for WGAN)."""


class WassersteinClipLoss(GanLoss):
    """WGAN (Arjovsky et al. 2017), as in the retina paper: critic weights clipped to [-clip, clip]."""

    def __init__(self, clip: float):
        self.clip = clip

    def d_loss(self, D, real, fake, labels):
        real_score, _ = D(real, labels)
        fake_score, _ = D(fake, labels)
        distance = real_score.mean() - fake_score.mean()
        return -distance, {"loss_d": -distance.detach(), "w_distance": distance.detach()}

    def g_loss(self, D, fake, labels):
        fake_score, _ = D(fake, labels)
        loss = -fake_score.mean()
        return loss, {"loss_g": loss.detach()}

    @torch.no_grad()
    def after_d_step(self, D):
        params = [p for p in D.parameters()]
        torch._foreach_clamp_min_(params, -self.clip)
        torch._foreach_clamp_max_(params, self.clip)


DRIFT_WEIGHT = 0.001  # Karras et al. 2018, Appendix A.1: epsilon_drift


class WassersteinGPLoss(WassersteinClipLoss):
    """WGAN-GP (Gulrajani et al. 2017): a penalty on the critic's gradient norm at interpolates.

    With ``drift_weight`` > 0 (objective "wgan-gp-drift", pggan) it adds PGGAN's drift penalty
    ``drift_weight * E[D(x_real)^2]`` (Karras et al. 2018, App. A.1): the Wasserstein loss fixes
    only differences of critic values, so they can wander off zero together; the drift term keeps
    them near it. The brain-MRI paper used PGGAN's code.
    """

    def __init__(self, gp_weight: float, drift_weight: float = 0.0, gp_every: int = 1):
        self.gp_weight, self.drift_weight, self.gp_every = gp_weight, drift_weight, gp_every

    def d_loss(self, D, real, fake, labels):
        real_score, _ = D(real, labels)
        fake_score, _ = D(fake, labels)
        distance = real_score.mean() - fake_score.mean()
        loss, stats = -distance, {"w_distance": distance.detach()}
        if self.update % self.gp_every == 0:  # lazy: every gp_every-th critic update, weighted to match
            penalty = self.gradient_penalty(D, real, fake, labels)
            loss = loss + self.gp_weight * self.gp_every * penalty
            stats["gp"] = penalty.detach()
        if self.drift_weight:
            drift = real_score.float().square().mean()
            loss = loss + self.drift_weight * drift
            stats["drift"] = drift.detach()
        return loss, {"loss_d": loss.detach(), **stats}

    def gradient_penalty(self, D, real, fake, labels) -> Tensor:
        alpha = self.uniform_per_sample(real)
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        score, _ = D(mixed, labels)
        (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
        return (grad.flatten(1).float().norm(2, dim=1) - 1).square().mean()

    def after_d_step(self, D):
        pass


class ACGANLoss(GanLoss):
    """ACGAN (Odena et al. 2017), liver-lesion paper Sec. III-C.

    D maximises Ls + Lc (source and class log-likelihoods); G maximises Lc - Ls, written here in
    the usual non-saturating form (G minimises the BCE of its fakes as "real" plus their class CE).
    """

    def d_loss(self, D, real, fake, labels):
        real_score, real_cls = D(real, labels)
        fake_score, fake_cls = D(fake, labels)
        source = F.softplus(-real_score).mean() + F.softplus(fake_score).mean()
        klass = F.cross_entropy(real_cls.float(), labels) + F.cross_entropy(fake_cls.float(), labels)
        accuracy = (real_cls.argmax(1) == labels).float().mean()
        return source + klass, {"loss_d": (source + klass).detach(), "loss_cls": klass.detach(), "d_acc": accuracy.detach()}

    def g_loss(self, D, fake, labels):
        fake_score, fake_cls = D(fake, labels)
        loss = F.softplus(-fake_score).mean() + F.cross_entropy(fake_cls.float(), labels)
        return loss, {"loss_g": loss.detach()}


LOSSES: Registry = Registry("objective")
LOSSES.register("bce", lambda cfg: GanLoss())
LOSSES.register("wgan-clip", lambda cfg: WassersteinClipLoss(cfg.clip))
LOSSES.register("wgan-gp", lambda cfg: WassersteinGPLoss(cfg.gp_weight, gp_every=cfg.gp_every))
LOSSES.register("wgan-gp-drift", lambda cfg: WassersteinGPLoss(cfg.gp_weight, DRIFT_WEIGHT, cfg.gp_every))
LOSSES.register("acgan", lambda cfg: ACGANLoss())


def build_loss(objective: str, cfg) -> GanLoss:
    return LOSSES.get(objective)(cfg)
