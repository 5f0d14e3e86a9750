"""UNIT and MUNIT refiners as the brain-MRI paper used them (Table 2): synthetic <-> real translation.

Each domain (synthetic, real) has an autoencoder. Content encoder: 7x7 conv to 64 channels, two
4x4 stride-2 convs to 128 and 256, four residual blocks, instance norm throughout. Decoder: four
residual blocks, two (nearest x2 upsampling, 5x5 conv halving the channels, layer norm) stages and
a 7x7 conv with tanh. UNIT's decoder blocks use instance norm and the two domains share a latent
space; MUNIT's use adaptive instance norm whose scales and shifts an MLP reads from a style code
(a style encoder gives an image's own code; translation draws one from N(0, I)). Discriminators:
three-scale LSGAN patch critics per domain (4x4 stride-2 convs, 64 to 512 channels, leaky ReLU).

Objective (both models): the paper trained MUNIT's networks "with the UNIT loss with the perceptual
loss" (as in the authors' repository), so one objective serves both: LSGAN adversarial terms on the
translations, L1 within-domain reconstruction and cycle reconstruction, the VAE's KL on the
latent codes of both streams, and the domain-invariant perceptual term (refiners_perceptual.py).
Sizes not divisible by 4 are reflect-padded before encoding and cropped after decoding.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsyn.models.base import Conditioning, ImageSpec, NetOptions, RefinerSpec, frozen, register
from medsyn.models.layers import scale_channels
from medsyn.models.refiners_base import Phase, RefinerObjective, ResBlock, recomputed, recomputing, run_layers
from medsyn.models.refiners_perceptual import OFF_NOTICE, PerceptualLoss, load_vgg19_features
from medsyn.models.refiners_simgan import BRAIN_PAPER

ENCODER_CHANNELS = 64  # first conv; each of the two downsamplings doubles it (64 -> 128 -> 256)
DOWNSAMPLINGS = 2
RES_BLOCKS = 4
STYLE_DIM = 8  # MUNIT's style code length
MLP_DIM = 256  # MUNIT's style MLP width
CRITIC_CHANNELS = 64  # first conv of every critic scale; doubled by each later conv (64 -> 512)
CRITIC_LAYERS = 4
CRITIC_SCALES = 3
LEAK = 0.2
DOMAINS = ("synthetic", "real")


def conv_block(c_in: int, c_out: int, kernel: int, stride: int, norm: nn.Module | None, act: nn.Module | None) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, padding=(kernel - 1) // 2 if stride == 1 else 1, padding_mode="reflect")]
    return nn.Sequential(*layers, *(m for m in (norm, act) if m is not None))


def instance_norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False)


class AdaptiveInstanceNorm(nn.Module):
    """Instance norm whose per-sample scale and shift the decoder sets from the style code before each forward."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.params: Tensor | None = None  # (N, 2C): shifts, then scales

    def forward(self, x: Tensor) -> Tensor:
        shift, scale = self.params.chunk(2, dim=1)
        return F.instance_norm(x) * scale[:, :, None, None] + shift[:, :, None, None]


class ContentEncoder(nn.Sequential):
    recompute_blocks = False  # set from the config (refiners_base.set_recompute_blocks)

    def __init__(self, channels: int, width: int):
        layers = [conv_block(channels, width, 7, 1, instance_norm(width), nn.ReLU(inplace=True))]
        for _ in range(DOWNSAMPLINGS):
            layers.append(conv_block(width, 2 * width, 4, 2, instance_norm(2 * width), nn.ReLU(inplace=True)))
            width *= 2
        layers += [ResBlock(width, instance_norm, padding_mode="reflect") for _ in range(RES_BLOCKS)]
        super().__init__(*layers)
        self.out_channels = width

    def forward(self, images: Tensor) -> Tensor:
        return run_layers(self, images, recomputing(self))


class StyleEncoder(nn.Sequential):
    """MUNIT's style encoder: four strided convs (no norm: it would erase the style), global pooling, 1x1 conv."""

    def __init__(self, channels: int, width: int, style_dim: int):
        layers = [conv_block(channels, width, 7, 1, None, nn.ReLU(inplace=True))]
        for i in range(4):
            out = 2 * width if i < 2 else width
            layers.append(conv_block(width, out, 4, 2, None, nn.ReLU(inplace=True)))
            width = out
        super().__init__(*layers, nn.AdaptiveAvgPool2d(1), nn.Conv2d(width, style_dim, 1), nn.Flatten())


class Decoder(nn.Module):
    recompute_blocks = False  # set from the config (refiners_base.set_recompute_blocks)

    def __init__(self, width: int, channels: int, style_dim: int, mlp_dim: int = MLP_DIM):
        super().__init__()
        norm = AdaptiveInstanceNorm if style_dim else instance_norm
        self.blocks = nn.Sequential(*[ResBlock(width, norm, padding_mode="reflect") for _ in range(RES_BLOCKS)])
        up: list[nn.Module] = []
        for _ in range(DOWNSAMPLINGS):
            up += [nn.Upsample(scale_factor=2, mode="nearest"),
                   conv_block(width, width // 2, 5, 1, nn.GroupNorm(1, width // 2), nn.ReLU(inplace=True))]
            width //= 2
        self.up = nn.Sequential(*up, conv_block(width, channels, 7, 1, None, nn.Tanh()))
        self.adain = [m for m in self.blocks.modules() if isinstance(m, AdaptiveInstanceNorm)]
        self.mlp = None
        if style_dim:
            n_params = sum(2 * m.channels for m in self.adain)
            self.mlp = nn.Sequential(nn.Linear(style_dim, mlp_dim), nn.ReLU(inplace=True), nn.Linear(mlp_dim, mlp_dim),
                                     nn.ReLU(inplace=True), nn.Linear(mlp_dim, n_params))

    def forward(self, content: Tensor, style: Tensor | None) -> Tensor:
        params = self.mlp(style) if self.mlp is not None else None
        recompute, x = recomputing(self), content
        for block in self.blocks:
            norms = [m for m in block.modules() if isinstance(m, AdaptiveInstanceNorm)]
            own = None
            if params is not None:  # this block's slice of the MLP's output, in the order of self.adain
                width = sum(2 * m.channels for m in norms)
                own, params = params[:, :width], params[:, width:]
            x = recomputed(styled, block, norms, x, own, state=block) if recompute else styled(block, norms, x, own)
        return self.up(x)


def styled(block: nn.Module, norms: list[AdaptiveInstanceNorm], x: Tensor, params: Tensor | None) -> Tensor:
    """``block(x)`` with its AdaIN shifts and scales set from ``params`` first. The decoder runs once
    per stream and each run sets them anew, so a recomputation in the backward must set its own run's
    again: they are an input of the recomputed function, not state read when it runs."""
    for module in norms:
        module.params, params = params[:, : 2 * module.channels], params[:, 2 * module.channels:]
    return block(x)


class DomainAutoencoder(nn.Module):
    """One domain's content encoder, decoder and (MUNIT) style encoder."""

    def __init__(self, spec: ImageSpec, options: NetOptions, style_dim: int):
        super().__init__()
        self.size, self.padded = spec.size, math.ceil(spec.size / 2**DOWNSAMPLINGS) * 2**DOWNSAMPLINGS
        width = scale_channels(ENCODER_CHANNELS, options.width)
        self.content = ContentEncoder(spec.channels, width)
        self.style = StyleEncoder(spec.channels, width, style_dim) if style_dim else None
        self.decoder = Decoder(self.content.out_channels, spec.channels, style_dim, scale_channels(MLP_DIM, options.width))

    def _pad(self, images: Tensor) -> Tensor:
        extra = self.padded - self.size
        return F.pad(images, (0, extra, 0, extra), mode="reflect") if extra else images

    def encode(self, images: Tensor) -> Tensor:
        return self.content(self._pad(images))

    def own_style(self, images: Tensor) -> Tensor | None:
        return None if self.style is None else self.style(self._pad(images))

    def decode(self, content: Tensor, style: Tensor | None) -> Tensor:
        return self.decoder(content, style)[..., : self.size, : self.size]


class Translator(nn.Module):
    """Synthetic and real autoencoders; ``refine`` maps synthetic images into the real domain."""

    def __init__(self, spec: ImageSpec, options: NetOptions, style_dim: int = 0):
        super().__init__()
        self.style_dim = style_dim
        self.domains = nn.ModuleDict({d: DomainAutoencoder(spec, options, style_dim) for d in DOMAINS})

    def random_style(self, n: int, like: Tensor) -> Tensor | None:
        return like.new_empty(n, self.style_dim).normal_() if self.style_dim else None

    def refine(self, synthetic: Tensor, style: Tensor | None = None) -> Tensor:
        """UNIT decodes the content mean (no VAE noise, as at test time); MUNIT needs a style (N, style_dim)."""
        return self.domains["real"].decode(self.domains["synthetic"].encode(synthetic), style)


class MultiScaleCritic(nn.Module):
    """LSGAN patch critics on the image and its 2x and 4x average-pooled versions; returns every scale's map."""

    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__()
        self.scales = nn.ModuleList()
        side = spec.size
        for _ in range(CRITIC_SCALES):
            layers, c_in = [], spec.channels
            # as many stride-2 convs as the side allows (all four from 16 px up): a 1-px map cannot be halved
            for i in range(min(CRITIC_LAYERS, int(math.log2(side)))):
                c_out = scale_channels(CRITIC_CHANNELS * 2**i, options.width)
                layers.append(conv_block(c_in, c_out, 4, 2, None, nn.LeakyReLU(LEAK, inplace=True)))
                c_in = c_out
            self.scales.append(nn.Sequential(*layers, nn.Conv2d(c_in, 1, 1)))
            side = (side + 1) // 2
        self.downsample = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, images: Tensor) -> list[Tensor]:
        outputs = []
        for critic in self.scales:
            outputs.append(critic(images))
            images = self.downsample(images)
        return outputs


class DomainCritics(nn.ModuleDict):
    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__({d: MultiScaleCritic(spec, options) for d in DOMAINS})


def lsgan_d(critic: MultiScaleCritic, fake: Tensor, real: Tensor) -> Tensor:
    return sum(f.pow(2).mean() + (r - 1).pow(2).mean() for f, r in zip(critic(fake), critic(real)))


def lsgan_g(critic: MultiScaleCritic, fake: Tensor) -> Tensor:
    return sum((f - 1).pow(2).mean() for f in critic(fake))


def sample_latent(content: Tensor) -> Tensor:
    """UNIT's VAE: a unit-variance Gaussian around the encoder's output (its mean)."""
    return content + torch.randn_like(content)


def kl(content: Tensor) -> Tensor:
    """KL to N(0, I) of a unit-variance Gaussian: only the squared mean depends on the encoder."""
    return content.pow(2).mean()


class UnitObjective(RefinerObjective):
    """UNIT's loss (Liu et al. 2017, with the perceptual term of the authors' repository), for both models."""

    def __init__(self, translator, discriminator, cfg, critic_input=None):
        super().__init__(translator, discriminator, cfg, critic_input)
        self.perceptual: PerceptualLoss | None = None
        if cfg.perceptual_weights and cfg.perceptual_weight > 0:
            device = next(translator.parameters()).device
            self.perceptual = PerceptualLoss(load_vgg19_features(cfg.perceptual_weights)).to(device)
        elif cfg.perceptual_weight > 0:
            self.notices.append(OFF_NOTICE)

    def translations(self, x_a: Tensor, x_b: Tensor) -> dict[str, Tensor]:
        """Every image and code of UNIT's four streams for synthetic (a) and real (b) batches."""
        syn, real, T = self.translator.domains["synthetic"], self.translator.domains["real"], self.translator
        out = {"h_a": syn.encode(x_a), "h_b": real.encode(x_b)}
        s_a, s_b = syn.own_style(x_a), real.own_style(x_b)
        z_a, z_b = sample_latent(out["h_a"]), sample_latent(out["h_b"])
        out["x_aa"], out["x_bb"] = syn.decode(z_a, s_a), real.decode(z_b, s_b)  # within-domain reconstruction
        out["x_ba"] = syn.decode(z_b, T.random_style(len(x_b), x_b))  # translation b -> a
        out["x_ab"] = real.decode(z_a, T.random_style(len(x_a), x_a))  # translation a -> b: the refinement
        out["h_ab"], out["h_ba"] = real.encode(out["x_ab"]), syn.encode(out["x_ba"])
        out["x_aba"] = syn.decode(sample_latent(out["h_ab"]), s_a)  # cycle back with the image's own style
        out["x_bab"] = real.decode(sample_latent(out["h_ba"]), s_b)
        return out

    def losses(self, x_a: Tensor, x_b: Tensor) -> dict[str, Tensor]:
        """The unweighted terms of the translator's loss."""
        t, D, judged = self.translations(x_a, x_b), self.discriminator, self.critic_input
        terms = {
            "recon": F.l1_loss(t["x_aa"], x_a) + F.l1_loss(t["x_bb"], x_b),
            "kl": kl(t["h_a"]) + kl(t["h_b"]),
            "cycle": F.l1_loss(t["x_aba"], x_a) + F.l1_loss(t["x_bab"], x_b),
            "cycle_kl": kl(t["h_ab"]) + kl(t["h_ba"]),
        }
        with frozen(D):
            terms["gan"] = lsgan_g(D["synthetic"], judged(t["x_ba"])) + lsgan_g(D["real"], judged(t["x_ab"]))
        if self.perceptual is not None:  # each translation keeps its source's content
            terms["perceptual"] = self.perceptual(t["x_ba"], x_b) + self.perceptual(t["x_ab"], x_a)
        return terms

    def phases(self, step: int) -> tuple[Phase, ...]:
        # the discriminators first, on fresh translations, then the translator (as the authors' trainer)
        return Phase.DISCRIMINATOR, Phase.TRANSLATOR

    def loss(self, phase, step, synthetic, real):
        cfg, D, T, judged = self.cfg, self.discriminator, self.translator, self.critic_input
        if phase is Phase.DISCRIMINATOR:
            with torch.no_grad():
                syn, rl = T.domains["synthetic"], T.domains["real"]
                x_ba = syn.decode(sample_latent(rl.encode(real)), T.random_style(len(real), real))
                x_ab = rl.decode(sample_latent(syn.encode(synthetic)), T.random_style(len(synthetic), synthetic))
            loss_d = cfg.gan_weight * (lsgan_d(D["synthetic"], judged(x_ba), judged(synthetic))
                                       + lsgan_d(D["real"], judged(x_ab), judged(real)))
            return loss_d, {"loss_d": loss_d.detach()}
        terms = self.losses(synthetic, real)
        weights = {"recon": cfg.recon_weight, "kl": cfg.kl_weight, "cycle": cfg.cycle_weight,
                   "cycle_kl": cfg.cycle_kl_weight, "gan": cfg.gan_weight, "perceptual": cfg.perceptual_weight}
        loss_g = sum(weights[k] * v for k, v in terms.items())
        return loss_g, {"loss_g": loss_g.detach(), **{k: v.detach() for k, v in terms.items()}}



UNIT_DEFAULTS = {
    "per_class": True,  # tumour and non-tumour images were refined separately
    "optimizer": "adam",
    "lr_g": 1e-4,
    "lr_d": 1e-4,
    "betas": (0.5, 0.999),
    "lr_halve_every": 20000,  # of 100,000 steps
    "batch": 1,
    "gan_weight": 1.0,
    "recon_weight": 10.0,
    "kl_weight": 0.01,
    "cycle_weight": 10.0,
    "cycle_kl_weight": 0.01,
    "perceptual_weight": 1.0,
}

register(RefinerSpec(
    name="unit",
    paper=f"{BRAIN_PAPER}, Table 2 with UNIT's shared latent and loss (Liu et al. 2017), as the paper trained it",
    objective=UnitObjective,
    family="unit",
    conditioning=Conditioning.OPTIONAL,
    build_generator=Translator,
    build_discriminator=DomainCritics,
    train_defaults=UNIT_DEFAULTS,
))

# The paper trained MUNIT's networks with the UNIT loss ("we do not need the style loss").
register(RefinerSpec(
    name="munit",
    paper=f"{BRAIN_PAPER}, Table 2 (MUNIT, Huang et al. 2018: AdaIN decoder, style codes; UNIT loss)",
    objective=UnitObjective,
    family="unit",
    conditioning=Conditioning.OPTIONAL,
    build_generator=lambda spec, options: Translator(spec, options, style_dim=STYLE_DIM),
    build_discriminator=DomainCritics,
    # recompute_blocks: 6.33 GB at PGGAN's 256x256 and 5.56 GB at 224 without, 5.22 and 4.64 GB with (bench/train_memory.py)
    train_defaults={**UNIT_DEFAULTS, "recompute_blocks": True},
))
