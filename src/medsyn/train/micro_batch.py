"""A training step's batch judged by the discriminator in passes of a few images (``micro_batch``).

The batch's gradient is the sum of its passes' gradients, each pass's loss weighted by its share
of the batch, so the update is the whole batch's while memory holds one pass's activations
(StyleGAN2-ADA's ``batch_gpu``). This is exact only when the discriminator judges each image on
its own: batch norm couples every image of a batch and is refused; PGGAN's minibatch standard
deviation couples groups of a few images, so passes must hold whole groups. The generator still
draws the whole batch at once (its batch norm sees the batch); only the discriminator is split.
"""
from __future__ import annotations

import contextlib
import math
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from medsyn.errors import ConfigError

Stats = dict[str, Tensor]


def pass_multiple(discriminator: nn.Module) -> int | None:
    """The number of images every pass must be a multiple of; None when passes cannot be exact.

    A module declares a coupling of ``sample_group`` consecutive images with that attribute
    (PGGAN's minibatch standard deviation); batch norm couples the whole batch.
    """
    multiple = 1
    for module in discriminator.modules():
        if isinstance(module, _BatchNorm):
            return None
        multiple = math.lcm(multiple, int(getattr(module, "sample_group", 1)))
    return multiple


def check_micro_batch(micro_batch: int | None, discriminator: nn.Module, model: str) -> None:
    """Refuse a micro_batch the discriminator would judge differently from the whole batch."""
    if micro_batch is None:
        return
    multiple = pass_multiple(discriminator)
    if multiple is None:
        raise ConfigError(f"micro_batch: the {model} discriminator has batch norm, which couples the images of a "
                          f"batch, so passes of {micro_batch} would train a different model; lower --batch instead")
    if micro_batch % multiple:
        raise ConfigError(f"micro_batch must be a multiple of {multiple} for {model} (its discriminator compares "
                          f"groups of {multiple} images), got {micro_batch}")


def passes(n: int, micro_batch: int | None) -> list[slice]:
    """Consecutive slices of at most ``micro_batch`` of ``n`` images (one slice without micro_batch)."""
    size = n if micro_batch is None else max(1, micro_batch)
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def weight_of(part: slice, n: int) -> float:
    return (part.stop - part.start) / n


def accumulate(total: Stats, stats: Stats, weight: float) -> None:
    """Add a pass's statistics into ``total``, weighted by its share of the batch."""
    for key, value in stats.items():
        value = value.detach().float() * weight
        total[key] = total[key] + value if key in total else value


def sync_unless_last(module: nn.Module, index: int, count: int) -> contextlib.AbstractContextManager:
    """DDP all-reduces gradients on every backward; passes before the last only accumulate."""
    if index < count - 1 and hasattr(module, "no_sync"):
        return module.no_sync()
    return contextlib.nullcontext()


def backward_through(fake: Tensor, leaf: Tensor) -> None:
    """Send the gradient gathered on ``leaf`` (a detached copy of ``fake``) into the generator."""
    if leaf.grad is not None:
        fake.backward(leaf.grad.to(fake.dtype))


def detached_leaf(fake: Tensor) -> Tensor:
    """A leaf copy of ``fake`` the discriminator passes write their gradients into."""
    return fake.detach().requires_grad_(True)

