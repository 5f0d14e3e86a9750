"""The study's answer row: the augmented arm chosen on validation AUC, never on test, with its paired
gains, Holm p and verdicts against real and classic."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from medsyn.study.answer import answer_markdown, answer_rows

BENCH = Path(__file__).parents[1] / "bench" / "answer_table.py"


def _arm(label, arm, val_auc, auc, n_train=100, generator="g"):
    return {"classifier": "resnet18", "label": label, "arm": arm, "generator": generator, "val_auc": val_auc,
            "auc": auc, "n_train": n_train, "seeds": 3}


def _results():
    arms = [_arm("real", "real", 0.80, 0.85, generator=None), _arm("classic", "classic", 0.81, 0.86, generator=None),
            # the best on test is not the best on validation: the answer must not pick it
            _arm("synthetic[g]x4", "synthetic", 0.82, 0.95, n_train=500),
            _arm("synthetic[g]x1", "synthetic", 0.84, 0.87, n_train=200),
            _arm("classic+synthetic[g]x1", "classic+synthetic", 0.84, 0.86, n_train=300),
            _arm("tstr[g]x1", "tstr", 0.99, 0.99)]  # TSTR measures the generator, it is no augmentation
    differences, verdicts = [], []
    for ref, delta, p, word in (("real", 0.02, 0.01, "helped"), ("classic", 0.01, 0.4, "no significant difference")):
        for metric in ("auc", "accuracy"):
            differences.append({"classifier": "resnet18", "arm": "synthetic[g]x1", "reference": ref, "metric": metric,
                                "delta": delta, "ci": [delta - 0.01, delta + 0.01]})
        verdicts.append({"classifier": "resnet18", "arm": "synthetic[g]x1", "reference": ref, "p_holm": p,
                         "verdict": word})
    return {"study": "breast-ultrasound", "budget": "standard", "arms": arms, "differences": differences,
            "verdicts": verdicts}


def test_the_answer_is_chosen_on_validation_auc_with_ties_to_the_smaller_set():
    [row] = answer_rows(_results())
    assert row["arm"] == "synthetic[g]x1" and row["candidates"] == 3
    assert (row["auc"], row["real_auc"], row["val_auc"]) == (0.87, 0.85, 0.84)
    assert row["real"]["verdict"] == "helped" and row["real"]["p_holm"] == 0.01
    assert row["real"]["delta_auc_ci"] == [0.01, 0.03]
    assert row["classic"]["verdict"] == "no significant difference"


def test_a_study_without_a_classic_arm_says_so():
    results = _results()
    results["arms"] = [a for a in results["arms"] if a["arm"] != "classic"]
    results["verdicts"] = [v for v in results["verdicts"] if v["reference"] != "classic"]
    [row] = answer_rows(results)
    assert row["classic"] is None
    table = answer_markdown([row], {"breast-ultrasound": "BreastMNIST 28"})
    assert "| BreastMNIST 28 | resnet18 | synthetic[g]x1 (of 3) | 0.870 (0.850) | +0.020 [+0.010, +0.030] | 0.010 " \
           "| helped | – | – | no such arm |" in table


def test_bench_prints_the_table_from_a_study_folder(tmp_path):
    (tmp_path / "partial_results.json").write_text(json.dumps({**_results(), "partial": {
        "finished_units": 9, "planned_units": 78, "missing": {}}}))
    done = subprocess.run([sys.executable, str(BENCH), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "synthetic[g]x1 (of 3)" in done.stdout and "breast-ultrasound: partial, 9 of 78 classifier units" in done.stdout
    missing = subprocess.run([sys.executable, str(BENCH), str(tmp_path / "none")], capture_output=True, text=True)
    assert missing.returncode == 2 and "no results.json or partial_results.json" in missing.stderr
