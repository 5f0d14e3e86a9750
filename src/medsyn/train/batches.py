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
        self.images, self.labels, self.batch, self.per_class = images, labels, batch, per_class
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

    def draw(self, index: int) -> tuple[Tensor, Tensor]:
        if self.per_class:
            idx = torch.cat([ix[s.take(index * self.batch, self.batch)] for ix, s in zip(self.class_index, self.streams)])
        else:
            idx = self.streams[0].take(index * self.batch, self.batch)
        idx = idx.to(self.images.device, non_blocking=True)
        return self.images.index_select(0, idx), self.labels.index_select(0, idx)
