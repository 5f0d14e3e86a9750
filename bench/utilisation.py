"""Model FLOPs utilisation for the benchmarks: FLOPs counted, peak measured, both in this process.

FLOPs come from ``torch.utils.flop_counter``'s formulas (2 per multiply-add, forward and backward ops alike,
so a training step counts what its backward really computes). The peak is not a datasheet figure
but the rate of a large dense matmul on the same device, in the same dtype, timed here: it is what
this machine's BLAS can do right now, so "utilisation" says how far a network is from the best
that its convolutions could hope for on this hardware, whatever else is running.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


class _FlopCount(TorchDispatchMode):
    """Sums torch.utils.flop_counter's per-op formulas over every aten op that runs.

    FlopCounterMode itself also tracks modules with hooks that autograd.grad(create_graph=True)
    rejects (the WGAN-GP penalty's double backward), and a total needs no module breakdown.
    """

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        count = flop_registry.get(func._overloadpacket)
        if count is None and func is not torch.ops.prim.device.default:
            # Composite ops reach this mode whole under inference_mode (aten.conv2d, not aten.convolution):
            # run their decomposition with the mode on, so that its parts are counted.
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


def counted_flops(run: Callable[[], object]) -> int:
    """FLOPs of the matmuls and convolutions ``run()`` executes (forward and backward)."""
    with _FlopCount() as counter:
        run()
    return int(counter.total)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device | str, dtype: torch.dtype = torch.float32, side: int | None = None,
                seconds: float = 1.0, trials: int = 3) -> float:
    """FLOP/s of repeated (side x side) @ (side x side) matmuls, the best of ``trials`` timings of
    ``seconds`` each: the dense peak this process reaches (the best, so a busy moment lowers it less)."""
    if seconds <= 0 or trials < 1:
        raise ValueError(f"matmul_peak needs seconds > 0 and trials >= 1, got seconds={seconds}, trials={trials}")
    device = torch.device(device)
    side = side or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(side, side, device=device, dtype=dtype)
    b = torch.randn(side, side, device=device, dtype=dtype)
    a @ b  # warm-up: BLAS handles, clocks
    synchronize(device)
    best = 0.0
    for _ in range(trials):
        runs, started = 0, time.perf_counter()
        while True:
            a @ b
            runs += 1
            if runs % 4 == 0:
                synchronize(device)
                elapsed = time.perf_counter() - started
                if elapsed >= seconds:
                    break
        best = max(best, 2 * side ** 3 * runs / elapsed)
    return best


@dataclass(frozen=True)
class Utilisation:
    flops_per_image: float
    peak: float  # FLOP/s

    def describe(self, images_per_second: float) -> str:
        achieved = images_per_second * self.flops_per_image
        return f"{achieved / 1e9:,.1f} GFLOP/s = {100 * achieved / self.peak:.1f} % of peak"

    def header(self, what: str, dtype: torch.dtype) -> str:
        return (f"# {what}: {self.flops_per_image / 1e9:.3f} GFLOP per image (counted); peak {self.peak / 1e9:,.1f} "
                f"GFLOP/s ({str(dtype).removeprefix('torch.')} matmul measured in this process)")
