"""The DCGAN family of 5x5 networks: dcgan, acgan, wgan and wgan-gp.

All four share the generator of the liver-lesion paper (Frid-Adar et al. 2018, Sec. III-B, after
Radford et al. 2016): z -> FC to 4x4x1024 -> four fractionally-strided 5x5 convolutions
(1024 -> 512 -> 256 -> 128 -> C), batch norm and ReLU on all but the output, tanh output. The
discriminator is four strided 5x5 convolutions (C -> 64 -> 128 -> 256 -> 512), leaky ReLU 0.2,
batch norm on all but the input layer, and a fully connected score. The models differ in the
objective, in the discriminator's normalisation and head, and in the paper's training settings.

Sizes: four x2 upsamplings from a ``base`` x ``base`` map give 16 * base; the generator takes
base = ceil(S / 16) and centre-crops to S (64 and 128 are exact, 28 renders 32). The
discriminator works at any size: its fully connected layer is sized from S.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from medsyn import papers
from medsyn.models.base import Conditioning, ImageSpec, ModelSpec, NetOptions, register
from medsyn.models.layers import (
    DiscriminatorHead,
    LabelConcat,
    center_crop,
    checked,
    crop_note,
    halved,
    init_weights,
    layer_norm_2d,
    round_up,
    scale_channels,
)

GENERATOR_CHANNELS = (1024, 512, 256, 128)  # FC map, then each fractionally-strided conv's input
DISCRIMINATOR_CHANNELS = (64, 128, 256, 512)  # outputs of the four strided convs
KERNEL = 5
LEAK = 0.2  # leaky ReLU slope of the paper's discriminator
EMBED_DIM = 50  # class embedding appended to z by conditional generators (ACGAN: "class embedding")
UPSAMPLINGS = len(GENERATOR_CHANNELS)

LIVER_PAPER = papers.LIVER_LESION


def render_size(size: int) -> int:
    """Side the generator renders before cropping: the smallest 16 * base covering ``size``."""
    return round_up(size, 2**UPSAMPLINGS)


class DCGANGenerator(nn.Module):
    """z (+ class embedding) -> FC -> four 5x5 fractionally-strided convs -> tanh image.

    Args:
        spec: output size, channels and classes (0 = unconditional).
        options: z_dim and the channel multiplier ``width``.
    """

    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__()
        self.z_dim = options.z_dim
        self.size = spec.size
        self.render_size = render_size(spec.size)
        self.base = self.render_size // 2**UPSAMPLINGS
        channels = [scale_channels(c, options.width) for c in GENERATOR_CHANNELS]
        self.labels = LabelConcat(spec.num_classes, EMBED_DIM)
        # No bias before batch norm: BN's shift replaces it.
        self.project = nn.Linear(options.z_dim + self.labels.extra_features, channels[0] * self.base**2, bias=False)
        self.project_act = nn.Sequential(nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        for c_in, c_out in zip(channels, channels[1:]):
            blocks += [upsample(c_in, c_out, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        blocks += [upsample(channels[-1], spec.channels, bias=True), nn.Tanh()]
        self.upsample = nn.Sequential(*blocks)
        init_weights(self)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images (N, C, S, S) in [-1, 1] from z (N, z_dim) and labels (N,) or None."""
        hidden = self.project(self.labels(z, labels)).view(z.shape[0], -1, self.base, self.base)
        return center_crop(self.upsample(self.project_act(hidden)), self.size)


def upsample(c_in: int, c_out: int, bias: bool) -> nn.ConvTranspose2d:
    """5x5 fractionally-strided conv that exactly doubles the side (padding 2, output_padding 1)."""
    return nn.ConvTranspose2d(c_in, c_out, KERNEL, stride=2, padding=2, output_padding=1, bias=bias)


class DCGANDiscriminator(nn.Module):
    """Four strided 5x5 convs with leaky ReLU, then a fully connected score (and label head).

    Args:
        spec: input size, channels and classes (0 = unconditional).
        options: the channel multiplier ``width``.
        norm: normalisation after every conv but the first (batch norm in the papers).
        auxiliary: ACGAN classifier head instead of the projection of the label.
    """

    def __init__(
        self,
        spec: ImageSpec,
        options: NetOptions,
        norm: Callable[[int], nn.Module] = nn.BatchNorm2d,
        auxiliary: bool = False,
    ):
        super().__init__()
        channels = [scale_channels(c, options.width) for c in DISCRIMINATOR_CHANNELS]
        layers: list[nn.Module] = [downsample(spec.channels, channels[0], bias=True), nn.LeakyReLU(LEAK, inplace=True)]
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [downsample(c_in, c_out, bias=False), norm(c_out), nn.LeakyReLU(LEAK, inplace=True)]
        self.features = nn.Sequential(*layers, nn.Flatten())
        side = halved(spec.size, len(channels))
        self.head = DiscriminatorHead(channels[-1] * side**2, spec.num_classes, auxiliary)
        init_weights(self)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(score (N,), class_logits (N, K) or None) for images (N, C, S, S)."""
        return self.head(self.features(images), labels)


def downsample(c_in: int, c_out: int, bias: bool) -> nn.Conv2d:
    """5x5 conv with stride 2: the side becomes ceil(side / 2)."""
    return nn.Conv2d(c_in, c_out, KERNEL, stride=2, padding=2, bias=bias)


def _register(
    name: str,
    paper: str,
    objective: str,
    conditioning: Conditioning,
    build_discriminator: Callable[[ImageSpec, NetOptions], nn.Module],
    train_defaults: dict,
) -> ModelSpec:
    return register(
        ModelSpec(
            name=name,
            paper=paper,
            objective=objective,
            conditioning=conditioning,
            build_generator=checked(name, conditioning, DCGANGenerator),
            build_discriminator=checked(name, conditioning, build_discriminator),
            train_defaults=train_defaults,
            size_note=crop_note(name, render_size),
        )
    )


_register(
    "dcgan",
    f"{LIVER_PAPER}, Sec. III-B (DCGAN, trained per lesion class)",
    "bce",
    Conditioning.OPTIONAL,
    DCGANDiscriminator,
    {
        "optimizer": "adam",
        "lr_g": 2e-4,
        "lr_d": 2e-4,
        "betas": (0.5, 0.999),
        "batch": 64,
        "z_dim": 100,
        "z_dist": "uniform",  # U[-1, 1]
        "critic_steps": 1,
        "epochs": 70,  # Sec. III-B: "trained ... for 70 epochs"
        "per_class": True,  # one DCGAN per lesion class; the paper's class-conditional model is the ACGAN
    },
)

# The paper's ACGAN D (3x3 kernels, dropout 0.5) was dropped "after optimizing for our small
# dataset" in favour of the DCGAN D; we add the auxiliary classifier head to that D.
_register(
    "acgan",
    f"{LIVER_PAPER}, Sec. III-C (ACGAN, Odena et al. 2017)",
    "bce",  # plus the class cross-entropy, which every objective adds when D has a classifier head
    Conditioning.ALWAYS,
    lambda spec, options: DCGANDiscriminator(spec, options, auxiliary=True),
    {
        "optimizer": "adam",
        "lr_g": 1e-4,
        "lr_d": 1e-4,
        "betas": (0.5, 0.999),
        "batch": 64,
        "z_dim": 100,
        "z_dist": "uniform",
        "critic_steps": 1,
        "epochs": 50,  # Sec. III-C: "a learning rate of 0.0001 for 50 epochs"
    },
)

# The retina paper gives no layer details beyond the DCGAN ones, so the critic is the DCGAN D
# with a linear output. Batch norm stays: Arjovsky et al.'s own DCGAN critic for weight
# clipping used it (clipping, unlike the gradient penalty, does not need per-sample gradients).
_register(
    "wgan",
    f"WGAN (Arjovsky et al. 2017) as in {papers.RETINA}: 64x64 DCGAN-style networks",
    "wgan-clip",
    Conditioning.OPTIONAL,
    DCGANDiscriminator,
    {
        "optimizer": "rmsprop",  # Arjovsky et al.: momentum-based optimisers destabilise clipped critics
        "lr_g": 1e-4,
        "lr_d": 1e-4,
        "lr_drop_at": 0.57,  # 1e-4 for the first 800 of 1,400 epochs, then 5e-5
        "lr_drop_factor": 0.5,
        "critic_steps": 5,
        "clip": 0.01,
        "batch": 8,  # "In Generator training, we used a batch size of 8" (64 was the classifiers' batch)
        "epochs": 1400,  # 800 epochs at 1e-4, then 600 at 5e-5
        "z_dim": 100,
        "z_dist": "uniform",
    },
)

_register(
    "wgan-gp",
    "Gulrajani et al. 2017, Improved Training of Wasserstein GANs (DCGAN-style 5x5 networks)",
    "wgan-gp",
    Conditioning.OPTIONAL,
    lambda spec, options: DCGANDiscriminator(spec, options, norm=layer_norm_2d),
    {
        "optimizer": "adam",
        "lr_g": 1e-4,
        "lr_d": 1e-4,
        "betas": (0.0, 0.9),
        "critic_steps": 5,
        "gp_weight": 10.0,
        "batch": 64,
        "z_dim": 100,
        "z_dist": "normal",
    },
)
