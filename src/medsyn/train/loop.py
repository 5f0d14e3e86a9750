"""The training loop: schedules D and G phases, steps optimisers, keeps the EMA, logs, checkpoints.

Everything objective-specific lives in the loss objects (losses.py); everything about building the
run lives in setup.py. Each step re-seeds the global RNG from (seed, step), so a resumed run draws
the same latents, dropout masks and penalty interpolates as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from medsyn.augment import build_preset
from medsyn.config import TrainConfig, to_dict
from medsyn.data.types import LabeledImages
from medsyn.errors import DivergenceError
from medsyn.models.base import ModelSpec, frozen
from medsyn.train.batches import BatchSource, step_seed
from medsyn.train.checkpoint import rng_state, save_checkpoint, set_rng_state
from medsyn.train.distributed import Distributed, data_parallel, from_environment, initialise
from medsyn.train.ema import ModelEma
from medsyn.train.losses import build_loss
from medsyn.train.logging import RunLogger
from medsyn.train.setup import (build_networks, build_optimizer, learning_rate_scale, mixed_precision, resolve_device,
                                sample_latent)


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


def paired_critic(D: torch.nn.Module, anchors: torch.Tensor) -> Callable:
    """The critic of a pair model as the loss objects call it: ``critic(x, labels)`` judges [anchor, x].

    The losses stay unchanged: real x = x_j gives the real pair {x_i, x_j}, a fake x_g the fake pair
    {x_i, x_g}, and WGAN-GP's interpolates (and its gradient) are taken in x with the anchor fixed.
    """
    return lambda images, labels: D(torch.cat([anchors.to(images.dtype), images], dim=1), labels)


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


class _StopFlag:
    """Ctrl-C asks the loop to stop at the next step boundary, so the saved state is never half a step."""

    def __init__(self):
        self.requested = False

    @contextlib.contextmanager
    def installed(self):
        def handler(signum, frame):
            if self.requested:  # a second Ctrl-C stops at once
                raise KeyboardInterrupt
            self.requested = True

        try:
            previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


class Trainer:
    def __init__(self, cfg: TrainConfig, spec: ModelSpec, data: LabeledImages, run_dir: Path, data_info: dict[str, Any],
                 ctx: Distributed | None = None):
        self.cfg, self.spec, self.run_dir, self.data_info = cfg, spec, run_dir, data_info
        self.ctx = ctx if ctx is not None else from_environment()
        self.ctx.check_batch(cfg.batch)
        self.device = initialise(self.ctx, resolve_device(cfg.device))
        torch.manual_seed(cfg.seed)  # network initialisation: the same on every rank
        nets = build_networks(spec, cfg, data.size, data.channels, data.num_classes)
        self.G, self.D, self.image_spec = nets.generator.to(self.device), nets.discriminator.to(self.device), nets.image_spec
        self.ema = ModelEma(self.G, cfg.ema_decay)  # before the wrap: the EMA copy keeps plain batch norm
        # G and D are the networks (checkpoints hold their state); the *_step versions are what a
        # training step calls: the same modules, wrapped for gradient averaging under torchrun.
        self.G_step, self.D_step = data_parallel(self.G, self.ctx, self.device), data_parallel(self.D, self.ctx, self.device)
        # Blocks of `batch` images in a global batch: one per class in per-class mode, else one.
        self.blocks = data.num_classes if cfg.per_class else 1
        # Progressively grown networks (pggan) take their stage from the step; the EMA copy too,
        # so grids and checkpoints show the stage being trained.
        self.growing = [m for net in (self.G, self.D, self.ema.module) for m in net.modules() if hasattr(m, "set_progress")]
        self.opt_g = build_optimizer(self.G.parameters(), cfg, cfg.lr_g, self.device)
        self.opt_d = build_optimizer(self.D.parameters(), cfg, cfg.lr_d, self.device)
        self.loss = build_loss(spec.objective, cfg)
        self.loss.ctx, self.loss.blocks = self.ctx, self.blocks
        images = torch.from_numpy(data.images).to(self.device) * 2 - 1  # networks see [-1, 1] (tanh range)
        labels = torch.from_numpy(data.labels).to(self.device)
        self.batches = BatchSource(images, labels, cfg.batch, cfg.per_class, data.num_classes, cfg.seed)
        self.augment = build_preset(cfg.augment, data.size) if cfg.augment else None
        self.total_steps = total_steps_for(cfg, self.batches.images_per_epoch)
        self.step = 0
        self.precision, self.autocast = mixed_precision(self.device, cfg.amp)

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": "medsyn-checkpoint-1",
            "step": self.step,
            "generator": self.G.state_dict(),
            "discriminator": self.D.state_dict(),
            "generator_ema": self.ema.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": {},  # bf16 autocast needs no loss scaler; kept so fp16 can be added without a format change
            "rng": rng_state(),
            "config": to_dict(self.cfg),
            "precision": self.precision,  # what `amp` came to on this device (config.yaml says only what was asked)
            "model": {"name": self.spec.name, "paper": self.spec.paper, "objective": self.spec.objective,
                      "size": self.image_spec.size, "channels": self.image_spec.channels,
                      "num_classes": self.image_spec.num_classes},
            "data": self.data_info,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        self.ema.load_state_dict(state["generator_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])

    # ---- one step ----------------------------------------------------------------------------
    def _real_batch(self, draw: int):
        """(real, labels, anchors): for pair models (spec.image_input) real are the generator's
        sources x_j and anchors other real images x_i of the same classes; else anchors is None."""
        if self.spec.image_input:
            return self._real_pairs(draw)
        real, labels = self.batches.draw(draw)
        if self.augment is not None:  # on the global batch, so the shards see one-process augmentation
            real = self.augment((real + 1) / 2) * 2 - 1
        return self.ctx.shard(real, self.blocks), self.ctx.shard(labels, self.blocks), None

    def _real_pairs(self, draw: int):
        sources, labels, anchors = self.batches.draw_pairs(draw)
        if self.augment is not None:  # one call, so both images of a pair get the same augmentation policy
            both = self.augment((torch.cat([sources, anchors]) + 1) / 2) * 2 - 1
            sources, anchors = both.split(len(sources))
        shard = lambda batch: self.ctx.shard(batch, self.blocks)  # noqa: E731
        return shard(sources), shard(labels), shard(anchors)

    def _set_lr(self) -> None:
        scale = learning_rate_scale(self.cfg, self.step, self.total_steps)
        for opt, base in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * scale

    def train_step(self) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        for module in self.growing:
            module.set_progress(self.step, self.total_steps)
        torch.manual_seed(step_seed(cfg.seed, self.step))
        self._set_lr()
        stats: dict[str, torch.Tensor] = {}
        for phase in range(cfg.critic_steps):
            last = phase == cfg.critic_steps - 1
            self.loss.update = self.step * cfg.critic_steps + phase
            real, labels, anchors = self._real_batch(self.loss.update)
            critic = self.D_step if anchors is None else paired_critic(self.D_step, anchors)
            z = self.ctx.shard(sample_latent(cfg.batch * self.blocks, cfg, self.device), self.blocks)
            with self.autocast():
                # The last phase's fakes keep their graph and serve the G step too (as the PyTorch
                # DCGAN example does): one generator forward per step instead of two.
                with torch.set_grad_enabled(last):
                    fake = self.G_step(z, labels) if anchors is None else self.G_step(z, labels, real)
                loss_d, stats_d = self.loss.d_loss(critic, real, fake.detach(), labels)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            self.loss.after_d_step(self.D)
        stats.update(stats_d)
        # The G step goes through the bare D with its weights frozen: their gradients would be thrown
        # away, and under torchrun DDP would all-reduce them first. Synced batch norm needs no DDP.
        g_critic = self.D if anchors is None else paired_critic(self.D, anchors)
        with self.autocast(), frozen(self.D):
            loss_g, stats_g = self.loss.g_loss(g_critic, fake, labels)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.ema.update(self.G, self.step)
        stats.update(stats_g)
        self.step += 1
        return stats

    # ---- the run -----------------------------------------------------------------------------
    def _check_finite(self, stats: dict[str, torch.Tensor], last_good_step: int) -> dict[str, float]:
        return finite_values(stats, self.step, last_good_step, self.run_dir, hint=" or try wgan-gp")

    def fit(self, on_progress: Callable[[int, int, dict[str, float], float], None] | None = None) -> TrainResult:
        cfg, ctx = self.cfg, self.ctx
        logger = RunLogger(self.run_dir, self) if ctx.is_main else None  # rank 0 alone writes
        start_step, started = self.step, time.perf_counter()
        last_good, values, rate = self.step, {}, 0.0
        stop, stopping = _StopFlag(), False
        try:
            with stop.installed():
                while self.step < self.total_steps and not stopping:
                    stats = self.train_step()
                    boundary = self.step == self.total_steps
                    due_log = self.step % cfg.log_every == 0 or boundary
                    due_ckpt = self.step % cfg.ckpt_every == 0 or boundary
                    if due_log or due_ckpt:
                        values = self._check_finite(ctx.mean(stats), last_good)
                        rate = (self.step - start_step) * cfg.batch * self.blocks / (time.perf_counter() - started)
                        if logger is not None:
                            logger.scalars(self.step, values, rate)
                    if logger is not None and (self.step % cfg.grid_every == 0 or boundary):
                        logger.grid(self.step)
                    if due_ckpt:
                        if ctx.is_main:
                            save_checkpoint(self.run_dir, self.state_dict())
                        last_good = self.step
                    if on_progress is not None and ctx.is_main:
                        on_progress(self.step, self.total_steps, values, rate)
                    if not ctx.enabled:
                        stopping = stop.requested
                    elif due_log:  # ranks agree at log steps only: asking every step would wait on all of them
                        stopping = ctx.any(stop.requested, self.device)
                if stopping and self.step != last_good:
                    values = self._check_finite(ctx.mean(stats), last_good)
                    if ctx.is_main:
                        save_checkpoint(self.run_dir, self.state_dict())
        finally:
            if logger is not None:
                logger.close()
        ctx.barrier()  # no rank leaves while rank 0 still writes the last checkpoint
        return TrainResult(self.step, self.total_steps, rate, values, interrupted=stopping)
