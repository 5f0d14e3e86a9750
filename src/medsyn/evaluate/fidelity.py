"""Synthetic images seen through a classifier trained on real ones.

``label_fidelity`` asks whether a synthetic image of class k looks like class k to a real-trained
classifier; ``domain_frechet`` asks how far the synthetic set lies from the real one in that
classifier's own feature space (a task-specific counterpart of FID's Inception space).
"""
from __future__ import annotations

import math

import numpy as np

from medsyn.data.types import LabeledImages
from medsyn.evaluate.classify import TrainedClassifier, extract_features, predict_proba


def label_fidelity(trained: TrainedClassifier, synthetic: LabeledImages) -> dict[str, float]:
    """Per-class accuracy of a classifier trained on real images, on labeled synthetic images.

    This is the measurable counterpart of the U-Net paper's per-pixel accuracy (PA, Table II):
    PA, the "FCN score" of the image-to-image GAN papers it cites, runs a network trained on real
    images over generated ones and scores its per-pixel labels against the labels the images were
    generated from. medsyn's images carry one class label each, not a label map, so the same idea
    becomes per-class accuracy. High values say the GAN's images carry their class's features;
    they say nothing about diversity (a GAN that copies training images scores perfectly).

    Args:
        trained: a classifier trained on the real training split only.
        synthetic: synthetic images with the same classes, size and channels.

    Returns:
        class name -> accuracy in [0, 1] (NaN for a class with no synthetic image).
    """
    predicted = predict_proba(trained, synthetic).argmax(axis=1)
    correct = predicted == synthetic.labels
    out = {}
    for k, name in enumerate(synthetic.class_names):
        members = synthetic.labels == k
        out[name] = float(correct[members].mean()) if members.any() else math.nan
    return out


def domain_frechet(trained: TrainedClassifier, real: LabeledImages, synthetic: LabeledImages) -> float:
    """Frechet distance between real and synthetic images in the classifier's penultimate features.

    The same formula as FID (Gaussian fits, then ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2)),
    but in the space the downstream task actually uses. Compare it with the distance between two
    real sets (e.g. train vs validation) to see how much is sampling noise.

    Args:
        trained: a classifier trained on real images.
        real: real images (e.g. the training split).
        synthetic: synthetic images of the same size and channels.
    """
    from medsyn.metrics.fid import feature_statistics, frechet_distance

    stats_real = feature_statistics(np.asarray(extract_features(trained, real), dtype=np.float64))
    stats_synthetic = feature_statistics(np.asarray(extract_features(trained, synthetic), dtype=np.float64))
    return float(frechet_distance(*stats_real, *stats_synthetic))
