"""Real-only classifiers against the MedMNIST v2 table: does a study's classifier, at its budget,
reach what the benchmark reports before any synthetic image is added?

    python bench/real_baseline.py [--data breastmnist pneumoniamnist retinamnist] [--seeds 0 1 2]
                                  [--classifier resnet18] [--epochs 20] [--patience 5] [--threads 2]

Trains ``--classifier`` on each file's train split (model selection and early stopping on its val
split only), scores its test split, and prints test AUC and accuracy per seed, their mean, the
MedMNIST v2 figure (Yang et al. 2023, Table 3, ResNet-18 at 28x28) and the gap; the issue's bar is
within 0.03 AUC. Also the epochs run and the best epoch (how much of the budget convergence took)
and seconds per run, and the median training throughput of its epochs. Data: ../shared/data/medmnist (``MEDSYN_DATA`` overrides).
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from medsyn.api import classify

    print(f"{args.classifier}, at most {args.epochs} epochs, patience {args.patience}, {args.threads} threads")
    print("data | seed | test AUC | test acc | best epoch / epochs run | seconds | training images/s")
    summary = []
    for name in args.data:
        aucs, accs = [], []
        for seed in args.seeds:
            started = time.perf_counter()
            result = classify(str(DATA / f"{name}.npz"), classifier=args.classifier, epochs=args.epochs, seed=seed,
                              patience=args.patience)
            seconds = time.perf_counter() - started
            trained, test = result["classifier"], result["test"]
            aucs.append(test["auc"]), accs.append(test["accuracy"])
            rate = np.median([h["images_per_second"] for h in trained.history])
            print(f"{name} | {seed} | {test['auc']:.4f} | {test['accuracy']:.4f} | "
                  f"{trained.best_epoch} / {len(trained.history)} | {seconds:.0f} | {rate:.1f}", flush=True)
        ref_auc, ref_acc = MEDMNIST_V2[name]
        summary.append((name, np.mean(aucs), np.std(aucs), np.mean(accs), ref_auc, ref_acc))
    print("\ndata | mean test AUC (sd over seeds) | MedMNIST v2 AUC | gap | within 0.03 | mean acc | MedMNIST v2 acc")
    for name, auc, sd, acc, ref_auc, ref_acc in summary:
        gap = auc - ref_auc
        print(f"{name} | {auc:.4f} ({sd:.4f}) | {ref_auc:.3f} | {gap:+.4f} | {'yes' if gap >= -0.03 else 'NO'} | "
              f"{acc:.4f} | {ref_acc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
