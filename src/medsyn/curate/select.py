"""Features -> clusters per class -> scores against the real set -> a discard reason per image (pure functions).

Clusters are made within each class: the brain-MRI paper generated (and so reviewed) tumour and
non-tumour images separately, and a cluster that mixed classes could not be discarded without
also judging labels. Cluster ids are therefore class-qualified: "malignant/3".
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medsyn.errors import ConfigError, DataError
from medsyn.imageio import class_dir_name

KMEANS_RESTARTS = 4  # k-means++ restarts, best inertia kept: stabler than one, and 200 clusters x 10 restarts is slow on CPU
SCORE_NEIGHBOURS = 3  # k of the k-NN distance: Kynkaenniemi et al. 2019 (improved precision/recall) use 3


def cluster_per_class(features: np.ndarray, labels: np.ndarray, class_names: list[str], clusters: int,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """k-means++ within each class.

    Args:
        features: (N, D) features.
        labels: (N,) class indices.
        class_names: one name per class index (for notices).
        clusters: clusters per class; capped at the class's number of distinct feature rows.
        seed: k-means++ seeding.

    Returns:
        (cluster index per image, numbered 0.. by decreasing size within its class;
        distance of each image to its cluster centre; notices about capped cluster counts).
    """
    if clusters < 1:
        raise ConfigError(f"--clusters must be at least 1, got {clusters}")
    feats = np.asarray(features, dtype=np.float64)
    assigned = np.zeros(len(feats), dtype=np.int64)
    centre_distance = np.zeros(len(feats))
    notices = []
    for k, name in enumerate(class_names):
        members = np.flatnonzero(labels == k)
        if len(members) == 0:
            continue
        x = feats[members]
        distinct = len(np.unique(x, axis=0))
        k_used = min(clusters, distinct)
        if k_used < clusters:
            notices.append(f"class {name}: {len(members)} images ({distinct} distinct) allow {k_used} clusters, "
                           f"not {clusters}")
        ids, centres = _kmeans(x, k_used, seed)
        assigned[members] = ids
        centre_distance[members] = np.linalg.norm(x - centres[ids], axis=1)
    return assigned, centre_distance, notices


def _kmeans(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster index per row (largest cluster 0, ties to the one holding the earlier row) and centres."""
    if k == 1:
        return np.zeros(len(x), dtype=np.int64), x.mean(axis=0, keepdims=True)
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, init="k-means++", n_init=KMEANS_RESTARTS, random_state=seed).fit(x)
    raw = model.labels_
    sizes = np.bincount(raw, minlength=k)
    first = np.array([np.flatnonzero(raw == c)[0] for c in range(k)])
    order = sorted(range(k), key=lambda c: (-sizes[c], first[c]))  # k-means' own numbering is arbitrary
    renumber = np.empty(k, dtype=np.int64)
    renumber[order] = np.arange(k)
    return renumber[raw], model.cluster_centers_[order]


def knn_scores(features: np.ndarray, labels: np.ndarray, real_features: np.ndarray, real_labels: np.ndarray,
               class_names: list[str], real_source: str = "real data") -> tuple[np.ndarray, dict[str, float]]:
    """Distance of each image to its 3rd-nearest real image of the same class, over the real set's own typical such distance.

    Why k-NN rather than a Mahalanobis distance: real medical sets are small (a few hundred
    images per class) against 1024-2048 feature dimensions, so a covariance is mostly shrinkage,
    and their classes are rarely one Gaussian blob. A k-NN distance needs neither assumption,
    and dividing by the median of the real images' own 3rd-NN distances (each leaving itself
    out) gives a scale a person can set a threshold on: 1 is as close as a typical real image
    is to its real neighbours. In 2048-d Inception space distances concentrate (a 100-step DCGAN's
    mush scores about 1.1-1.2 on BreastMNIST), so the real images' own scores are returned too,
    as the reference a threshold should be read against.

    Returns:
        (score per image; class name -> 95th percentile of the real images' own leave-one-out scores).

    Raises:
        DataError: a class with synthetic images has fewer than 2 real images.
    """
    from sklearn.neighbors import NearestNeighbors

    feats = np.asarray(features, dtype=np.float64)
    real = np.asarray(real_features, dtype=np.float64)
    scores = np.full(len(feats), np.nan)
    real_p95 = {}
    for k, name in enumerate(class_names):
        members, reference = np.flatnonzero(labels == k), real[real_labels == k]
        if len(members) == 0:
            continue
        if len(reference) < 2:
            raise DataError(real_source, f"class {name!r} has {len(reference)} real image(s); the score needs at least 2")
        neighbours = min(SCORE_NEIGHBOURS, len(reference) - 1)
        index = NearestNeighbors(n_neighbors=neighbours + 1).fit(reference)
        own = index.kneighbors(reference, return_distance=True)[0][:, neighbours]  # column 0 is the image itself
        radius = float(np.median(own))
        distance = index.kneighbors(feats[members], n_neighbors=neighbours, return_distance=True)[0][:, -1]
        scale = radius if radius > 0 else 1.0
        scores[members] = distance / scale
        real_p95[name] = float(np.percentile(own / scale, 95))
    return scores, real_p95


def cluster_id(class_name: str, cluster: int) -> str:
    """The id a reviewer writes: class folder name / cluster number, e.g. 'normal__benign/3'."""
    return f"{class_dir_name(class_name)}/{int(cluster)}"


def parse_cluster_ids(tokens: list[tuple[str, str]], labels: np.ndarray, clusters: np.ndarray,
                      class_names: list[str]) -> set[tuple[int, int]]:
    """Reviewer's cluster ids -> {(class index, cluster)}.

    Args:
        tokens: (where, text) pairs; ``where`` names the origin for errors ("ids.txt line 3").
        labels, clusters: the per-image class and cluster the ids refer to.
        class_names: class names; an id's class part is the class folder name or the class name.

    Raises:
        DataError: an unknown class, cluster, or a bare number when there are several classes.
    """
    present = [k for k in range(len(class_names)) if (labels == k).any()]
    by_name = {class_dir_name(n): k for k, n in enumerate(class_names)} | {n: k for k, n in enumerate(class_names)}
    chosen = set()
    for where, text in tokens:
        class_part, slash, number = text.rpartition("/")
        if not slash:
            if len(present) != 1:
                qualified = ", ".join(cluster_id(class_names[k], 0) for k in present)
                raise DataError(where, f"cluster id {text!r} needs its class, e.g. {qualified}")
            k = present[0]
        elif class_part in by_name:
            k = by_name[class_part]
        else:
            known = ", ".join(class_dir_name(class_names[k]) for k in present)
            raise DataError(where, f"cluster id {text!r}: unknown class {class_part!r} (classes: {known})")
        count = int(clusters[labels == k].max()) + 1 if (labels == k).any() else 0
        if not number.strip().isdigit() or int(number) >= count:
            raise DataError(where, f"no cluster {text!r}: class {class_names[k]} has clusters 0 to {count - 1}")
        chosen.add((k, int(number)))
    return chosen


def read_id_tokens(discard_clusters: str | None, discard_file: Path | None) -> list[tuple[str, str]]:
    """(where, id) pairs from '--discard-clusters 3,17' and from a file of one id per line (# comments)."""
    tokens = []
    if discard_clusters is not None:
        tokens += [("--discard-clusters", t.strip()) for t in discard_clusters.split(",") if t.strip()]
    if discard_file is not None:
        try:
            lines = Path(discard_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(discard_file, f"cannot read the discard file ({type(err).__name__})") from None
        for number, line in enumerate(lines, start=1):
            text = line.split("#", 1)[0].strip()
            if text:
                tokens.append((f"{discard_file} line {number}", text))
    return tokens


def discard_reasons(labels: np.ndarray, clusters: np.ndarray, class_names: list[str], scores: np.ndarray | None, *,
                    discard: set[tuple[int, int]] = frozenset(), max_score: float | None = None,
                    discard_fraction: float | None = None, copies: np.ndarray | None = None,
                    copies_source: str = "") -> list[str]:
    """Why each image is discarded ("" keeps it); several reasons are joined with "; ".

    Args:
        discard: (class index, cluster) pairs the reviewer discarded.
        copies: (N,) bool, the images a ``medsyn audit`` flagged as copies of training images.
        copies_source: the audit folder, named in their reason.
        max_score: discard images scoring above this.
        discard_fraction: discard this fraction of each class, highest scores first.
    """
    if (max_score is not None or discard_fraction is not None) and scores is None:
        raise ConfigError("--max-score and --discard-fraction need scores: pass --real")
    if discard_fraction is not None and not 0 < discard_fraction < 1:
        raise ConfigError(f"--discard-fraction must be between 0 and 1, got {discard_fraction}")
    reasons: list[list[str]] = [[] for _ in labels]
    for i, (k, c) in enumerate(zip(labels, clusters)):
        if (int(k), int(c)) in discard:
            reasons[i].append(f"cluster {cluster_id(class_names[k], c)} discarded by reviewer")
    if max_score is not None:
        for i in np.flatnonzero(scores > max_score):
            reasons[i].append(f"score {scores[i]:.2f} above threshold {max_score:.2f}")
    if discard_fraction is not None:
        for k, name in enumerate(class_names):
            members = np.flatnonzero(labels == k)
            worst = members[np.argsort(-scores[members], kind="stable")][:math.floor(discard_fraction * len(members) + 0.5)]
            for i in worst:
                reasons[i].append(f"score {scores[i]:.2f} in the highest {discard_fraction:.0%} of class {name}")
    if copies is not None:
        for i in np.flatnonzero(copies):
            reasons[i].append(f"copy of a training image (audit {copies_source})")
    return ["; ".join(r) for r in reasons]

