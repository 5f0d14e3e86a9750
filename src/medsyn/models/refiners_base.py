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

``recompute_blocks`` (activation checkpointing): a translator's residual blocks keep only their
inputs during the forward and run again in the backward to get the rest, so a step holds one
block's activations at a time instead of every block's, for one more forward of the blocks.
"""
from __future__ import annotations

import abc
import contextlib
from enum import StrEnum
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

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


def set_recompute_blocks(translator: nn.Module, on: bool) -> None:
    """Turn ``recompute_blocks`` on or off in every part of ``translator`` that has residual blocks."""
    for module in translator.modules():
        if hasattr(module, "recompute_blocks"):
            module.recompute_blocks = on


def recomputing(module: nn.Module) -> bool:
    """Whether ``module``'s blocks are to be recomputed in this forward: asked for, and a training
    forward whose backward will follow (previews and ``medsyn refine`` keep no activations anyway)."""
    return module.recompute_blocks and module.training and torch.is_grad_enabled()


@contextlib.contextmanager
def buffers_kept(module: nn.Module) -> Iterator[None]:
    """``module``'s buffers as they were on entry, whatever runs inside: a recomputed training
    forward must not update batch norm's running statistics (and its batch count) a second time."""
    saved = [buffer.clone() for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in zip(module.buffers(), saved):
                buffer.copy_(value)


def recomputed(function: Callable[..., Tensor], *inputs: Any, state: nn.Module) -> Tensor:
    """``function(*inputs)`` keeping only its inputs for the backward, which runs it again.

    The recomputation draws the forward's random numbers again (``preserve_rng_state``) and leaves
    the buffers of ``state`` (the modules ``function`` runs) as the forward left them, so
    parameters, gradients and running statistics are those of the plain forward.
    """
    return checkpoint(function, *inputs, use_reentrant=False, preserve_rng_state=True,
                      context_fn=lambda: (contextlib.nullcontext(), buffers_kept(state)))


def run_layers(layers: Iterable[nn.Module], x: Tensor, recompute: bool) -> Tensor:
    """``x`` through ``layers`` in order; with ``recompute``, every ResBlock is ``recomputed``."""
    for layer in layers:
        x = recomputed(layer, x, state=layer) if recompute and isinstance(layer, ResBlock) else layer(x)
    return x
