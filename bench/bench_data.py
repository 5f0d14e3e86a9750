"""Where the benchmarks find the MedMNIST files: $MEDSYN_BENCH_DATA, else ../shared/data/medmnist.

The variable lets them run on a machine where the checkout has no ../shared beside it (a GPU
machine that receives the repository alone): copy the .npz files there and point it at them.
"""
from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "MEDSYN_BENCH_DATA"


def medmnist_file(name: str) -> Path:
    root = os.environ.get(DATA_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist"
    return Path(root) / name
