"""Curation of synthetic images: features -> clusters per class -> scores -> discard decisions -> kept set.

The brain-MRI paper (Han et al. 2019) clustered DenseNet-169 features of its PGGAN images into
200 groups with k-means++ and discarded, by eye, whole clusters of weird-looking images; its
footnote notes the step "could be automated". Both are here: contact sheets per cluster for a
person, and a k-NN distance to the real images to discard without one.

features.py builds the feature network; select.py clusters, scores and decides (pure functions);
sheets.py writes the contact sheets; store.py the CSVs, the record and the kept sample folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsyn.curate.features import FeatureSource, build_extractor, parse_feature_source
from medsyn.curate.select import (
    cluster_id, cluster_per_class, discard_reasons, knn_scores, parse_cluster_ids, read_id_tokens,
)
from medsyn.curate.sheets import write_contact_sheets
from medsyn.curate.store import (
    CLUSTERS_CSV, DISCARDED_CSV, KEPT_DIR, RECORD_JSON, Review, image_names, images_digest, read_review,
    write_clusters_csv, write_discarded_csv, write_kept, write_record,
)
from medsyn.data.types import LabeledImages

__all__ = [
    "Clustering", "FeatureSource", "Review", "build_extractor", "cluster_id", "cluster_per_class", "cluster_set",
    "discard_reasons", "from_review", "knn_scores", "parse_cluster_ids", "parse_feature_source", "read_id_tokens",
    "read_review",
    "write_curation",
]


@dataclass
class Clustering:
    """Per-image results of clustering (and scoring) one synthetic set.

    Attributes:
        names: image paths relative to the set (the ``image`` column of the CSVs).
        labels: class index per image.
        clusters: cluster per image, numbered within its class by decreasing size.
        centre_distance: distance to the cluster centre (contact sheets show the nearest first); None from a review.
        scores: k-NN distance to the real images of the class (see ``knn_scores``); None without real images.
        notices: e.g. cluster counts capped by small classes.
        real_reference: class name -> 95th percentile of the real images' own scores (what a threshold compares with).
    """

    names: list[str]
    labels: np.ndarray
    clusters: np.ndarray
    centre_distance: np.ndarray | None
    scores: np.ndarray | None
    notices: list[str] = field(default_factory=list)
    real_reference: dict[str, float] | None = None

    def ids(self, class_names: list[str]) -> list[str]:
        return [cluster_id(class_names[k], c) for k, c in zip(self.labels, self.clusters)]


def cluster_set(synthetic: LabeledImages, features: np.ndarray, clusters: int, seed: int = 0,
                real: LabeledImages | None = None, real_features: np.ndarray | None = None) -> Clustering:
    """Cluster a synthetic set's features per class and, given real features, score every image."""
    assigned, centre_distance, notices = cluster_per_class(features, synthetic.labels, synthetic.class_names,
                                                           clusters, seed)
    scores, reference = None, None
    if real is not None:
        scores, reference = knn_scores(features, synthetic.labels, real_features, real.labels, synthetic.class_names,
                                       real_source=real.source)
        notices = notices + [f"class {name}: real images score up to {p95:.2f} against each other (95th percentile); "
                             f"read --max-score against that" for name, p95 in reference.items()]
    return Clustering(image_names(synthetic), synthetic.labels, assigned, centre_distance, scores, notices, reference)


def from_review(review: Review) -> Clustering:
    return Clustering(review.images, review.labels, review.clusters, None, review.scores,
                      real_reference=review.record.get("real_reference"))


def write_curation(tmp: Path, synthetic: LabeledImages, clustering: Clustering, reasons: list[str] | None,
                   record: dict[str, Any], description: str = "") -> None:
    """Write a curation into ``tmp`` (a folder from ``atomic_dir``).

    With centre distances (a fresh clustering): clusters.csv and clusters/index.html. With
    ``reasons`` (any discard decision): kept/ and discarded.csv. Always curate.json.
    """
    names, ids = synthetic.class_names, clustering.ids(synthetic.class_names)
    if clustering.centre_distance is not None:
        write_clusters_csv(tmp / CLUSTERS_CSV, clustering.names, clustering.labels, names, ids, clustering.scores)
        write_contact_sheets(tmp / "clusters", synthetic.images, clustering.labels, names, clustering.clusters,
                             clustering.centre_distance, clustering.scores, title=synthetic.source,
                             description=description)
    if reasons is not None:
        keep = np.array([not r for r in reasons], dtype=bool)
        write_kept(tmp / KEPT_DIR, synthetic, keep, clustering.names)
        write_discarded_csv(tmp / DISCARDED_CSV, clustering.names, clustering.labels, names, ids, clustering.scores,
                            reasons)
    write_record(tmp / RECORD_JSON, {**record, "images_sha256": images_digest(synthetic.images),
                                     "class_names": list(names), "notices": clustering.notices,
                                     "real_reference": clustering.real_reference})
