"""A run's discriminator as a membership attacker (LOGAN, Hayes et al. 2019): its realness score per image."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from medsyn.data.types import LabeledImages
from medsyn.errors import DataError

BATCH = 256
Scorer = Callable[[LabeledImages], np.ndarray]


def discriminator_scorer(run_dir: str | Path, device: str = "cpu") -> tuple[Scorer | None, str | None]:
    """(scorer, None), or (None, why not) for a run whose discriminator cannot score single images.

    The scorer maps images (at the run's size, channels and classes) to the discriminator's raw
    output, higher meaning "real"; a class-conditional or per-class discriminator is given each
    image's own label, as in training.
    """
    from medsyn.models.base import GeneratorInputs
    from medsyn.train.checkpoint import load_checkpoint
    from medsyn.train.setup import apply_spectral_norm, build_networks, resolve_config, resolve_device

    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir)
    model = state["model"]
    cfg, spec = resolve_config(state["config"], user_layers=0)
    if spec.inputs is not GeneratorInputs.NOISE:
        return None, f"{spec.name}'s discriminator judges pairs of images, not single ones: no LOGAN attack"
    nets = build_networks(spec, cfg, model["size"], model["channels"], model["num_classes"])
    if cfg.spectral_norm:  # as training built it, so the saved parametrisation loads
        apply_spectral_norm(nets.discriminator)
    nets.discriminator.load_state_dict(state["discriminator"])
    torch_device = resolve_device(device)
    critic = nets.discriminator.to(torch_device).eval()
    wanted = (model["size"], model["channels"], list(state["data"]["class_names"]))
    conditional = bool(model["num_classes"])

    def score(images: LabeledImages) -> np.ndarray:
        if (images.size, images.channels, list(images.class_names)) != wanted:
            raise DataError(images.source, f"images {images.size}x{images.size}x{images.channels} of classes "
                                           f"{list(images.class_names)} do not match the run {run_dir} "
                                           f"({wanted[0]}x{wanted[0]}x{wanted[1]}, classes {wanted[2]})")
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), BATCH):
                x = torch.from_numpy(images.images[start:start + BATCH]).to(torch_device) * 2 - 1  # its [-1, 1]
                labels = torch.from_numpy(images.labels[start:start + BATCH]).to(torch_device) if conditional else None
                realness, _ = critic(x, labels)
                out.append(realness.float().reshape(len(x)).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    return score, None
