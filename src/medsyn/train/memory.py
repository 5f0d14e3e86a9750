"""Peak memory of this process: what a run needed, shown while it trains and stated when it ends."""
from __future__ import annotations

import resource
import sys

import torch


def peak_memory_gb(device: torch.device | str) -> float:
    """GPU: the most memory torch has allocated on ``device``; CPU: the process's peak resident set.

    The resident peak covers everything the process holds (Python, torch, the data), which is what
    decides whether a laptop runs out of memory.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e9 if sys.platform == "darwin" else peak * 1024 / 1e9  # macOS reports bytes, Linux KiB
