"""Peak memory of one training step of every model at its paper's image size, against a budget.

Each model runs in its own process (a peak resident set cannot be reset): the run is prepared
on BreastMNIST-64 resized to the paper's side, placed at its last step (so PGGAN has grown to
its full size), and trains that step, checkpoints and renders its preview grid (with batch-norm
recalibration), as the end of a real run does. The baseline is a process that imports medsyn
and loads the same data, run the same way; the ratio says how much the networks add.

    python bench/train_memory.py                 # every model, CPU
    python bench/train_memory.py --models gaunet --set micro_batch=8
    python bench/train_memory.py --models simgan munit unit --set recompute_blocks=false
    python bench/train_memory.py --models munit --side 256   # PGGAN's 256x256 images, not resized

prints one line per model: peak GB, ratio to the baseline process, the peak when the training step
had ended (before the checkpoint and preview), and whether the peak fits BUDGET_GB.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_data import medmnist_file

BUDGET_GB = 6.0  # an 8 GB laptop keeps room for the system and a browser
DATA = medmnist_file("breastmnist_64.npz")
PAPER_SIDES = {  # the image side each model's paper trained at
    "dcgan": 64, "acgan": 64,  # liver-lesion paper: 64x64 ROIs
    "wgan": 64,  # retina paper: 64x64 fundus images
    "wgan-gp": 64, "gan": 64, "cgan": 64, "sngan": 64,  # baselines, at the 64x64 of the papers they serve
    "gaunet": 64,  # the U-Net paper's networks at 64x64 (issue 16's measurement)
    "lungct-gan": 64,  # lung-CT paper: 40x40 and 64x64
    "pggan": 256,  # brain-MRI paper: PGGAN generates 256x256 images (Table 1)
    # The brain-MRI paper refines "using resized 224x224 images for ResNet-50" (Sec. III-C): its
    # Tables 2 (MUNIT) and 3 (SimGAN) give 224x224 inputs, with batches of 1 and 10 (Sec. III-C).
    # Table 2 feeds MUNIT 3 channels (for ImageNet initialisation); here, as in a run, the data's 1.
    "simgan": 224, "unit": 224, "munit": 224,
}
REFINERS = {"simgan", "unit", "munit"}


def one_model(model: str, side: int, overrides: dict, device: str) -> dict:
    """Runs in the child: one last step of a run of ``model``; returns what it measured."""
    from medsyn.train.memory import peak_memory_gb
    from medsyn.train.run import DataOptions, execute_run, prepare_run

    with tempfile.TemporaryDirectory() as tmp:
        options = DataOptions(str(DATA), refine_source=str(DATA) if model in REFINERS else None)
        layer = {"model": model, "size": side, "steps": 1000, "device": device, "log_every": 1000,
                 "ckpt_every": 1000, "grid_every": 1000, **overrides}
        prepared = prepare_run(Path(tmp) / "run", [layer], options, resume=False)
        prepared.trainer.step = prepared.trainer.total_steps - 1  # the last step: PGGAN at full size
        result = execute_run(prepared)
        return {"peak_gb": peak_memory_gb(prepared.trainer.device), "step_gb": result.last_stats["mem_gb"],
                "batch": prepared.trainer.cfg.batch}


def baseline(device: str) -> dict:
    """Runs in the child: medsyn imported and the data loaded, no network."""
    from medsyn.data import load_source
    from medsyn.train.memory import peak_memory_gb

    load_source(str(DATA))
    return {"peak_gb": peak_memory_gb(device), "batch": 0}


def in_child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{args}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_overrides(pairs: list[str]) -> dict:
    import yaml

    return {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(PAPER_SIDES))
    parser.add_argument("--set", nargs="*", default=[], dest="overrides", help="config KEY=VALUE for every model")
    parser.add_argument("--side", type=int, help="every model at this side instead of its paper's")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # one measurement, printed as JSON for the parent
        result = baseline(args.device) if args.child == "baseline" else one_model(
            args.child, args.side or PAPER_SIDES[args.child], parse_overrides(args.overrides), args.device)
        print(json.dumps(result))
        return
    base = in_child(["--child", "baseline", "--device", args.device])
    print(f"baseline (import + data): {base['peak_gb']:.2f} GB; budget {BUDGET_GB:.1f} GB")
    for model in args.models:
        side = args.side or PAPER_SIDES[model]
        got = in_child(["--child", model, "--device", args.device, "--side", str(side), "--set", *args.overrides])
        verdict = "ok" if got["peak_gb"] <= BUDGET_GB else "OVER"
        print(f"{model:11s} {side:3d}px batch {got['batch']:3d}: {got['peak_gb']:6.2f} GB "
              f"({got['peak_gb'] / base['peak_gb']:5.1f}x baseline; {got['step_gb']:.2f} GB by the end of the "
              f"training step) {verdict}", flush=True)


if __name__ == "__main__":
    main()
