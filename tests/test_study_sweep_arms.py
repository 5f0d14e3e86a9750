"""``sweep_arms``: which arms a study trains at every volume of its synthetic-volume sweep."""
from __future__ import annotations

import json

import pytest

from medsyn.errors import ConfigError
from medsyn.study import StudyRunner
from medsyn.study.config import study_from_dict
from medsyn.study.plan import arm_specs

from test_study import TINY

SWEPT = {**TINY, "split": {"kind": "source"}, "arms": ["real", "synthetic", "tstr", "classic+synthetic"],
         "volumes": [1, 0.5], "sweep_arms": ["synthetic"], "tsne": False}


@pytest.fixture(autouse=True)
def fewer_bootstrap_resamples(monkeypatch):
    monkeypatch.setattr("medsyn.study.results.BOOTSTRAP", 50)


def test_only_the_listed_arms_are_swept_the_others_take_the_first_volume(tmp_path):
    labels = [spec.label for spec in arm_specs(study_from_dict(SWEPT, tmp_path))]
    assert labels == ["real", "synthetic[dc]x1", "synthetic[dc]x0.5", "tstr[dc]x1", "classic+synthetic[dc]x1"]
    every = [spec.label for spec in arm_specs(study_from_dict({**SWEPT, "sweep_arms": None}, tmp_path))]
    assert len(every) == 1 + 3 * 2 and "tstr[dc]x0.5" in every  # unset: every arm with synthetic images


@pytest.mark.parametrize("arms, sweep, problem", [
    (["real", "classic", "synthetic"], ["classic"], "classic is not one of this study's arms with synthetic images"),
    (["real", "synthetic"], ["tstr"], r"tstr is not one of this study's arms with synthetic images \(synthetic\)"),
    (["real", "synthetic"], ["nonsense"], "nonsense"),
])
def test_a_sweep_arm_must_be_a_synthetic_arm_of_the_study(tmp_path, arms, sweep, problem):
    with pytest.raises(ConfigError, match=problem):
        study_from_dict({**SWEPT, "arms": arms, "sweep_arms": sweep}, tmp_path)


def test_a_budget_sets_it_and_the_folder_marker_names_it_only_when_set(tmp_path):
    raw = {**SWEPT, "sweep_arms": None, "budgets": {"small": {"sweep_arms": ["synthetic"]}}}
    raw.pop("sweep_arms")
    assert study_from_dict(raw, tmp_path).sweep_arms is None
    small = study_from_dict(raw, tmp_path, budget="small")
    assert [a.value for a in small.sweep_arms] == ["synthetic"]
    for name, cfg in (("every", study_from_dict(raw, tmp_path)), ("small", small)):
        runner = StudyRunner(cfg, tmp_path / name)
        runner.prepare()
        assert ("sweep_arms" in runner._resolved) == (name == "small")  # older folders resume


def test_a_study_with_a_partial_sweep_runs_and_reports_every_arm_it_trained(tmp_path):
    out = tmp_path / "out"
    StudyRunner(study_from_dict(SWEPT, tmp_path), out).run()
    units = sorted(json.loads(p.read_text())["label"] for p in (out / "units" / "cls").rglob("*.json"))
    assert units == sorted(spec.label for spec in arm_specs(study_from_dict(SWEPT, tmp_path)))
    results = json.loads((out / "results.json").read_text())
    text = json.dumps(results)
    assert "synthetic[dc]x0.5" in text and "tstr[dc]x0.5" not in text and "classic+synthetic[dc]x0.5" not in text
    from medsyn.report import write_report

    assert "synthetic[dc]x0.5" in write_report(out).read_text()
