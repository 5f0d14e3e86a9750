"""`medsyn vtt report` on a small study with known answers: the files, their numbers, and the command line."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from scipy.stats import binomtest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from medsyn.errors import DataError, RunError
from vtt_helpers import make_study

OUTPUTS = ("report.html", "answers.csv", "vtt.json", "accuracy.png", "confusion.png", "time.png", "fooled.png")


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medsyn", "vtt", "report", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def answer(store, token: str, decide, limit: int | None = None) -> int:
    """Answer the rater's images in their order with ``decide(image) -> (says_synthetic, class_answer)``."""
    rater, key, given = store.rater_for(token), {i.id: i for i in store.images()}, 0
    while (limit is None or given < limit) and (shown := store.next_for(rater)) is not None:
        assert store.record_answer(rater, shown.image_id, *decide(key[shown.image_id]), confidence=3)
        given += 1
    return given


def ann(image):
    """Real images of class 0 right, of class 1 wrong; runs/a's images spotted, runs/b's taken for real.
    Class: right on real images, always class 0 on synthetic ones."""
    if image.is_synthetic:
        return image.generator == "runs/a", 0
    return image.class_index == 1, image.class_index


def bob(image):
    return False, image.class_index  # always "real", class always right


def carl(image):
    return True, 1


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """10 images (6 real, 2 per generator), raters ann and bob (all answered), carl (3 answered), dave (none);
    the report written once by the command line (the slow part: it imports matplotlib and the HTML helpers)."""
    root = tmp_path_factory.mktemp("vtt")
    store = make_study(root / "study", classes=("benign", "malignant"), real_per_class=3, synthetic_per_class=2,
                       generators=("runs/a", "runs/b"))
    tokens = store.add_raters(["ann", "bob", "carl", "dave"], seed=0)
    assert [answer(store, tokens[name], rule, limit) for name, rule, limit in
            (("ann", ann, None), ("bob", bob, None), ("carl", carl, 3))] == [10, 10, 3]
    done = run_cli(root / "study", "--out", root / "report")
    return {"root": root, "store": store, "out": root / "report", "cli": done,
            "json": json.loads((root / "report" / "vtt.json").read_text()) if done.returncode == 0 else None}


def test_cli_writes_every_file_and_prints_the_verdict(study):
    done = study["cli"]
    assert done.returncode == 0, done.stderr
    assert all((study["out"] / name).is_file() for name in OUTPUTS)
    assert done.stdout.strip().splitlines()[-1] == study["json"]["verdict"]["text"]
    assert not [p for p in study["root"].iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_per_rater_numbers(study):
    raters = {r["rater"]: r for r in study["json"]["raters"]}
    assert list(raters) == ["ann", "bob", "carl"] and study["json"]["waiting"] == ["dave"]
    a, b = raters["ann"]["detection"], raters["bob"]["detection"]
    assert (a["accuracy"]["k"], a["accuracy"]["n"]) == (5, 10)
    assert [a["accuracy"]["low"], a["accuracy"]["high"]] == pytest.approx(proportion_confint(5, 10, method="wilson"))
    assert a["confusion"] == [[3, 3], [2, 2]]
    assert (a["sensitivity"]["k"], a["sensitivity"]["n"], a["specificity"]["k"], a["specificity"]["n"]) == (2, 4, 3, 6)
    assert a["baseline"] == {"answer": "real", "accuracy": 0.6}
    assert a["p_chance"] == pytest.approx(binomtest(5, 10, 0.5, alternative="greater").pvalue)
    assert (b["accuracy"]["k"], b["sensitivity"]["k"], b["specificity"]["k"]) == (6, 0, 6)
    assert b["p_baseline"] == pytest.approx(binomtest(6, 10, 0.6, alternative="greater").pvalue)
    assert (raters["carl"]["answered"], raters["carl"]["total"]) == (3, 10)
    raw = [r["detection"]["p_baseline"] for r in raters.values()]
    assert [r["p_holm"] for r in raters.values()] == pytest.approx(multipletests(raw, method="holm")[1])
    assert not study["json"]["verdict"]["could_tell"]
    assert study["json"]["verdict"]["text"].startswith(
        "raters could not tell synthetic from real: 0 of 3 raters beat always answering the majority "
        "(ann, bob and carl: accuracy 0.50 [0.24, 0.76], 0.60 [0.31, 0.83] and ")
    assert study["json"]["verdict"]["text"].endswith("; 10, 10 and 3 answers)")


def test_class_question_generators_agreement_and_contact_sheet(study):
    result = study["json"]
    classes = {r["rater"]: r["classes"] for r in result["raters"]}["ann"]
    assert [classes[part]["k"] for part in ("accuracy", "on_real", "on_synthetic")] == [8, 6, 2]
    assert classes["confusion_synthetic"] == [[2, 0], [2, 0]] and classes["confusion_real"] == [[3, 0], [0, 3]]
    rows = result["per_generator"]
    assert [r["group"] for r in rows] == ["real images", "runs/a", "runs/b"]
    per_rater = {r["group"]: {name: (p["k"], p["n"]) for name, p in r["per_rater"].items() if name != "carl"}
                 for r in rows}
    assert per_rater == {"real images": {"ann": (3, 6), "bob": (6, 6)}, "runs/a": {"ann": (2, 2), "bob": (0, 2)},
                         "runs/b": {"ann": (0, 2), "bob": (0, 2)}}
    assert [r["images"] for r in rows] == [6, 2, 2]
    kinds = [r["question"] for r in result["agreement"]]
    assert kinds == ["real or synthetic", "class"]
    assert all(r["method"] == "Fleiss" and r["images"] == 3 for r in result["agreement"])
    fooled = result["fooling"]  # runs/b: ann and bob said real; runs/a: only bob; carl never
    assert [f["generator"] for f in fooled] == ["runs/b", "runs/b", "runs/a", "runs/a"]
    shares = [f["taken_real"] / f["raters"] for f in fooled]
    assert shares == sorted(shares, reverse=True) and all(f["taken_real"] == 2 for f in fooled[:2])


def test_answers_csv_has_one_named_row_per_answer(study):
    with open(study["out"] / "answers.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 23 and [r["rater"] for r in rows].count("carl") == 3
    key = {i.id: i for i in study["store"].images()}
    for row in rows:
        image = key[row["image_id"]]
        assert row["truth"] == ("synthetic" if image.is_synthetic else "real")
        assert row["class"] == ("benign", "malignant")[image.class_index]
        assert row["generator"] == (image.generator or "") and row["origin"] == image.origin
        assert row["confidence"] == "3" and float(row["seconds"]) >= 0
    bobs = [r for r in rows if r["rater"] == "bob"]
    assert {r["answer"] for r in bobs} == {"real"} and all(r["class_answer"] == r["class"] for r in bobs)
    assert sum(int(r["correct"]) for r in bobs) == 6


def test_page_states_the_verdict_rule_and_unfinished_raters(study):
    page = (study["out"] / "report.html").read_text()
    assert study["json"]["verdict"]["text"].replace("'", "&#x27;") in page
    assert "Holm-adjusted across raters" in page and "carl (3 of 10)" in page and "dave" in page
    assert "Fleiss' kappa" in page and "data:image/png;base64," in page


def test_an_existing_report_folder_is_refused(study):
    from medsyn.vtt.report import write_vtt_report

    with pytest.raises(RunError, match="already exists"):
        write_vtt_report(study["root"] / "study", study["out"])


def test_no_answers_yet_exits_2_and_writes_nothing(tmp_path):
    make_study(tmp_path / "empty")
    done = run_cli(tmp_path / "empty", "--out", tmp_path / "report")
    assert done.returncode == 2 and "no answers yet" in done.stdout + done.stderr
    assert "medsyn vtt serve" in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "report").exists()
    from medsyn.vtt.report import write_vtt_report

    with pytest.raises(DataError, match="no answers yet"):
        write_vtt_report(tmp_path / "empty", tmp_path / "report")


def test_figures_draw_zero_of_n_empty_shares_untimed_answers_and_missing_images(tmp_path):
    from PIL import Image

    from medsyn.vtt import figures, stats
    from medsyn.vtt.store import Answer

    # always "real": sensitivity 0 of 3 (Wilson bound at 0), and on the real images alone none synthetic (NaN)
    always_real = [Answer("ann", f"i{k}", k < 3, False, 0, None, None, None, "runs/a" if k < 3 else None, "s", "o", 0.0)
                   for k in range(7)]
    written = [figures.accuracy_png(tmp_path / "accuracy.png", ["ann", "real only"],
                                    [stats.detection(always_real), stats.detection(always_real[3:])]),
               figures.time_png(tmp_path / "time.png", always_real),  # no answer has a time
               figures.fooled_png(tmp_path / "fooled.png", [stats.Fooling("gone", "runs/a", 0, "o", 1, 1)],
                                  lambda image: tmp_path / f"{image}.png", ["benign"])]
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 100
