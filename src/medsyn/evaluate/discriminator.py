"""An ACGAN's discriminator as a lesion classifier (the liver-lesion paper's comparison, Sec. IV).

The ACGAN discriminator learns, beside real-or-fake, to name the class of every image it sees,
real and synthetic: Frid-Adar et al. 2018 compare its class head, used as a classifier on the
test lesions, with their CNN trained on real plus synthetic images. Here the head of a finished
``medsyn train --model acgan`` run scores a split's images; nothing is trained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError, DataError

BATCH = 256


def discriminator_probabilities(state: dict[str, Any], run_dir: str | Path, images: LabeledImages,
                                device: str = "cpu") -> np.ndarray:
    """Class probabilities (N, K) of the discriminator head of a run's checkpoint ``state`` (read
    from ``run_dir``, which the messages name) for ``images``.

    Raises:
        ConfigError: the run's discriminator has no class head (only ACGAN's has one).
        DataError: the images do not match the run's size, channels or classes.
    """
    from medsyn.train.setup import build_networks, resolve_config, resolve_device

    run_dir = Path(run_dir)
    model = state["model"]
    cfg, spec = resolve_config(state["config"], user_layers=0)
    if cfg.per_class or model["num_classes"] == 0:
        raise ConfigError(f"{run_dir}: a {model['name']} run of one generator per class has no class head; "
                          f"train an ACGAN (`medsyn train --model acgan`)")
    nets = build_networks(spec, cfg, model["size"], model["channels"], model["num_classes"])
    if getattr(nets.discriminator.head, "classifier", None) is None:
        raise ConfigError(f"{run_dir}: the {model['name']} discriminator has no class head (ACGAN's has one: "
                          f"`medsyn train --model acgan`)")
    wanted = (model["size"], model["channels"], list(state["data"]["class_names"]))
    if (images.size, images.channels, list(images.class_names)) != wanted:
        raise DataError(images.source, f"images {images.size}x{images.size}x{images.channels} of classes "
                                       f"{list(images.class_names)} do not match the run ({wanted[0]}x{wanted[0]}x"
                                       f"{wanted[1]}, classes {wanted[2]})")
    nets.discriminator.load_state_dict(state["discriminator"])
    torch_device = resolve_device(device)
    critic = nets.discriminator.to(torch_device).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), BATCH):
            batch = torch.from_numpy(images.images[start:start + BATCH]).to(torch_device) * 2 - 1  # the [-1, 1] it trained on
            _, logits = critic(batch, None)
            out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)
