"""Has the discriminator memorised its training images? Its scores on training, held-out and
generated images of a finished run.

    python bench/critic_scores.py RUN [--reference REF] [--n N] [--seed S]

RUN is a run folder of ``medsyn train`` or ``bench/quality.py`` (a generator GAN). REF is held-out
real data, as bench/quality.py takes it (default: the test split of the run's data). The
discriminator judges n images of each kind through its own input pipeline (the run's DiffAugment
and ADA at the checkpoint's p, seeded), the generated ones drawn by the training generator (the
one it was trained against, batch norm in training mode as in a training step). It prints the
mean and standard deviation of each kind's scores and

- ``held-out below generated``: the share of held-out real images scored below the generated
  images' mean score; about a half or less when D judges real images as real, most of them when
  D has learned its training images rather than what real images look like;
- ``r_v`` = (train - held-out) / (train - generated), of the mean scores: ADA's validation
  heuristic (Karras et al. 2020): 0 with no overfitting, 1 when held-out images score as
  generated ones, above 1 when they score lower.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from quality import load_reference

from medsyn.errors import MedsynError
from medsyn.train.gan import GanTrainer
from medsyn.train.run import prepare_run
from medsyn.train.setup import sample_latent


def _first(images, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n images of a seeded shuffle, in [-1, 1], with their labels."""
    order = np.random.default_rng(0).permutation(len(images))[:n]
    return torch.from_numpy(images.images[order]) * 2 - 1, torch.from_numpy(images.labels[order]).long()


@torch.no_grad()
def scores(run: Path, reference: str | None, n: int | None, seed: int) -> tuple[dict[str, np.ndarray], int]:
    """D's raw scores on n training, n held-out and n generated images ({"train", "held-out",
    "generated"}), and the checkpoint's step."""
    prepared = prepare_run(run, [], None, resume=True)
    trainer, train = prepared.trainer, prepared.data  # the checkpoint's state, loaded by prepare_run
    if not isinstance(trainer, GanTrainer):
        raise MedsynError(f"{run}: {trainer.cfg.model} is not a generator GAN; this measures a generator's discriminator")
    _, held_out = load_reference(reference, trainer.data_info["load"]["source"], train, trainer.cfg.interpolation)
    n = min(n or len(train), len(train), len(held_out))
    if n < 2:
        raise MedsynError(f"{run}: needs at least 2 training and 2 held-out images, got {n}")
    torch.manual_seed(seed)
    G, D, device = trainer.G.train(), trainer.D.eval(), trainer.device
    draws = {"train": _first(train, n), "held-out": _first(held_out, n)}
    out = {}

    def judge(name: str, images: torch.Tensor, labels: torch.Tensor) -> None:
        judged, _ = D(trainer.critic_input(images.to(device)), labels.to(device))
        out[name] = judged.float().flatten().cpu().numpy()

    for name, (images, labels) in draws.items():
        judge(name, images, labels)
    labels = draws["train"][1].to(device)  # generated for the training draw's classes, after the real draws
    judge("generated", G(sample_latent(n, trainer.cfg, device), labels), labels)
    return out, trainer.step


def summary(run: Path, judged: dict[str, np.ndarray], step: int) -> str:
    means = {name: float(values.mean()) for name, values in judged.items()}
    parts = [f"D({name}) {means[name]:+.3f} sd {judged[name].std():.3f}" for name in judged]
    below = float((judged["held-out"] < means["generated"]).mean())
    r_v = (means["train"] - means["held-out"]) / (means["train"] - means["generated"])
    return (f"{run}: step {step}  n {len(judged['train'])}  " + "  ".join(parts)
            + f"  held-out below generated {below:.2f}  r_v {r_v:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="Run folder of a generator GAN.")
    parser.add_argument("--reference", help="Held-out real data (default: the test split of the run's data).")
    parser.add_argument("--n", type=int, help="Images of each kind (default: as many as both real sets allow).")
    parser.add_argument("--seed", type=int, default=0, help="Seeds the latents and the augmentation draws.")
    args = parser.parse_args(argv)
    try:
        judged, step = scores(args.run, args.reference, args.n, args.seed)
    except MedsynError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(args.run, judged, step))
    return 0


if __name__ == "__main__":
    sys.exit(main())
