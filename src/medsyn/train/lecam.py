"""LeCam regularisation of the discriminator (Tseng et al. 2021, "Regularizing Generative
Adversarial Networks under Limited Data").

With a hundred or so training images the discriminator learns to score those images ever higher
and everything else ever lower: held-out real images end up scored below the generated ones, and
the generator is taught to copy rather than to generalise (docs/quality.md measures this on the
64x64 phantoms). LeCam anchors the two sides to each other: real scores above a moving average of
the fake scores, and fake scores below a moving average of the real scores, are penalised

    R = E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2],   weighted by lambda (``lecam``),

which bounds a LeCam divergence instead of the divergence the loss alone minimises, and
complements DiffAugment (the paper's limited-data BigGAN used lambda 0.3 with DiffAugment
translation and cutout). It works with any objective, as it acts on D's raw scores.

The anchors move once per discriminator update, from the whole update's mean scores (over every
pass of ``micro_batch`` and every torchrun process), so passes and processes train the model
that one process with one pass trains. A penalty uses the anchors from before its update; the
first update, which has none, only sets them.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from medsyn.train.distributed import SINGLE, Distributed

LECAM_DECAY = 0.99  # the paper's moving-average decay of the anchors


class LeCamRegulariser:
    """The penalty term and its two anchors, the loss object's only state.

    Args:
        weight: lambda; the penalty added to the discriminator's loss is ``weight * R``.
        decay: moving-average decay of the anchors per discriminator update.
    """

    def __init__(self, weight: float, decay: float = LECAM_DECAY):
        if weight <= 0 or not 0.0 <= decay < 1.0:
            raise ValueError(f"LeCam needs a positive weight and a decay in [0, 1), got {weight}, {decay}")
        self.weight, self.decay = weight, decay
        self.anchors: Tensor | None = None  # [a_real, a_fake], float32; None before the first update

    def penalty(self, real_score: Tensor, fake_score: Tensor) -> tuple[Tensor | float, dict[str, Tensor]]:
        """``weight * R`` for one pass's scores, and R to log; nothing before the first update."""
        if self.anchors is None:
            return 0.0, {}
        a_real, a_fake = self.anchors.to(real_score.device).unbind()
        reg = (F.relu(real_score.float() - a_fake).square().mean()
               + F.relu(a_real - fake_score.float()).square().mean())
        return self.weight * reg, {"lecam": reg.detach()}

    def update(self, real_mean: Tensor, fake_mean: Tensor, dist: Distributed = SINGLE) -> dict[str, Tensor]:
        """Moves the anchors toward one update's mean real and fake scores (this process's means;
        averaged over processes here, so every process keeps the same anchors)."""
        means = torch.stack([real_mean.detach().float().reshape(()), fake_mean.detach().float().reshape(())])
        means = dist.sum(means) / dist.world_size
        if self.anchors is None:
            self.anchors = means
        else:
            self.anchors = self.decay * self.anchors.to(means.device) + (1 - self.decay) * means
        return {"lecam_anchor_real": self.anchors[0], "lecam_anchor_fake": self.anchors[1]}

    def state_dict(self) -> dict[str, Any]:
        return {"anchors": None if self.anchors is None else self.anchors.detach().cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        anchors = state.get("anchors")
        self.anchors = None if anchors is None else torch.as_tensor(anchors, dtype=torch.float32).clone()
