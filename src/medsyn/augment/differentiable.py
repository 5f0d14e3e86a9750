"""DiffAugment: differentiable augmentation of every image the discriminator sees.

Zhao, Liu, Lin, Zhu and Han, "Differentiable Augmentation for Data-Efficient GAN Training",
NeurIPS 2020 (https://arxiv.org/abs/2006.10738). Real and generated images are augmented with the
same random policy before the discriminator, and gradients flow back through the augmentation to
the generator, so the discriminator cannot memorise a small training set and the generator is
not pushed to reproduce the augmentations.

The ops follow the reference ``DiffAugment_pytorch.py`` on images in [-1, 1]:

* ``brightness``: add U(-0.5, 0.5) per sample;
* ``saturation``: channel mean + (x - mean) * U(0, 2) per sample;
* ``contrast``: image mean + (x - mean) * U(0.5, 1.5) per sample;
* ``color``: the three above, in that order (the reference's ``color`` policy);
* ``translation``: an integer shift of up to 1/8 of each side, the vacated border filled with zeros;
* ``cutout``: a zeroed square of half the side at a random centre (clipped at the image border).

Design:

* **Image pairs.** The critic of ``gaunet`` judges pairs concatenated on the channel axis.
  ``channels_per_image`` splits the channels into image groups: geometric ops move and cut all
  channels alike, and colour ops act on each group with the same parameters, so the two images of
  a pair stay comparable.
* **Randomness through one callable.** Every random number comes from ``uniform(n, k, device)``,
  a fixed number of columns per call (integers, centres and factors are derived from them). The
  trainer can then make runs resumable (it re-seeds the global generator every step) and make
  torchrun ranks draw their shards of one global draw, so two processes augment exactly as one.
* **Differentiable, vectorised.** Shifts are gathers, cutout is a mask product, colour is
  arithmetic; nothing writes into the input and there is no Python loop over samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from medsyn.errors import ConfigError
from medsyn.registry import Registry

Uniform = Callable[[int, int, torch.device], Tensor]
"""``uniform(n, k, device)`` -> U[0, 1) of shape (n, k): k numbers for each of this process's n samples."""


def default_uniform(n: int, k: int, device: torch.device) -> Tensor:
    """The global torch generator (re-seeded by the trainer every step, so runs resume exactly)."""
    return torch.rand(n, k, device=device)


TRANSLATION_RATIO = 0.125  # largest shift, relative to the side (reference value)
CUTOUT_RATIO = 0.5  # side of the cut square, relative to the image side (reference value)


# ---- ops: (images (N, C, H, W), uniforms (N, draws), channels_per_image) -> images ---------------

def _groups(x: Tensor, channels_per_image: int) -> Tensor:
    """(N, C, H, W) -> (N, C / channels_per_image, channels_per_image, H, W), a view."""
    n, c, h, w = x.shape
    return x.reshape(n, c // channels_per_image, channels_per_image, h, w)


def _per_sample(u: Tensor, x: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, 1, 1) in the images' dtype, to broadcast over grouped images."""
    return u.to(x.dtype).reshape(-1, 1, 1, 1, 1)


def _brightness(x: Tensor, u: Tensor, channels_per_image: int) -> Tensor:
    return x + (u[:, 0].to(x.dtype) - 0.5).reshape(-1, 1, 1, 1)


def _saturation(x: Tensor, u: Tensor, channels_per_image: int) -> Tensor:
    if channels_per_image == 1:  # a grey image is its own channel mean: the identity
        return x
    g = _groups(x, channels_per_image)
    mean = g.mean(dim=2, keepdim=True)
    return ((g - mean) * (2 * _per_sample(u[:, 0], x)) + mean).reshape(x.shape)


def _contrast(x: Tensor, u: Tensor, channels_per_image: int) -> Tensor:
    g = _groups(x, channels_per_image)
    mean = g.mean(dim=(2, 3, 4), keepdim=True)
    return ((g - mean) * (_per_sample(u[:, 0], x) + 0.5) + mean).reshape(x.shape)


def _integers(u: Tensor, low: int, high: int) -> Tensor:
    """U[0, 1) -> integers uniform in [low, high] (inclusive), as randint(low, high + 1) draws."""
    return (torch.floor(u * (high - low + 1)).long() + low).clamp(low, high)


def _translation(x: Tensor, u: Tensor, channels_per_image: int) -> Tensor:
    """Moves content by (dy, dx) whole pixels: out[i, j] = x[i - dy, j - dx], zeros where vacated."""
    n, c, h, w = x.shape
    sy, sx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    dy, dx = _integers(u[:, 0], -sy, sy), _integers(u[:, 1], -sx, sx)
    padded = F.pad(x, (1, 1, 1, 1))  # a zero border; indices off the image land on it
    rows = (torch.arange(h, device=x.device) - dy[:, None] + 1).clamp(0, h + 1)  # (N, H)
    cols = (torch.arange(w, device=x.device) - dx[:, None] + 1).clamp(0, w + 1)  # (N, W)
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def _cutout_box(u: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Start and end (exclusive) of the cut along one side of ``length`` pixels, as the reference.

    The centre is an integer in [0, length - size % 2]; the box is clipped at the border.
    """
    size = int(length * CUTOUT_RATIO + 0.5)
    centre = _integers(u, 0, length - size % 2)
    start = centre - size // 2
    return start, start + size


def _cutout(x: Tensor, u: Tensor, channels_per_image: int) -> Tensor:
    n, c, h, w = x.shape
    y0, y1 = _cutout_box(u[:, 0], h)
    x0, x1 = _cutout_box(u[:, 1], w)
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_rows = (ys >= y0[:, None]) & (ys < y1[:, None])  # (N, H)
    in_cols = (xs >= x0[:, None]) & (xs < x1[:, None])  # (N, W)
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


@dataclass(frozen=True)
class _Op:
    draws: int  # uniforms per sample that the op consumes
    apply: Callable[[Tensor, Tensor, int], Tensor]


_BRIGHTNESS, _SATURATION, _CONTRAST = _Op(1, _brightness), _Op(1, _saturation), _Op(1, _contrast)
_POLICY_OPS: Registry[tuple[_Op, ...]] = Registry("DiffAugment policy")
_POLICY_OPS.register("color", (_BRIGHTNESS, _SATURATION, _CONTRAST))
_POLICY_OPS.register("translation", (_Op(2, _translation),))
_POLICY_OPS.register("cutout", (_Op(2, _cutout),))
_POLICY_OPS.register("brightness", (_BRIGHTNESS,))
_POLICY_OPS.register("saturation", (_SATURATION,))
_POLICY_OPS.register("contrast", (_CONTRAST,))

POLICIES: tuple[str, ...] = tuple(_POLICY_OPS.names())


def parse_policy(text: str) -> tuple[str, ...]:
    """Parses a comma-separated policy such as ``"color,translation,cutout"``, keeping its order.

    Raises:
        ConfigError: the text is empty, has an empty entry, or names an unknown op (with the
            closest valid name).
    """
    names = tuple(part.strip() for part in text.split(","))
    if not text.strip():
        raise ConfigError(f"empty DiffAugment policy; choose from {', '.join(POLICIES)}")
    if "" in names:
        raise ConfigError(f"DiffAugment policy {text!r} has an empty entry")
    for name in names:
        _POLICY_OPS.get(name)  # unknown -> ConfigError with a did-you-mean
    return names


class DiffAugment:
    """The DiffAugment policy of Zhao et al. (2020), applied to a batch before the discriminator.

    Args:
        policy: op names in order, as ``"color,translation,cutout"`` or a tuple; see ``POLICIES``.
        channels_per_image: channels of one image; the batch's channels must be a multiple of it
            (pairs on the channel axis: colour ops use the same parameters on every image group,
            geometric ops treat all channels alike). Saturation is the identity on grey images.
        uniform: ``uniform(n, k, device)`` -> U[0, 1) of shape (n, k), the only source of
            randomness; each call draws ``self.draws`` columns.

    Call with images (N, C, H, W) in [-1, 1]; returns the augmented batch, same shape and dtype,
    differentiable with respect to the input.
    """

    def __init__(self, policy: str | tuple[str, ...], channels_per_image: int, uniform: Uniform = default_uniform):
        names = parse_policy(policy) if isinstance(policy, str) else parse_policy(",".join(policy))
        if channels_per_image < 1:
            raise ValueError(f"channels_per_image must be positive, got {channels_per_image}")
        self.policy = names
        self.channels_per_image = channels_per_image
        self.uniform = uniform
        self._ops = tuple(op for name in names for op in _POLICY_OPS.get(name))
        self.draws = sum(op.draws for op in self._ops)  # uniform columns per call

    def __call__(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] % self.channels_per_image:
            raise ValueError(
                f"expected (N, C, H, W) images with C a multiple of {self.channels_per_image}, "
                f"got shape {tuple(images.shape)}"
            )
        u = self.uniform(images.shape[0], self.draws, images.device)
        x, column = images, 0
        for op in self._ops:
            x = op.apply(x, u[:, column : column + op.draws], self.channels_per_image)
            column += op.draws
        return x

    def __repr__(self) -> str:
        return f"DiffAugment(policy={','.join(self.policy)!r}, channels_per_image={self.channels_per_image})"
