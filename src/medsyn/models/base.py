"""The contract every GAN family in medsyn follows, and the model registry.

A generator is called as ``G(z, labels) -> images`` with ``z`` of shape (N, G.z_dim) and
``labels`` an int64 tensor (N,) or None for an unconditional model; images are (N, C, H, W)
at exactly ``spec.size`` (architectures that need another size render at their native size
and centre-crop, and say so in ``ModelSpec.size_note``).

A discriminator is called as ``D(images, labels) -> (score, class_logits)``: ``score`` is (N,)
raw logits (the sigmoid of the papers lives inside the BCE loss, for numerical stability) or
critic values; ``class_logits`` is (N, num_classes) for models with an auxiliary classifier
(ACGAN) and None otherwise.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Iterator

from torch import nn

from medsyn.registry import Registry


@dataclass(frozen=True)
class ImageSpec:
    """What the data dictates to a network: side length, channels, classes (0 = unconditional)."""

    size: int
    channels: int
    num_classes: int


@dataclass(frozen=True)
class NetOptions:
    """Architecture knobs that are not given by the data."""

    z_dim: int = 100  # latent length; all five papers use 100
    width: float = 1.0  # multiplies every channel count; 1.0 is the paper's network, tests use ~0.0625


class Conditioning(StrEnum):
    NEVER = "never"  # unconditional only: labeled output needs one model per class
    OPTIONAL = "optional"  # conditioned on all classes, or one model per class with --per-class
    ALWAYS = "always"  # class-conditional by design


NetBuilder = Callable[[ImageSpec, NetOptions], nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """One registered GAN: how to build its networks and how the paper trained it.

    Attributes:
        name: registry name used on the command line.
        paper: the paper (and table/section) the defaults follow.
        objective: name of the loss object in ``medsyn.train.losses`` ("bce", "wgan-clip", "wgan-gp", "acgan").
        conditioning: whether the networks take labels.
        build_generator, build_discriminator: factories from the data's ImageSpec.
        train_defaults: TrainConfig fields the paper fixes (optimizer, learning rates, batch, ...).
        size_note: callable(size) -> str or "" describing padding/cropping done at that size.
        image_input: G needs a real image of the same class: it is called ``G(z, labels, sources)``
            with sources (N, C, S, S) in [-1, 1], and D judges pairs: ``D(cat([anchor, x], 1), labels)``
            on 2C channels, the anchor another real image of the class.
    """

    name: str
    paper: str
    objective: str
    conditioning: Conditioning
    build_generator: NetBuilder
    build_discriminator: NetBuilder
    train_defaults: dict[str, Any] = field(default_factory=dict)
    size_note: Callable[[int], str] = lambda size: ""
    role: str = "generator"  # "generator": G(z, labels); "refiner": synthetic image -> refined image (simgan, unit, munit)
    image_input: bool = False


MODELS: Registry[ModelSpec] = Registry("model")


def register(spec: ModelSpec) -> ModelSpec:
    return MODELS.register(spec.name, spec)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No parameter gradients for ``module`` from forwards run inside the block.

    A generator's loss goes through D, but only G's parameters are stepped: D's weight gradients
    would be computed and thrown away (a third of D's backward), and under torchrun all-reduced too.
    Autograd records at forward time which tensors need gradients, so the backward may run after
    the block.
    """
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
