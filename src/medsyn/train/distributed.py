"""Data-parallel training under torchrun: one process per device, the global batch sharded.

``torchrun --nproc_per_node=K -m medsyn train ...`` starts K copies of medsyn; torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK) tells each which it is. Every rank draws the same
global batch and the same latents (both are pure functions of (seed, step)) and keeps its own
slice, so a run on K processes sees exactly the images and noise of a one-process run with the
same global batch. Gradients are averaged by DistributedDataParallel, and batch norm statistics
are taken over the global batch (``SyncedBatchNorm``), so the result matches one process within
floating-point tolerance. Rank 0 alone logs and writes checkpoints and grids.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from medsyn.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    """Which process this is. ``world_size == 1`` is an ordinary single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: Tensor, blocks: int = 1) -> Tensor:
        """This rank's slice of a global batch made of ``blocks`` equal blocks (one per class in
        per-class training), so every rank keeps a share of every block."""
        if not self.enabled:
            return batch
        per_block = batch.shape[0] // blocks
        share = per_block // self.world_size
        grouped = batch.reshape(blocks, per_block, *batch.shape[1:])
        return grouped[:, self.rank * share:(self.rank + 1) * share].reshape(blocks * share, *batch.shape[1:])

    def check_batch(self, batch: int) -> None:
        if self.enabled and batch % self.world_size:
            raise ConfigError(f"the batch ({batch}) must divide evenly among {self.world_size} processes; "
                              f"pass --batch {batch - batch % self.world_size or self.world_size}")

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def mean(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """Average scalar statistics over ranks (at log steps only: it waits for every rank)."""
        if not self.enabled or not values:
            return values
        stacked = torch.stack([v.detach().float() for v in values.values()])
        dist.all_reduce(stacked)
        return dict(zip(values, stacked / self.world_size))

    def sum(self, tensor: Tensor) -> Tensor:
        """The sum of ``tensor`` over ranks (a copy; itself when single-process)."""
        if not self.enabled:
            return tensor
        total = tensor.detach().clone()
        dist.all_reduce(total)
        return total

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when it is True on one (a Ctrl-C that reached only some ranks)."""
        if not self.enabled:
            return flag
        value = torch.tensor([float(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())


SINGLE = Distributed()


def from_environment() -> Distributed:
    """The torchrun process this is, or SINGLE when not started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def initialise(ctx: Distributed, device: torch.device) -> torch.device:
    """Join the process group (NCCL on GPUs, gloo on CPUs) and return this rank's device."""
    if not ctx.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # whoever joined leaves at exit: the CLI leaves in main()'s finally, and a Python caller of
        # medsyn.api under torchrun would otherwise exit still in the group (see leave())
        atexit.register(leave)
    return device


def leave() -> None:
    """Leave the process group, if this process joined one.

    Registered at exit by ``initialise`` and called by the CLI as it exits (a second call does
    nothing): a process that exits still in a gloo group tears its communication threads down
    during interpreter shutdown, where a rank can abort ("terminate called without an active
    exception") after its work is done and fail the whole torchrun job.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class SyncedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics cover the global batch of all ranks.

    torch.nn.SyncBatchNorm does the same on GPUs only; this one uses differentiable all-reduces
    (``global_moments``), so it runs on gloo as well and the CPU test exercises the GPU path.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and in_process_group()):
            return super().forward(x)
        shape = [1, -1] + [1] * (x.dim() - 2)
        values = x.float()  # statistics in float32 under bf16 autocast; one copy serves both uses
        mean, var, count = global_moments(values)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        out = (values - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def in_process_group() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_moments(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel (mean, biased variance, element count) of the global batch that ``x`` is this rank's
    share of; call it inside a process group.

    Differentiable (the all-reduces pass gradients back to every rank's share). Two passes (mean,
    then centred squares) keep the variance as accurate as batch norm's own; sums and the count
    travel in one all-reduce, as ranks may hold unequal shares.
    """
    dims = [0, *range(2, x.dim())]
    shape = [1, -1] + [1] * (x.dim() - 2)
    totals = all_reduce(torch.cat([x.sum(dims), x.new_full((1,), x.numel() / x.shape[1])]))
    count = totals[-1]
    mean = totals[:-1] / count
    var = all_reduce((x - mean.view(shape)).square().sum(dims)) / count
    return mean, var, count


def all_reduce(tensor: Tensor) -> Tensor:
    """Differentiable sum over ranks."""
    return _AllReduceSum.apply(tensor)


class _AllReduceSum(torch.autograd.Function):
    # Every rank's output is the sum of every rank's input, so the gradient reaching an input is
    # the sum over ranks of the output gradients: an all-reduce again.
    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # Through the Function again, not a bare all_reduce: penalties that differentiate a gradient
        # (R1, WGAN-GP) backpropagate through this backward too, and need its own gradient.
        return _AllReduceSum.apply(grad)


def convert_batch_norm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d in ``module`` by a SyncedBatchNorm with the same state, in place,
    and point every layer with a ``moments`` hook (BatchRenorm2d) at the global batch's moments."""
    for name, child in module.named_children():
        if hasattr(child, "moments"):  # batch renormalisation (gaunet): same statistics, its own formula
            child.moments = global_moments
        elif isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            synced = SyncedBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats, device=child.running_mean.device)
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced)
        else:
            convert_batch_norm(child)
    return module


def data_parallel(module: nn.Module, ctx: Distributed, device: torch.device, find_unused_parameters: bool = False
                  ) -> nn.Module:
    """``module`` wrapped for gradient averaging across ranks (itself when single-process).

    ``find_unused_parameters``: progressive networks (pggan) leave the layers of later stages without
    gradients until they grow in; DDP must then look for unused parameters each step instead of
    waiting for them.
    """
    if not ctx.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    convert_batch_norm(module)
    # Buffers are not broadcast: synced batch norm already gives every rank the same statistics.
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   forward_sync_buffers=False, find_unused_parameters=find_unused_parameters)
