"""Reader-study statistics: pure functions from answers to numbers (no I/O).

Staged like medsyn's other metrics: answers -> counts -> proportions with Wilson intervals, exact
binomial tests, kappas -> a verdict. Every number comes from the field's reference implementation
(statsmodels, scipy, scikit-learn), so a reader can check it with the library they already trust.

The question "real or synthetic?" is scored with synthetic as the positive class: sensitivity is the
share of synthetic images called synthetic, specificity the share of real images called real.

The verdict rule (``VERDICT_RULE``): for each rater, a one-sided exact binomial test of their
accuracy against the larger of 0.5 and the score of always giving the majority answer on the images
that rater answered; those p-values are Holm-adjusted across raters, and raters could tell synthetic
from real when at least one rater's adjusted p is below 0.05. Chance alone is not the bar: with 60%
real images (the liver-lesion paper), answering "real" every time scores 0.60.
"""
from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Sequence

import numpy as np

from medsyn.metrics.stats import holm
from medsyn.vtt.store import Answer

ALPHA = 0.05  # family-wise error rate of the verdict (Holm across raters)
LEVEL = 0.95  # coverage of every interval
FOOLING_SHOWN = 16  # synthetic images on the "taken for real" contact sheet

VERDICT_RULE = (
    "for each rater, a one-sided exact binomial test of their accuracy against the larger of 0.5 and always giving "
    "the majority answer (the share of the more common kind among the images that rater answered); the p-values "
    f"are Holm-adjusted across raters, and raters could tell synthetic from real when at least one rater's adjusted "
    f"p is below {ALPHA:g}")

NAN = float("nan")


@dataclass(frozen=True)
class Proportion:
    """``k`` of ``n`` with its Wilson 95% interval; value and interval are NaN when ``n`` is 0."""

    k: int
    n: int
    value: float
    low: float
    high: float


def proportion(k: int, n: int) -> Proportion:
    """``k`` of ``n`` with the Wilson score interval (statsmodels ``proportion_confint(method="wilson")``).

    Wilson rather than the normal interval: it stays inside [0, 1] and keeps its coverage at the
    small counts and extreme shares a reader study has (a rater who gets 10 of 10 right).
    """
    if n == 0:
        return Proportion(0, 0, NAN, NAN, NAN)
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(k, n, alpha=1 - LEVEL, method="wilson")
    return Proportion(int(k), int(n), k / n, float(low), float(high))


def p_greater(k: int, n: int, p0: float) -> float:
    """One-sided exact binomial p of ``k`` successes in ``n`` against a success rate ``p0`` (scipy ``binomtest``).

    One-sided: scoring below the baseline is no evidence that raters can tell the images apart.
    """
    from scipy.stats import binomtest

    return float(binomtest(int(k), int(n), float(p0), alternative="greater").pvalue)


@dataclass(frozen=True)
class Baseline:
    """Always giving one answer: which one, and the accuracy it scores on the images concerned."""

    answer: str  # "real", "synthetic", or "either" when the images are half and half
    accuracy: float


def majority_baseline(is_synthetic: Sequence[bool]) -> Baseline:
    """The score of always answering the more common kind among these images (at least 0.5)."""
    synthetic = sum(is_synthetic) / len(is_synthetic)
    if synthetic > 0.5:
        return Baseline("synthetic", synthetic)
    if synthetic < 0.5:
        return Baseline("real", 1 - synthetic)
    return Baseline("either", 0.5)


@dataclass(frozen=True)
class Detection:
    """The real-or-synthetic question on one set of answers (positive: synthetic)."""

    accuracy: Proportion
    sensitivity: Proportion  # synthetic images answered "synthetic"
    specificity: Proportion  # real images answered "real"
    baseline: Baseline
    p_chance: float  # one-sided exact binomial p of the accuracy against 0.5
    p_baseline: float  # the same against max(0.5, majority baseline): the test the verdict rests on
    confusion: list[list[int]]  # rows: real, synthetic images; columns: answered real, synthetic


def detection(answers: Sequence[Answer]) -> Detection:
    """Accuracy, sensitivity, specificity, the majority baseline and both binomial tests of ``answers``."""
    from sklearn.metrics import confusion_matrix

    truth = [a.is_synthetic for a in answers]
    matrix = confusion_matrix(truth, [a.says_synthetic for a in answers], labels=[False, True])
    correct, n = int(matrix[0, 0] + matrix[1, 1]), len(answers)
    baseline = majority_baseline(truth)
    return Detection(accuracy=proportion(correct, n),
                     sensitivity=proportion(int(matrix[1, 1]), int(matrix[1].sum())),
                     specificity=proportion(int(matrix[0, 0]), int(matrix[0].sum())),
                     baseline=baseline, p_chance=p_greater(correct, n, 0.5),
                     p_baseline=p_greater(correct, n, max(0.5, baseline.accuracy)), confusion=matrix.tolist())


@dataclass(frozen=True)
class ClassQuestion:
    """The class question (lesion type, tumour or not) on the answers that carry a class answer.

    Split by the image's kind too: do raters recognise the class on synthetic images as well as on real ones?
    """

    accuracy: Proportion
    on_real: Proportion
    on_synthetic: Proportion
    confusion: list[list[int]]  # rows: true class, columns: answered class
    confusion_real: list[list[int]]
    confusion_synthetic: list[list[int]]


def class_question(answers: Sequence[Answer], n_classes: int) -> ClassQuestion | None:
    """Class accuracy (Wilson CI) and confusion matrices, overall and per kind; None when no class was answered."""
    from sklearn.metrics import confusion_matrix

    asked = [a for a in answers if a.class_answer is not None]
    if not asked:
        return None
    labels = list(range(n_classes))

    def part(subset: list[Answer]) -> tuple[Proportion, list[list[int]]]:
        matrix = (confusion_matrix([a.class_index for a in subset], [a.class_answer for a in subset], labels=labels)
                  if subset else np.zeros((n_classes, n_classes), dtype=int))
        return proportion(int(np.trace(matrix)), len(subset)), matrix.tolist()

    (overall, matrix), (real, matrix_real), (synthetic, matrix_synthetic) = (
        part(asked), part([a for a in asked if not a.is_synthetic]), part([a for a in asked if a.is_synthetic]))
    return ClassQuestion(overall, real, synthetic, matrix, matrix_real, matrix_synthetic)


@dataclass(frozen=True)
class Timing:
    """Seconds from an image being handed out to its answer."""

    timed: int  # answers with a time (an image handed out before the server kept times has none)
    mean: float
    median: float


def timing(answers: Iterable[Answer]) -> Timing:
    seconds = [a.seconds for a in answers if a.seconds is not None]
    if not seconds:
        return Timing(0, NAN, NAN)
    return Timing(len(seconds), statistics.fmean(seconds), statistics.median(seconds))


@dataclass(frozen=True)
class RaterStats:
    """Everything measured on one rater's answers."""

    rater: str
    answered: int
    total: int  # images in the rater's order: answered < total is an unfinished session, still counted
    detection: Detection
    classes: ClassQuestion | None
    timing: Timing
    mean_confidence: float  # NaN when no answer gave a confidence
    p_holm: float  # detection.p_baseline, Holm-adjusted across raters


def by_rater(answers: Iterable[Answer]) -> dict[str, list[Answer]]:
    """Answers grouped by rater, raters in the order the answers come (the store's: by rater id)."""
    groups: dict[str, list[Answer]] = {}
    for a in answers:
        groups.setdefault(a.rater, []).append(a)
    return groups


def rater_stats(answers: Sequence[Answer], totals: dict[str, int], n_classes: int) -> list[RaterStats]:
    """Per-rater statistics, with the verdict's p-values Holm-adjusted across the raters who answered."""
    rows = []
    for rater, own in by_rater(answers).items():
        confidences = [a.confidence for a in own if a.confidence is not None]
        rows.append(RaterStats(rater=rater, answered=len(own), total=totals.get(rater, len(own)),
                               detection=detection(own), classes=class_question(own, n_classes), timing=timing(own),
                               mean_confidence=statistics.fmean(confidences) if confidences else NAN, p_holm=NAN))
    adjusted = holm([r.detection.p_baseline for r in rows])
    return [replace(r, p_holm=float(p)) for r, p in zip(rows, adjusted)]


@dataclass(frozen=True)
class Agreement:
    """Agreement between raters on one question, beyond what chance agreement explains."""

    question: str  # "real or synthetic" or "class"
    method: str  # "Cohen" (two raters), "Fleiss" (more), "" (not measured)
    raters: list[str]
    images: int  # images every one of these raters answered: the kappa's sample
    kappa: float
    note: str


def agreement(answers: Sequence[Answer], question: str) -> Agreement:
    """Cohen's kappa for two raters, Fleiss' kappa for more, on the images all of them answered.

    Args:
        answers: every answer of the study.
        question: "real or synthetic" (the says_synthetic answers) or "class" (the class answers).
    """
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    label: Callable[[Answer], int | None] = ((lambda a: int(a.says_synthetic)) if question == "real or synthetic"
                                              else (lambda a: a.class_answer))
    given = {rater: {a.image_id: label(a) for a in own if label(a) is not None}
             for rater, own in by_rater(answers).items()}
    raters = [r for r, labels in given.items() if labels]
    if len(raters) < 2:
        return Agreement(question, "", raters, 0, NAN, "fewer than 2 raters: no agreement to measure")
    common = sorted(set.intersection(*(set(given[r]) for r in raters)))
    if len(common) < 2:
        return Agreement(question, "", raters, len(common), NAN, "fewer than 2 images answered by every rater")
    table = np.array([[given[r][image] for r in raters] for image in common])
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # a kappa is undefined (0/0) when every answer is the same: NaN, noted below
        if len(raters) == 2:
            method, kappa = "Cohen", float(cohen_kappa_score(table[:, 0], table[:, 1],
                                                             labels=sorted(set(table.ravel().tolist()))))
        else:
            method, kappa = "Fleiss", float(fleiss_kappa(aggregate_raters(table)[0], method="fleiss"))
    note = "undefined: chance agreement is total (every answer the same)" if math.isnan(kappa) else ""
    return Agreement(question, method, raters, len(common), kappa, note)


@dataclass(frozen=True)
class GroupRow:
    """The real-or-synthetic question on one group of images (a class, a generator, the real images)."""

    group: str
    images: int  # distinct images of the group that were answered
    accuracy: Proportion  # pooled over raters
    real_as_real: Proportion
    synthetic_as_synthetic: Proportion
    per_rater: dict[str, Proportion]  # accuracy of each rater on the group


def group_rows(answers: Sequence[Answer], key: Callable[[Answer], str], order: Sequence[str]) -> list[GroupRow]:
    """One row per group (``key`` of an answer), in ``order``; groups without answers are left out."""
    groups: dict[str, list[Answer]] = {}
    for a in answers:
        groups.setdefault(key(a), []).append(a)
    rows = []
    for name in [g for g in order if g in groups]:
        own = groups[name]
        real, synthetic = [a for a in own if not a.is_synthetic], [a for a in own if a.is_synthetic]
        rows.append(GroupRow(
            group=name, images=len({a.image_id for a in own}),
            accuracy=proportion(sum(a.says_synthetic == a.is_synthetic for a in own), len(own)),
            real_as_real=proportion(sum(not a.says_synthetic for a in real), len(real)),
            synthetic_as_synthetic=proportion(sum(a.says_synthetic for a in synthetic), len(synthetic)),
            per_rater={r: proportion(sum(a.says_synthetic == a.is_synthetic for a in mine), len(mine))
                       for r, mine in by_rater(own).items()}))
    return rows


REAL_GROUP = "real images"


def generator_key(answer: Answer) -> str:
    return answer.generator if answer.is_synthetic and answer.generator else REAL_GROUP


@dataclass(frozen=True)
class Fooling:
    """A synthetic image and how many of the raters who saw it answered "real"."""

    image_id: str
    generator: str | None
    class_index: int
    origin: str
    taken_real: int
    raters: int


def most_taken_for_real(answers: Sequence[Answer], limit: int = FOOLING_SHOWN) -> list[Fooling]:
    """Synthetic images answered "real" at least once: by share of their raters, then by count, then id.

    Share first: an image two of two raters took for real fooled more reliably than one two of five did.
    """
    seen: dict[str, list[Answer]] = {}
    for a in answers:
        if a.is_synthetic:
            seen.setdefault(a.image_id, []).append(a)
    rows = [Fooling(image, own[0].generator, own[0].class_index, own[0].origin,
                    sum(not a.says_synthetic for a in own), len(own)) for image, own in seen.items()]
    rows = [r for r in rows if r.taken_real > 0]
    rows.sort(key=lambda r: (-r.taken_real / r.raters, -r.taken_real, r.image_id))
    return rows[:limit]


@dataclass(frozen=True)
class Verdict:
    """Whether raters could tell synthetic from real, by ``VERDICT_RULE``, as one line."""

    could_tell: bool
    beating: list[str]  # raters whose Holm-adjusted p is below ALPHA
    text: str


def _p(p: float) -> str:
    return f"{p:.2g}"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _answer_counts(counts: list[int]) -> str:
    if len(set(counts)) == 1:
        return f"{counts[0]} answer{'' if counts[0] == 1 else 's'}{' each' if len(counts) > 1 else ''}"
    return f"{_and([str(c) for c in counts])} answers"


def verdict(raters: Sequence[RaterStats]) -> Verdict:
    """The verdict line, e.g. "raters could not tell synthetic from real: 0 of 2 raters beat always answering the
    majority (ann and bob: accuracy 0.55 [0.48, 0.62] and 0.58 [0.51, 0.65] against 0.60, Holm p = 0.61 and 0.34;
    200 answers each)"."""
    beating = [r.rater for r in raters if r.p_holm < ALPHA]
    could = bool(beating)
    accuracy = [f"{r.detection.accuracy.value:.2f} [{r.detection.accuracy.low:.2f}, {r.detection.accuracy.high:.2f}]"
                for r in raters]
    bars = [f"{max(0.5, r.detection.baseline.accuracy):.2f}" for r in raters]
    against = bars[0] if len(set(bars)) == 1 else _and(bars)
    noun = "rater" if len(raters) == 1 else "raters"
    text = (f"raters {'could' if could else 'could not'} tell synthetic from real: {len(beating)} of {len(raters)} "
            f"{noun} beat always answering the majority ({_and([r.rater for r in raters])}: accuracy {_and(accuracy)} "
            f"against {against}, Holm p = {_and([_p(r.p_holm) for r in raters])}; "
            f"{_answer_counts([r.answered for r in raters])})")
    return Verdict(could, beating, text)
