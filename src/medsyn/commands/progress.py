"""Progress-bar wrappers that more than one command uses."""
from __future__ import annotations

import time

import numpy as np

from medsyn.data.types import LabeledImages
from medsyn.ui import progress


def features_with_progress(label: str, images: LabeledImages, net, store, batch: int, device) -> np.ndarray:
    """compute_features under a progress bar that shows img/s (or "cached")."""
    from medsyn.metrics.fid import compute_features

    with progress() as bar:
        task = bar.add_task(f"features {label}", total=len(images), info="")
        started, done = time.perf_counter(), [0]

        def on_batch(count: int) -> None:
            done[0] += count
            rate = done[0] / max(time.perf_counter() - started, 1e-9)
            bar.update(task, completed=done[0], info=f"{rate:,.1f} img/s")

        feats = compute_features(images, net, cache=store, batch=batch, device=device, on_batch=on_batch)
        if done[0] == 0:  # nothing computed: every feature came from the cache
            bar.update(task, completed=len(images), info="cached")
        return feats
