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
from typing import Any, Callable, ClassVar, Iterator

from torch import nn

from medsyn.config import Objective
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
    kernel: int = 3  # convolution side, for the models that offer it (lungct-gan)
    pixel_offset: float = 0.0  # added to the [-1, 1] images the networks see (1: the lung-CT paper's [0, 2])
    noise_inputs: bool = False  # StyleGAN's per-pixel noise after the generator's convolutions (sngan)


class Conditioning(StrEnum):
    NEVER = "never"  # unconditional only: labeled output needs one model per class
    OPTIONAL = "optional"  # conditioned on all classes, or one model per class with --per-class
    ALWAYS = "always"  # class-conditional by design


class Role(StrEnum):
    GENERATOR = "generator"  # noise (and labels) -> image: G(z, labels)
    REFINER = "refiner"  # synthetic image -> refined image (simgan, unit, munit)


class GeneratorInputs(StrEnum):
    """What a training step feeds the networks besides noise and labels."""

    NOISE = "noise"  # G(z, labels); D judges single images
    SAME_CLASS_PAIRS = "same-class-pairs"  # gaunet: G(z, labels, real source); D judges [anchor, image] pairs


NetBuilder = Callable[[ImageSpec, NetOptions], nn.Module]
GrowthHook = Callable[[nn.Module, int, int], None]  # (network, step, total_steps): progressive growing


@dataclass(frozen=True)
class ModelSpec:
    """One registered generator GAN: how to build its networks and how the paper trained it.

    Attributes:
        name: registry name used on the command line.
        paper: the paper (and table/section) the defaults follow.
        objective: the paper's adversarial objective (``--set objective=...`` may choose another).
        conditioning: whether the networks take labels.
        build_generator, build_discriminator: factories from the data's ImageSpec.
        train_defaults: TrainConfig fields the paper fixes (optimizer, learning rates, batch, ...).
        size_note: callable(size) -> str or "" describing padding/cropping done at that size.
        inputs: NOISE, or SAME_CLASS_PAIRS: G is called ``G(z, labels, sources)`` with sources
            (N, C, S, S) real images of the class in [-1, 1], and D judges pairs:
            ``D(cat([anchor, x], 1), labels)`` on 2C channels, the anchor another real image of the class.
        growth: called as ``growth(network, step, total_steps)`` on G, D and the EMA generator before
            every training step (pggan's progressive growing); None for networks of one fixed shape.
        own_keys: family tags of the config keys only this model reads (``config.only_for``).
        channels_last: train in the channels-last memory layout, where it was measured faster
            (sngan: 1.45x a step on the 2-core CPU; the DCGAN family's transposed convs are slower in it).
    """

    name: str
    paper: str
    objective: Objective
    conditioning: Conditioning
    build_generator: NetBuilder
    build_discriminator: NetBuilder
    train_defaults: dict[str, Any] = field(default_factory=dict)
    size_note: Callable[[int], str] = lambda size: ""
    inputs: GeneratorInputs = GeneratorInputs.NOISE
    growth: GrowthHook | None = None
    channels_last: bool = False
    own_keys: frozenset[str] = frozenset()  # family tags of config keys only this model reads (e.g. "lungct-gan")
    role: ClassVar[Role] = Role.GENERATOR

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", Objective(self.objective))  # a typo fails at registration

    @property
    def families(self) -> frozenset[str]:
        """Tags of the family-specific config keys this model reads (see config.TrainConfig)."""
        return frozenset({"gan"}) | self.own_keys


@dataclass(frozen=True)
class RefinerSpec:
    """One registered refiner: synthetic image -> refined image (the brain-MRI paper's second step).

    Attributes:
        name, paper, conditioning, train_defaults: as for ModelSpec.
        objective: the family's RefinerObjective class (losses, phases, extra state), models/refiners_*.py.
        build_generator: builds the translator (``translator.refine(images, style)``).
        build_discriminator: builds the module(s) the objective judges with.
        family: tag of the family-specific config keys it reads ("simgan", "unit").
    """

    name: str
    paper: str
    objective: Callable[..., Any]
    conditioning: Conditioning
    build_generator: NetBuilder
    build_discriminator: NetBuilder
    family: str
    train_defaults: dict[str, Any] = field(default_factory=dict)
    size_note: Callable[[int], str] = lambda size: ""
    role: ClassVar[Role] = Role.REFINER

    @property
    def families(self) -> frozenset[str]:
        return frozenset({"refiner", self.family})


AnySpec = ModelSpec | RefinerSpec


MODELS: Registry[AnySpec] = Registry("model")


def register(spec: AnySpec) -> AnySpec:
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
