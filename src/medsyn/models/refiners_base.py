"""The contract of refiners (synthetic image -> refined image) and of their objectives.

A refiner run trains on two image sets: synthetic images (e.g. a ``medsyn sample`` folder) and
real ones. The "generator" of a refiner spec is a translator module with

* ``translator.refine(synthetic, style) -> refined``: images (N, C, S, S) in [-1, 1] to images of
  the same shape; ``style`` is (N, translator.style_dim) for stochastic translators (MUNIT) and
  None otherwise (``style_dim == 0``);

and its "discriminator" is whatever module(s) the family's objective judges with. A family's
objective (``RefinerSpec.objective``) says which updates a step makes, in which order
(``phases``), and computes each one's loss (``loss``); like the generator GANs' loss objects it
never touches an optimiser: the trainer (medsyn.train.refiner) owns the optimisers and steps them.
"""
from __future__ import annotations

import abc
from enum import StrEnum
from typing import Any, Callable

import torch
from torch import Tensor, nn

from medsyn.config import TrainConfig

CriticInput = Callable[[Tensor], Tensor]  # applied to every image batch a discriminator judges (DiffAugment)


class Phase(StrEnum):
    TRANSLATOR = "translator"  # an update of the refining network(s): optimiser opt_g
    DISCRIMINATOR = "discriminator"  # an update of the discriminator(s): optimiser opt_d


class RefinerObjective(abc.ABC):
    """One refiner family's losses, its update schedule and any training state of its own.

    Args:
        translator: the refining network(s), with ``refine`` as in the module docstring.
        discriminator: the network(s) the adversarial terms use.
        cfg: the run's config (the family's weights and schedule).
        critic_input: transform applied to every image a discriminator judges, real or refined
            (DiffAugment with ``diffaug``); the identity by default.
    """

    def __init__(self, translator: nn.Module, discriminator: nn.Module, cfg: TrainConfig,
                 critic_input: CriticInput | None = None):
        self.translator, self.discriminator, self.cfg = translator, discriminator, cfg
        self.critic_input: CriticInput = critic_input if critic_input is not None else (lambda images: images)
        self.notices: list[str] = []  # said once, when the run starts (e.g. a loss term that is off)

    @abc.abstractmethod
    def phases(self, step: int) -> tuple[Phase, ...]:
        """The updates of training step ``step``, in the order they run."""

    @abc.abstractmethod
    def loss(self, phase: Phase, step: int, synthetic: Tensor, real: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(loss to minimise, detached stats) of one update on a synthetic and a real batch in [-1, 1]."""

    # ---- state: everything a resumed run needs to continue exactly -------------------------------
    def extra_state(self) -> dict[str, Any]:
        """Training state beyond networks and optimisers (SimGAN: the history buffer)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what ``extra_state`` returned; families without state of their own have nothing to do."""


class ResBlock(nn.Module):
    """x + conv3x3-norm-ReLU-conv3x3-norm(x): the residual block of SimGAN's refiner and UNIT/MUNIT."""

    def __init__(self, channels: int, norm: Callable[[int], nn.Module], relu_after: bool = False,
                 padding_mode: str = "zeros"):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode), norm(channels), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode), norm(channels),
        )
        self.relu_after = relu_after  # SimGAN's block ends in a ReLU after the sum; MUNIT's does not

    def forward(self, x: Tensor) -> Tensor:
        out = x + self.body(x)
        return torch.relu(out) if self.relu_after else out
