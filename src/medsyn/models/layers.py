"""Blocks and helpers shared by the GAN families: channel scaling, DCGAN init, label inputs, D heads."""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsyn.errors import ConfigError
from medsyn.models.base import Conditioning, ImageSpec, NetBuilder, NetOptions

MIN_CHANNELS = 8  # floor for width-scaled layers, so tiny test networks keep a usable width
MIN_SIZE = 16  # every family halves or doubles the image four times at most


def scale_channels(paper_channels: int, width: float) -> int:
    """Channel (or unit) count of a layer: the paper's count times ``width``, at least MIN_CHANNELS."""
    return max(MIN_CHANNELS, round(paper_channels * width))


def round_up(size: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is at least ``size``."""
    return multiple * math.ceil(size / multiple)


def halved(size: int, times: int) -> int:
    """Side length after ``times`` stride-2 convolutions padded by (kernel - 1) / 2: ceil(size / 2) each."""
    for _ in range(times):
        size = (size + 1) // 2
    return size


def init_weights(module: nn.Module) -> nn.Module:
    """DCGAN initialisation, used by all the papers: N(0, 0.02) weights, BN scale N(1, 0.02), zero biases.

    Embeddings are left to the module that owns them (their scale depends on how they are used).
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(layer.weight, 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)
    return module


def center_crop(images: Tensor, size: int) -> Tensor:
    """Cut the central ``size`` x ``size`` window (a no-op when the images already have that size)."""
    height, width = images.shape[-2:]
    if height == size and width == size:
        return images
    top, left = (height - size) // 2, (width - size) // 2
    return images[..., top : top + size, left : left + size]


def layer_norm_2d(channels: int) -> nn.Module:
    """Layer norm over (C, H, W) of each sample, with a per-channel affine.

    GroupNorm with one group is exactly that, and unlike nn.LayerNorm it does not fix H and W,
    so one critic class serves every image size. WGAN-GP needs a per-sample normalisation: batch
    norm couples the samples of a batch, which breaks the per-sample gradient penalty.
    """
    return nn.GroupNorm(1, channels)


def require_labels(labels: Tensor | None, batch: int) -> Tensor:
    """The (N,) int64 labels of a class-conditional network; a clear error when they are missing."""
    if labels is None:
        raise ValueError("this network is class-conditional: pass labels, an int64 tensor of shape (N,)")
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
    return labels


class LabelConcat(nn.Module):
    """Appends a class code to a flat input: a learned embedding, or a one-hot vector.

    With ``num_classes == 0`` the input passes through unchanged and labels are ignored.

    Args:
        num_classes: classes of the data (0 = unconditional).
        embed_dim: length of the learned embedding; None for a one-hot code (Mirza & Osindero's cGAN).
    """

    def __init__(self, num_classes: int, embed_dim: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.embed: nn.Embedding | None = None
        if num_classes and embed_dim is not None:
            self.embed = nn.Embedding(num_classes, embed_dim)
            # Unit expected norm, like a one-hot code. PyTorch's N(0, 1) default gave each class a
            # code as long as z itself: 40% of the first layer's variance was the label, batch norm
            # then squeezed the noise, and conditional DCGANs collapsed to one image per class
            # (within-class sample spread 0.014 against 0.11 for real phantoms at 600 steps).
            nn.init.normal_(self.embed.weight, 0.0, embed_dim**-0.5)
        if not num_classes:
            self.extra_features = 0
        else:
            self.extra_features = embed_dim if embed_dim is not None else num_classes

    def forward(self, inputs: Tensor, labels: Tensor | None) -> Tensor:
        if not self.num_classes:
            return inputs
        labels = require_labels(labels, inputs.shape[0])
        if self.embed is not None:
            code = self.embed(labels).to(inputs.dtype)
        else:
            code = F.one_hot(labels, self.num_classes).to(inputs.dtype)
        return torch.cat([inputs, code], dim=1)


class DiscriminatorHead(nn.Module):
    """Last layer of every discriminator: the real/fake score plus, when conditional, the label.

    Conditional discriminators of the BCE and Wasserstein objectives use the projection of Miyato &
    Koyama (2018): ``score = linear(h) + <embed(y), h>``. It adds the label as one inner product on
    the final features, so it is the same for a logit and for an unbounded critic value, and it
    needs no label maps concatenated to the image at every size. The ACGAN discriminator instead
    predicts the label with an auxiliary classifier on the same features (Odena et al. 2017) and
    takes no labels.

    Args:
        features: length of the flat feature vector ``h``.
        num_classes: classes of the data; 0 for an unconditional head (or when labels enter elsewhere).
        auxiliary: True for the ACGAN classifier head, False for projection.
    """

    def __init__(self, features: int, num_classes: int = 0, auxiliary: bool = False):
        super().__init__()
        self.score = nn.Linear(features, 1)
        self.classifier = nn.Linear(features, num_classes) if num_classes and auxiliary else None
        self.projection: nn.Embedding | None = None
        if num_classes and not auxiliary:
            self.projection = nn.Embedding(num_classes, features)
            # Same scale as the linear score weights it is added to.
            nn.init.normal_(self.projection.weight, 0.0, 0.02)

    def forward(self, features: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        score = self.score(features).squeeze(1)
        if self.projection is not None:
            labels = require_labels(labels, features.shape[0])
            score = score + (self.projection(labels) * features).sum(dim=1)
        class_logits = self.classifier(features) if self.classifier is not None else None
        return score, class_logits


def check_spec(model: str, conditioning: Conditioning, spec: ImageSpec) -> None:
    """Refuse image specs a model cannot serve, with a message that says what to do instead."""
    if spec.size < MIN_SIZE:
        raise ConfigError(f"{model} needs images of at least {MIN_SIZE}x{MIN_SIZE}, got {spec.size}x{spec.size}")
    if spec.channels < 1:
        raise ConfigError(f"{model}: images need at least one channel, got {spec.channels}")
    if spec.num_classes < 0:
        raise ConfigError(f"{model}: num_classes must be 0 (unconditional) or more, got {spec.num_classes}")
    if conditioning is Conditioning.ALWAYS and spec.num_classes == 0:
        raise ConfigError(f"{model} is class-conditional by design and needs labeled data (num_classes > 0)")
    if conditioning is Conditioning.NEVER and spec.num_classes > 0:
        raise ConfigError(
            f"{model} is unconditional: build it with num_classes=0 and train one model per class (--per-class)"
        )


def checked(model: str, conditioning: Conditioning, build: Callable[[ImageSpec, NetOptions], nn.Module]) -> NetBuilder:
    """Wrap a network factory so every build first checks the spec against the model's conditioning."""

    def build_checked(spec: ImageSpec, options: NetOptions) -> nn.Module:
        check_spec(model, conditioning, spec)
        return build(spec, options)

    return build_checked


def crop_note(model: str, render_size: Callable[[int], int]) -> Callable[[int], str]:
    """A ``size_note`` for a generator that renders ``render_size(size)`` and centre-crops to ``size``."""

    def note(size: int) -> str:
        rendered = render_size(size)
        if rendered == size:
            return ""
        return f"{model} renders {rendered}x{rendered} and centre-crops to {size}x{size}"

    return note
