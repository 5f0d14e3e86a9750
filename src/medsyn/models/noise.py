"""Noise inputs: per-pixel noise added after a generator's convolutions, drawn from each sample's latent.

StyleGAN (Karras, Laine and Aila 2019, Sec. 3.2) adds to every convolution's output a fresh N(0, 1)
image times a learned per-channel strength, so that stochastic detail need not be built out of the
latent by the convolutions. Medical images are mostly such detail: CT quantum noise, ultrasound
speckle. Without noise inputs medsyn's SNGAN drew the same fine texture at the same pixels in
every sample (checkerboards, faint square frames; docs/quality.md measures it as fixed-pattern
coherence).

Why the noise is a function of the latent instead of ``torch.randn``: it then goes wherever the
latent goes. A resumed run, an image re-drawn from its seed, and each torchrun rank's shard of the
global batch all get the same noise with no plumbing, so determinism, exact resume and the
two-process equivalence hold as they do for the latent itself.

The function is a hash built from random features: for pixel p, phase_p = FREQUENCY * <w_p, z[:KEY_DIMS]>
with fixed w_p ~ N(0, 1). At FREQUENCY 100 the phases of different pixels, and of different
latents, are hundreds of radians apart, so their fractional parts behave as independent uniform
draws; two such uniforms make one normal by Box-Muller. It runs in float32 outside autocast (bf16
would round the phase by whole radians), and the frequencies are regenerated from a fixed seed
at construction (not saved in checkpoints: 2 x side^2 x KEY_DIMS numbers per layer).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

KEY_DIMS = 16  # latent components hashed: enough that two draws never share a key, cheap at 64x64
FREQUENCY = 100.0
FREQUENCY_SEED = 0x5EED  # the frequencies are part of the architecture, the same in every run
TINY = 1e-7  # keeps log(u) finite


class LatentNoise(nn.Module):
    """z (N, z_dim) -> noise (N, 1, side, side), about N(0, 1) per pixel, a pure function of z.

    ``salt`` tells layers of the same side apart, so each layer gets its own noise image.
    """

    def __init__(self, side: int, z_dim: int, salt: int = 0):
        super().__init__()
        self.side, self.key_dims = side, min(KEY_DIMS, z_dim)
        gen = torch.Generator().manual_seed(FREQUENCY_SEED + 1000 * side + salt)
        frequencies = torch.randn(self.key_dims, 2 * side * side, generator=gen) * FREQUENCY
        self.register_buffer("frequencies", frequencies, persistent=False)

    def forward(self, z: Tensor) -> Tensor:
        with torch.no_grad(), torch.autocast(device_type=z.device.type, enabled=False):
            phase = z[:, : self.key_dims].float() @ self.frequencies / (2 * math.pi)
            uniform = torch.frac(phase).abs().clamp(TINY, 1.0)  # |frac| of a negative phase is uniform too
            radius, angle = uniform.chunk(2, dim=1)
            normal = torch.sqrt(-2 * torch.log(radius)) * torch.cos(2 * math.pi * angle)
        return normal.view(-1, 1, self.side, self.side)


class NoiseInput(nn.Module):
    """Adds strength (per channel, learned, 0 at the start as in StyleGAN) x the latent's noise image."""

    def __init__(self, channels: int, side: int, z_dim: int, salt: int = 0):
        super().__init__()
        self.noise = LatentNoise(side, z_dim, salt)
        self.strength = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return x + self.strength.to(x.dtype) * self.noise(z).to(x.dtype)
