"""TensorBoard scalars and preview grids written into the run folder, for every kind of trainable."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medsyn.imageio import make_grid, save_grid


@dataclass
class Preview:
    """Images for a progress grid: rows of ``per_row`` images, one row per entry of ``row_names``.

    Attributes:
        images: (N, C, H, W) float32 in [0, 1], row-major.
        per_row: images in each row.
        row_names: a TensorBoard tag for each row (a class, or "<class> input" / "<class> refined").
    """

    images: np.ndarray
    per_row: int
    row_names: list[str]


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
    """Owns a run's TensorBoard writer; writes scalars and grids (PNG in grids/ and TensorBoard images)."""

    def __init__(self, run_dir: Path):
        from torch.utils.tensorboard import SummaryWriter  # slow import, only when training

        self.run_dir = Path(run_dir)
        self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        (self.run_dir / "grids").mkdir(exist_ok=True)

    def scalars(self, step: int, values: dict[str, float], images_per_second: float) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"loss/{key}", value, step)
        self.writer.add_scalar("speed/images_per_second", images_per_second, step)

    def grid(self, step: int, preview: Preview) -> None:
        save_grid(self.run_dir / "grids" / f"step_{step:07d}.png", preview.images, nrow=preview.per_row)
        save_grid(self.run_dir / "grid_latest.png", preview.images, nrow=preview.per_row)
        for k, tag in enumerate(preview.row_names):
            block = preview.images[k * preview.per_row:(k + 1) * preview.per_row]
            if len(block):
                self.writer.add_image(f"samples/{tag}", make_grid(block, nrow=preview.per_row), step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
