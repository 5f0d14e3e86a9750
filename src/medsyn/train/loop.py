"""The one run loop of medsyn: every trainable thing (generator GANs, refiners) goes through ``fit``.

It schedules nothing model-specific. A ``Trainable`` makes one training step, saves and loads its
state and draws a preview; the loop owns the run behaviour they share: the step schedule,
TensorBoard scalars and grids, atomic checkpoints, the divergence guard, and stopping at a step
boundary on Ctrl-C, SIGTERM (SLURM, Kubernetes, ``timeout``) or a caller's request, so the saved
state is never half a step and ``--resume`` continues exactly.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from medsyn.config import TrainConfig
from medsyn.errors import DivergenceError
from medsyn.train.checkpoint import save_checkpoint
from medsyn.train.distributed import Distributed
from medsyn.train.logging import Preview, RunLogger
from medsyn.train.memory import peak_memory_gb

# (step, total_steps, logged values, images per second) -> True to stop the run at this step
ProgressCallback = Callable[[int, int, dict[str, float], float], "bool | None"]


class Trainable(Protocol):
    """What the run loop needs of a generator GAN or a refiner."""

    cfg: TrainConfig
    ctx: Distributed
    device: torch.device
    run_dir: Path
    step: int
    total_steps: int
    images_per_step: int  # real images one step consumes (for the throughput shown)
    divergence_hint: str  # what to try when the run diverges, after "Lower the learning rates"

    def train_step(self) -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def preview(self) -> Preview: ...


@dataclass
class TrainResult:
    step: int
    total_steps: int
    images_per_second: float
    last_stats: dict[str, float]
    interrupted: bool = False


def total_steps_for(cfg: TrainConfig, images_per_epoch: int, default_steps: int = 2000) -> int:
    if cfg.steps is not None:
        return cfg.steps
    if cfg.epochs is not None:
        return max(1, math.ceil(cfg.epochs * images_per_epoch / (cfg.batch * cfg.critic_steps)))
    return default_steps


def finite_values(stats: dict[str, torch.Tensor], step: int, last_good_step: int, run_dir: Path,
                  hint: str = "") -> dict[str, float]:
    """Floats of a step's statistics (the one host sync, at log/checkpoint steps only); a NaN or inf stops the run."""
    values = {k: float(v) for k, v in stats.items()}
    bad = [k for k, v in values.items() if not np.isfinite(v)]
    if bad:
        raise DivergenceError(
            f"training diverged at step {step}: {bad[0]} is {values[bad[0]]}; "
            f"kept the last good checkpoint (step {last_good_step}) in {run_dir}. "
            f"Lower the learning rates (--set lr_d=... lr_g=...){hint}."
        )
    return values


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """Ctrl-C or SIGTERM asks the loop to stop at the next step boundary; a second one stops at once."""

    def __init__(self):
        self.requested = False

    @contextlib.contextmanager
    def installed(self):
        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True

        try:
            previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
        except ValueError:  # not the main thread: no handler, signals behave as usual
            yield self
            return
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def fit(trainable: Trainable, on_progress: ProgressCallback | None = None) -> TrainResult:
    """Train until ``total_steps`` or a stop request; checkpoint on schedule and when stopping.

    Under torchrun every rank runs this loop; rank 0 alone logs, calls ``on_progress`` and writes,
    and the ranks agree on stopping at log steps.
    """
    t, cfg, ctx = trainable, trainable.cfg, trainable.ctx
    logger = RunLogger(t.run_dir) if ctx.is_main else None
    start_step, started = t.step, time.perf_counter()
    last_good, values, rate, stats = t.step, {}, 0.0, {}
    stop, stopping = StopFlag(), False
    # the step's statistics (refused when not finite) and the run's peak memory so far
    check = lambda: {**finite_values(ctx.mean(stats), t.step, last_good, t.run_dir, t.divergence_hint),  # noqa: E731
                     "mem_gb": peak_memory_gb(t.device)}
    try:
        with stop.installed():
            while t.step < t.total_steps and not stopping:
                stats = t.train_step()
                boundary = t.step == t.total_steps
                due_log = t.step % cfg.log_every == 0 or boundary
                due_ckpt = t.step % cfg.ckpt_every == 0 or boundary
                if due_log or due_ckpt:
                    values = check()
                    rate = (t.step - start_step) * t.images_per_step / (time.perf_counter() - started)
                    if logger is not None:
                        logger.scalars(t.step, values, rate)
                if logger is not None and (t.step % cfg.grid_every == 0 or boundary):
                    logger.grid(t.step, t.preview())
                if due_ckpt:
                    state = t.state_dict()  # on every rank: a trainable's state may need all of them (ADA)
                    if ctx.is_main:
                        save_checkpoint(t.run_dir, state)
                    last_good = t.step
                if on_progress is not None and ctx.is_main and on_progress(t.step, t.total_steps, values, rate):
                    stop.requested = True  # the caller asked to stop here (a time budget, a bench)
                if not ctx.enabled:
                    stopping = stop.requested
                elif due_log:  # ranks agree at log steps only: asking every step would wait on all of them
                    stopping = ctx.any(stop.requested, t.device)
            if stopping and t.step != last_good:
                values = check()
                state = t.state_dict()
                if ctx.is_main:
                    save_checkpoint(t.run_dir, state)
    finally:
        if logger is not None:
            logger.close()
    ctx.barrier()  # no rank leaves while rank 0 still writes the last checkpoint
    return TrainResult(t.step, t.total_steps, rate, values, interrupted=stopping)
