"""`medsyn study --partial`: the results of the units finished so far, beside the study's own files."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from medsyn.errors import RunError
from medsyn.study import StudyRunner
from medsyn.study.config import study_from_dict
from medsyn.study.partial import gather_partial

from test_study import TINY

RAW = {**TINY, "arms": ["real", "synthetic", "classic"], "volumes": [1], "seeds": [0, 1], "tsne": False}


@pytest.fixture(autouse=True)
def fewer_bootstrap_resamples(monkeypatch):
    monkeypatch.setattr("medsyn.study.results.BOOTSTRAP", 50)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-fold, two-seed study: its folder and results."""
    import medsyn.study.results as results_module

    saved, results_module.BOOTSTRAP = results_module.BOOTSTRAP, 50
    try:
        root = tmp_path_factory.mktemp("study")
        results = StudyRunner(study_from_dict(RAW, root), root / "out").run()
    finally:
        results_module.BOOTSTRAP = saved
    return root, results


def _copy(finished, tmp_path):
    import shutil

    root, results = finished
    shutil.copytree(root / "out", tmp_path / "out")
    return tmp_path / "out", results


def _arm(results: dict, label: str) -> dict | None:
    return next((r for r in results["arms"] if r["label"] == label), None)


def test_partial_reports_arms_whose_seeds_finished_on_every_fold(finished, tmp_path):
    out, full = _copy(finished, tmp_path)
    final = (out / "results.json").read_bytes()
    # seed 1 of synthetic has finished fold 0 only; classic has not started
    (out / "units/cls/lesion-cnn/seed1/fold1/synthetic_dc_x1.json").unlink()
    for path in out.glob("units/cls/lesion-cnn/seed*/fold*/classic.json"):
        path.unlink()
    part = gather_partial(StudyRunner(study_from_dict(RAW, tmp_path), out))
    assert part["partial"] == {"finished_units": 6, "planned_units": 12,
                               "missing": {"lesion-cnn synthetic[dc]x1": [1], "lesion-cnn classic": [0, 1]}}
    real, synthetic = _arm(part, "real"), _arm(part, "synthetic[dc]x1")
    assert _arm(part, "classic") is None
    assert real["seeds"] == 2 and synthetic["seeds"] == 1 and synthetic["folds"] == 2
    # the same units give the same numbers as the finished study
    assert real["auc"] == _arm(full, "real")["auc"] and real["accuracy"] == _arm(full, "real")["accuracy"]
    # the study's own files are not touched; the partial ones sit beside them
    assert (out / "results.json").read_bytes() == final
    assert json.loads((out / "partial_results.json").read_text())["partial"]["finished_units"] == 6
    assert (out / "partial_table_arms.csv").is_file()


def test_cli_writes_a_partial_report_that_says_what_is_missing(finished, tmp_path):
    out, _ = _copy(finished, tmp_path)
    for path in out.glob("units/cls/lesion-cnn/seed1/fold*/classic.json"):
        path.unlink()
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(RAW))
    done = subprocess.run([sys.executable, "-m", "medsyn", "study", str(config), "--out", str(out), "--partial"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "10 of 12 classifier units finished; 1 arm(s) still to run" in done.stdout + done.stderr
    page = (out / "partial_report.html").read_text()
    assert "Partial: 10 of 12 classifier units have finished" in page
    assert "Still to run: lesion-cnn classic (seed 1)." in page
    assert "with the best validation AUC, so that test images play no part in choosing it" in page
    arms = json.loads((out / "partial_results.json").read_text())["arms"]
    assert all(0 <= a["val_auc"] <= 1 for a in arms)
    assert not (out / "report.html").exists()  # the study's own report is written by its run alone


def test_partial_before_any_unit_is_one_line(tmp_path):
    raw = {**RAW, "generators": [], "arms": ["real"]}
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(raw))
    runner = StudyRunner(study_from_dict(raw, tmp_path), tmp_path / "empty")
    with pytest.raises(RunError, match="no classifier unit of this study has finished yet"):
        gather_partial(runner)
    done = subprocess.run([sys.executable, "-m", "medsyn", "study", str(config), "--out", str(tmp_path / "empty"),
                           "--partial"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no classifier unit of this study has finished yet" in done.stderr


def test_partial_refuses_a_folder_of_another_study(finished, tmp_path):
    out, _ = _copy(finished, tmp_path)
    with pytest.raises(RunError, match="holds a study with other settings"):
        gather_partial(StudyRunner(study_from_dict({**RAW, "seeds": [0, 1, 2]}, tmp_path), out))
