"""Real-only classifiers against the MedMNIST v2 table: does a study's classifier, at its budget,
reach what the benchmark reports before any synthetic image is added?

    python bench/real_baseline.py [--data breastmnist pneumoniamnist retinamnist] [--seeds 0 1 2]
                                  [--classifier resnet18] [--epochs 20] [--patience 5] [--threads 2]
                                  [--float32-baseline]

Trains ``--classifier`` on each file's train split (model selection and early stopping on its val
split only), scores its test split, and prints test AUC and accuracy per seed, their mean, the
MedMNIST v2 figure (Yang et al. 2023, Table 3, ResNet-18 at 28x28) and the gap; the issue's bar is
within 0.03 AUC. Also the epochs run and the best epoch (how much of the budget convergence took)
and seconds per run, and the median training throughput of its epochs. Training uses the classifiers'
default ``amp`` (bf16 autocast where the CPU or GPU has bf16 units); ``--float32-baseline`` also trains
every run in float32 in the same process and prints the AUC difference and the speed ratio. Data: ../shared/data/medmnist (``MEDSYN_DATA`` overrides).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

# MedMNIST v2 (Yang et al., Scientific Data 2023), Table 3: ResNet-18 (28), test AUC and ACC
MEDMNIST_V2 = {"breastmnist": (0.901, 0.863), "pneumoniamnist": (0.944, 0.854), "retinamnist": (0.717, 0.524)}
DATA = Path(os.environ.get("MEDSYN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=list(MEDMNIST_V2), choices=list(MEDMNIST_V2))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--classifier", default="resnet18")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--float32-baseline", action="store_true", help="also train in float32 (amp=false) and compare")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from medsyn.api import classify

    print(f"{args.classifier}, at most {args.epochs} epochs, patience {args.patience}, {args.threads} threads")
    print("data | seed | precision | test AUC | test acc | best epoch / epochs run | seconds | training images/s")
    summary, ratios = [], []
    for name in args.data:
        aucs, accs = [], []
        for seed in args.seeds:
            runs = [_run(classify, args, name, seed, amp) for amp in ([False, True] if args.float32_baseline else [True])]
            auc, acc, rate = runs[-1]
            aucs.append(auc), accs.append(acc)
            if args.float32_baseline:
                (auc32, _, rate32), _ = runs
                ratios.append(rate / rate32)
                print(f"{name} | {seed} | bf16 autocast against float32: AUC {auc - auc32:+.4f}, "
                      f"training images/s x{rate / rate32:.2f}", flush=True)
        ref_auc, ref_acc = MEDMNIST_V2[name]
        summary.append((name, np.mean(aucs), np.std(aucs), np.mean(accs), ref_auc, ref_acc))
    if ratios:
        print(f"\nspeed-up of the default precision over float32, median over runs: x{np.median(ratios):.2f}")
    print("\ndata | mean test AUC (sd over seeds) | MedMNIST v2 AUC | gap | within 0.03 | mean acc | MedMNIST v2 acc")
    for name, auc, sd, acc, ref_auc, ref_acc in summary:
        gap = auc - ref_auc
        print(f"{name} | {auc:.4f} ({sd:.4f}) | {ref_auc:.3f} | {gap:+.4f} | {'yes' if gap >= -0.03 else 'NO'} | "
              f"{acc:.4f} | {ref_acc:.3f}")
    return 0


def _run(classify, args, name: str, seed: int, amp: bool) -> tuple[float, float, float]:
    """(test AUC, test accuracy, median training images/s) of one run; prints its line."""
    started = time.perf_counter()
    result = classify(str(DATA / f"{name}.npz"), classifier=args.classifier, epochs=args.epochs, seed=seed,
                      patience=args.patience, amp=amp)
    seconds = time.perf_counter() - started
    trained, test = result["classifier"], result["test"]
    rate = float(np.median([h["images_per_second"] for h in trained.history]))
    print(f"{name} | {seed} | {trained.precision} | {test['auc']:.4f} | {test['accuracy']:.4f} | "
          f"{trained.best_epoch} / {len(trained.history)} | {seconds:.0f} | {rate:.1f}", flush=True)
    return test["auc"], test["accuracy"], rate


if __name__ == "__main__":
    sys.exit(main())
