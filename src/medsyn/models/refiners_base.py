"""The contract of refiners (synthetic image -> refined image) and the registry of their objectives.

A refiner run trains on two image sets: synthetic images (e.g. a ``medsyn sample`` folder) and
real ones. The "generator" of a refiner spec is a translator module with

* ``translator.refine(synthetic, style) -> refined``: images (N, C, S, S) in [-1, 1] to images of
  the same shape; ``style`` is (N, translator.style_dim) for stochastic translators (MUNIT) and
  None otherwise (``style_dim == 0``);

and its "discriminator" is whatever module(s) the family's objective judges with. Everything about
how the two are trained (losses, phases, buffers) lives in one objective object per family,
registered in REFINER_OBJECTIVES under ``ModelSpec.objective``; the training loop
(``medsyn.train.refine_loop``) only calls ``train_step`` and keeps the state.
"""
from __future__ import annotations

import abc
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from medsyn.config import TrainConfig
from medsyn.registry import Registry

# (parameters, learning rate) -> optimiser; the loop supplies it, so models/ does not import train/
MakeOptimizer = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]


class RefinerObjective(abc.ABC):
    """One refiner family's training: owns the translator, discriminator(s), their optimisers and losses.

    Args:
        translator: the refining network(s), with ``refine`` as in the module docstring.
        discriminator: the network(s) the adversarial terms use.
        cfg: the run's config (learning rates and the family's weights).
        make_optimizer: builds an optimiser from parameters and a learning rate.
    """

    def __init__(self, translator: nn.Module, discriminator: nn.Module, cfg: TrainConfig, make_optimizer: MakeOptimizer):
        self.translator, self.discriminator, self.cfg = translator, discriminator, cfg
        self.opt_g = make_optimizer(translator.parameters(), cfg.lr_g)
        self.opt_d = make_optimizer(discriminator.parameters(), cfg.lr_d)
        self.notices: list[str] = []  # said once, when the run starts (e.g. a loss term that is off)

    def set_lr_scale(self, scale: float) -> None:
        for opt, base in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * scale

    @abc.abstractmethod
    def train_step(self, step: int, synthetic: Tensor, real: Tensor) -> dict[str, Tensor]:
        """One training step on a synthetic and a real batch (both in [-1, 1]); returns detached stats."""

    @staticmethod
    def update(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # ---- state: everything a resumed run needs to continue exactly -------------------------------
    def extra_state(self) -> dict[str, Any]:
        """Training state beyond networks and optimisers (SimGAN: the history buffer)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.translator.state_dict(), "discriminator": self.discriminator.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(), "extra": self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.translator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.load_extra_state(state["extra"])


REFINER_OBJECTIVES: Registry[type[RefinerObjective]] = Registry("refiner objective")


def register_objective(name: str):
    def decorate(cls: type[RefinerObjective]) -> type[RefinerObjective]:
        REFINER_OBJECTIVES.register(name, cls)
        return cls
    return decorate


def build_objective(name: str, translator: nn.Module, discriminator: nn.Module, cfg: TrainConfig,
                    make_optimizer: MakeOptimizer) -> RefinerObjective:
    return REFINER_OBJECTIVES.get(name)(translator, discriminator, cfg, make_optimizer)


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
