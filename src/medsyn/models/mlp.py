"""Fully connected GANs: the "Vanilla GAN" and "Conditional GAN" baselines of the U-Net paper.

``gan`` follows Goodfellow et al. 2014 and ``cgan`` Mirza & Osindero 2014, with the layer sizes,
leaky ReLU, batch norm (G) and dropout (D) that common PyTorch re-implementations use, since
neither paper fixes them for images of this size: G is z -> 256 -> 512 -> 1024 -> C*S*S with
tanh, D is C*S*S -> 1024 -> 512 -> 256 -> 1. The cGAN appends the one-hot label to G's z and to
D's flattened image, as in the original paper (not projection), so it is the baseline it claims.
"""
from __future__ import annotations

from torch import Tensor, nn

from medsyn import papers
from medsyn.models.base import Conditioning, ImageSpec, ModelSpec, NetOptions, register
from medsyn.models.layers import DiscriminatorHead, LabelConcat, checked, init_weights, scale_channels

GENERATOR_UNITS = (256, 512, 1024)
DISCRIMINATOR_UNITS = (1024, 512, 256)
LEAK = 0.2
DROPOUT = 0.3  # Goodfellow et al. trained D with dropout; 0.3 is the usual re-implementation value

BASELINE_PAPER = f"baseline of {papers.UNET}"


class MLPGenerator(nn.Module):
    """z (+ one-hot label) -> three hidden layers (BN, leaky ReLU) -> C*S*S -> tanh image.

    Args:
        spec: output size, channels and classes (0 = unconditional; > 0 appends a one-hot label).
        options: z_dim and the unit multiplier ``width``.
    """

    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__()
        self.z_dim = options.z_dim
        self.image_shape = (spec.channels, spec.size, spec.size)
        self.render_size = spec.size
        self.labels = LabelConcat(spec.num_classes)  # one-hot
        units = [options.z_dim + self.labels.extra_features] + [scale_channels(u, options.width) for u in GENERATOR_UNITS]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(units, units[1:]):
            layers += [nn.Linear(n_in, n_out, bias=False), nn.BatchNorm1d(n_out), nn.LeakyReLU(LEAK, inplace=True)]
        layers += [nn.Linear(units[-1], spec.channels * spec.size**2), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images (N, C, S, S) in [-1, 1] from z (N, z_dim) and labels (N,) or None."""
        return self.net(self.labels(z, labels)).view(z.shape[0], *self.image_shape)


class MLPDiscriminator(nn.Module):
    """Flattened image (+ one-hot label) -> three hidden layers (leaky ReLU, dropout) -> score.

    Args:
        spec: input size, channels and classes (0 = unconditional; > 0 appends a one-hot label).
        options: the unit multiplier ``width``.
    """

    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__()
        self.labels = LabelConcat(spec.num_classes)  # one-hot, on the input: the label is not projected
        units = [spec.channels * spec.size**2 + self.labels.extra_features]
        units += [scale_channels(u, options.width) for u in DISCRIMINATOR_UNITS]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(units, units[1:]):
            layers += [nn.Linear(n_in, n_out), nn.LeakyReLU(LEAK, inplace=True), nn.Dropout(DROPOUT)]
        self.net = nn.Sequential(*layers)
        self.head = DiscriminatorHead(units[-1])
        init_weights(self)

    def forward(self, images: Tensor, labels: Tensor | None = None) -> tuple[Tensor, None]:
        """(score (N,), None) for images (N, C, S, S)."""
        return self.head(self.net(self.labels(images.flatten(1), labels)), None)


DEFAULTS = {
    "optimizer": "adam",
    "lr_g": 2e-4,
    "lr_d": 2e-4,
    "betas": (0.5, 0.999),
    "batch": 64,
    "z_dim": 100,
    "z_dist": "normal",
    "critic_steps": 1,
}

for _name, _paper, _conditioning in (
    ("gan", f"Goodfellow et al. 2014, Generative Adversarial Nets ('Vanilla GAN' {BASELINE_PAPER})", Conditioning.NEVER),
    ("cgan", f"Mirza & Osindero 2014, Conditional Generative Adversarial Nets ({BASELINE_PAPER})", Conditioning.ALWAYS),
):
    register(
        ModelSpec(
            name=_name,
            paper=_paper,
            objective="bce",
            conditioning=_conditioning,
            build_generator=checked(_name, _conditioning, MLPGenerator),
            build_discriminator=checked(_name, _conditioning, MLPDiscriminator),
            train_defaults=dict(DEFAULTS),
        )
    )
