"""Training loop of refiners (simgan, unit, munit): synthetic + real batches -> the family's objective.

Refiners do not fit the G(z, labels) loop of loop.py, so they get this short one with the same run
behaviour: the global RNG is re-seeded from (seed, step) every step and batches are a pure function
of the step (batches.py), so a resumed run equals an uninterrupted one; Ctrl-C stops at a step
boundary; checkpoints are complete and atomic (checkpoint.py). The objective (models/refiners_*.py)
owns the networks' losses and any state of its own (SimGAN's history buffer), which is checkpointed.

With per_class (the brain-MRI paper refined tumour and non-tumour images separately) there is one
objective per class, each fed its class's synthetic and real images; labels pass through unchanged.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from medsyn.config import TrainConfig, to_dict
from medsyn.data.types import LabeledImages
from medsyn.errors import RunError
from medsyn.imageio import save_grid
from medsyn.models.base import ImageSpec, ModelSpec, NetOptions
from medsyn.models.refiners_base import RefinerObjective, build_objective
from medsyn.train.batches import BatchSource, step_seed
from medsyn.train.checkpoint import rng_state, save_checkpoint, set_rng_state
from medsyn.train.distributed import SINGLE, from_environment
from medsyn.train.loop import TrainResult, _StopFlag, finite_values, total_steps_for
from medsyn.train.setup import build_optimizer, learning_rate_scale, resolve_device

SYNTHETIC_STREAM = 11  # seeds the synthetic set's batch order apart from the real set's
GRID_PER_CLASS = 8
STYLE_STREAM = 12  # seeds the MUNIT styles of the progress grids


def build_refiner_optimizer(params, cfg: TrainConfig, lr: float, device: torch.device) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":  # the brain-MRI paper's SimGAN: plain SGD "without momentum" (setup's SGD has Nesterov)
        return torch.optim.SGD(list(params), lr=lr, weight_decay=cfg.weight_decay)
    return build_optimizer(params, cfg, lr, device)


def build_translators(spec: ModelSpec, cfg: TrainConfig, size: int, channels: int, groups: int) -> list[torch.nn.Module]:
    """The refining networks of a run (one per class with per_class), as ``medsyn refine`` loads them."""
    return [spec.build_generator(refiner_image_spec(size, channels), net_options(cfg)) for _ in range(groups)]


def refiner_image_spec(size: int, channels: int) -> ImageSpec:
    return ImageSpec(size, channels, 0)  # refiners take no labels: one network per class, or one for all


def net_options(cfg: TrainConfig) -> NetOptions:
    return NetOptions(z_dim=cfg.z_dim, width=cfg.width)


class RefinerTrainer:
    """Trains one objective (or one per class) on synthetic and real images; the run-folder API of Trainer."""

    def __init__(self, cfg: TrainConfig, spec: ModelSpec, real: LabeledImages, synthetic: LabeledImages,
                 run_dir: Path, data_info: dict[str, Any]):
        if from_environment().enabled:
            raise RunError("refiners train in one process; start medsyn train without torchrun")
        self.cfg, self.spec, self.run_dir, self.data_info = cfg, spec, Path(run_dir), data_info
        self.ctx = SINGLE
        self.device = resolve_device(cfg.device)
        self.precision = "float32"  # the refiner loop has no autocast path: float32 on every device
        self.image_spec = ImageSpec(real.size, real.channels, real.num_classes)
        self.groups = real.num_classes if cfg.per_class else 1
        torch.manual_seed(cfg.seed)  # network initialisation
        net_spec, options = refiner_image_spec(real.size, real.channels), net_options(cfg)
        make_optimizer = lambda params, lr: build_refiner_optimizer(params, cfg, lr, self.device)  # noqa: E731
        self.objectives: list[RefinerObjective] = [
            build_objective(spec.objective, spec.build_generator(net_spec, options).to(self.device),
                            spec.build_discriminator(net_spec, options).to(self.device), cfg, make_optimizer)
            for _ in range(self.groups)
        ]
        self.notices = list(self.objectives[0].notices)
        self.real = self._batches(real, cfg.seed)
        self.synthetic = self._batches(synthetic, step_seed(cfg.seed, 0, stream=SYNTHETIC_STREAM))
        self.grid_inputs = self._grid_inputs(synthetic)
        self.total_steps = total_steps_for(cfg, self.synthetic.images_per_epoch)
        self.step = 0

    def _batches(self, data: LabeledImages, seed: int) -> BatchSource:
        images = torch.from_numpy(data.images).to(self.device) * 2 - 1  # networks see [-1, 1] (tanh range)
        labels = torch.from_numpy(data.labels).to(self.device)
        return BatchSource(images, labels, self.cfg.batch, self.cfg.per_class, data.num_classes, seed)

    def _grid_inputs(self, synthetic: LabeledImages) -> list[torch.Tensor]:
        """The first synthetic images of each group, refined in every progress grid."""
        if not self.cfg.per_class:
            return [self.synthetic.images[:GRID_PER_CLASS]]
        return [self.synthetic.images[torch.nonzero(self.synthetic.labels == k).flatten()[:GRID_PER_CLASS]]
                for k in range(self.groups)]

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": "medsyn-refiner-checkpoint-1",
            "step": self.step,
            "refiners": [objective.state_dict() for objective in self.objectives],
            "rng": rng_state(),
            "config": to_dict(self.cfg),
            "model": {"name": self.spec.name, "paper": self.spec.paper, "objective": self.spec.objective,
                      "role": self.spec.role, "size": self.image_spec.size, "channels": self.image_spec.channels,
                      "num_classes": self.image_spec.num_classes, "per_class": self.cfg.per_class},
            "data": self.data_info,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for objective, saved in zip(self.objectives, state["refiners"], strict=True):
            objective.load_state_dict(saved)
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
        for objective, syn, rl in zip(self.objectives, synthetic.split(cfg.batch), real.split(cfg.batch), strict=True):
            objective.set_lr_scale(scale)
            for key, value in objective.train_step(self.step, syn, rl).items():
                stats[key] = stats.get(key, 0) + value / self.groups  # mean over the per-class refiners
        self.step += 1
        return stats

    @torch.no_grad()
    def preview(self) -> np.ndarray:
        """Per group, a row of synthetic inputs above a row of their refinements, in [0, 1]."""
        rows = []
        for k, (objective, inputs) in enumerate(zip(self.objectives, self.grid_inputs)):
            translator = objective.translator
            was_training = translator.training
            translator.eval()
            style = None
            if translator.style_dim:
                gen = torch.Generator().manual_seed(step_seed(self.cfg.seed, k, stream=STYLE_STREAM))
                style = torch.randn(len(inputs), translator.style_dim, generator=gen).to(self.device)
            rows += [inputs, translator.refine(inputs, style)]
            translator.train(was_training)
        return torch.cat([(r.float().cpu() + 1) / 2 for r in rows]).clamp_(0, 1).numpy()

    # ---- the run -----------------------------------------------------------------------------
    def _check_finite(self, stats: dict[str, torch.Tensor], last_good_step: int) -> dict[str, float]:
        return finite_values(stats, self.step, last_good_step, self.run_dir)

    def fit(self, on_progress: Callable[[int, int, dict[str, float], float], None] | None = None) -> TrainResult:
        from torch.utils.tensorboard import SummaryWriter  # slow import, only when training

        cfg = self.cfg
        writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        (self.run_dir / "grids").mkdir(exist_ok=True)
        start_step, started = self.step, time.perf_counter()
        last_good, values, rate, stats = self.step, {}, 0.0, {}
        stop = _StopFlag()
        try:
            with stop.installed():
                while self.step < self.total_steps and not stop.requested:
                    stats = self.train_step()
                    boundary = self.step == self.total_steps
                    due_ckpt = self.step % cfg.ckpt_every == 0 or boundary
                    if self.step % cfg.log_every == 0 or due_ckpt:
                        values = self._check_finite(stats, last_good)
                        rate = (self.step - start_step) * cfg.batch * self.groups / (time.perf_counter() - started)
                        for key, value in values.items():
                            writer.add_scalar(f"loss/{key}", value, self.step)
                        writer.add_scalar("speed/images_per_second", rate, self.step)
                    if self.step % cfg.grid_every == 0 or boundary:
                        images = self.preview()
                        save_grid(self.run_dir / "grids" / f"step_{self.step:07d}.png", images, nrow=GRID_PER_CLASS)
                        save_grid(self.run_dir / "grid_latest.png", images, nrow=GRID_PER_CLASS)
                    if due_ckpt:
                        save_checkpoint(self.run_dir, self.state_dict())
                        last_good = self.step
                    if on_progress is not None:
                        on_progress(self.step, self.total_steps, values, rate)
                if stop.requested and self.step != last_good:
                    values = self._check_finite(stats, last_good)
                    save_checkpoint(self.run_dir, self.state_dict())
        finally:
            writer.flush()
            writer.close()
        return TrainResult(self.step, self.total_steps, rate, values, interrupted=stop.requested)
