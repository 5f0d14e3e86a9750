"""Trained generator -> a labeled synthetic set on disk, with provenance, written atomically."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from medsyn.errors import ConfigError
from medsyn.imageio import atomic_dir, ensure_new_dir, class_dir_name, save_grid, to_uint, write_image_folder
from medsyn.train.batches import step_seed
from medsyn.train.checkpoint import CHECKPOINT, file_sha256, load_checkpoint
from medsyn.train.ema import calibration_inputs, recalibrate_batch_norm
from medsyn.train.logging import generate
from medsyn.train.setup import build_networks, resolve_config, resolve_device, sample_latent

GRID_PER_CLASS = 64
LATENT_BLOCK = 1024


@dataclass
class LoadedGenerator:
    generator: torch.nn.Module
    cfg: object
    model: dict
    data: dict
    step: int
    checkpoint_sha256: str
    device: torch.device


def load_generator(run_dir: str | Path, device: str = "auto") -> LoadedGenerator:
    """The EMA generator of a run, in eval mode on ``device``."""
    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir)
    cfg, spec = resolve_config(state["config"])
    model = state["model"]
    nets = build_networks(spec, cfg, model["size"], model["channels"], model["num_classes"])
    nets.generator.load_state_dict(state["generator_ema"])
    torch_device = resolve_device(device)
    generator = nets.generator.to(torch_device)
    recalibrate_batch_norm(generator, calibration_inputs(cfg, model["num_classes"], torch_device, seed=cfg.seed))
    return LoadedGenerator(generator, cfg, model, state["data"], int(state["step"]),
                           file_sha256(run_dir / CHECKPOINT), torch_device)


def synthesize(loaded: LoadedGenerator, n_per_class: int, seed: int, batch: int = 256,
               on_batch: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images float32 (N,C,H,W) in [0,1], labels) with N = n_per_class x classes, class-major.

    Image i of class k depends only on (seed, k, i), not on n_per_class or batch size.
    """
    images, labels = [], []
    for k in range(max(1, loaded.model["num_classes"])):
        for start in range(0, n_per_class, LATENT_BLOCK):
            # Latents come in fixed blocks from their own seed: a normal draw of another length would differ.
            gen = torch.Generator(device="cpu").manual_seed(step_seed(seed, k, stream=1000 + start // LATENT_BLOCK))
            z = sample_latent(LATENT_BLOCK, loaded.cfg, torch.device("cpu"), generator=gen)[: n_per_class - start]
            y = torch.full((len(z),), k, dtype=torch.long)
            for i in range(0, len(z), batch):
                images.append(generate(loaded.generator, z[i:i + batch].to(loaded.device), y[i:i + batch].to(loaded.device), batch))
                if on_batch is not None:
                    on_batch(len(images[-1]))
        labels.append(np.full(n_per_class, k, dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def write_samples(run: str | Path | LoadedGenerator, out: str | Path, n_per_class: int, fmt: str = "png", seed: int = 0,
                  device: str = "auto", on_batch: Callable[[int], None] | None = None) -> Path:
    """Sample a run (its folder, or a generator already loaded from it) into ``out``.

    Writes class folders of PNG (or samples.npz), manifest.csv and a grid per class, atomically.
    """
    if fmt not in ("png", "npz"):
        raise ConfigError(f"--format must be png or npz, got {fmt!r}")
    if n_per_class < 1:
        raise ConfigError(f"--n-per-class must be at least 1, got {n_per_class}")
    ensure_new_dir(out)
    loaded = run if isinstance(run, LoadedGenerator) else load_generator(run, device)
    images, labels = synthesize(loaded, n_per_class, seed, on_batch=on_batch)
    names = loaded.data["class_names"] if loaded.model["num_classes"] else ["all"]
    bit_depth = int(loaded.data.get("bit_depth", 8))
    rows = [{"model": loaded.model["name"], "checkpoint_sha256": loaded.checkpoint_sha256, "step": loaded.step,
             "seed": seed, "index": i % n_per_class} for i in range(len(labels))]
    with atomic_dir(out) as tmp:
        if fmt == "png":
            write_image_folder(tmp, images, labels, names, bit_depth=bit_depth, rows=rows, stem="syn")
        else:
            _write_npz(tmp, images, labels, names, bit_depth, rows)
        for k, name in enumerate(names):
            save_grid(tmp / f"grid_{class_dir_name(name)}.png", images[labels == k][:GRID_PER_CLASS], nrow=8)
    return Path(out)


def _write_npz(folder: Path, images: np.ndarray, labels: np.ndarray, names: list[str], bit_depth: int, rows) -> None:
    """MedMNIST-style arrays (all samples under the train_ keys), so any MedMNIST reader can load them."""
    stacked = np.stack([to_uint(img, bit_depth) for img in images])
    np.savez_compressed(folder / "samples.npz", train_images=stacked, train_labels=labels.reshape(-1, 1),
                        class_names=np.array(names))
    (folder / "classes.txt").write_text("".join(f"{n}\n" for n in names))
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "class_name", *rows[0].keys()])
        for i, (lab, row) in enumerate(zip(labels, rows)):
            writer.writerow([f"samples.npz#{i}", int(lab), names[int(lab)], *row.values()])
