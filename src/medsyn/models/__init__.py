"""GAN generators and discriminators, one file per family, all reachable by name through MODELS.

Importing this package imports every family module, which registers its models:
dcgan, acgan, wgan, wgan-gp (dcgan.py), gan, cgan (mlp.py), lungct-gan (lungct.py), gaunet (gaunet.py)
and pggan (pggan.py).
"""
from __future__ import annotations

from torch import nn

from medsyn.models import dcgan, gaunet, lungct, mlp, pggan, sngan  # noqa: F401  (imported for registration)
from medsyn.models import refiners_simgan, refiners_unit  # noqa: F401  (refiners, synthetic -> refined image)
from medsyn.models.base import MODELS, Conditioning, ImageSpec, ModelSpec, NetOptions

__all__ = [
    "MODELS",
    "Conditioning",
    "ImageSpec",
    "ModelSpec",
    "NetOptions",
    "create_discriminator",
    "create_generator",
]


def create_generator(name: str, spec: ImageSpec, options: NetOptions) -> nn.Module:
    """Build the generator of a registered model for the given data.

    Args:
        name: registry name, e.g. "dcgan".
        spec: image size, channels and classes of the data (0 classes = unconditional).
        options: z_dim and the channel multiplier.

    Returns:
        ``G`` with ``G(z, labels) -> (N, C, S, S)`` and attribute ``G.z_dim``.

    Raises:
        ConfigError: unknown name (with a did-you-mean hint), or a spec the model cannot serve.
    """
    return MODELS.get(name).build_generator(spec, options)


def create_discriminator(name: str, spec: ImageSpec, options: NetOptions) -> nn.Module:
    """Build the discriminator (or critic) of a registered model for the given data.

    Args:
        name: registry name, e.g. "dcgan".
        spec: image size, channels and classes of the data (0 classes = unconditional).
        options: the channel multiplier (z_dim is unused).

    Returns:
        ``D`` with ``D(x, labels) -> (score (N,), class_logits (N, K) or None)``.

    Raises:
        ConfigError: unknown name (with a did-you-mean hint), or a spec the model cannot serve.
    """
    return MODELS.get(name).build_discriminator(spec, options)
