"""Deterministic, stateless batch drawing: batch number t is a pure function of (seed, t).

Because no sampler state exists, a resumed run draws exactly the batches the uninterrupted run
would have drawn, and nothing about the data pipeline needs checkpointing.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _mix(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64-style), so nearby inputs give unrelated streams."""
    x = 0x9E3779B97F4A7C15
    for part in parts:
        x ^= (part + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2)) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    return _mix(seed, step, stream)


class PermutationStream:
    """An endless concatenation of fresh permutations of range(n): every image once per epoch."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed = n, seed
        self._cache: dict[int, Tensor] = {}

    def _epoch(self, epoch: int) -> Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.pop(min(self._cache))
            gen = torch.Generator().manual_seed(_mix(self.seed, epoch, 7))
            self._cache[epoch] = torch.randperm(self.n, generator=gen)
        return self._cache[epoch]

    def take(self, start: int, count: int) -> Tensor:
        first, last = start // self.n, (start + count - 1) // self.n
        joined = torch.cat([self._epoch(e) for e in range(first, last + 1)])
        offset = start - first * self.n
        return joined[offset: offset + count]


class BatchSource:
    """Real batches from images held as one tensor (on the training device when it fits).

    Conditional mode: a batch of ``batch`` images drawn from the whole set. Per-class mode: ``batch``
    images of every class, class-major, as one generator per class is trained on its own class.
    """

    def __init__(self, images: Tensor, labels: Tensor, batch: int, per_class: bool, num_classes: int, seed: int):
        self.images, self.labels, self.batch, self.per_class, self.seed = images, labels, batch, per_class, seed
        self.num_classes = num_classes
        self._classes: ClassImages | None = None
        labels_cpu = labels.cpu()
        if per_class:
            self.class_index = [torch.nonzero(labels_cpu == k).flatten() for k in range(num_classes)]
            self.streams = [PermutationStream(len(ix), _mix(seed, k, 1)) for k, ix in enumerate(self.class_index)]
        else:
            self.streams = [PermutationStream(len(labels_cpu), _mix(seed, 0, 2))]

    @property
    def images_per_epoch(self) -> int:
        """Images a stream must serve to show each image once (largest class in per-class mode)."""
        return max(s.n for s in self.streams) * (len(self.streams) if self.per_class else 1)

    def _indices(self, index: int) -> Tensor:
        if self.per_class:
            return torch.cat([ix[s.take(index * self.batch, self.batch)] for ix, s in zip(self.class_index, self.streams)])
        return self.streams[0].take(index * self.batch, self.batch)

    def draw(self, index: int) -> tuple[Tensor, Tensor]:
        idx = self._indices(index).to(self.images.device, non_blocking=True)
        return self.images.index_select(0, idx), self.labels.index_select(0, idx)

    def draw_pairs(self, index: int) -> tuple[Tensor, Tensor, Tensor]:
        """(sources x_j, labels, anchors x_i) for models that judge pairs of same-class images.

        The sources are batch ``index`` as ``draw`` gives it; each anchor is another image of its
        source's class (the same one only when the class has a single image), a pure function of
        (seed, index) like the batch itself.
        """
        if self._classes is None:  # built on first use: only pair models need it
            self._classes = ClassImages(self.labels, self.num_classes)
        idx = self._indices(index)
        gen = torch.Generator().manual_seed(_mix(self.seed, index, 3))
        anchors = self._classes.other_of_class(idx, gen)
        idx, anchors = idx.to(self.images.device, non_blocking=True), anchors.to(self.images.device, non_blocking=True)
        return self.images.index_select(0, idx), self.labels.index_select(0, idx), self.images.index_select(0, anchors)


class ClassImages:
    """Indices of a labeled set grouped by class, to pick real images of a given class reproducibly.

    Args:
        labels: int64 (N,) class of every image.
        num_classes: number of classes (some may have no images).
    """

    def __init__(self, labels: Tensor, num_classes: int):
        labels = labels.cpu().long()
        self.order = torch.argsort(labels, stable=True)  # image indices, class-major, each class in data order
        self.counts = torch.bincount(labels, minlength=num_classes)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.rank = torch.empty_like(self.order)  # rank[i]: position of image i within its class
        self.rank[self.order] = torch.arange(len(labels)) - self.starts[labels[self.order]]
        self.labels = labels

    def other_of_class(self, idx: Tensor, generator: torch.Generator) -> Tensor:
        """For each image index, a uniformly drawn different image of its class (itself if alone)."""
        klass = self.labels[idx]
        count = self.counts[klass]
        offset = 1 + (torch.rand(len(idx), generator=generator) * (count - 1)).long().clamp_max((count - 2).clamp_min(0))
        offset = torch.where(count > 1, offset, torch.zeros_like(offset))
        return self.order[self.starts[klass] + (self.rank[idx] + offset) % count]

    def of_class(self, klass: Tensor, generator: torch.Generator) -> Tensor:
        """A uniformly drawn image index of each requested class (classes must have images)."""
        count = self.counts[klass]
        if bool((count == 0).any()):
            raise ValueError(f"class {int(klass[count == 0][0])} has no images to use as sources")
        pick = (torch.rand(len(klass), generator=generator) * count).long().clamp_max(count - 1)
        return self.order[self.starts[klass] + pick]

    def first_of_class(self, klass: int, count: int) -> Tensor:
        """The first ``count`` images of a class in data order, repeated cyclically when it has fewer."""
        n = int(self.counts[klass])
        if n == 0:
            raise ValueError(f"class {klass} has no images to use as sources")
        return self.order[int(self.starts[klass]) + torch.arange(count) % n]


class SourcePool:
    """Real images, in [-1, 1], that an image-input generator rewrites: picked by class, reproducibly.

    Args:
        images: (N, C, S, S) in [-1, 1], on the device the generator runs on.
        labels: int64 (N,).
        num_classes: classes of the model.
    """

    def __init__(self, images: Tensor, labels: Tensor, num_classes: int):
        self.images = images
        self.classes = ClassImages(labels, num_classes)

    def pick(self, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(images, their indices): one uniformly drawn image of each requested class."""
        idx = self.classes.of_class(labels.cpu(), generator)
        return self.images.index_select(0, idx.to(self.images.device)), idx

    def first(self, labels: Tensor) -> Tensor:
        """Images for a class-major label list: the first images of each class, in data order."""
        labels = labels.cpu()
        idx = torch.cat([self.classes.first_of_class(int(k), int((labels == k).sum())) for k in labels.unique_consecutive()])
        return self.images.index_select(0, idx.to(self.images.device))
