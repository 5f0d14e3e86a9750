"""The simple GAN of the lung-CT paper ("Capturing Variabilities from Computed Tomography Images
with Generative Adversarial Networks", 2018), which generates 2D lung CT at 40x40 and 64x64.

Generator, as the paper lists it: six 3x3 transposed convolutions with 256, 128, 64, 32, 16 and C
filters, the first two with stride 2, batch norm and leaky ReLU 0.2 after each but the last,
and a linear output. Discriminator: four 3x3 convolutions with 256, 128, 64 and 32 filters, the
first with stride 2, leaky ReLU 0.2 and dropout 0.6 after each, then a dense layer of 128 with
leaky ReLU and a dense score (the paper's sigmoid lives in the BCE loss).

The paper ran the same networks at 40x40 and 64x64 and does not say how z becomes a map. We
project z linearly to a 256-channel map of side S'/4 (S' = S rounded up to a multiple of 4),
so the two stride-2 layers reach S', then centre-crop to S. The projection has no norm or
activation: it only reshapes the noise, and the network stays the paper's six-layer G.
"""
from __future__ import annotations

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
    round_up,
    scale_channels,
)

PROJECTION_CHANNELS = 256  # our choice (the paper is silent): as wide as the first transposed conv
GENERATOR_CHANNELS = (256, 128, 64, 32, 16)  # then C
GENERATOR_STRIDES = (2, 2, 1, 1, 1, 1)
DISCRIMINATOR_CHANNELS = (256, 128, 64, 32)
DISCRIMINATOR_STRIDES = (2, 1, 1, 1)
DENSE_UNITS = 128
LEAK = 0.2
DROPOUT = 0.6
EMBED_DIM = 50  # class embedding appended to z when conditional (not in the paper, which is unconditional)
# The paper's "batch normalization value 0.9" is the Keras/TF momentum 0.9, PyTorch's default 0.1.
BN_MOMENTUM = 0.1


def render_size(size: int) -> int:
    """Side the generator renders before cropping: the smallest multiple of 4 covering ``size``."""
    return round_up(size, 4)


class LungCTGenerator(nn.Module):
    """z (+ class embedding) -> linear projection -> six 3x3 transposed convs -> linear image.

    Args:
        spec: output size, channels and classes (0 = unconditional).
        options: z_dim and the channel multiplier ``width``.
    """

    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__()
        self.z_dim = options.z_dim
        self.size = spec.size
        self.render_size = render_size(spec.size)
        self.base = self.render_size // 4
        self.labels = LabelConcat(spec.num_classes, EMBED_DIM)
        projected = scale_channels(PROJECTION_CHANNELS, options.width)
        self.project = nn.Linear(options.z_dim + self.labels.extra_features, projected * self.base**2)
        channels = [projected] + [scale_channels(c, options.width) for c in GENERATOR_CHANNELS] + [spec.channels]
        layers: list[nn.Module] = []
        for index, (c_in, c_out, stride) in enumerate(zip(channels, channels[1:], GENERATOR_STRIDES)):
            last = index == len(GENERATOR_STRIDES) - 1
            # padding k//2 keeps the side at stride 1 (odd k); output_padding 1 makes stride 2 exactly double it.
            # Only the output layer has a bias: batch norm's shift replaces it elsewhere.
            layers.append(nn.ConvTranspose2d(c_in, c_out, options.kernel, stride, padding=options.kernel // 2,
                                             output_padding=stride - 1, bias=last))
            if not last:
                layers += [nn.BatchNorm2d(c_out, momentum=BN_MOMENTUM), nn.LeakyReLU(LEAK, inplace=True)]
        self.net = nn.Sequential(*layers)  # linear output, as in the paper
        self.pixel_offset = options.pixel_offset  # the paper's [0, 2] intensities: render there, hand back [-1, 1]
        init_weights(self)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images (N, C, S, S), unbounded (linear output), from z (N, z_dim) and labels (N,) or None."""
        hidden = self.project(self.labels(z, labels)).view(z.shape[0], -1, self.base, self.base)
        return center_crop(self.net(hidden), self.size) - self.pixel_offset


class LungCTDiscriminator(nn.Module):
    """Four 3x3 convs (first strided) with dropout, dense 128, then the score (and label projection).

    Args:
        spec: input size, channels and classes (0 = unconditional).
        options: the channel multiplier ``width``.
    """

    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__()
        channels = [spec.channels] + [scale_channels(c, options.width) for c in DISCRIMINATOR_CHANNELS]
        layers: list[nn.Module] = []
        for c_in, c_out, stride in zip(channels, channels[1:], DISCRIMINATOR_STRIDES):
            layers += [
                nn.Conv2d(c_in, c_out, options.kernel, stride=stride, padding=options.kernel // 2),
                nn.LeakyReLU(LEAK, inplace=True),
                nn.Dropout(DROPOUT),
            ]
        side = halved(spec.size, DISCRIMINATOR_STRIDES.count(2))
        dense = scale_channels(DENSE_UNITS, options.width)
        layers += [nn.Flatten(), nn.Linear(channels[-1] * side**2, dense), nn.LeakyReLU(LEAK, inplace=True)]
        self.features = nn.Sequential(*layers)
        self.head = DiscriminatorHead(dense, spec.num_classes)
        self.pixel_offset = options.pixel_offset
        init_weights(self)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> tuple[Tensor, None]:
        """(score (N,), None) for images (N, C, S, S) in [-1, 1], seen shifted to the chosen pixel range."""
        return self.head(self.features(images + self.pixel_offset), labels)


register(
    ModelSpec(
        name="lungct-gan",
        paper=f"{papers.LUNG_CT}: the simple GAN for 2D lung CT at 40x40 and 64x64",
        objective="bce",
        conditioning=Conditioning.OPTIONAL,
        build_generator=checked("lungct-gan", Conditioning.OPTIONAL, LungCTGenerator),
        build_discriminator=checked("lungct-gan", Conditioning.OPTIONAL, LungCTDiscriminator),
        train_defaults={
            "optimizer": "rmsprop",
            "lr_g": 2e-4,
            "lr_d": 1e-4,
            "weight_decay": 1e-5,  # the paper's "small value of L2 norm" on both networks
            "batch": 16,
            "z_dim": 100,
            "z_dist": "uniform",  # U[-1, 1]
            "critic_steps": 1,
            "steps": 30000,  # "1 hour of training (30,000 epochs)" on a GTX 1070: iterations, not passes
        },
        size_note=crop_note("lungct-gan", render_size),
        own_keys=frozenset({"lungct-gan"}),
    )
)
