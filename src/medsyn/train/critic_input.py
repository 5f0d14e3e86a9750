"""What the discriminator sees: DiffAugment and ADA in front of every discriminator call.

Both augment real and generated images alike, in the D step and the G step (and WGAN-GP's
interpolates and R1's reals, which go through the same critic), so the generator is trained
against a discriminator of augmented images and learns the un-augmented distribution: the
transforms are differentiable, and a generator that drew augmented images would be told apart
by the augmented discriminator (Zhao et al. 2020, Karras et al. 2020).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from medsyn.augment.adaptive import AdaptiveAugment
from medsyn.augment.differentiable import DiffAugment
from medsyn.config import TrainConfig
from medsyn.train.distributed import Distributed

ADA_INTERVAL = 4  # discriminator updates between adjustments of p (StyleGAN2-ADA: 4)


class CriticAugment:
    """DiffAugment (fixed policy) then ADA (adaptive probability p); the identity when neither is set.

    Args:
        diffaug: the DiffAugment transform, or None.
        ada: the adaptive pipeline, or None.
    """

    def __init__(self, diffaug: DiffAugment | None = None, ada: AdaptiveAugment | None = None):
        self.diffaug, self.ada = diffaug, ada

    @classmethod
    def from_config(cls, cfg: TrainConfig, channels: int, images_per_input: int,
                    uniform: Callable[[int, int, torch.device], Tensor]) -> "CriticAugment":
        """From ``diffaug`` and ``ada_target``; ``images_per_input`` is 2 for pair critics (gaunet),
        whose input holds two images of ``channels`` channels each, transformed alike."""
        diffaug = DiffAugment(cfg.diffaug, channels_per_image=channels, uniform=uniform) if cfg.diffaug else None
        ada = None
        if cfg.ada_target is not None:
            ada = AdaptiveAugment(channels * images_per_input, target=cfg.ada_target,
                                  speed_images=int(cfg.ada_kimg * 1000), interval=ADA_INTERVAL, uniform=uniform,
                                  channels_per_image=channels)
        return cls(diffaug, ada)

    def __call__(self, images: Tensor) -> Tensor:
        if self.diffaug is not None:
            images = self.diffaug(images)
        if self.ada is not None:
            images = self.ada(images)
        return images

    def after_d_update(self, stats: dict[str, Tensor], real_count: int, d_updates: int, images_per_update: int,
                       ctx: Distributed) -> dict[str, Tensor]:
        """Feed ADA the update's mean sign of D on this process's ``real_count`` real images; adjust p
        every ADA_INTERVAL updates (``images_per_update``: the global batch).

        Returns the stats to log ({"ada_p", and "ada_rt" when adjusted}), empty without ADA.
        """
        if self.ada is None:
            return {}
        self.ada.observe_mean(stats["real_sign"], real_count)
        out = {}
        if self.ada.due(d_updates):
            reduce = ctx.sum if ctx.enabled else None
            adjusted = self.ada.adjust(images_per_update * ADA_INTERVAL, reduce=reduce)
            out["ada_rt"] = torch.tensor(adjusted["ada_rt"])
        out["ada_p"] = torch.tensor(self.ada.p)
        return out

    def state_dict(self, ctx: Distributed) -> dict[str, Any]:
        """ADA's p and running statistic (a collective under torchrun: every process calls it)."""
        if self.ada is None:
            return {}
        return {"ada": self.ada.state_dict(reduce=ctx.sum if ctx.enabled else None)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.ada is not None and "ada" in state:
            self.ada.load_state_dict(state["ada"])
