"""A generator GAN as a Trainable: networks, EMA, optimisers, the loss object and one training step.

Each step re-seeds the global RNG from (seed, step), so a resumed run draws the same latents,
dropout masks, penalty interpolates and augmentations as an uninterrupted one. What differs
between models comes from the spec: the step's inputs (``inputs.py``), the objective
(``losses.py``) and the growth hook (pggan); the step itself has no branch on the model.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsyn.augment import build_preset
from medsyn.config import TrainConfig, to_dict
from medsyn.data.types import LabeledImages
from medsyn.models.base import ModelSpec, frozen
from medsyn.train.batches import BatchSource, step_seed
from medsyn.train.checkpoint import rng_state, set_rng_state
from medsyn.train.critic_input import CriticAugment
from medsyn.train.distributed import Distributed, data_parallel, from_environment, initialise
from medsyn.train.ema import ModelEma, calibration_inputs, recalibrate_batch_norm
from medsyn.train.inputs import IMAGES_PER_CRITIC_INPUT, STEP_INPUTS, StepBatch
from medsyn.train.logging import Preview, generate
from medsyn.train.loop import total_steps_for
from medsyn.train.losses import StepContext, build_loss
from medsyn.train.micro_batch import (accumulate, backward_through, check_micro_batch, detached_leaf, passes,
                                      sync_unless_last, weight_of)
from medsyn.train.setup import (build_networks, build_optimizer, learning_rate_scale, mixed_precision, resolve_device,
                                sample_latent, apply_spectral_norm)

PER_CLASS_IN_GRID = 8
GRID_STREAM = 99  # seeds the fixed latents of the progress grids


class GanTrainer:
    """Trains one generator GAN (or one per class) on labeled images; see ``medsyn.train.loop.fit``."""

    divergence_hint = " or try wgan-gp"

    def __init__(self, cfg: TrainConfig, spec: ModelSpec, data: LabeledImages, run_dir: Path, data_info: dict[str, Any],
                 ctx: Distributed | None = None):
        self.cfg, self.spec, self.run_dir, self.data_info = cfg, spec, Path(run_dir), data_info
        self.ctx = ctx if ctx is not None else from_environment()
        self.ctx.check_batch(cfg.batch)
        self.device = initialise(self.ctx, resolve_device(cfg.device))
        self.notices: list[str] = []
        torch.manual_seed(cfg.seed)  # network initialisation: the same on every rank
        nets = build_networks(spec, cfg, data.size, data.channels, data.num_classes)
        if cfg.spectral_norm:
            apply_spectral_norm(nets.discriminator)
        check_micro_batch(cfg.micro_batch, nets.discriminator, spec.name)
        layout = torch.channels_last if spec.channels_last else torch.preserve_format
        self.G = nets.generator.to(self.device, memory_format=layout)
        self.D = nets.discriminator.to(self.device, memory_format=layout)
        self.image_spec = nets.image_spec
        self.ema = ModelEma(self.G, cfg.ema_decay)  # before the wrap: the EMA copy keeps plain batch norm
        # G and D are the networks (checkpoints hold their state); the *_step versions are what a
        # training step calls: the same modules, wrapped for gradient averaging under torchrun.
        grows = spec.growth is not None
        self.G_step = data_parallel(self.G, self.ctx, self.device, find_unused_parameters=grows)
        self.D_step = data_parallel(self.D, self.ctx, self.device, find_unused_parameters=grows)
        # Blocks of `batch` images in a global batch: one per class in per-class mode, else one.
        self.blocks = data.num_classes if cfg.per_class else 1
        self.opt_g = build_optimizer(self.G.parameters(), cfg, cfg.lr_g, self.device)
        self.opt_d = build_optimizer(self.D.parameters(), cfg, cfg.lr_d, self.device)
        self.loss = build_loss(cfg.objective or spec.objective, cfg)
        images = torch.from_numpy(data.images).to(self.device) * 2 - 1  # networks see [-1, 1] (tanh range)
        labels = torch.from_numpy(data.labels).to(self.device)
        self.batches = BatchSource(images, labels, cfg.batch, cfg.per_class, data.num_classes, cfg.seed)
        classic = build_preset(cfg.augment, data.size) if cfg.augment else None
        self.inputs = STEP_INPUTS[spec.inputs](self.batches, classic, self.ctx, self.blocks)
        self.critic_input = CriticAugment.from_config(cfg, data.channels, IMAGES_PER_CRITIC_INPUT[spec.inputs],
                                                      StepContext(0, self.ctx, self.blocks).uniform)
        self.total_steps = total_steps_for(cfg, self.batches.images_per_epoch)
        self.images_per_step = cfg.batch * self.blocks
        self.step = 0
        self.precision, self.autocast = mixed_precision(self.device, cfg.amp)
        self._grid_inputs: tuple | None = None

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
            "augment": self.critic_input.state_dict(self.ctx),  # ADA's p and its running statistic
            "loss": self.loss.state_dict(),  # LeCam's anchors
            "rng": rng_state(),
            "config": to_dict(self.cfg),
            "precision": self.precision,  # what `amp` came to on this device (config.yaml says only what was asked)
            "model": {"name": self.spec.name, "paper": self.spec.paper, "role": str(self.spec.role),
                      "objective": str(self.cfg.objective or self.spec.objective), "size": self.image_spec.size,
                      "channels": self.image_spec.channels, "num_classes": self.image_spec.num_classes},
            "data": self.data_info,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        self.ema.load_state_dict(state["generator_ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.critic_input.load_state_dict(state.get("augment", {}))
        self.loss.load_state_dict(state.get("loss", {}))
        set_rng_state(state["rng"])
        self.step = int(state["step"])

    # ---- one step ----------------------------------------------------------------------------
    def _set_lr(self) -> None:
        scale = learning_rate_scale(self.cfg, self.step, self.total_steps)
        for opt, base in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * scale

    def train_step(self) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if self.spec.growth is not None:  # progressive growing: the stage of this step, the EMA copy too
            for network in (self.G, self.D, self.ema.module):
                self.spec.growth(network, self.step, self.total_steps)
        torch.manual_seed(step_seed(cfg.seed, self.step))
        self._set_lr()
        for phase in range(cfg.critic_steps):
            last = phase == cfg.critic_steps - 1
            context = StepContext(self.step * cfg.critic_steps + phase, self.ctx, self.blocks)
            batch = self.inputs.draw(context.update)
            z = self.ctx.shard(sample_latent(cfg.batch * self.blocks, cfg, self.device), self.blocks)
            with self.autocast():
                # The last phase's fakes keep their graph and serve the G step too (as the PyTorch
                # DCGAN example does): one generator forward per step instead of two.
                with torch.set_grad_enabled(last):
                    fake = self.G_step(z, batch.labels, *batch.generator_args)
            stats = self._critic_update(batch, fake.detach(), context)
            stats.update(self.loss.after_d_update(self.D, stats, self.ctx))
            stats.update(self.critic_input.after_d_update(stats, len(batch.real), context.update + 1,
                                                          self.images_per_step, self.ctx))
        stats_g = self._generator_update(batch, fake, context)
        self.ema.update(self.G, self.step)
        self.step += 1
        return {**stats, **stats_g}

    def _critic_update(self, batch: StepBatch, fake: torch.Tensor, context: StepContext) -> dict[str, torch.Tensor]:
        """One discriminator update on the batch, judged in passes of ``micro_batch`` images."""
        self.opt_d.zero_grad(set_to_none=True)
        parts, stats = passes(len(batch.real), self.cfg.micro_batch), {}
        for index, rows in enumerate(parts):
            part, weight = batch.part(rows), weight_of(rows, len(batch.real))
            critic = self.inputs.critic(self.D_step, part, self.critic_input)
            with sync_unless_last(self.D_step, index, len(parts)):
                with self.autocast():
                    loss_d, part_stats = self.loss.d_loss(critic, part.real, fake[rows], part.labels, context)
                (loss_d * weight).backward()
            accumulate(stats, part_stats, weight)
        self.opt_d.step()
        return stats

    def _generator_update(self, batch: StepBatch, fake: torch.Tensor, context: StepContext) -> dict[str, torch.Tensor]:
        """One generator update: the critic's passes write their gradients into a detached copy of
        the fakes, which then flows once through G. The G step goes through the bare D with its
        weights frozen: their gradients would be thrown away, and under torchrun DDP would
        all-reduce them first. Synced batch norm needs no DDP."""
        self.opt_g.zero_grad(set_to_none=True)
        leaf, stats = detached_leaf(fake), {}
        for rows in passes(len(batch.real), self.cfg.micro_batch):
            part, weight = batch.part(rows), weight_of(rows, len(batch.real))
            g_critic = self.inputs.critic(self.D, part, self.critic_input)
            with self.autocast(), frozen(self.D):
                loss_g, part_stats = self.loss.g_loss(g_critic, leaf[rows], part.labels, context)
            (loss_g * weight).backward()
            accumulate(stats, part_stats, weight)
        backward_through(fake, leaf)
        self.opt_g.step()
        return stats

    # ---- grids -------------------------------------------------------------------------------
    def _fixed_grid_inputs(self) -> tuple:
        """Fixed latents (and sources) of the grids, so grids are comparable over steps."""
        if self._grid_inputs is None:
            classes = max(1, self.image_spec.num_classes)
            gen = torch.Generator(device="cpu").manual_seed(step_seed(self.cfg.seed, 0, stream=GRID_STREAM))
            labels = torch.arange(classes).repeat_interleave(PER_CLASS_IN_GRID).to(self.device)
            z = sample_latent(len(labels), self.cfg, torch.device("cpu"), generator=gen).to(self.device)
            pool = self.inputs.source_pool(classes)
            sources = pool.first(labels) if pool is not None else None
            calibration = calibration_inputs(self.cfg, classes, self.device, seed=self.cfg.seed, sources=pool)
            self._grid_inputs = (z, labels, sources, calibration)
            if sources is not None:  # the real images the grid's rows rewrite, once
                from medsyn.imageio import save_grid

                save_grid(self.run_dir / "grids" / "sources.png", ((sources + 1) / 2).clamp(0, 1).cpu().numpy(),
                          nrow=PER_CLASS_IN_GRID)
        return self._grid_inputs

    def preview(self) -> Preview:
        """One row per class from the EMA generator, batch norm statistics re-estimated for its weights."""
        z, labels, sources, calibration = self._fixed_grid_inputs()
        ema = copy.deepcopy(self.ema.module)
        recalibrate_batch_norm(ema, calibration)
        images = generate(ema, z, labels, sources=sources)
        names = self.data_info.get("class_names", [])
        rows = [names[k] if k < len(names) else str(k) for k in range(max(1, self.image_spec.num_classes))]
        return Preview(np.asarray(images), PER_CLASS_IN_GRID, rows)
