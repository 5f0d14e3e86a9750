"""Fixed-pattern coherence of a trained generator beside its real training images.

    python bench/pattern.py RUN [--n N] [--seed S] [--device cpu]

RUN is a run folder of ``medsyn train`` or ``bench/quality.py``. The n synthetic and n real images
are drawn as bench/quality.py draws them (the training split's class proportions, a seeded draw per
class), so on a bench run folder this prints the ``pattern`` figure its last evaluation would
print; n and the seed default to RUN/quality.json's (the bench's n and the run's config seed),
else to min(500, training images) and the config's seed. The measure is
``medsyn.metrics.texture.fixed_pattern_coherence``: about 1 when each image's fine texture is its
own, sqrt(n) when every image carries the same one. It is useful on runs trained before the bench
printed it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from quality import class_quota, real_draw, synthetic_draw

from medsyn.errors import MedsynError
from medsyn.metrics.texture import fixed_pattern_coherence
from medsyn.train.run import prepare_run

DEFAULT_N = 500


def measure(run: Path, n: int | None, seed: int | None, device: str) -> tuple[float, float, int, int]:
    """(synthetic coherence, real coherence, n, generator step)."""
    bench = run / "quality.json"
    recorded = json.loads(bench.read_text()) if bench.is_file() else {}
    prepared = prepare_run(run, [], None, resume=True)
    train, cfg = prepared.data, prepared.trainer.cfg
    n = n or recorded.get("n") or min(DEFAULT_N, len(train))
    seed = cfg.seed if seed is None else seed
    if n < 2 or n > len(train):
        raise MedsynError(f"{run}: n must be between 2 and the {len(train)} training images, got {n}")
    quota = class_quota(train.class_counts(), n)
    synthetic, step = synthetic_draw(run, quota, seed, device)
    return fixed_pattern_coherence(synthetic), fixed_pattern_coherence(real_draw(train, quota, seed)), n, step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="Run folder.")
    parser.add_argument("--n", type=int, help="Images per side (default: the bench's n, else min(500, training set)).")
    parser.add_argument("--seed", type=int, help="Seeds both draws (default: the run's config seed).")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    args = parser.parse_args(argv)
    try:
        synthetic, real, n, step = measure(args.run, args.n, args.seed, args.device)
    except MedsynError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.run}: step {step}  n {n}  pattern {synthetic:.2f} (real {real:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
