"""Reader-study statistics on answer sets with known outcomes, checked against statsmodels, scipy and scikit-learn."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from medsyn.vtt import stats
from medsyn.vtt.store import Answer


def ans(rater: str, image: str, synthetic: bool, says: bool, cls: int = 0, cls_answer: int | None = None,
        generator: str | None = None, seconds: float | None = 2.0, confidence: int | None = None) -> Answer:
    generator = generator if synthetic else None
    return Answer(rater, image, synthetic, says, cls, cls_answer, confidence, seconds, generator,
                  "src", f"origin of {image}", 0.0)


def rater_a() -> list[Answer]:
    """Rater A: 6 real and 4 synthetic images, 7 right: real 4 right / 2 wrong, synthetic 3 right / 1 wrong."""
    truth_and_answer = [(False, False)] * 4 + [(False, True)] * 2 + [(True, True)] * 3 + [(True, False)]
    return [ans("A", f"i{k}", t, s) for k, (t, s) in enumerate(truth_and_answer)]


def wilson(k: int, n: int) -> tuple[float, float]:
    return proportion_confint(k, n, alpha=0.05, method="wilson")


def greater(k: int, n: int, p: float) -> float:
    return binomtest(k, n, p, alternative="greater").pvalue


def test_proportion_is_the_statsmodels_wilson_interval():
    p = stats.proportion(7, 10)
    assert (p.k, p.n, p.value) == (7, 10, 0.7)
    assert (p.low, p.high) == pytest.approx(wilson(7, 10), abs=1e-12)
    assert (p.low, p.high) == pytest.approx((0.3968, 0.8922), abs=1e-4)  # the textbook Wilson interval of 7/10
    empty = stats.proportion(0, 0)
    assert empty.n == 0 and all(math.isnan(v) for v in (empty.value, empty.low, empty.high))


def test_rater_seven_of_ten_accuracy_sensitivity_specificity_tests_and_confusion():
    d = stats.detection(rater_a())
    assert (d.accuracy.k, d.accuracy.n) == (7, 10)
    assert (d.accuracy.low, d.accuracy.high) == pytest.approx(wilson(7, 10), abs=1e-12)
    assert (d.sensitivity.k, d.sensitivity.n) == (3, 4)  # synthetic called synthetic
    assert (d.sensitivity.low, d.sensitivity.high) == pytest.approx(wilson(3, 4), abs=1e-12)
    assert (d.specificity.k, d.specificity.n) == (4, 6)  # real called real
    assert (d.specificity.low, d.specificity.high) == pytest.approx(wilson(4, 6), abs=1e-12)
    assert d.baseline == stats.Baseline("real", 0.6)
    assert d.p_chance == pytest.approx(greater(7, 10, 0.5), abs=1e-12)
    assert d.p_chance == pytest.approx(176 / 1024, abs=1e-12)  # P(X >= 7), X ~ Bin(10, 1/2)
    assert d.p_baseline == pytest.approx(greater(7, 10, 0.6), abs=1e-12)
    assert d.confusion == [[4, 2], [1, 3]]


def test_majority_baseline_of_a_balanced_and_a_synthetic_heavy_set():
    assert stats.majority_baseline([True, False]) == stats.Baseline("either", 0.5)
    assert stats.majority_baseline([True, True, True, False]) == stats.Baseline("synthetic", 0.75)


def sixty_percent_real(rater: str, correct_synthetic: int = 0, correct_real: int = 60) -> list[Answer]:
    """100 images, 60 real: the rater calls ``correct_real`` real images real and ``correct_synthetic`` synthetic
    images synthetic, everything else wrong."""
    real = [ans(rater, f"r{k}", False, k >= correct_real) for k in range(60)]
    synthetic = [ans(rater, f"s{k}", True, k < correct_synthetic) for k in range(40)]
    return real + synthetic


def test_always_real_on_a_sixty_percent_real_study_beats_chance_but_not_the_majority():
    rows = stats.rater_stats(sixty_percent_real("ann"), {"ann": 100}, n_classes=1)
    d = rows[0].detection
    assert d.accuracy.value == 0.6 and d.baseline == stats.Baseline("real", 0.6)
    assert d.p_chance == pytest.approx(greater(60, 100, 0.5)) and d.p_chance < 0.05  # "significant" against 0.5
    assert d.p_baseline == pytest.approx(greater(60, 100, 0.6)) and d.p_baseline > 0.5  # nothing against 0.6
    assert (d.sensitivity.value, d.specificity.value) == (0.0, 1.0)
    verdict = stats.verdict(rows)
    assert not verdict.could_tell and verdict.beating == []
    low, high = wilson(60, 100)
    assert f"[{low:.2f}, {high:.2f}]" == "[0.50, 0.69]"
    assert verdict.text == ("raters could not tell synthetic from real: 0 of 1 rater beat always answering the "
                            "majority (ann: accuracy 0.60 [0.50, 0.69] against 0.60, Holm p = 0.54; 100 answers)")


def test_verdict_holm_adjusts_across_raters_and_names_who_beat_the_majority():
    answers = sixty_percent_real("ann", correct_synthetic=35) + sixty_percent_real("bob", correct_synthetic=4)
    rows = stats.rater_stats(answers, {"ann": 100, "bob": 120}, n_classes=1)
    raw = [greater(95, 100, 0.6), greater(64, 100, 0.6)]
    assert [r.detection.p_baseline for r in rows] == pytest.approx(raw)
    assert [r.p_holm for r in rows] == pytest.approx(multipletests(raw, method="holm")[1])
    assert [(r.rater, r.answered, r.total) for r in rows] == [("ann", 100, 100), ("bob", 100, 120)]
    verdict = stats.verdict(rows)
    assert verdict.could_tell and verdict.beating == ["ann"]
    a, b = (wilson(k, 100) for k in (95, 64))
    assert verdict.text == (
        "raters could tell synthetic from real: 1 of 2 raters beat always answering the majority (ann and bob: "
        f"accuracy 0.95 [{a[0]:.2f}, {a[1]:.2f}] and 0.64 [{b[0]:.2f}, {b[1]:.2f}] against 0.60, "
        f"Holm p = {rows[0].p_holm:.2g} and {rows[1].p_holm:.2g}; 100 answers each)")


def test_cohen_kappa_for_two_raters_on_the_images_both_answered():
    a = [ans("A", f"i{k}", k % 2 == 0, says) for k, says in enumerate([1, 1, 0, 0, 1, 0, 1, 0])]
    b = [ans("B", f"i{k}", k % 2 == 0, says) for k, says in enumerate([1, 0, 0, 0, 1, 1])]  # unfinished: 6 of 8
    agreement = stats.agreement(a + b, "real or synthetic")
    assert (agreement.method, agreement.raters, agreement.images) == ("Cohen", ["A", "B"], 6)
    expected = cohen_kappa_score([1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1])
    assert agreement.kappa == pytest.approx(expected) and agreement.kappa == pytest.approx(1 / 3)


def test_fleiss_kappa_for_three_raters_matches_hand_and_statsmodels():
    # per image (A, B, C): (1,1,1), (1,1,0), (0,0,0), (0,1,0): mean agreement 2/3, chance 1/2 -> kappa 1/3
    said = {"A": [1, 1, 0, 0], "B": [1, 1, 0, 1], "C": [1, 0, 0, 0]}
    answers = [ans(r, f"i{k}", True, bool(s), cls=0, cls_answer=s)
               for r, row in said.items() for k, s in enumerate(row)]
    for question in ("real or synthetic", "class"):
        agreement = stats.agreement(answers, question)
        assert (agreement.method, agreement.images) == ("Fleiss", 4)
        table = np.array([said[r] for r in "ABC"]).T
        assert agreement.kappa == pytest.approx(fleiss_kappa(aggregate_raters(table)[0], method="fleiss"))
        assert agreement.kappa == pytest.approx(1 / 3)


def test_agreement_notes_fewer_than_two_raters_and_undefined_kappa():
    one = stats.agreement(rater_a(), "real or synthetic")
    assert one.method == "" and math.isnan(one.kappa) and "fewer than 2 raters" in one.note
    assert stats.agreement(rater_a(), "class").raters == []  # no class answers at all
    same = [ans(r, f"i{k}", True, True) for r in "AB" for k in range(3)]
    undefined = stats.agreement(same, "real or synthetic")
    assert math.isnan(undefined.kappa) and "undefined" in undefined.note


def test_class_question_accuracy_per_kind_and_confusion():
    answers = [ans("A", "r0", False, False, 0, 0), ans("A", "r1", False, False, 1, 1),
               ans("A", "r2", False, True, 1, 0), ans("A", "s0", True, True, 0, 1),
               ans("A", "s1", True, False, 1, 1), ans("A", "s2", True, True, 0, None)]  # s2: no class answer
    q = stats.class_question(answers, n_classes=2)
    assert (q.accuracy.k, q.accuracy.n) == (3, 5)  # the answer without a class answer does not count
    assert (q.accuracy.low, q.accuracy.high) == pytest.approx(wilson(3, 5))
    assert (q.on_real.k, q.on_real.n, q.on_synthetic.k, q.on_synthetic.n) == (2, 3, 1, 2)
    assert q.confusion == [[1, 1], [1, 2]]  # rows: true class, columns: answered
    assert q.confusion_real == [[1, 0], [1, 1]] and q.confusion_synthetic == [[0, 1], [0, 1]]
    assert stats.class_question(rater_a(), n_classes=2) is None


def test_group_rows_per_generator_with_real_images_first():
    answers = [ans(r, "r0", False, says) for r, says in (("A", False), ("B", True))]
    answers += [ans(r, img, True, says, generator=gen) for r, img, gen, says in
                (("A", "s0", "runs/a", True), ("B", "s0", "runs/a", True), ("A", "s1", "runs/b", False),
                 ("A", "s2", "runs/b", True), ("B", "s2", "runs/b", False))]
    rows = stats.group_rows(answers, stats.generator_key, [stats.REAL_GROUP, "runs/a", "runs/b", "runs/unused"])
    assert [r.group for r in rows] == ["real images", "runs/a", "runs/b"]
    real, a, b = rows
    assert (real.images, real.accuracy.k, real.accuracy.n) == (1, 1, 2)
    assert (a.images, a.accuracy.k, a.accuracy.n) == (1, 2, 2)
    assert (b.images, b.accuracy.k, b.accuracy.n, b.synthetic_as_synthetic.k) == (2, 1, 3, 1)
    assert (b.accuracy.low, b.accuracy.high) == pytest.approx(wilson(1, 3))
    assert {r: (p.k, p.n) for r, p in b.per_rater.items()} == {"A": (1, 2), "B": (0, 1)}
    assert b.real_as_real.n == 0


def test_most_taken_for_real_orders_by_share_then_count():
    said_real = {"s1": [True, True], "s2": [True, True, False], "s3": [True], "s4": [False, False],
                 "s5": [False, True, False], "s6": [True, False]}
    answers = [ans(f"R{k}", image, True, not real, generator="runs/a")
               for image, row in said_real.items() for k, real in enumerate(row)]
    answers.append(ans("R0", "r0", False, False))  # real images never appear
    fooled = stats.most_taken_for_real(answers)
    assert [(f.image_id, f.taken_real, f.raters) for f in fooled] == [
        ("s1", 2, 2), ("s3", 1, 1), ("s2", 2, 3), ("s6", 1, 2), ("s5", 1, 3)]
    assert [f.image_id for f in stats.most_taken_for_real(answers, limit=2)] == ["s1", "s3"]


def test_timing_skips_answers_without_a_time():
    answers = [ans("A", f"i{k}", True, True, seconds=s) for k, s in enumerate([1.0, 3.0, None, 8.0])]
    assert stats.timing(answers) == stats.Timing(3, 4.0, 3.0)
    assert stats.timing([]).timed == 0
