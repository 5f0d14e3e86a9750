"""PGGAN: progressive growing of GANs, as the brain-MRI paper trained it (Han et al. 2019, Table 1).

Karras et al. (2018) grow both networks from 4x4 to the target side: each new resolution first
fades in (its layers blended with the upsampled output of the previous resolution, weight
``alpha`` going 0 -> 1), then stabilises (alpha = 1). The paper's networks (Table 1):

* G: latent 512 -> 4x4 ("Conv 4x4") -> conv 3x3; per resolution: nearest upsample, two 3x3
  convs; a 1x1 linear toRGB. Leaky ReLU 0.2 and pixel-wise feature normalisation after every
  conv but the output. Channels by resolution 4..256: 512, 512, 256, 128, 64, 32, 16.
* D, the mirror: 1x1 fromRGB; per resolution two 3x3 convs and 2x2 average pooling; at 4x4
  minibatch standard deviation (one extra feature map), conv 3x3, conv 4x4, linear score.
* Every layer uses the equalised learning rate: weights drawn from N(0, 1) and scaled at run
  time by He's constant, so Adam moves every layer at the same relative speed.

The medsyn contract holds at every stage: G always returns (N, C, S, S) and D always takes it.
At a lower stage G renders at that stage's side and upsamples (nearest) to the full side; D
average-pools its input down to the stage's side before fromRGB. Sides are powers of two: G
renders the next one up and centre-crops (240 -> 256 -> 240), D pads its input with black back
to it (the paper zero-pads its 240x240 slices to 256x256).

Growth is a pure function of (step, total_steps), see ``progress_at``; the stage and alpha live
in buffers, so checkpoints and the EMA copy carry them, and a generator loaded from a run stopped
early renders at the stage it reached (upsampled, so it looks blocky) rather than untrained layers.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsyn import papers
from medsyn.models.base import Conditioning, ImageSpec, ModelSpec, NetOptions, register
from medsyn.models.layers import DiscriminatorHead, LabelConcat, center_crop, checked, scale_channels

BRAIN_PAPER = papers.BRAIN_MRI
CHANNELS = {4: 512, 8: 512, 16: 256, 32: 128, 64: 64, 128: 32, 256: 16}  # Table 1, G and D alike
FIRST_SIDE = 4
LEAK = 0.2
EMBED_DIM = 32  # class embedding appended to the normalised latent by conditional generators
MBSTD_GROUP = 4  # Karras et al.: standard deviation over groups of 4 samples
FINAL_STABLE_UNITS = 2  # the last resolution stabilises twice as long as the others (see progress_at)
EPSILON = 1e-8  # pixel norm and minibatch std, as Karras et al.


# ---- schedule ---------------------------------------------------------------------------------

def render_size(size: int) -> int:
    """The power of two the networks work at: 28 -> 32, 240 -> 256, 64 -> 64."""
    return 2 ** math.ceil(math.log2(size))


def stage_count(size: int) -> int:
    """Resolutions the networks grow through: 4, 8, ..., render_size(size)."""
    return int(math.log2(render_size(size) // FIRST_SIDE)) + 1


def growth_phases(stages: int) -> list[tuple[int, bool, int]]:
    """(stage, fading, length in units) of a run: 4x4 stabilises, then each new side fades in and stabilises."""
    phases = [(0, False, 1)]
    for stage in range(1, stages):
        phases += [(stage, True, 1), (stage, False, FINAL_STABLE_UNITS if stage == stages - 1 else 1)]
    return phases


def progress_at(step: int, total_steps: int, stages: int) -> tuple[int, float]:
    """Stage and fade-in weight at ``step`` of a ``total_steps`` run.

    Karras et al. gave every phase the same number of images (800k), so the run's steps are split
    into equal units: one for 4x4, two (fade-in, stabilise) for each larger side, and one extra
    for the last side, which is the one sampled (256: 14 units, 7% of the run each; 64: 10 units).
    During a fade-in alpha rises linearly from 0 at its first step; outside one it is 1. Steps at
    or past the end give the full network. Resuming with another ``steps`` re-times the growth.
    """
    phases = growth_phases(stages)
    total_units, done_units = sum(units for *_, units in phases), 0
    for stage, fading, units in phases:
        start = total_steps * done_units // total_units
        done_units += units
        end = total_steps * done_units // total_units
        if step < end:
            return stage, (step - start) / (end - start) if fading else 1.0
    return stages - 1, 1.0


class Growing(nn.Module):
    """Stage and alpha as buffers (saved, copied to the EMA), mirrored in a Python int for control flow.

    The mirror spares a device-to-host sync on every forward; it is refreshed whenever the buffers
    are set through ``set_stage`` or loaded from a state dict.
    """

    def __init__(self, stages: int):
        super().__init__()
        self.stages = stages
        # A network built outside training (a test, a sampler before loading) is the full network.
        self.register_buffer("stage", torch.tensor(stages - 1))
        self.register_buffer("alpha", torch.tensor(1.0))
        self.current_stage = stages - 1

    def set_progress(self, step: int, total_steps: int) -> None:
        self.set_stage(*progress_at(step, total_steps, self.stages))

    def set_stage(self, stage: int, alpha: float = 1.0) -> None:
        if not 0 <= stage < self.stages or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"stage must be in 0..{self.stages - 1} and alpha in [0, 1], got {stage}, {alpha}")
        self.stage.fill_(stage)
        self.alpha.fill_(alpha if stage > 0 else 1.0)  # 4x4 has nothing to fade from
        self.current_stage = stage

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.current_stage = int(self.stage)


# ---- layers -----------------------------------------------------------------------------------

class EqualConv2d(nn.Conv2d):
    """Conv with the equalised learning rate: N(0, 1) weights times gain / sqrt(fan_in) at run time."""

    def __init__(self, c_in: int, c_out: int, kernel: int, padding: int = 0, gain: float = math.sqrt(2)):
        super().__init__(c_in, c_out, kernel, padding=padding)
        nn.init.normal_(self.weight)
        nn.init.zeros_(self.bias)
        self.scale = gain / math.sqrt(c_in * kernel * kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.scale, self.bias)


class EqualLinear(nn.Linear):
    """Linear layer with the equalised learning rate (see EqualConv2d)."""

    def __init__(self, n_in: int, n_out: int, gain: float = math.sqrt(2)):
        super().__init__(n_in, n_out)
        nn.init.normal_(self.weight)
        nn.init.zeros_(self.bias)
        self.scale = gain / math.sqrt(n_in)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class PixelNorm(nn.Module):
    """Each pixel's feature vector scaled to unit mean square (Karras et al., Sec. 4.2)."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + EPSILON)


class MinibatchStd(nn.Module):
    """Appends one feature map: the standard deviation across samples, averaged over features and pixels.

    Over groups of MBSTD_GROUP consecutive samples. Karras et al.'s code groups with a stride
    (sample i in group i mod N/G); consecutive groups are the same statistic on a shuffled batch,
    and a torchrun shard (a contiguous slice whose size G divides) keeps every group whole, so
    two processes compute what one does. A batch that groups of 4 do not divide (a per-class
    shard of odd size) uses one group, the paper's whole-minibatch definition.
    """

    sample_group = MBSTD_GROUP  # images judged together: a micro_batch pass must hold whole groups

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        group = MBSTD_GROUP if n % MBSTD_GROUP == 0 else n
        grouped = x.float().view(n // group, group, *x.shape[1:])
        std = (grouped.var(dim=1, unbiased=False) + EPSILON).sqrt().mean(dim=(1, 2, 3))  # (N / group,)
        feature = std.repeat_interleave(group).view(n, 1, 1, 1).expand(n, 1, h, w).to(x.dtype)
        return torch.cat([x, feature], dim=1)


def conv3x3(c_in: int, c_out: int, pixel_norm: bool) -> nn.Sequential:
    layers = [EqualConv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(LEAK)]
    return nn.Sequential(*layers, PixelNorm()) if pixel_norm else nn.Sequential(*layers)


def sides(size: int) -> list[int]:
    """Side of each stage: 4, 8, ..., render_size(size)."""
    return [FIRST_SIDE * 2**stage for stage in range(stage_count(size))]


# ---- networks ---------------------------------------------------------------------------------

class LatentBlock(nn.Module):
    """Latent (+ class code) -> 4x4 features: the paper's "Conv 4x4" on a 1x1 latent, then conv 3x3."""

    def __init__(self, n_in: int, channels: int):
        super().__init__()
        self.channels = channels
        # gain sqrt(2)/4 as in Karras et al.'s code, which kept the scale of their first Theano version
        self.project = EqualLinear(n_in, channels * FIRST_SIDE**2, gain=math.sqrt(2) / 4)
        self.act = nn.Sequential(nn.LeakyReLU(LEAK), PixelNorm())
        self.conv = conv3x3(channels, channels, pixel_norm=True)

    def forward(self, latent: Tensor) -> Tensor:
        hidden = self.project(latent).view(-1, self.channels, FIRST_SIDE, FIRST_SIDE)
        return self.conv(self.act(hidden))


class PGGANGenerator(Growing):
    """Progressively grown generator; ``set_stage``/``set_progress`` pick the resolution it renders.

    Args:
        spec: output size, channels and classes (0 = unconditional).
        options: z_dim (the paper: 512) and the channel multiplier ``width``.
    """

    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__(stage_count(spec.size))
        self.z_dim, self.size, self.render_size = options.z_dim, spec.size, render_size(spec.size)
        self.sides = sides(spec.size)
        width = {side: scale_channels(CHANNELS[side], options.width) for side in self.sides}
        self.pixel_norm = PixelNorm()
        self.labels = LabelConcat(spec.num_classes, EMBED_DIM)
        self.first = LatentBlock(options.z_dim + self.labels.extra_features, width[FIRST_SIDE])
        self.grow = nn.ModuleDict({
            str(side): nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                conv3x3(width[side // 2], width[side], pixel_norm=True),
                conv3x3(width[side], width[side], pixel_norm=True),
            )
            for side in self.sides[1:]
        })
        self.to_rgb = nn.ModuleDict({  # linear 1x1 output layers
            str(side): EqualConv2d(width[side], spec.channels, 1, gain=1.0) for side in self.sides
        })

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Images (N, C, S, S) from z (N, z_dim) and labels (N,) or None; linear output, as the paper's."""
        # The latent is normalised too (Karras et al.), before the class code is appended.
        hidden = self.first(self.labels(self.pixel_norm(z), labels))
        stage, previous = self.current_stage, hidden
        for side in self.sides[1 : stage + 1]:
            previous, hidden = hidden, self.grow[str(side)](hidden)
        image = self.to_rgb[str(self.sides[stage])](hidden)
        if stage > 0:  # fade-in: blend with the previous side's image, upsampled
            faded = F.interpolate(self.to_rgb[str(self.sides[stage - 1])](previous), scale_factor=2, mode="nearest")
            image = torch.lerp(faded, image, self.alpha.to(image.dtype))
        if self.sides[stage] < self.render_size:
            image = F.interpolate(image, scale_factor=self.render_size // self.sides[stage], mode="nearest")
        return center_crop(image, self.size)


class PGGANDiscriminator(Growing):
    """Progressively grown critic, the mirror of PGGANGenerator; a projection head when conditional.

    Args:
        spec: input size, channels and classes (0 = unconditional).
        options: the channel multiplier ``width``.
    """

    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__(stage_count(spec.size))
        self.size, self.render_size = spec.size, render_size(spec.size)
        self.sides = sides(spec.size)
        width = {side: scale_channels(CHANNELS[side], options.width) for side in self.sides}
        top_down = self.sides[::-1]  # registered from the input side
        self.from_rgb = nn.ModuleDict({
            str(side): nn.Sequential(EqualConv2d(spec.channels, width[side], 1), nn.LeakyReLU(LEAK))
            for side in top_down
        })
        self.shrink = nn.ModuleDict({
            str(side): nn.Sequential(
                conv3x3(width[side], width[side], pixel_norm=False),
                conv3x3(width[side], width[side // 2], pixel_norm=False),
                nn.AvgPool2d(2),
            )
            for side in top_down[:-1]
        })
        last = width[FIRST_SIDE]
        self.final = nn.Sequential(
            MinibatchStd(),
            conv3x3(last + 1, last, pixel_norm=False),
            EqualConv2d(last, last, FIRST_SIDE),  # 4x4 -> 1x1
            nn.LeakyReLU(LEAK),
            nn.Flatten(),
        )
        self.head = DiscriminatorHead(last, spec.num_classes)
        self.head.score = EqualLinear(last, 1, gain=1.0)  # the paper's linear score, equalised like the rest

    def forward(self, images: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(score (N,), None) for images (N, C, S, S)."""
        images = pad_to(images, self.render_size)
        stage = self.current_stage
        side = self.sides[stage]
        if side < self.render_size:
            images = F.avg_pool2d(images, self.render_size // side)
        hidden = self.from_rgb[str(side)](images)
        if stage > 0:  # fade-in: blend with the half-side input's features, the mirror of G
            hidden = self.shrink[str(side)](hidden)
            faded = self.from_rgb[str(side // 2)](F.avg_pool2d(images, 2))
            hidden = torch.lerp(faded, hidden, self.alpha.to(hidden.dtype))
        for lower in range(stage - 1, 0, -1):  # the stages below, down to 8x8 -> 4x4
            hidden = self.shrink[str(self.sides[lower])](hidden)
        return self.head(self.final(hidden), labels)


def grow(network: nn.Module, step: int, total_steps: int) -> None:
    """The spec's growth hook: every grown network in ``network`` (one per class in per-class mode)
    takes the stage and fade-in of ``step``; the training loop calls it on G, D and the EMA copy."""
    for module in network.modules():
        if isinstance(module, Growing):
            module.set_progress(step, total_steps)


def pad_to(images: Tensor, side: int) -> Tensor:
    """Pad to side x side, centred as center_crop cuts; -1 is black in the networks' [-1, 1] range."""
    height, width = images.shape[-2:]
    if height == side and width == side:
        return images
    top, left = (side - height) // 2, (side - width) // 2
    return F.pad(images, (left, side - width - left, top, side - height - top), value=-1.0)


def size_note(size: int) -> str:
    rendered = render_size(size)
    if rendered == size:
        return ""
    return (
        f"pggan renders {rendered}x{rendered} and centre-crops to {size}x{size}; "
        f"its critic pads images with black back to {rendered}x{rendered}"
    )


register(
    ModelSpec(
        name="pggan",
        paper=f"{BRAIN_PAPER}, Table 1 (PGGAN, Karras et al. 2018; trained per class: --per-class)",
        objective="wgan-gp-drift",  # the paper's Eq. 1 plus PGGAN's drift term, see train/losses.py
        conditioning=Conditioning.OPTIONAL,
        build_generator=checked("pggan", Conditioning.OPTIONAL, PGGANGenerator),
        build_discriminator=checked("pggan", Conditioning.OPTIONAL, PGGANDiscriminator),
        train_defaults={
            "optimizer": "adam",
            "lr_g": 1e-3,
            "lr_d": 1e-3,
            "betas": (0.0, 0.99),
            "batch": 16,
            "micro_batch": 8,  # the critic in passes of 8 (two minibatch-std groups) bounds memory at 256x256 (bench/train_memory.py)
            "critic_steps": 1,  # "1 critic iteration per generator iteration"
            "epochs": 100,  # "We train the model (Table 1) for 100 epochs"
            "gp_weight": 10.0,
            "z_dim": 512,  # Table 1: latent vector 512 x 1 x 1
            "z_dist": "normal",  # "sampled from a Gaussian distribution"
            "ema_decay": 0.999,  # Karras et al.'s generator average (the paper uses their code)
            "augment": "pggan-crop",  # "random cropping in 0-15 pixels as DA"
        },
        size_note=size_note,
        growth=grow,
    )
)
