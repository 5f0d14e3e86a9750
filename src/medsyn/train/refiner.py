"""A refiner (simgan, unit, munit) as a Trainable: synthetic + real batches -> the family's objective.

The run behaviour is the generator GANs' (``loop.fit``): the global RNG is re-seeded from
(seed, step) every step and batches are a pure function of the step (batches.py), so a resumed
run equals an uninterrupted one. The objective (models/refiners_*.py) computes the losses of the
updates it schedules; this module owns the networks' optimisers and steps them.

With per_class (the brain-MRI paper refined tumour and non-tumour images separately) there is one
refiner per class, each fed its class's synthetic and real images; labels pass through unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import nn

from medsyn.augment.differentiable import DiffAugment
from medsyn.config import Optimizer, TrainConfig, to_dict
from medsyn.data.types import LabeledImages
from medsyn.errors import RunError
from medsyn.models.base import ImageSpec, NetOptions, RefinerSpec
from medsyn.models.refiners_base import Phase, RefinerObjective, set_recompute_blocks
from medsyn.train.batches import BatchSource, step_seed
from medsyn.train.checkpoint import rng_state, set_rng_state
from medsyn.train.distributed import SINGLE, from_environment
from medsyn.train.logging import Preview
from medsyn.train.loop import total_steps_for
from medsyn.train.setup import apply_spectral_norm, build_optimizer, learning_rate_scale, resolve_device

SYNTHETIC_STREAM = 11  # seeds the synthetic set's batch order apart from the real set's
GRID_PER_CLASS = 8
STYLE_STREAM = 12  # seeds the MUNIT styles of the progress grids

MakeOptimizer = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]


def build_refiner_optimizer(params, cfg: TrainConfig, lr: float, device: torch.device) -> torch.optim.Optimizer:
    if cfg.optimizer is Optimizer.SGD:  # the brain-MRI paper's SimGAN: plain SGD "without momentum" (setup's SGD has Nesterov)
        return torch.optim.SGD(list(params), lr=lr, weight_decay=cfg.weight_decay)
    return build_optimizer(params, cfg, lr, device)


def refiner_image_spec(size: int, channels: int) -> ImageSpec:
    return ImageSpec(size, channels, 0)  # refiners take no labels: one network per class, or one for all


def net_options(cfg: TrainConfig) -> NetOptions:
    return NetOptions(z_dim=cfg.z_dim, width=cfg.width)


def build_translators(spec: RefinerSpec, cfg: TrainConfig, size: int, channels: int, groups: int) -> list[nn.Module]:
    """The refining networks of a run (one per class with per_class), as ``medsyn refine`` loads them."""
    return [spec.build_generator(refiner_image_spec(size, channels), net_options(cfg)) for _ in range(groups)]


class RefinerGroup:
    """One refiner: its objective (networks, losses, schedule) and the two optimisers it is trained with.

    Args:
        objective: the family's objective, holding the translator and discriminator.
        cfg: the run's config (learning rates).
        make_optimizer: (parameters, learning rate) -> optimiser.
    """

    def __init__(self, objective: RefinerObjective, cfg: TrainConfig, make_optimizer: MakeOptimizer):
        self.objective, self.cfg = objective, cfg
        self.optimizers = {Phase.TRANSLATOR: make_optimizer(objective.translator.parameters(), cfg.lr_g),
                           Phase.DISCRIMINATOR: make_optimizer(objective.discriminator.parameters(), cfg.lr_d)}

    def set_lr_scale(self, scale: float) -> None:
        for phase, base in ((Phase.TRANSLATOR, self.cfg.lr_g), (Phase.DISCRIMINATOR, self.cfg.lr_d)):
            for group in self.optimizers[phase].param_groups:
                group["lr"] = base * scale

    def train_step(self, step: int, synthetic: torch.Tensor, real: torch.Tensor) -> dict[str, torch.Tensor]:
        """The updates the objective schedules for ``step``, in its order; their stats, merged."""
        stats: dict[str, torch.Tensor] = {}
        for phase in self.objective.phases(step):
            loss, phase_stats = self.objective.loss(phase, step, synthetic, real)
            optimizer = self.optimizers[phase]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            stats.update(phase_stats)
        return stats

    def state_dict(self) -> dict[str, Any]:
        o = self.objective
        return {"generator": o.translator.state_dict(), "discriminator": o.discriminator.state_dict(),
                "opt_g": self.optimizers[Phase.TRANSLATOR].state_dict(),
                "opt_d": self.optimizers[Phase.DISCRIMINATOR].state_dict(), "extra": o.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        o = self.objective
        o.translator.load_state_dict(state["generator"])
        o.discriminator.load_state_dict(state["discriminator"])
        self.optimizers[Phase.TRANSLATOR].load_state_dict(state["opt_g"])
        self.optimizers[Phase.DISCRIMINATOR].load_state_dict(state["opt_d"])
        o.load_extra_state(state["extra"])


def build_group(spec: RefinerSpec, cfg: TrainConfig, size: int, channels: int, device: torch.device,
                make_optimizer: MakeOptimizer | None = None) -> RefinerGroup:
    """A refiner's networks (on ``device``), objective and optimisers, built from the run's config."""
    net_spec, options = refiner_image_spec(size, channels), net_options(cfg)
    translator = spec.build_generator(net_spec, options)
    set_recompute_blocks(translator, cfg.recompute_blocks)
    discriminator = spec.build_discriminator(net_spec, options)
    if cfg.spectral_norm:
        apply_spectral_norm(discriminator)
    critic_input = DiffAugment(cfg.diffaug, channels_per_image=channels) if cfg.diffaug else None
    objective = spec.objective(translator.to(device), discriminator.to(device), cfg, critic_input)
    make = make_optimizer or (lambda params, lr: build_refiner_optimizer(params, cfg, lr, device))
    return RefinerGroup(objective, cfg, make)


class RefinerTrainer:
    """Trains one refiner (or one per class) on synthetic and real images; see ``medsyn.train.loop.fit``."""

    divergence_hint = ""

    def __init__(self, cfg: TrainConfig, spec: RefinerSpec, real: LabeledImages, synthetic: LabeledImages,
                 run_dir: Path, data_info: dict[str, Any]):
        if from_environment().enabled:
            raise RunError("refiners train in one process; start medsyn train without torchrun")
        self.cfg, self.spec, self.run_dir, self.data_info = cfg, spec, Path(run_dir), data_info
        self.ctx = SINGLE
        self.device = resolve_device(cfg.device)
        self.precision = "float32"  # refiners have no autocast path: float32 on every device
        self.image_spec = ImageSpec(real.size, real.channels, real.num_classes)
        self.groups_count = real.num_classes if cfg.per_class else 1
        torch.manual_seed(cfg.seed)  # network initialisation
        self.groups = [build_group(spec, cfg, real.size, real.channels, self.device) for _ in range(self.groups_count)]
        self.notices = list(self.groups[0].objective.notices)
        self.real = self._batches(real, cfg.seed)
        self.synthetic = self._batches(synthetic, step_seed(cfg.seed, 0, stream=SYNTHETIC_STREAM))
        self.grid_inputs = self._grid_inputs()
        self.total_steps = total_steps_for(cfg, self.synthetic.images_per_epoch)
        self.images_per_step = cfg.batch * self.groups_count
        self.step = 0

    def _batches(self, data: LabeledImages, seed: int) -> BatchSource:
        images = torch.from_numpy(data.images).to(self.device) * 2 - 1  # networks see [-1, 1] (tanh range)
        labels = torch.from_numpy(data.labels).to(self.device)
        return BatchSource(images, labels, self.cfg.batch, self.cfg.per_class, data.num_classes, seed)

    def _grid_inputs(self) -> list[torch.Tensor]:
        """The first synthetic images of each group, refined in every progress grid."""
        if not self.cfg.per_class:
            return [self.synthetic.images[:GRID_PER_CLASS]]
        return [self.synthetic.images[torch.nonzero(self.synthetic.labels == k).flatten()[:GRID_PER_CLASS]]
                for k in range(self.groups_count)]

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": "medsyn-refiner-checkpoint-1",
            "step": self.step,
            "refiners": [group.state_dict() for group in self.groups],
            "rng": rng_state(),
            "config": to_dict(self.cfg),
            "model": {"name": self.spec.name, "paper": self.spec.paper, "role": str(self.spec.role),
                      "size": self.image_spec.size, "channels": self.image_spec.channels,
                      "num_classes": self.image_spec.num_classes, "per_class": self.cfg.per_class},
            "data": self.data_info,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for group, saved in zip(self.groups, state["refiners"], strict=True):
            group.load_state_dict(saved)
        set_rng_state(state["rng"])
        self.step = int(state["step"])

    # ---- one step ----------------------------------------------------------------------------
    def train_step(self) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        torch.manual_seed(step_seed(cfg.seed, self.step))
        scale = learning_rate_scale(cfg, self.step, self.total_steps)
        if cfg.lr_halve_every is not None:
            scale *= 0.5 ** (self.step // cfg.lr_halve_every)
        synthetic, _ = self.synthetic.draw(self.step)
        real, _ = self.real.draw(self.step)
        stats: dict[str, torch.Tensor] = {}
        # class-major blocks of `batch` images in per-class mode, one block otherwise
        for group, syn, rl in zip(self.groups, synthetic.split(cfg.batch), real.split(cfg.batch), strict=True):
            group.set_lr_scale(scale)
            for key, value in group.train_step(self.step, syn, rl).items():
                stats[key] = stats.get(key, 0) + value / self.groups_count  # mean over the per-class refiners
        self.step += 1
        return stats

    @torch.no_grad()
    def preview(self) -> Preview:
        """Per group, a row of synthetic inputs above a row of their refinements, in [0, 1]."""
        rows, names = [], []
        class_names = self.data_info.get("class_names", [])
        for k, (group, inputs) in enumerate(zip(self.groups, self.grid_inputs)):
            translator = group.objective.translator
            was_training = translator.training
            translator.eval()
            style = None
            if translator.style_dim:
                gen = torch.Generator().manual_seed(step_seed(self.cfg.seed, k, stream=STYLE_STREAM))
                style = torch.randn(len(inputs), translator.style_dim, generator=gen).to(self.device)
            rows += [inputs, translator.refine(inputs, style)]
            translator.train(was_training)
            name = class_names[k] if self.cfg.per_class and k < len(class_names) else "all"
            names += [f"{name} input", f"{name} refined"]
        images = torch.cat([(r.float().cpu() + 1) / 2 for r in rows]).clamp_(0, 1).numpy()
        return Preview(np.asarray(images), GRID_PER_CLASS, names)
