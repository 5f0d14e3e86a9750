"""TensorBoard scalars and fixed-noise sample grids written into the run folder."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from medsyn.imageio import make_grid, save_grid
from medsyn.train.ema import calibration_inputs, recalibrate_batch_norm
from medsyn.train.batches import SourcePool, step_seed
from medsyn.train.setup import sample_latent

if TYPE_CHECKING:
    from medsyn.train.loop import Trainer

PER_CLASS_IN_GRID = 8


@torch.no_grad()
def generate(generator: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor, batch: int = 256,
             sources: torch.Tensor | None = None) -> np.ndarray:
    """Images in [0, 1] as float32 numpy (N, C, H, W), generated in eval mode in chunks.

    ``sources`` (N, C, S, S) in [-1, 1]: the real images an image-input generator rewrites.
    """
    was_training = generator.training
    generator.eval()
    inputs = (z, labels) if sources is None else (z, labels, sources)
    parts = [((generator(*(t[i:i + batch] for t in inputs)).float() + 1) / 2).clamp_(0, 1).cpu()
             for i in range(0, len(z), batch)]
    generator.train(was_training)
    return torch.cat(parts).numpy()


class RunLogger:
    """Owns the run's TensorBoard writer and its fixed latents, so grids are comparable over steps."""

    def __init__(self, run_dir: Path, trainer: "Trainer"):
        from torch.utils.tensorboard import SummaryWriter  # slow import, only when training

        self.trainer = trainer
        self.run_dir = run_dir
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))
        classes = max(1, trainer.image_spec.num_classes)
        gen = torch.Generator(device="cpu").manual_seed(step_seed(trainer.cfg.seed, 0, stream=99))
        self.labels = torch.arange(classes).repeat_interleave(PER_CLASS_IN_GRID).to(trainer.device)
        self.z = sample_latent(len(self.labels), trainer.cfg, torch.device("cpu"), generator=gen).to(trainer.device)
        (run_dir / "grids").mkdir(exist_ok=True)
        pool, self.sources = None, None
        if trainer.spec.image_input:  # fixed sources too: the first training images of each class
            pool = SourcePool(trainer.batches.images, trainer.batches.labels, classes)
            self.sources = pool.first(self.labels)
            save_grid(run_dir / "grids" / "sources.png", ((self.sources + 1) / 2).clamp(0, 1).cpu().numpy(),
                      nrow=PER_CLASS_IN_GRID)
        self._calibration_inputs = calibration_inputs(trainer.cfg, classes, trainer.device, seed=trainer.cfg.seed,
                                                      sources=pool)

    def scalars(self, step: int, values: dict[str, float], images_per_second: float) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"loss/{key}", value, step)
        self.writer.add_scalar("speed/images_per_second", images_per_second, step)

    def grid(self, step: int) -> None:
        """One row per class from the EMA generator: PNG in grids/ and an image per class in TensorBoard."""
        ema = copy.deepcopy(self.trainer.ema.module)
        recalibrate_batch_norm(ema, self._calibration_inputs)
        images = generate(ema, self.z, self.labels, sources=self.sources)
        save_grid(self.run_dir / "grids" / f"step_{step:07d}.png", images, nrow=PER_CLASS_IN_GRID)
        save_grid(self.run_dir / "grid_latest.png", images, nrow=PER_CLASS_IN_GRID)
        names = self.trainer.data_info.get("class_names", [])
        for k in range(max(1, self.trainer.image_spec.num_classes)):
            block = images[k * PER_CLASS_IN_GRID:(k + 1) * PER_CLASS_IN_GRID]
            tag = names[k] if k < len(names) else str(k)
            self.writer.add_image(f"samples/{tag}", make_grid(block, nrow=PER_CLASS_IN_GRID), step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
