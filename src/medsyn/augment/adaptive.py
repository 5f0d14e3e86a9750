"""ADA: adaptive discriminator augmentation with a probability tuned by an overfitting heuristic.

Karras, Aittala, Hellsten, Laine, Lehtinen and Aila, "Training Generative Adversarial Networks
with Limited Data", NeurIPS 2020 (https://arxiv.org/abs/2006.06676). Every image the discriminator
sees passes through the 'bgc' pipeline, each op applied with probability ``p`` per sample; ``p``
starts at 0 and follows r_t = E[sign(D(real))]: above the target the discriminator is
overfitting and ``p`` rises, below it ``p`` falls.

Design:

* **One resampling.** x-flip, 90-degree rotations, integer translation, isotropic scaling,
  arbitrary rotation (before and after anisotropic scaling, each with probability
  1 - sqrt(1 - p), so that one of them fires with probability p), anisotropic scaling and
  fractional translation are composed per sample into one affine matrix and applied by one
  bilinear ``grid_sample``. The reference upsamples with a wavelet filter around that step to
  limit aliasing; on the small images medsyn trains on a single bilinear pass is the simple
  choice.
* **Reflection padding.** Whatever the transform pulls in from outside the image is mirrored
  content, as ADA's reflect padding does, so the discriminator never sees an artificial border
  (an edge the generator would otherwise learn to draw: augmentations must not leak).
  ``grid_sample``'s reflection mirrors about the pixel border (edge pixels repeat once).
* **Exact identity.** A sample for which no geometric (or colour) op fires keeps its input values
  bit for bit (``torch.where``), instead of passing through an identity grid that bilinear
  interpolation reproduces only to rounding; at ``p == 0`` the input comes back as it is, so
  switching ADA on changes nothing until the heuristic asks for augmentation.
* **Randomness through one callable.** All numbers come from ``uniform(n, len(DRAWS), device)``
  (normals through the inverse error function), a fixed number per call whatever ``p`` is, so
  the trainer can re-seed per step for exact resumption and give each torchrun rank its shard of
  one global draw.
* **No host sync per step.** ``observe`` accumulates signs as tensors on the device; only
  ``adjust`` (every ``interval`` discriminator updates) reads them back.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from medsyn.augment.differentiable import Uniform, default_uniform
from medsyn.errors import ConfigError

# ADA's 'bgc' defaults (training/augment.py of stylegan2-ada-pytorch).
XINT_MAX = 0.125  # integer translation range, relative to the side
SCALE_STD = 0.2  # log2 std of isotropic scaling
ROTATE_MAX = 1.0  # arbitrary rotation range, 1 = full circle
ANISO_STD = 0.2  # log2 std of anisotropic scaling
XFRAC_STD = 0.125  # std of fractional translation, relative to the side
BRIGHTNESS_STD = 0.2  # std of the added brightness
CONTRAST_STD = 0.5  # log2 std of contrast
HUE_MAX = 1.0  # hue rotation range, 1 = full circle
SATURATION_STD = 1.0  # log2 std of saturation

DRAWS: tuple[str, ...] = (
    "xflip", "xflip_gate", "rot90", "rot90_gate", "xint_x", "xint_y", "xint_gate",
    "scale", "scale_gate", "rotate_pre", "rotate_pre_gate", "aniso", "aniso_gate",
    "rotate_post", "rotate_post_gate", "xfrac_x", "xfrac_y", "xfrac_gate",
    "brightness", "brightness_gate", "contrast", "contrast_gate", "lumaflip", "lumaflip_gate",
    "hue", "hue_gate", "saturation", "saturation_gate",
)  # the uniform columns of one call, in order; an op fires for a sample when its gate < p

_COS90 = (1.0, 0.0, -1.0, 0.0)  # exact cos and sin of k * 90 degrees (no rounding residue)
_SIN90 = (0.0, 1.0, 0.0, -1.0)


def _normal(u: Tensor) -> Tensor:
    """U[0, 1) -> standard normal by the inverse CDF (kept finite at u = 0)."""
    return math.sqrt(2.0) * torch.erfinv((2 * u - 1).clamp(-1 + 1e-6, 1 - 1e-6))


def _mat3(*entries: Tensor) -> Tensor:
    """Nine (N,) tensors, row by row -> (N, 3, 3)."""
    return torch.stack(entries, dim=-1).reshape(-1, 3, 3)


def _geometry(d: dict[str, Tensor], p: float, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Output -> input maps (N, 3, 3) in pixel units about the image centre, and (N,) 'an op fired'."""
    zero = torch.zeros_like(d["xflip"])
    one = torch.ones_like(zero)
    scale = lambda sx, sy: _mat3(sx, zero, zero, zero, sy, zero, zero, zero, one)  # noqa: E731
    shift = lambda tx, ty: _mat3(one, zero, tx, zero, one, ty, zero, zero, one)  # noqa: E731
    rotate = lambda c, s: _mat3(c, -s, zero, s, c, zero, zero, zero, one)  # noqa: E731
    p_rot = 1 - math.sqrt(max(1 - p, 0.0))  # P(pre or post rotation) = p
    gates = {name: d[name + "_gate"] < prob for name, prob in (
        ("xflip", p), ("rot90", p), ("xint", p), ("scale", p), ("rotate_pre", p_rot),
        ("aniso", p), ("rotate_post", p_rot), ("xfrac", p))}
    pick = lambda name, value, identity: torch.where(gates[name], value, identity)  # noqa: E731

    flip = pick("xflip", torch.floor(d["xflip"] * 2).clamp(max=1), zero)
    k = pick("rot90", torch.floor(d["rot90"] * 4).clamp(max=3), zero).long()
    cos90, sin90 = zero.new_tensor(_COS90)[k], zero.new_tensor(_SIN90)[k]
    tx = pick("xint", torch.round((2 * d["xint_x"] - 1) * XINT_MAX * width), zero)
    ty = pick("xint", torch.round((2 * d["xint_y"] - 1) * XINT_MAX * height), zero)
    iso = pick("scale", torch.exp2(_normal(d["scale"]) * SCALE_STD), one)
    pre = pick("rotate_pre", (2 * d["rotate_pre"] - 1) * math.pi * ROTATE_MAX, zero)
    aniso = pick("aniso", torch.exp2(_normal(d["aniso"]) * ANISO_STD), one)
    post = pick("rotate_post", (2 * d["rotate_post"] - 1) * math.pi * ROTATE_MAX, zero)
    fx = pick("xfrac", _normal(d["xfrac_x"]) * XFRAC_STD * width, zero)
    fy = pick("xfrac", _normal(d["xfrac_y"]) * XFRAC_STD * height, zero)

    # Each factor is the inverse of the op (the grid looks up where an output pixel came from).
    inverse = (
        scale(1 - 2 * flip, one),
        rotate(cos90, sin90),
        shift(-tx, -ty),
        scale(1 / iso, 1 / iso),
        rotate(torch.cos(pre), torch.sin(pre)),
        scale(1 / aniso, aniso),
        rotate(torch.cos(post), torch.sin(post)),
        shift(-fx, -fy),
    )
    g = inverse[0]
    for factor in inverse[1:]:
        g = g @ factor
    fired = torch.stack(list(gates.values())).any(dim=0)
    return g, fired


def _colour(d: dict[str, Tensor], p: float, rgb: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample colour maps x -> M x + b: M (N, 3, 3), b (N, 3), and (N,) 'an op fired'.

    Without ``rgb`` only brightness and contrast apply (their gates only), so M = c I, b = c * brightness.
    """
    zero = torch.zeros_like(d["brightness"])
    eye = torch.eye(3, device=zero.device, dtype=zero.dtype)
    names = ("brightness", "contrast") + (("lumaflip", "hue", "saturation") if rgb else ())
    gates = {name: d[name + "_gate"] < p for name in names}
    pick = lambda name, value, identity: torch.where(gates[name], value, identity)  # noqa: E731

    b = pick("brightness", _normal(d["brightness"]) * BRIGHTNESS_STD, zero)
    c = pick("contrast", torch.exp2(_normal(d["contrast"]) * CONTRAST_STD), zero + 1)
    m = c[:, None, None] * eye
    offset = (c * b)[:, None].expand(-1, 3)
    if rgb:
        v = zero.new_full((3,), 1 / math.sqrt(3))  # the luma axis
        vv = torch.outer(v, v)
        cross = zero.new_tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]]) * v[0]
        flip = pick("lumaflip", torch.floor(d["lumaflip"] * 2).clamp(max=1), zero)
        theta = pick("hue", (2 * d["hue"] - 1) * math.pi * HUE_MAX, zero)[:, None, None]
        sat = pick("saturation", torch.exp2(_normal(d["saturation"]) * SATURATION_STD), zero + 1)
        luma = eye - 2 * vv * flip[:, None, None]  # Householder reflection of the luma axis
        hue = torch.cos(theta) * eye + (1 - torch.cos(theta)) * vv + torch.sin(theta) * cross
        saturate = vv + (eye - vv) * sat[:, None, None]
        for step in (luma, hue, saturate):
            m, offset = step @ m, (step @ offset[:, :, None])[:, :, 0]
    fired = torch.stack(list(gates.values())).any(dim=0)
    return m, offset, fired


def _sampling_grid(g: Tensor, height: int, width: int) -> Tensor:
    """(N, 3, 3) maps in centred pixel units -> ``grid_sample`` grid (N, H, W, 2), align_corners=False.

    Built from pixel centres rather than by ``F.affine_grid`` so that flips, 90-degree turns and
    whole-pixel shifts land exactly on pixel centres whenever the side is a power of two.
    """
    ys = torch.arange(height, dtype=g.dtype, device=g.device) - (height - 1) / 2
    xs = torch.arange(width, dtype=g.dtype, device=g.device) - (width - 1) / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    source = torch.einsum("nij,hwj->nhwi", g[:, :2], torch.stack([xx, yy, torch.ones_like(xx)], dim=-1))
    return source * g.new_tensor([2 / width, 2 / height])  # pixels -> [-1, 1] across the image


class AdaptiveAugment:
    """ADA's 'bgc' augmentation (Karras et al. 2020) with its adaptive probability ``p``.

    Colour ops: brightness, contrast, luma flip, hue rotation and saturation for 3-channel images;
    for any other channel count (grey medical images) only brightness and contrast, since hue and
    saturation have no meaning there and a luma flip would invert intensities (the reference
    applies it to grey images as x -> -x).

    Args:
        channels: channels of the discriminator's input.
        target: the r_t = E[sign(D(real))] to hold (ADA's 0.6).
        speed_images: images after which ``p`` can have moved by 1 (ADA's ada_kimg * 1000).
        interval: discriminator updates between adjustments (``due``).
        uniform: ``uniform(n, k, device)`` -> U[0, 1) of shape (n, k), the only source of
            randomness; each call draws ``len(DRAWS)`` columns, whatever ``p`` is.
        channels_per_image: channels of one image when the input holds image pairs on the channel
            axis (geometric ops shared across the pair, colour ops per image with the same
            parameters); defaults to ``channels``.

    Attributes:
        p: the current augmentation probability, from 0.0.
    """

    def __init__(
        self,
        channels: int,
        target: float = 0.6,
        speed_images: int = 100_000,
        interval: int = 4,
        uniform: Uniform = default_uniform,
        channels_per_image: int | None = None,
    ):
        per_image = channels if channels_per_image is None else channels_per_image
        if per_image < 1 or channels % per_image:
            raise ValueError(f"{channels} channels do not split into images of {per_image}")
        if not 0.0 <= target <= 1.0:
            raise ConfigError(f"ada_target must be in [0, 1], got {target}")
        if speed_images <= 0 or interval < 1:
            raise ValueError(f"speed_images and interval must be positive, got {speed_images}, {interval}")
        self.channels, self.channels_per_image = channels, per_image
        self.target, self.speed_images, self.interval = float(target), speed_images, interval
        self.uniform = uniform
        self.p = 0.0
        self._pending = torch.zeros(2)  # this process's [sum of signs, count] since the last adjust
        self._carried = torch.zeros(2)  # totals restored from a checkpoint, already over all processes

    def __call__(self, images: Tensor) -> Tensor:
        """Augments (N, channels, H, W) images; differentiable; the input itself when p == 0."""
        if images.ndim != 4 or images.shape[1] != self.channels:
            raise ValueError(f"expected (N, {self.channels}, H, W) images, got shape {tuple(images.shape)}")
        n, c, h, w = images.shape
        u = self.uniform(n, len(DRAWS), images.device).float()
        if self.p <= 0:
            return images
        d = dict(zip(DRAWS, u.unbind(dim=1)))
        work = images.to(torch.promote_types(images.dtype, torch.float32))  # no bf16 coordinates

        g, moved = _geometry(d, self.p, h, w)
        grid = _sampling_grid(g.to(work.dtype), h, w)
        warped = F.grid_sample(work, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        x = torch.where(moved[:, None, None, None], warped, work)

        m, offset, coloured = _colour(d, self.p, rgb=self.channels_per_image == 3)
        m, offset = m.to(work.dtype), offset.to(work.dtype)
        groups = x.reshape(n, c // self.channels_per_image, self.channels_per_image, h * w)
        if self.channels_per_image == 3:
            y = m[:, None] @ groups + offset[:, None, :, None]
        else:
            y = groups * m[:, 0, 0].reshape(n, 1, 1, 1) + offset[:, 0].reshape(n, 1, 1, 1)
        x = torch.where(coloured[:, None, None, None], y.reshape(n, c, h, w), x)
        return x.to(images.dtype)

    def observe(self, real_scores: Tensor) -> None:
        """Adds the signs of the discriminator's raw outputs on real images of one D step."""
        s = real_scores.detach().float()
        self.observe_mean(s.sign().mean(), s.numel())

    def observe_mean(self, sign_mean: Tensor, count: int) -> None:
        """Adds one D step's mean sign of D on ``count`` real images (what the loss objects log)."""
        m = sign_mean.detach().float().reshape(())
        self._pending = self._pending.to(m.device) + torch.stack([m * count, m.new_tensor(float(count))])

    def due(self, d_updates: int) -> bool:
        """Whether to adjust after ``d_updates`` finished discriminator updates (every ``interval``)."""
        return d_updates > 0 and d_updates % self.interval == 0

    def adjust(self, images_seen: int, reduce: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
        """Moves ``p`` by sign(r_t - target) * images_seen / speed_images, clamped to [0, 1].

        Args:
            images_seen: real images the discriminator saw since the last adjustment, over all
                processes (global batch * interval).
            reduce: sums a tensor over processes and returns the sum (under torchrun); it gets a
                copy of the accumulators. Every process must call ``adjust`` together.

        Returns:
            ``{"ada_p": p, "ada_rt": r_t}``; r_t is NaN and ``p`` unchanged when nothing was observed.
        """
        local = self._pending.clone()
        totals = (local if reduce is None else reduce(local)).cpu() + self._carried
        self._pending = torch.zeros_like(self._pending)
        self._carried = torch.zeros(2)
        signs, count = totals.tolist()
        if count == 0:
            return {"ada_p": self.p, "ada_rt": math.nan}
        rt = signs / count
        direction = (rt > self.target) - (rt < self.target)
        self.p = min(max(self.p + direction * images_seen / self.speed_images, 0.0), 1.0)
        return {"ada_p": self.p, "ada_rt": rt}

    def state_dict(self, reduce: Callable[[Tensor], Tensor] | None = None) -> dict:
        """``p`` and the accumulated signs and count since the last adjustment.

        Under torchrun pass the same ``reduce`` as to ``adjust`` (on every process) so the saved
        accumulators cover all processes; without it they are this process's alone.
        """
        local = self._pending.clone()
        totals = (local if reduce is None else reduce(local)).cpu() + self._carried
        return {"p": self.p, "accumulators": totals}

    def load_state_dict(self, state: dict) -> None:
        """Restores ``state_dict``'s values (on every process); the next adjust counts them once."""
        self.p = float(state["p"])
        self._carried = torch.as_tensor(state["accumulators"], dtype=torch.float32).cpu().clone()
        self._pending = torch.zeros(2)

    def __repr__(self) -> str:
        return (
            f"AdaptiveAugment(p={self.p:.4f}, target={self.target}, speed_images={self.speed_images}, "
            f"interval={self.interval}, channels={self.channels}, channels_per_image={self.channels_per_image})"
        )
