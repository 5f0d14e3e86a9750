"""t-SNE: where do classic and synthetic images fall among the real ones?

A random selection of images per class from each origin (real, classic, each generator) is
embedded together; colour = class, marker = origin. Two spaces: the penultimate layer of a
classifier trained on real images (the space the downstream task uses), and raw pixels, as the
brain-MRI paper ran it (Han et al. 2019, section F: 300 images per class, perplexity 100, 1,000
iterations). Staged: ``embed_sets`` computes, ``plot_embedding`` draws.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsyn import atomic
from medsyn.data.types import LabeledImages
from medsyn.evaluate.classify import TrainedClassifier, extract_features

PER_CLASS = 300  # images per class and origin, the brain-MRI paper's selection
PIXEL_PERPLEXITY, PIXEL_ITERATIONS = 100.0, 1000  # the brain-MRI paper's pixel t-SNE
MARKERS = ("o", "^", "s", "x", "D", "v", "P", "*")


@dataclass
class Embedding:
    """2-D t-SNE coordinates with each point's class and origin."""

    coords: np.ndarray  # (N, 2)
    labels: np.ndarray  # (N,) class index
    origin: np.ndarray  # (N,) origin name ("real", "classic", a generator name)
    class_names: list[str]
    origins: list[str]


def _select(ds: LabeledImages, per_class: int, rng: np.random.Generator) -> LabeledImages:
    picks = [rng.permutation(np.flatnonzero(ds.labels == k))[:per_class] for k in range(ds.num_classes)]
    return ds.subset(np.sort(np.concatenate(picks)))


def embed_sets(trained: TrainedClassifier | None, sets: dict[str, LabeledImages], *, per_class: int = PER_CLASS,
               seed: int = 0, perplexity: float = 30.0, iterations: int = 1000) -> Embedding:
    """Embed up to ``per_class`` images per class of every origin in one t-SNE (deterministic for a seed).

    Args:
        trained: the classifier whose penultimate features are embedded; None embeds the pixels.
        sets: origin name -> images (same classes and geometry as the classifier's data).
        per_class: images per class and origin, drawn at random (seeded).
        seed: seeds the selection and t-SNE (PCA initialisation, fixed random_state).
        perplexity: t-SNE perplexity; lowered for small selections (it must stay below N / 3).
        iterations: t-SNE optimisation steps.
    """
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(seed)
    features, labels, origin = [], [], []
    for name, ds in sets.items():
        chosen = _select(ds, per_class, rng)
        features.append(chosen.images.reshape(len(chosen), -1) if trained is None else extract_features(trained, chosen))
        labels.append(chosen.labels)
        origin += [name] * len(chosen)
    x = np.concatenate(features).astype(np.float64)
    n = len(x)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 images, got {n}")
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3), init="pca", learning_rate="auto",
                max_iter=iterations, random_state=seed)
    coords = tsne.fit_transform(x)
    class_names = list(next(iter(sets.values())).class_names if trained is None else trained.class_names)
    return Embedding(coords, np.concatenate(labels), np.array(origin), class_names, list(sets))


def plot_embedding(embedding: Embedding, path: str | Path, title: str | None = None) -> Path:
    """Write the embedding as a PNG (colour = class, marker = origin), atomically."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(7, 6), dpi=120)  # a bare Figure: no pyplot state, renders with Agg
    ax = fig.add_subplot()
    colours = [f"C{k % 10}" for k in range(len(embedding.class_names))]
    for j, origin in enumerate(embedding.origins):
        for k in range(len(embedding.class_names)):
            mask = (embedding.origin == origin) & (embedding.labels == k)
            if mask.any():
                ax.scatter(*embedding.coords[mask].T, s=12, c=colours[k], marker=MARKERS[j % len(MARKERS)],
                           alpha=0.7, linewidths=0.8)
    class_handles = [Line2D([], [], ls="", marker="o", color=c, label=n) for c, n in zip(colours, embedding.class_names)]
    origin_handles = [Line2D([], [], ls="", marker=MARKERS[j % len(MARKERS)], color="0.3", label=o)
                      for j, o in enumerate(embedding.origins)]
    ax.add_artist(ax.legend(handles=class_handles, title="class", loc="upper left", fontsize=8))
    ax.legend(handles=origin_handles, title="origin", loc="upper right", fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or "t-SNE of classifier features")
    return atomic.write_with(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))


def plot_tsne(trained: TrainedClassifier | None, sets: dict[str, LabeledImages], path: str | Path, *, seed: int = 0,
              per_class: int = PER_CLASS, title: str | None = None) -> Path:
    """t-SNE of ``sets`` (origin -> images) in ``trained``'s feature space, or of their pixels (as the
    brain-MRI paper: perplexity 100, 1,000 iterations) when ``trained`` is None; a PNG at ``path``."""
    if trained is None:
        embedding = embed_sets(None, sets, per_class=per_class, seed=seed, perplexity=PIXEL_PERPLEXITY,
                               iterations=PIXEL_ITERATIONS)
        return plot_embedding(embedding, path, title or "t-SNE of pixels (Han et al. 2019)")
    return plot_embedding(embed_sets(trained, sets, per_class=per_class, seed=seed), path, title)
