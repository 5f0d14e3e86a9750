"""Classification metrics of the papers (accuracy, macro precision/recall, AUC, per-class
sensitivity/specificity, confusion matrix) and their confidence intervals.

Everything is computed from a confusion matrix and a rank-based AUC, both in numpy, so a
1,000-resample bootstrap takes well under a second. The definitions match scikit-learn's
(``accuracy_score``, ``precision_score``/``recall_score`` with ``average="macro"``,
``roc_auc_score`` with ``multi_class="ovr", average="macro"``); the tests check that.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.stats import rankdata
from scipy.stats import t as student_t

SCALARS = ("accuracy", "precision", "recall", "auc")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts; row = true class, column = predicted class."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney U statistic (ties count one half); NaN when a side is empty."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_score(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Binary: ROC AUC of the positive class (column 1). Multi-class: unweighted mean of the
    one-vs-rest AUCs. NaN when a class is missing from ``y_true``."""
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=np.float64)
    k = proba.shape[1]
    if k == 2:
        return _binary_auc(y_true == 1, proba[:, 1])
    per_class = [_binary_auc(y_true == c, proba[:, c]) for c in range(k)]
    return math.nan if any(math.isnan(v) for v in per_class) else float(np.mean(per_class))


def _from_confusion(cm: np.ndarray) -> dict[str, object]:
    tp = np.diag(cm).astype(np.float64)
    true_count, pred_count, total = cm.sum(axis=1), cm.sum(axis=0), cm.sum()
    # Macro averages run over the classes seen in y_true or y_pred, as scikit-learn's defaults;
    # a class never predicted has precision 0 (zero_division=0).
    seen = (true_count + pred_count) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(pred_count > 0, tp / pred_count, 0.0)
        recall = np.where(true_count > 0, tp / true_count, 0.0)
        sensitivity = np.where(true_count > 0, tp / true_count, np.nan)
        negatives = total - true_count
        specificity = np.where(negatives > 0, (negatives - (pred_count - tp)) / negatives, np.nan)
    return {
        "accuracy": float(tp.sum() / total) if total else math.nan,
        "precision": float(precision[seen].mean()) if seen.any() else math.nan,
        "recall": float(recall[seen].mean()) if seen.any() else math.nan,
        "sensitivity": sensitivity.tolist(),
        "specificity": specificity.tolist(),
    }


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, object]:
    """All metrics of one set of predictions (predicted class = argmax of ``proba``).

    Args:
        y_true: (N,) int labels in [0, K).
        proba: (N, K) class probabilities (rows sum to one).

    Returns:
        ``n``, ``accuracy``, ``precision`` (macro), ``recall`` (macro), ``auc`` (binary: of class 1;
        else macro one-vs-rest), ``sensitivity`` and ``specificity`` (lists, one per class, NaN
        where undefined) and ``confusion`` (K x K list, rows true, columns predicted).
    """
    y_true, proba = np.asarray(y_true, dtype=np.int64), np.asarray(proba, dtype=np.float64)
    cm = confusion_matrix(y_true, proba.argmax(axis=1), proba.shape[1])
    return {"n": int(len(y_true)), **_from_confusion(cm), "auc": auc_score(y_true, proba), "confusion": cm.tolist()}


def predicts_one_class(confusion: list[list[int]] | np.ndarray) -> bool:
    """True when every prediction is the same class (at most one non-empty column, rows true)."""
    return int((np.asarray(confusion).sum(axis=0) > 0).sum()) <= 1


def one_class_warning(confusion: list[list[int]] | np.ndarray, class_names: list[str]) -> str | None:
    """A warning when a classifier predicted the same class for every test image, else None.

    Such a classifier has learnt nothing (often too few epochs): its accuracy is that class's share
    of the test set and its sensitivities are 1 and 0, so none of its numbers compare arms.
    """
    if not predicts_one_class(confusion):
        return None
    predicted = np.asarray(confusion).sum(axis=0)
    k = int(np.argmax(predicted))
    return (f"the classifier predicted {class_names[k]!r} for all {int(predicted.sum())} test images: it has not "
            f"learnt to tell the classes apart (train longer, e.g. more --epochs, or check the labels), so its "
            f"accuracy, sensitivity and specificity say nothing about the images it was trained on")


def scalar_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """The metrics as one flat dict of numbers: SCALARS plus ``sensitivity_<k>``/``specificity_<k>``."""
    full = classification_metrics(y_true, proba)
    flat = {name: float(full[name]) for name in SCALARS}
    for kind in ("sensitivity", "specificity"):
        flat.update({f"{kind}_{k}": float(v) for k, v in enumerate(full[kind])})
    return flat


def bootstrap_cis(y_true: np.ndarray, proba: np.ndarray | list[np.ndarray], metrics: list[str] | None = None,
                  n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals for several metrics from one set of resamples of the test images.

    ``proba`` may be one array or one per training seed (all scored on the same test images). With
    several, each resample draws the seeds as well as the images with replacement and takes the
    mean over the drawn seeds, so the interval covers both where the spread comes from: which test
    images, and which training run. (A Student-t interval over 3 seeds alone has 2 degrees of
    freedom, is 4.3 standard errors wide, ignores the test images, and runs past 0 and 1.)

    A resample that misses a class is skipped for AUC and for the per-class metrics (they are not
    defined there); accuracy, precision and recall use every resample.

    Args:
        y_true: (N,) labels.
        proba: (N, K) probabilities, or a list of them, one per seed.
        metrics: names from ``scalar_metrics``; None for all of them.
        n_boot: resamples (with replacement, N images each).
        seed: seeds the resampling; the same seed gives the same intervals.
        level: coverage of the interval.

    Returns:
        name -> (lo, hi); (nan, nan) when no resample defines the metric.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probas = [np.asarray(p, dtype=np.float64) for p in (proba if isinstance(proba, list) else [proba])]
    known = scalar_metrics(y_true, probas[0])
    names = metrics or list(known)
    for name in names:
        if name not in known:
            raise KeyError(f"unknown metric {name!r}; known: {', '.join(known)}")
    rng = np.random.default_rng(seed)
    draws = {name: [] for name in names}
    for _ in range(n_boot):
        pick = rng.integers(0, len(y_true), len(y_true))
        # one seed draws nothing more, so its intervals are those of a single run's images
        runs = rng.integers(0, len(probas), len(probas)).tolist() if len(probas) > 1 else [0]
        per_run = {r: scalar_metrics(y_true[pick], probas[r][pick]) for r in set(runs)}
        complete = len(np.unique(y_true[pick])) == probas[0].shape[1]
        for name in names:
            if complete or name in ("accuracy", "precision", "recall"):
                draws[name].append(float(np.mean([per_run[r][name] for r in runs])))
    tail = (1 - level) / 2 * 100
    out = {}
    for name, values in draws.items():
        finite = np.asarray(values, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        if len(finite) == 0:
            out[name] = (math.nan, math.nan)
        else:
            out[name] = (float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail)))
    return out


def bootstrap_ci(y_true: np.ndarray, proba: np.ndarray, metric: str, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (lo, hi) of one metric over resampled test images.

    ``metric`` is "accuracy", "precision", "recall", "auc", "sensitivity_<k>" or "specificity_<k>".
    See ``bootstrap_cis``.
    """
    return bootstrap_cis(y_true, proba, [metric], n_boot=n_boot, seed=seed, level=level)[metric]


def _difference_metric(name: str, y_true: np.ndarray, arm: np.ndarray, reference: np.ndarray) -> float:
    """``name`` of ``arm``'s predictions minus that of ``reference``'s, on the same images."""
    if name == "accuracy":
        return float(np.mean(arm.argmax(axis=1) == y_true) - np.mean(reference.argmax(axis=1) == y_true))
    if name == "auc":
        return auc_score(y_true, arm) - auc_score(y_true, reference)
    raise KeyError(f"unknown metric {name!r} for a paired difference; known: accuracy, auc")


def _mean_over_seeds(name: str, y_true: np.ndarray, arm: list[np.ndarray], reference: list[np.ndarray],
                     pick: np.ndarray | slice = slice(None)) -> float:
    return float(np.mean([_difference_metric(name, y_true[pick], a[pick], r[pick]) for a, r in zip(arm, reference)]))


def paired_bootstrap_difference(
    y_true: np.ndarray, arm: list[np.ndarray], reference: list[np.ndarray], metrics: tuple[str, ...] = ("auc", "accuracy"),
    n_boot: int = 1000, seed: int = 0, level: float = 0.95,
) -> dict[str, tuple[float, float, float]]:
    """Metric of ``arm`` minus ``reference``, with a paired percentile bootstrap interval over test
    images and seeds.

    Each resample draws test images once and scores both arms on those same images (that pairing
    removes the images' own difficulty from the spread), averaging the difference over the seeds.
    As in ``bootstrap_cis``, a resample that misses a class is skipped for AUC (undefined there).

    Args:
        y_true: (N,) labels of the test images, in the order of every probability array.
        arm: (N, K) probabilities of the arm, one array per seed.
        reference: (N, K) probabilities of the reference arm, one per seed, in the same seed order.
        metrics: "auc" (binary: of class 1; else macro one-vs-rest) and/or "accuracy".
        n_boot: resamples (with replacement, N images each).
        seed: seeds the resampling; the same seed gives the same intervals.
        level: coverage of the interval.

    Returns:
        name -> (delta, lo, hi): delta on all test images (mean over seeds); (nan, nan) interval when
        no resample defines the metric.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    arm = [np.asarray(a, dtype=np.float64) for a in arm]
    reference = [np.asarray(r, dtype=np.float64) for r in reference]
    if not arm or len(arm) != len(reference):
        raise ValueError(f"need the same seeds for both arms, got {len(arm)} and {len(reference)} probability arrays")
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in metrics}
    for _ in range(n_boot):
        pick = rng.integers(0, len(y_true), len(y_true))
        complete = len(np.unique(y_true[pick])) == arm[0].shape[1]
        for name in metrics:
            if complete or name != "auc":
                draws[name].append(_mean_over_seeds(name, y_true, arm, reference, pick))
    tail = (1 - level) / 2 * 100
    out = {}
    for name, values in draws.items():
        finite = np.asarray(values, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        lo, hi = (np.percentile(finite, [tail, 100 - tail]) if len(finite) else (math.nan, math.nan))
        out[name] = (_mean_over_seeds(name, y_true, arm, reference), float(lo), float(hi))
    return out


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval over independent repeats (folds, seeds): (mean, lo, hi).

    One value gives lo = hi = mean (no spread can be estimated).
    """
    values = np.asarray(list(values), dtype=np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = float(student_t.ppf((1 + level) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half
