"""bench/quality.py: train by the clock, evaluate FID against the real-vs-real floor, precision and recall."""
import contextlib
import io
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
import quality  # noqa: E402

LINE = re.compile(r"^ *(\d+\.\d) min  step +(\d+)  FID (\d+\.\d\d) floor (\d+\.\d\d) ratio (\d+\.\d{3})  "
                  r"precision (\d\.\d{3}) recall (\d\.\d{3})  diversity (\d+\.\d\d|nan)  "
                  r"pattern (\d+\.\d\d|nan) \(real (\d+\.\d\d|nan)\)$")
TINY = ["--model", "dcgan", "--set", "per_class=false", "--set", "width=0.0625", "--set", "batch=8", "--device", "cpu"]


def run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = quality.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    from medsyn.data.phantoms import write_phantoms

    root = tmp_path_factory.mktemp("quality-data")
    return write_phantoms(root / "train", size=32, per_class=12, seed=0), \
        write_phantoms(root / "reference", size=32, per_class=2, seed=1)  # held out: another seed


@pytest.fixture(scope="module")
def bench_run(phantoms, tmp_path_factory):
    """2.4 s of a tiny DCGAN on the phantoms, evaluated after 1.2 s of training and at the end (4 images a side)."""
    train, reference = phantoms
    root = tmp_path_factory.mktemp("quality-run")
    code, out, err = run_main(["--data", train, "--reference", reference, "--minutes", 0.04, "--every", 0.02,
                               "--n", 4, "--out", root / "run", "--cache", root / "cache", *TINY])
    assert code == 0, err
    return root, out.splitlines()


def test_prints_a_header_and_an_evaluation_line_at_every_point(bench_run):
    root, lines = bench_run
    assert lines[0].startswith("quality: data ") and "| n 4 |" in lines[0] and "model dcgan (--model;" in lines[0]
    assert "| device cpu | threads " in lines[0]
    evaluations = [LINE.match(line) for line in lines[1:]]
    assert len(evaluations) >= 2 and all(evaluations), lines
    assert LINE.match(lines[-1])  # the final evaluation is the last line printed
    steps = [int(m.group(2)) for m in evaluations]
    assert steps == sorted(set(steps)), steps  # strictly increasing: training went on between evaluations
    for m in evaluations:
        fid, floor, ratio = (float(m.group(i)) for i in (3, 4, 5))
        # the ratio is of the unrounded values: allow the rounding of F and L (0.005 each) and of R (0.0005)
        assert abs(ratio - fid / floor) <= 0.005 * (1 + ratio) / floor + 0.0005 + 1e-9
        assert 0 <= float(m.group(6)) <= 1 and 0 <= float(m.group(7)) <= 1


def test_quality_json_holds_the_printed_numbers(bench_run):
    root, lines = bench_run
    report = json.loads((root / "run" / "quality.json").read_text())
    assert report["n"] == 4 and report["quota"] == [2, 1, 1] and report["config"]["model"] == "dcgan"
    assert report["arguments"]["minutes"] == 0.04 and report["threads"] >= 1 and report["torch"]
    printed = [line for line in lines if LINE.match(line)]
    assert len(report["evaluations"]) == len(printed)
    floors = {e["floor"] for e in report["evaluations"]}
    assert len(floors) == 1  # computed once
    for entry, line in zip(report["evaluations"], printed):
        assert entry["ratio"] == entry["fid"] / entry["floor"]
        scores = quality.Scores(**{k: entry[k] for k in ("minutes", "step", "fid", "floor", "precision", "recall",
                                                         "diversity", "pattern", "pattern_real")})
        assert scores.line() == line


def test_evaluating_the_run_folder_again_gives_the_same_fid(bench_run, phantoms):
    from medsyn.data import load_source
    from medsyn.data.splits import source_split
    from medsyn.metrics.cache import FeatureCache

    root, _ = bench_run
    final = json.loads((root / "run" / "quality.json").read_text())["evaluations"][-1]
    trained_on = source_split(load_source(str(phantoms[0]))).split("train")  # what every command trains on
    evaluator = quality.Evaluator.build(trained_on, load_source(str(phantoms[1])), 4, seed=0,
                                        extractor=quality.inception(None), cache=FeatureCache(root / "cache"),
                                        device="cpu")
    again = evaluator(root / "run", final["minutes"])
    assert again.floor == final["floor"]
    assert again.step == final["step"]
    assert again.fid == pytest.approx(final["fid"], rel=1e-9)
    assert (again.precision, again.recall) == (final["precision"], final["recall"])


def test_a_source_without_splits_is_scored_against_its_own_test_split(phantoms, tmp_path):
    from medsyn.data import load_source
    from medsyn.data.splits import source_split

    code, out, err = run_main(["--data", phantoms[0], "--minutes", 0.01, "--out", tmp_path / "run",
                               "--cache", tmp_path / "cache", *TINY])
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "quality.json").read_text())
    split = source_split(load_source(str(phantoms[0])))
    assert report["reference"] == f"{phantoms[0]}:test"
    assert report["n"] == min(int((split.splits == "test").sum()), int((split.splits == "train").sum()))
    assert "has no split of its own" in err  # the seeded split is announced, as in every command


@pytest.mark.parametrize("counts, n, expected", [
    ([147, 399], 156, [42, 114]),  # BreastMNIST's train split against its 156 test images
    ([12, 12, 12], 6, [2, 2, 2]),
    ([5, 3, 2], 7, [4, 2, 1]),  # 3.5, 2.1, 1.4: the largest remainder gets the last image
    ([1, 1, 1], 2, [1, 1, 0]),  # equal remainders: the lower classes first
])
def test_class_quota_is_largest_remainder(counts, n, expected):
    assert quality.class_quota(counts, n) == expected and sum(expected) == n


def test_proportional_draw_is_seeded_and_per_class():
    labels = np.repeat([0, 1, 2], [10, 20, 30])
    pick = quality.proportional_draw(labels, [2, 3, 4], seed=7)
    assert np.array_equal(pick, quality.proportional_draw(labels, [2, 3, 4], seed=7))
    assert np.bincount(labels[pick]).tolist() == [2, 3, 4] and len(set(pick.tolist())) == 9
    assert not np.array_equal(pick, quality.proportional_draw(labels, [2, 3, 4], seed=8))


def test_evaluation_points_end_at_the_budget():
    assert quality.evaluation_points(0.05, 0.02) == pytest.approx([0.02, 0.04, 0.05])
    assert quality.evaluation_points(6, 1) == pytest.approx([1, 2, 3, 4, 5, 6])
    assert quality.evaluation_points(0.5, 1) == [0.5]


def test_within_class_spread_and_diversity():
    feats = np.array([[0.0, 0], [3, 4], [0, 0], [0, 0], [1, 1]])  # class 0: two points 5 apart; class 1: one repeated
    spread = quality.within_class_spread(feats, [2, 2, 1])
    assert spread[0] == pytest.approx(5.0) and spread[1] == 0.0 and np.isnan(spread[2])
    with np.errstate(invalid="ignore"):  # class 1 is collapsed on both sides: 0/0, left out
        assert quality.diversity_ratio(feats, feats + 1.0, [2, 2, 1]) == pytest.approx(1.0)
    varied = np.array([[0.0, 0], [3, 4], [0, 0], [6, 8], [1, 1]])  # class 1 of the reference spread 10 apart
    assert quality.diversity_ratio(feats, varied, [2, 2, 1]) == 0.0  # the collapsed class decides
    assert quality.diversity_ratio(varied, feats[[0, 1, 0, 1, 4]], [2, 2, 1]) == pytest.approx(1.0)


def test_pattern_bench_repeats_the_last_evaluations_pattern_from_the_run_folder(bench_run, capsys):
    import pattern

    root, _ = bench_run
    last = json.loads((root / "run" / "quality.json").read_text())["evaluations"][-1]
    assert pattern.main([str(root / "run")]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.endswith(f"step {last['step']}  n 4  pattern {last['pattern']:.2f} (real {last['pattern_real']:.2f})")
    assert pattern.main([str(root / "run"), "--n", "1000"]) == 2  # more than the training images: one line, status 2
    assert "n must be between 2 and the" in capsys.readouterr().err


def test_critic_scores_bench_reads_the_runs_discriminator_on_three_kinds_of_image(bench_run, phantoms, capsys):
    import critic_scores

    root, _ = bench_run
    judged, step = critic_scores.scores(root / "run", str(phantoms[1]), None, seed=0)
    again, _ = critic_scores.scores(root / "run", str(phantoms[1]), None, seed=0)
    assert set(judged) == {"train", "held-out", "generated"}
    assert all(np.array_equal(judged[k], again[k]) for k in judged)  # seeded: the same scores twice
    assert len(judged["train"]) == len(judged["held-out"]) == 6  # the 6 held-out phantoms bound n
    assert step == json.loads((root / "run" / "quality.json").read_text())["evaluations"][-1]["step"]
    assert critic_scores.main([str(root / "run"), "--reference", str(phantoms[1])]) == 0
    assert capsys.readouterr().out.startswith(f"{root / 'run'}: step {step}  n 6  D(train) ")


def test_critic_scores_summary_is_the_share_below_and_adas_validation_heuristic():
    import critic_scores

    judged = {"train": np.array([1.0, 1.0]), "held-out": np.array([-1.0, 0.0]), "generated": np.array([0.0, 0.0])}
    line = critic_scores.summary(Path("RUN"), judged, 7)
    assert line.startswith("RUN: step 7  n 2  D(train) +1.000 sd 0.000  D(held-out) -0.500 sd 0.500")
    assert line.endswith("held-out below generated 0.50  r_v 1.50")  # (1 - -0.5) / (1 - 0)
