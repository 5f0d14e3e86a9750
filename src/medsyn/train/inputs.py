"""What a training step feeds the networks, chosen by the model's spec (``ModelSpec.inputs``).

Most generators take noise and labels and their discriminator judges single images. GA-UNet
(the U-Net paper) rewrites a real image of the class and its critic judges pairs of same-class
images. The difference lives here, behind one interface, so the trainer has no branch for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from medsyn.models.base import GeneratorInputs
from medsyn.train.batches import BatchSource, SourcePool
from medsyn.train.distributed import Distributed
from medsyn.train.losses import Critic

Transform = Callable[[Tensor], Tensor]


@dataclass
class StepBatch:
    """One critic update's real data, sharded for this rank.

    Attributes:
        real: images in [-1, 1] the critic sees as real.
        labels: their classes.
        generator_args: what G takes after (z, labels): () or (sources,).
        anchors: pair models: the real image each judged image is paired with; else None.
    """

    real: Tensor
    labels: Tensor
    generator_args: tuple[Tensor, ...] = ()
    anchors: Tensor | None = None

    def part(self, rows: slice) -> "StepBatch":
        """The rows of one discriminator pass (see micro_batch.py)."""
        return StepBatch(self.real[rows], self.labels[rows], tuple(a[rows] for a in self.generator_args),
                         None if self.anchors is None else self.anchors[rows])


class NoiseInputs:
    """G(z, labels); D(image, labels).

    Args:
        batches: the real images, drawn as a pure function of the update index.
        augment: classic augmentation applied to real images before the critic (None: none).
        ctx: the torchrun process; blocks: equal blocks of the global batch (per-class mode).
    """

    def __init__(self, batches: BatchSource, augment: Transform | None, ctx: Distributed, blocks: int):
        self.batches, self.augment, self.ctx, self.blocks = batches, augment, ctx, blocks

    def shard(self, batch: Tensor) -> Tensor:
        return self.ctx.shard(batch, self.blocks)

    def draw(self, index: int) -> StepBatch:
        real, labels = self.batches.draw(index)
        if self.augment is not None:  # on the global batch, so the shards see one-process augmentation
            real = self.augment((real + 1) / 2) * 2 - 1
        return StepBatch(self.shard(real), self.shard(labels))

    def critic(self, D: torch.nn.Module, batch: StepBatch, critic_input: Transform) -> Critic:
        """D as the losses call it, with ``critic_input`` (DiffAugment/ADA) applied to what it judges."""
        return lambda images, labels: D(critic_input(images), labels)

    def source_pool(self, num_classes: int) -> SourcePool | None:
        """Real images the generator rewrites in grids and BN calibration (None: it takes noise alone)."""
        return None


class SameClassPairInputs(NoiseInputs):
    """gaunet: G(z, labels, x_j) rewrites a real image x_j; D judges [x_i, x] for another real x_i of
    the class: the real pair {x_i, x_j} against the fake pair {x_i, G(z, x_j)}."""

    def draw(self, index: int) -> StepBatch:
        sources, labels, anchors = self.batches.draw_pairs(index)
        if self.augment is not None:  # one call, so both images of a pair get the same augmentation policy
            both = self.augment((torch.cat([sources, anchors]) + 1) / 2) * 2 - 1
            sources, anchors = both.split(len(sources))
        sources = self.shard(sources)
        return StepBatch(sources, self.shard(labels), (sources,), self.shard(anchors))

    def critic(self, D, batch, critic_input):
        # The losses stay unchanged: real x = x_j gives the real pair, a fake x_g the fake pair, and
        # WGAN-GP's interpolates (and its gradient) are taken in x with the anchor fixed. The pair is
        # augmented as one image, so anchor and image get the same geometric transform.
        anchors = batch.anchors
        return lambda images, labels: D(critic_input(torch.cat([anchors.to(images.dtype), images], dim=1)), labels)

    def source_pool(self, num_classes: int) -> SourcePool | None:
        return SourcePool(self.batches.images, self.batches.labels, num_classes)


STEP_INPUTS: dict[GeneratorInputs, type[NoiseInputs]] = {
    GeneratorInputs.NOISE: NoiseInputs,
    GeneratorInputs.SAME_CLASS_PAIRS: SameClassPairInputs,
}

# Images the critic judges at once: pair models concatenate two on the channel axis.
IMAGES_PER_CRITIC_INPUT = {GeneratorInputs.NOISE: 1, GeneratorInputs.SAME_CLASS_PAIRS: 2}
