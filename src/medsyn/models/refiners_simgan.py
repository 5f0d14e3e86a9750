"""SimGAN (Shrivastava et al. 2017) as the brain-MRI paper used it to refine PGGAN images (Table 3).

Refiner: 9x9 conv to 64 channels, 12 ResNet blocks, 1x1 conv to the image channels with tanh; batch
norm after every conv but the output. Discriminator: a fully convolutional net whose output is a
grid of 2-way (real / refined) logits, one per image patch: the "local adversarial loss". Its
convs are padded (Table 3 uses none) so that the same net serves 28 px images; at 224 px it scores
10x10 patches where the paper's unpadded net scored 7x7.

Objective: refiner loss = sum over patches of -log D_real(R(x)) + reg_weight * sum over pixels of
|R(x) - x| (per image, mean over the batch; the sums are what make the paper's 5e-5 meaningful).
The first ``pretrain_steps`` steps train the refiner on the regulariser alone; afterwards one
discriminator update follows every ``refiner_steps`` refiner updates, on a batch that is half the
current refined images and half drawn from a history buffer of earlier ones.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsyn import papers
from medsyn.models.base import Conditioning, ImageSpec, NetOptions, RefinerSpec, frozen, register
from medsyn.models.layers import scale_channels
from medsyn.models.refiners_base import Phase, RefinerObjective, ResBlock, recomputing, run_layers

REFINER_CHANNELS = 64
REFINER_BLOCKS = 12
DISCRIMINATOR_CHANNELS = (96, 64, 64, 32, 32)  # Table 3: the five convs before the 2-way output
REAL, REFINED = 0, 1  # class indices of the discriminator's per-patch logits

BRAIN_PAPER = papers.BRAIN_MRI


class SimGANRefiner(nn.Module):
    """Synthetic image -> refined image of the same size (all convs keep the side)."""

    style_dim = 0
    recompute_blocks = False  # set from the config (refiners_base.set_recompute_blocks)

    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__()
        width = scale_channels(REFINER_CHANNELS, options.width)
        self.net = nn.Sequential(
            nn.Conv2d(spec.channels, width, 9, padding=4), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            *[ResBlock(width, nn.BatchNorm2d, relu_after=True) for _ in range(REFINER_BLOCKS)],
            nn.Conv2d(width, spec.channels, 1), nn.Tanh(),
        )

    def forward(self, synthetic: Tensor) -> Tensor:
        return run_layers(self.net, synthetic, recomputing(self))

    def refine(self, synthetic: Tensor, style: Tensor | None = None) -> Tensor:
        return self(synthetic)


class LocalDiscriminator(nn.Module):
    """Image -> (N, 2, h, w) per-patch logits for (real, refined)."""

    def __init__(self, spec: ImageSpec, options: NetOptions):
        super().__init__()
        c = [scale_channels(n, options.width) for n in DISCRIMINATOR_CHANNELS]

        def conv(c_in, c_out, kernel, stride):
            return [nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.net = nn.Sequential(
            *conv(spec.channels, c[0], 9, 3), *conv(c[0], c[1], 5, 1), nn.MaxPool2d(3, 2, padding=1),
            *conv(c[1], c[2], 5, 2), *conv(c[2], c[3], 3, 1), nn.MaxPool2d(3, 2, padding=1),
            *conv(c[3], c[4], 1, 1),
            nn.Conv2d(c[4], 2, 1),  # logits: Table 3's ReLU here would clip them, softmax follows instead
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


def patch_cross_entropy(logits: Tensor, target: int) -> Tensor:
    """Cross-entropy of every patch against one class, summed over patches, mean over images."""
    labels = torch.full((logits.shape[0], *logits.shape[2:]), target, dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits.float(), labels, reduction="none").flatten(1).sum(1).mean()


class HistoryBuffer:
    """Refined images from earlier refiners, so the discriminator does not forget old artefacts.

    Shrivastava et al. 2017, Sec. 2.3: half of each discriminator batch comes from the current
    refiner and half from the buffer; afterwards as many buffer entries (random ones once the
    buffer is full) are replaced by the current refined images. All randomness comes from the
    global torch RNG, which the loop seeds per step, and the content is checkpointed.

    Args:
        capacity: images kept (0 disables the buffer: the batch passes through).
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.images: Tensor | None = None  # (capacity, C, H, W) once the first batch arrives
        self.count = 0

    def mix(self, refined: Tensor) -> Tensor:
        """The discriminator batch for ``refined`` (detached), and the buffer updated with it."""
        refined = refined.detach()
        half = min(len(refined) // 2, self.capacity)
        if half == 0:
            return refined
        if self.images is None:
            self.images = refined.new_zeros((self.capacity, *refined.shape[1:]))
        if self.count > 0:
            drawn = self.images[torch.randint(self.count, (half,), device=refined.device)]
            batch = torch.cat([refined[: len(refined) - half], drawn])
        else:
            batch = refined
        self._store(refined[:half])
        return batch

    def _store(self, images: Tensor) -> None:
        free = min(self.capacity - self.count, len(images))
        self.images[self.count:self.count + free] = images[:free]
        self.count += free
        rest = images[free:]
        if len(rest):
            slots = torch.randperm(self.capacity, device=rest.device)[: len(rest)]
            self.images[slots] = rest

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "images": None if self.images is None else self.images[: self.count].clone()}

    def load_state_dict(self, state: dict[str, Any], like: Tensor) -> None:
        self.count = int(state["count"])
        self.images = None
        if state["images"] is not None:
            self.images = like.new_zeros((self.capacity, *state["images"].shape[1:]))
            self.images[: self.count] = state["images"].to(like.device)


class SimGANObjective(RefinerObjective):
    """Self-regularised local adversarial refinement with a history buffer (see the module docstring)."""

    def __init__(self, translator, discriminator, cfg, critic_input=None):
        super().__init__(translator, discriminator, cfg, critic_input)
        self.history = HistoryBuffer(cfg.history_size)
        self.last_d_stats: dict[str, Tensor] = {}  # shown on steps without a discriminator update too
        self.d_updates = 0
        self._refined: Tensor | None = None  # this step's refined batch, judged again by the D update

    def phases(self, step: int) -> tuple[Phase, ...]:
        """The refiner every step; the discriminator after every refiner_steps-th refiner update once
        the regulariser-only pretraining is over (the refined images it judges are the refiner's)."""
        adversarial = step >= self.cfg.pretrain_steps
        update_d = adversarial and (step - self.cfg.pretrain_steps) % self.cfg.refiner_steps == self.cfg.refiner_steps - 1
        return (Phase.TRANSLATOR, Phase.DISCRIMINATOR) if update_d else (Phase.TRANSLATOR,)

    def loss(self, phase, step, synthetic, real):
        if phase is Phase.TRANSLATOR:
            return self._refiner_loss(step, synthetic)
        fakes = self.history.mix(self._refined)
        judge = lambda images: self.discriminator(self.critic_input(images))  # noqa: E731
        loss_d = patch_cross_entropy(judge(real), REAL) + patch_cross_entropy(judge(fakes), REFINED)
        self.d_updates += 1
        self.last_d_stats = {"loss_d": loss_d.detach()}
        return loss_d, dict(self.last_d_stats)

    def _refiner_loss(self, step: int, synthetic: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        refined = self.translator(synthetic)
        self._refined = refined.detach()
        regulariser = (refined - synthetic).abs().flatten(1).sum(1).mean()
        loss_r = self.cfg.reg_weight * regulariser
        stats = {"reg_l1": regulariser.detach() / synthetic[0].numel()}  # per pixel, readable at any size
        if step >= self.cfg.pretrain_steps:
            with frozen(self.discriminator):
                realism = patch_cross_entropy(self.discriminator(self.critic_input(refined)), REAL)
            loss_r = loss_r + realism
            stats["loss_realism"] = realism.detach()
        return loss_r, {**stats, "loss_r": loss_r.detach(), **self.last_d_stats}

    def extra_state(self) -> dict[str, Any]:
        return {"history": self.history.state_dict(), "d_updates": self.d_updates,
                "last_d_stats": {k: v.cpu() for k, v in self.last_d_stats.items()}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        like = next(self.translator.parameters())
        self.history.load_state_dict(state["history"], like)
        self.d_updates = int(state["d_updates"])
        self.last_d_stats = {k: v.to(like.device) for k, v in state["last_d_stats"].items()}


register(RefinerSpec(
    name="simgan",
    paper=f"{BRAIN_PAPER}, Table 3 (SimGAN refiner, Shrivastava et al. 2017; one per class)",
    objective=SimGANObjective,
    conditioning=Conditioning.OPTIONAL,  # one refiner per class (the paper's), or one for all classes
    build_generator=SimGANRefiner,
    build_discriminator=LocalDiscriminator,
    family="simgan",
    train_defaults={
        "per_class": True,  # "we further refine ... tumor/non-tumor images separately"
        "optimizer": "sgd",  # "without momentum"
        "lr_g": 1e-4,
        "lr_d": 1e-4,
        "lr_drop_at": 0.75,  # halved at 15,000 of 20,000 steps
        "lr_drop_factor": 0.5,
        "batch": 10,
        "pretrain_steps": 500,  # the refiner first learns on the self-regulariser alone
        "refiner_steps": 5,  # refiner updates per discriminator update
        "reg_weight": 5e-5,
        "history_size": 1000,  # Shrivastava et al. give no size; 100 batches of 10 here
        "recompute_blocks": True,  # 12 full-size blocks of 10 images: 8.36 GB a step at 224x224, 4.10 GB recomputed (bench/train_memory.py)
    },
))
