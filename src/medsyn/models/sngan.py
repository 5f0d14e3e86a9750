"""SNGAN: ResNet generator and spectrally normalised ResNet discriminator with a projection head.

Miyato, Kataoka, Koyama and Yoshida 2018, "Spectral normalization for generative adversarial
networks" (ResNet networks, Appendix B), with the class input of Miyato and Koyama 2018, "cGANs
with projection discriminator": conditional batch norm in the generator (a class-specific gain
and bias after every normalisation) and the projection ``<embed(y), h>`` on the discriminator's
pooled features. These are the networks the data-efficiency papers build on (DiffAugment trains
BigGAN, their descendant) and the base of medsyn's recommended recipe for small medical sets.

Generator: z -> linear to a 4x4 map -> residual up-blocks (BN, ReLU, nearest x2, 3x3 conv, BN,
ReLU, 3x3 conv, with a 1x1 upsampled shortcut) to the smallest power of two covering the image
side -> BN, ReLU, 3x3 conv, tanh -> centre crop. Discriminator: residual down-blocks (ReLU, 3x3
conv, ReLU, 3x3 conv, 2x2 average pool; a 1x1 shortcut) to 4x4 (the first block without the
leading ReLU, as the paper's "optimized block"), one block at 4x4, ReLU, global sum pooling, a
linear score plus the projection; every conv, linear and embedding spectrally normalised.

Noise inputs (config key ``noise_inputs``, off by default): StyleGAN's per-pixel noise image times a
learned per-channel strength after both convolutions of every up-block (models/noise.py), so that
image noise and speckle need not be made from z by the convolutions.

Channels: the paper's CIFAR-10 networks keep 256 (G) and 128 (D) channels at every side, which is
slow on a CPU. Here, as in BigGAN, channels halve as the side doubles: ``width`` x 512 at 4x4,
256 at 8x8, ... (G) and the mirror in D, so a 64x64 network costs little more than a 32x32 one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from medsyn.models.base import Conditioning, ImageSpec, ModelSpec, NetOptions, register
from medsyn.models.layers import center_crop, checked, crop_note, require_labels, scale_channels
from medsyn.models.noise import NoiseInput

FIRST_SIDE = 4
TOP_CHANNELS = 512  # channels at 4x4 (width 1); each doubling of the side halves them
MIN_BLOCK_CHANNELS = 16

PAPER = ("Miyato et al. 2018, Spectral normalization for generative adversarial networks (ResNet networks); "
         "projection discriminator and conditional batch norm after Miyato & Koyama 2018")


def render_size(size: int) -> int:
    side = FIRST_SIDE
    while side < size:
        side *= 2
    return side


def channels_at(side: int, width: float) -> int:
    return max(MIN_BLOCK_CHANNELS, scale_channels(TOP_CHANNELS * FIRST_SIDE // side, width))


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose gain and bias depend on the class (plain affine batch norm when unconditional)."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.norm = nn.BatchNorm2d(channels, affine=num_classes == 0)
        if num_classes:
            self.gain = nn.Embedding(num_classes, channels)
            self.bias = nn.Embedding(num_classes, channels)
            # N(1, 0.02) and N(0, 0.02), as DCGAN initialises batch norm: classes differ from the start
            nn.init.normal_(self.gain.weight, 1.0, 0.02)
            nn.init.normal_(self.bias.weight, 0.0, 0.02)

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        out = self.norm(x)
        if not self.num_classes:
            return out
        labels = require_labels(labels, x.shape[0])
        gain, bias = self.gain(labels).to(out.dtype), self.bias(labels).to(out.dtype)
        return out * gain[:, :, None, None] + bias[:, :, None, None]


class UpBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, num_classes: int, noise_side: int | None = None, z_dim: int = 0):
        super().__init__()
        self.norm1, self.norm2 = ConditionalBatchNorm2d(c_in, num_classes), ConditionalBatchNorm2d(c_out, num_classes)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1)
        # noise inputs after both convolutions (StyleGAN's placement), when asked for
        self.noise1 = self.noise2 = None
        if noise_side is not None:
            self.noise1 = NoiseInput(c_out, noise_side, z_dim, salt=1)
            self.noise2 = NoiseInput(c_out, noise_side, z_dim, salt=2)

    def forward(self, x: Tensor, labels: Tensor | None, z: Tensor) -> Tensor:
        h = self.conv1(F.interpolate(F.relu(self.norm1(x, labels)), scale_factor=2, mode="nearest"))
        if self.noise1 is not None:
            h = self.noise1(h, z)
        h = self.conv2(F.relu(self.norm2(h, labels)))
        if self.noise2 is not None:
            h = self.noise2(h, z)
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class SNGANGenerator(nn.Module):
    """z (N, z_dim) and labels (N,) -> images (N, C, S, S) in [-1, 1]."""

    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__()
        self.z_dim, self.size, self.num_classes = options.z_dim, spec.size, spec.num_classes
        self.render_size = render_size(spec.size)
        sides = [FIRST_SIDE]
        while sides[-1] < render_size(spec.size):
            sides.append(sides[-1] * 2)
        channels = [channels_at(side, options.width) for side in sides]
        self.project = nn.Linear(options.z_dim, channels[0] * FIRST_SIDE**2)
        noise_sides = sides[1:] if options.noise_inputs else [None] * (len(sides) - 1)
        self.blocks = nn.ModuleList(UpBlock(a, b, spec.num_classes, side, options.z_dim)
                                    for a, b, side in zip(channels, channels[1:], noise_sides))
        self.out_norm = nn.BatchNorm2d(channels[-1])
        self.out_conv = nn.Conv2d(channels[-1], spec.channels, 3, padding=1)
        self.first_channels = channels[0]
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.num_classes:
            labels = require_labels(labels, z.shape[0])
        h = self.project(z).view(z.shape[0], self.first_channels, FIRST_SIDE, FIRST_SIDE)
        for block in self.blocks:
            h = block(h, labels, z)
        image = torch.tanh(self.out_conv(F.relu(self.out_norm(h))))
        return center_crop(image, self.size)


class DownBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, downsample: bool, first: bool):
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(c_in, c_out, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.shortcut = spectral_norm(nn.Conv2d(c_in, c_out, 1)) if (c_in != c_out or downsample) else None
        self.downsample, self.first = downsample, first

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)  # the first block sees the image itself
        h = self.conv2(F.relu(self.conv1(h)))
        if self.downsample:
            h = F.avg_pool2d(h, 2, ceil_mode=True)
        skip = x
        if self.shortcut is not None:
            # the first block pools before its 1x1 conv (the paper's optimized block), the others after
            skip = self.shortcut(F.avg_pool2d(x, 2, ceil_mode=True)) if self.first else self.shortcut(x)
            if self.downsample and not self.first:
                skip = F.avg_pool2d(skip, 2, ceil_mode=True)
        elif self.downsample:
            skip = F.avg_pool2d(x, 2, ceil_mode=True)
        return h + skip


class SNGANDiscriminator(nn.Module):
    """images (N, C, S, S) and labels -> (score (N,), None): a hinge/BCE logit, plus the projection."""

    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__()
        sides = [render_size(spec.size)]
        while sides[-1] > FIRST_SIDE:
            sides.append(sides[-1] // 2)
        channels = [channels_at(side, options.width) // 2 for side in sides]  # D at half G's width, as SNGAN
        blocks = [DownBlock(spec.channels, channels[1], downsample=True, first=True)]
        blocks += [DownBlock(a, b, downsample=True, first=False) for a, b in zip(channels[1:], channels[2:])]
        blocks.append(DownBlock(channels[-1], channels[-1], downsample=False, first=False))
        self.blocks = nn.Sequential(*blocks)
        self.score = spectral_norm(nn.Linear(channels[-1], 1))
        self.projection = spectral_norm(nn.Embedding(spec.num_classes, channels[-1])) if spec.num_classes else None
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and hasattr(module, "parametrizations"):
                nn.init.xavier_uniform_(module.parametrizations.weight.original)
                nn.init.zeros_(module.bias)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> tuple[Tensor, None]:
        h = F.relu(self.blocks(images)).sum(dim=(2, 3))  # global sum pooling
        score = self.score(h).squeeze(1)
        if self.projection is not None:
            labels = require_labels(labels, images.shape[0])
            score = score + (self.projection(labels) * h).sum(1)
        return score, None


register(
    ModelSpec(
        name="sngan",
        paper=PAPER,
        objective="hinge",
        conditioning=Conditioning.OPTIONAL,
        build_generator=checked("sngan", Conditioning.OPTIONAL, SNGANGenerator),
        build_discriminator=checked("sngan", Conditioning.OPTIONAL, SNGANDiscriminator),
        train_defaults={
            "optimizer": "adam",
            "lr_g": 2e-4,  # Miyato et al. 2018, Table 1 setting C for the ResNet runs
            "lr_d": 2e-4,
            "betas": (0.0, 0.9),
            "critic_steps": 5,
            "batch": 64,
            "z_dim": 128,
            "z_dist": "normal",
            "ema_decay": 0.999,
        },
        size_note=crop_note("sngan", render_size),
        own_keys=frozenset({"sngan"}),  # noise_inputs
        channels_last=True,  # 1.45x a training step at 28x28 on the 2-core CPU (306 against 445 ms)
    )
)
