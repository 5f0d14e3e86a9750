"""Step time of ``recompute_blocks``: each refiner's training step with its residual blocks
recomputed in the backward (activation checkpointing), against the plain step, in one process.

Each refiner trains at its paper's side and batch (train_memory.PAPER_SIDES, the model's default
batch) on the first BreastMNIST-64 images resized to it, at a step that makes every update of the
model's schedule (SimGAN: a refiner and a discriminator update). One network is timed: a per-class
run trains one per class, each with this step. The two kinds of step alternate on the same
networks (toggled between steps, each first in turn), after one unmeasured step of each.

    python bench/recompute_time.py --models simgan munit unit --repeats 3
    python bench/recompute_time.py --threads 1 --repeats 4   # a machine shared with other jobs

prints per model the median seconds of a plain and of a recomputing step, and their ratio, the
recomputing step's time over the plain one's (what the memory saved costs in time): the median over
the rounds of the ratio of a round's two steps, which ran back to back; and the same ratio of the
process's CPU time, which other jobs on a shared machine disturb less than the wall-clock time
(with ``--threads 1`` it counts the work alone, no thread waiting on another).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from medsyn.data import load_source
from medsyn.models import MODELS
from medsyn.models.refiners_base import set_recompute_blocks
from medsyn.train.refiner import build_group
from medsyn.train.setup import resolve_config
from train_memory import DATA, PAPER_SIDES, REFINERS


def images(side: int, count: int, offset: int) -> torch.Tensor:
    """``count`` BreastMNIST-64 images from ``offset``, resized to ``side`` as a run resizes them, in [-1, 1]."""
    data = load_source(str(DATA), size=side)
    return torch.from_numpy(data.images[offset:offset + count]) * 2 - 1


def step_with_every_update(cfg) -> int:
    """SimGAN: the first step after pretraining with a discriminator update; UNIT/MUNIT: any step."""
    return cfg.pretrain_steps + cfg.refiner_steps - 1 if cfg.model == "simgan" else 0


def time_model(model: str, repeats: int, side: int | None = None) -> dict[str, float]:
    side = side or PAPER_SIDES[model]
    cfg, spec = resolve_config({"model": model, "device": "cpu"})
    torch.manual_seed(0)
    group = build_group(spec, cfg, side, 1, torch.device("cpu"))
    synthetic, real = images(side, cfg.batch, 0), images(side, cfg.batch, cfg.batch)
    step = step_with_every_update(cfg)
    wall: dict[bool, list[float]] = {False: [], True: []}
    cpu: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(repeats + 1):
        for recompute in ((False, True) if round_ % 2 else (True, False)):  # either first in turn
            set_recompute_blocks(group.objective.translator, recompute)
            torch.manual_seed(round_)
            started, started_cpu = time.perf_counter(), time.process_time()
            group.train_step(step, synthetic, real)
            if round_:  # the first round warms up (allocator, kernels)
                wall[recompute].append(time.perf_counter() - started)
                cpu[recompute].append(time.process_time() - started_cpu)
    # each round's two steps ran back to back: their ratio is the least touched by other jobs' load
    ratio = lambda seconds: statistics.median(r / p for p, r in zip(seconds[False], seconds[True]))  # noqa: E731
    return {"side": side, "batch": cfg.batch, "plain": statistics.median(wall[False]),
            "recompute": statistics.median(wall[True]), "ratio": ratio(wall), "cpu_ratio": ratio(cpu)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=sorted(REFINERS))
    parser.add_argument("--repeats", type=int, default=3, help="measured steps of each kind")
    parser.add_argument("--side", type=int, help="image side for every model (default: each paper's)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for model in args.models:
        if MODELS.get(model).role != "refiner":
            raise SystemExit(f"{model} is not a refiner (simgan, unit, munit)")
        got = time_model(model, args.repeats, args.side)
        print(f"{model:7s} {got['side']}px batch {got['batch']:2d}: plain {got['plain']:6.2f} s/step, recomputed "
              f"{got['recompute']:6.2f} s/step, ratio {got['ratio']:.2f}; CPU time ratio {got['cpu_ratio']:.2f}",
              flush=True)


if __name__ == "__main__":
    main()
