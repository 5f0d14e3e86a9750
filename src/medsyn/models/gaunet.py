"""Generative Adversarial U-Net (gaunet): a residual U-Net generator that rewrites a real image.

After "Generative Adversarial U-Net for Domain-free Medical Image Augmentation" (the U-Net paper).
The generator takes a real image x_j of class c and Gaussian z (Fig. 1): a U-Net encoder turns
x_j into a latent map, a linear projection of z (with the class embedding) is concatenated to it
(Eq. 6), and the decoder renders x_g. The critic is a DenseNet that judges pairs: the real pair
{x_i, x_j} against the fake pair {x_i, x_g}, with x_i another real image of class c, under WGAN-GP
(Eq. 4-5, Algorithm 1). Its input is the two images concatenated along channels: 2C channels.

Generator (Sec. II-C): eight residual blocks, four in the encoder and four in the decoder, each
of four 3x3 convolutions with batch renormalisation and leaky ReLU 0.01 (Eq. 7-8); strided
convolutions go down, transposed convolutions go up, each followed by leaky ReLU, batch
renormalisation and dropout; the encoder's block outputs are skip connections, merged into the
decoder by 1x1 convolutions. The paper gives no channel counts: we double from 64 per level as
U-Net does. Critic: four dense blocks of four convolutions (growth rate 64, Sec. III-B), each
ending in dropout, four transition layers, layer normalisation instead of batch norm.

Sizes: four halvings need a side divisible by 16. The generator pads its source image by
reflection to R = 16 * ceil(S / 16) and centre-crops its output back to S (28 renders 32).
The critic works at any size (ceil-mode pooling, global average before the score).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from medsyn import papers
from medsyn.models.base import Conditioning, GeneratorInputs, ImageSpec, ModelSpec, NetOptions, register
from medsyn.models.layers import (
    DiscriminatorHead,
    LabelConcat,
    center_crop,
    checked,
    init_weights,
    layer_norm_2d,
    round_up,
    scale_channels,
)

ENCODER_CHANNELS = (64, 128, 256, 512)  # one per U-Net level; our choice (U-Net's doubling), the paper gives none
NOISE_CHANNELS = 128  # channels of the projected z map concatenated to the latent
CONVS_PER_BLOCK = 4  # "each block has four 3x3 convolutional layers" (both networks)
GENERATOR_LEAK = 0.01  # Eq. 8
CRITIC_LEAK = 0.2  # the paper names no critic activation; the usual WGAN-GP critic slope
GENERATOR_DROPOUT = 0.1  # after each down/up layer; the paper gives no rate
CRITIC_DROPOUT = 0.2  # at the end of each dense block; DenseNet's rate (Huang et al. 2017)
GROWTH_RATE = 64  # "The growth rate for Dense Block k = 64"
EMBED_DIM = 50  # class embedding appended to z (the generator "is provided the class information")
LEVELS = len(ENCODER_CHANNELS)

# Batch renormalisation (Ioffe 2017) limits: plain batch norm (r = 1, d = 0) while the running
# statistics are still meaningless, then a linear ramp to Ioffe's final rmax = 3, dmax = 5.
RENORM_WARMUP = 100  # training batches of plain batch norm (running stats settle in ~50 at momentum 0.1)
RENORM_RAMP = 1000  # batches over which r_max goes 1 -> 3 and d_max 0 -> 5
RENORM_R_MAX, RENORM_D_MAX = 3.0, 5.0

PAPER = f"{papers.UNET}, Sec. II-III (residual U-Net G on a real image + z, pair DenseNet critic, WGAN-GP)"


def render_size(size: int) -> int:
    return round_up(size, 2**LEVELS)


class BatchRenorm2d(_BatchNorm):
    """Batch renormalisation (Ioffe 2017): batch norm whose training output matches inference.

    In training, x_hat = (x - mu_B) / sigma_B * r + d with r = sigma_B / sigma and d = (mu_B - mu) / sigma
    taken against the running statistics, clipped to [1/r_max, r_max] and [-d_max, d_max] and not
    back-propagated through. Small or correlated batches (a batch of one image's rewrites) then do
    not shift what the network learns away from what it does in eval mode. A subclass of
    ``_BatchNorm``, so BN recalibration and the EMA treat it as batch norm; ``num_batches_tracked``
    drives the warm-up, so the schedule is in the checkpoint and resumes exactly. Under torchrun
    its statistics cover the global batch, as synced batch norm's do.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 r_max: float = RENORM_R_MAX, d_max: float = RENORM_D_MAX,
                 warmup: int = RENORM_WARMUP, ramp: int = RENORM_RAMP):
        super().__init__(num_features, eps, momentum, affine=True, track_running_stats=True)
        self.r_max, self.d_max, self.warmup, self.ramp = r_max, d_max, warmup, ramp

    @staticmethod
    def moments(values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-channel (mean, biased variance, element count) of the batch. Under torchrun the
        trainer points this at the global batch's moments (train.distributed.convert_batch_norm)."""
        return (values.mean(dim=(0, 2, 3)), values.var(dim=(0, 2, 3), unbiased=False),
                values.new_tensor(values.numel() / values.shape[1]))

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 4:
            raise ValueError(f"expected a 4D input (N, C, H, W), got {input.dim()}D")

    def limits(self) -> tuple[float, float]:
        """(r_max, d_max) for the next training batch."""
        progress = (int(self.num_batches_tracked) - self.warmup) / self.ramp
        progress = min(1.0, max(0.0, progress))
        return 1.0 + (self.r_max - 1.0) * progress, self.d_max * progress

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        r_max, d_max = self.limits()
        self.num_batches_tracked.add_(1)
        values = x.float()  # statistics in float32 under bf16 autocast
        mean, var, count = self.moments(values)
        std = (var + self.eps).sqrt()
        running_std = (self.running_var + self.eps).sqrt()
        r = (std.detach() / running_std).clamp(1.0 / r_max, r_max)
        d = ((mean.detach() - self.running_mean) / running_std).clamp(-d_max, d_max)
        scale = (r / std) * self.weight
        shift = self.bias + (d - mean * r / std) * self.weight
        with torch.no_grad():
            # momentum None: cumulative average, as nn.BatchNorm2d does (BN recalibration uses it)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.lerp_(mean, factor)
            self.running_var.lerp_(var * count / (count - 1).clamp_min(1), factor)  # unbiased, like batch norm
        return (values * scale[None, :, None, None] + shift[None, :, None, None]).to(x.dtype)


def conv_norm_act(c_in: int, c_out: int, conv: nn.Module | None = None) -> list[nn.Module]:
    """A 3x3 convolution (or the given one), batch renormalisation, leaky ReLU 0.01."""
    conv = conv if conv is not None else nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    return [conv, BatchRenorm2d(c_out), nn.LeakyReLU(GENERATOR_LEAK, inplace=True)]


class ResidualBlock(nn.Module):
    """Four 3x3 conv + renorm + leaky ReLU layers added to their input (Eq. 7: F = sum w_j k_j + r)."""

    def __init__(self, channels: int):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(CONVS_PER_BLOCK):
            layers += conv_norm_act(channels, channels)
        self.body = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def down(c_in: int, c_out: int) -> nn.Sequential:
    """Stride-2 3x3 convolution, leaky ReLU, batch renormalisation, dropout: the side halves."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                         nn.LeakyReLU(GENERATOR_LEAK, inplace=True), BatchRenorm2d(c_out), nn.Dropout(GENERATOR_DROPOUT))


def up(c_in: int, c_out: int) -> nn.Sequential:
    """Stride-1/2 (transposed) 4x4 convolution, leaky ReLU, batch renormalisation, dropout: the side doubles."""
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                         nn.LeakyReLU(GENERATOR_LEAK, inplace=True), BatchRenorm2d(c_out), nn.Dropout(GENERATOR_DROPOUT))


class GAUNetGenerator(nn.Module):
    """(z, labels, source image x_j) -> x_g: a residual U-Net with z joined at the bottleneck.

    Args:
        spec: image size, channels and classes (> 0: the model is class-conditional).
        options: z_dim and the channel multiplier ``width``.
    """

    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__()
        self.z_dim, self.size = options.z_dim, spec.size
        self.render_size = render_size(spec.size)
        self.latent_side = self.render_size // 2**LEVELS
        channels = [scale_channels(c, options.width) for c in ENCODER_CHANNELS]
        latent, noise = channels[-1], scale_channels(NOISE_CHANNELS, options.width)
        self.stem = nn.Sequential(*conv_norm_act(spec.channels, channels[0]))
        self.encoder = nn.ModuleList(ResidualBlock(c) for c in channels)
        self.downs = nn.ModuleList(down(c, c_next) for c, c_next in zip(channels, [*channels[1:], latent]))
        self.labels = LabelConcat(spec.num_classes, EMBED_DIM)
        self.noise_channels = noise
        self.project_noise = nn.Linear(options.z_dim + self.labels.extra_features, noise * self.latent_side**2)  # Eq. 6
        self.fuse = nn.Sequential(*conv_norm_act(latent + noise, latent, nn.Conv2d(latent + noise, latent, 1, bias=False)))
        self.ups = nn.ModuleList(up(c_in, c) for c_in, c in zip([latent, *channels[:0:-1]], channels[::-1]))
        self.merges = nn.ModuleList(  # 1x1 convolutions joining each skip connection to the decoder
            nn.Sequential(*conv_norm_act(2 * c, c, nn.Conv2d(2 * c, c, 1, bias=False))) for c in channels[::-1]
        )
        self.decoder = nn.ModuleList(ResidualBlock(c) for c in channels[::-1])
        self.to_image = nn.Sequential(nn.Conv2d(channels[0], spec.channels, 1), nn.Tanh())
        init_weights(self)

    def forward(self, z: Tensor, labels: Tensor | None, sources: Tensor | None = None) -> Tensor:
        """Images (N, C, S, S) in [-1, 1] from z (N, z_dim), labels (N,) and real sources (N, C, S, S) in [-1, 1]."""
        if sources is None or sources.shape[0] != z.shape[0] or sources.shape[-1] != self.size:
            got = None if sources is None else tuple(sources.shape)
            raise ValueError(f"gaunet rewrites real images: pass sources of shape ({z.shape[0]}, C, {self.size}, "
                             f"{self.size}) in [-1, 1], got {got}")
        pad = self.render_size - self.size
        hidden = F.pad(sources, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), mode="reflect") if pad else sources
        hidden = self.stem(hidden)
        skips = []
        for block, down_layer in zip(self.encoder, self.downs):
            hidden = block(hidden)
            skips.append(hidden)
            hidden = down_layer(hidden)
        noise = self.project_noise(self.labels(z, labels)).view(z.shape[0], self.noise_channels, self.latent_side, -1)
        hidden = self.fuse(torch.cat([hidden, noise.to(hidden.dtype)], dim=1))
        for up_layer, merge, block, skip in zip(self.ups, self.merges, self.decoder, reversed(skips)):
            hidden = block(merge(torch.cat([up_layer(hidden), skip], dim=1)))
        return center_crop(self.to_image(hidden), self.size)


class DenseBlock(nn.Module):
    """Four (layer norm, leaky ReLU, 3x3 conv -> growth channels) layers, each seeing all before it; dropout last."""

    def __init__(self, c_in: int, growth: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(layer_norm_2d(c_in + i * growth), nn.LeakyReLU(CRITIC_LEAK),
                          nn.Conv2d(c_in + i * growth, growth, 3, padding=1))
            for i in range(CONVS_PER_BLOCK)
        )
        self.dropout = nn.Dropout(CRITIC_DROPOUT)
        self.out_channels = c_in + CONVS_PER_BLOCK * growth

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return self.dropout(x)


def transition(c_in: int, c_out: int) -> nn.Sequential:
    """DenseNet transition: layer norm, leaky ReLU, 1x1 conv (halves the channels), 2x2 average pool."""
    return nn.Sequential(layer_norm_2d(c_in), nn.LeakyReLU(CRITIC_LEAK), nn.Conv2d(c_in, c_out, 1),
                         nn.AvgPool2d(2, ceil_mode=True))


class PairCritic(nn.Module):
    """DenseNet critic of an image pair (N, 2C, S, S) = [anchor x_i, candidate] -> (score (N,), None).

    Layer norm, not batch norm (the paper's choice, and the gradient penalty needs per-sample
    normalisation). The label enters by projection (Miyato & Koyama 2018) on top of the paper's
    pair input, as in medsyn's other conditional critics: the anchor shows the class, the label names it.

    Args:
        spec: image size, channels (the input has 2x) and classes.
        options: the channel multiplier ``width`` (scales the growth rate).
    """

    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__()
        growth = scale_channels(GROWTH_RATE, options.width)
        channels = 2 * growth  # DenseNet's stem width
        layers: list[nn.Module] = [nn.Conv2d(2 * spec.channels, channels, 3, padding=1)]
        for _ in range(LEVELS):
            block = DenseBlock(channels, growth)
            layers += [block, transition(block.out_channels, block.out_channels // 2)]
            channels = block.out_channels // 2
        layers += [layer_norm_2d(channels), nn.LeakyReLU(CRITIC_LEAK), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.image_channels = spec.channels
        self.head = DiscriminatorHead(channels, spec.num_classes)
        init_weights(self)

    def forward(self, pairs: Tensor, labels: Tensor | None = None) -> tuple[Tensor, None]:
        if pairs.shape[1] != 2 * self.image_channels:
            raise ValueError(f"the gaunet critic judges pairs [anchor, image]: expected {2 * self.image_channels} "
                             f"channels, got {pairs.shape[1]}")
        score, _ = self.head(self.features(pairs), labels)
        return score, None


def size_note(size: int) -> str:
    rendered = render_size(size)
    if rendered == size:
        return ""
    return f"gaunet pads its source images by reflection to {rendered}x{rendered} and centre-crops to {size}x{size}"


register(
    ModelSpec(
        name="gaunet",
        paper=PAPER,
        objective="wgan-gp",
        conditioning=Conditioning.ALWAYS,
        build_generator=checked("gaunet", Conditioning.ALWAYS, GAUNetGenerator),
        build_discriminator=checked("gaunet", Conditioning.ALWAYS, PairCritic),
        train_defaults={
            "optimizer": "adam",
            "lr_g": 1e-4,  # Sec. III-B: alpha = 0.0001, beta1 = 0, beta2 = 0.9
            "lr_d": 1e-4,
            "betas": (0.0, 0.9),
            "critic_steps": 1,  # Sec. II-D: "alternately update one gradient descent step on D, then one step on G"
            "epochs": 5000,  # Sec. III-B: "the number of training epoch is 5,000"
            "gp_weight": 10.0,  # "The gradient penalty coefficient lambda is 10"
            # The paper gives no batch size. Its networks at 64x64 (a 37M-parameter U-Net, a DenseNet
            # critic of growth 64 at full resolution, double backward for the penalty) needed 24 GB of
            # CPU memory at batch 64; a batch of 16 judged in passes of 8 needs a quarter of that
            # (bench/train_memory.py; docs/speed.md).
            "batch": 16,
            "micro_batch": 8,
            "z_dim": 100,
            "z_dist": "normal",  # Eq. 1, Algorithm 1 line 11
        },
        size_note=size_note,
        inputs=GeneratorInputs.SAME_CLASS_PAIRS,
    )
)
