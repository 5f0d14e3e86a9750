"""A study run in parts, one generator after another, into one folder: the units of the generators
already trained (and of the arms without synthetic images) are reused, not trained again; an entry
of a trained name with other settings is refused, even after a run that left it out."""
from __future__ import annotations

import json

import pytest

from medsyn.errors import RunError
from medsyn.evaluate.arms import Arm
from medsyn.study import StudyRunner
from medsyn.study.config import study_from_dict
from medsyn.study.parallel import plan_tasks, task_done

from test_study import TINY

FIRST = {"name": "dc", "model": "dcgan", "per_class": True, "steps": 3, "set": {"width": 0.05, "batch": 8}}
SECOND = {"name": "mlp", "model": "gan", "steps": 3, "set": {"batch": 8}}
RAW = {**TINY, "arms": ["real", "synthetic"], "volumes": [1], "tsne": False, "generators": [FIRST]}


@pytest.fixture(autouse=True)
def fewer_bootstrap_resamples(monkeypatch):
    monkeypatch.setattr("medsyn.study.results.BOOTSTRAP", 50)


def _unit_times(out) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in (out / "units").rglob("*.json")}


def _file_times(folder) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def _is_real(unit_key: str) -> bool:
    return unit_key.endswith("/real.json")


def test_a_second_generator_joins_the_folder_and_reuses_every_finished_unit(tmp_path):
    out = tmp_path / "out"
    first = StudyRunner(study_from_dict(RAW, tmp_path), out).run()
    before, trained = _unit_times(out), _file_times(out / "generators" / "dc")
    real_before = {k: json.loads((out / k).read_text()) for k in before if _is_real(k)}
    grown = StudyRunner(study_from_dict({**RAW, "generators": [FIRST, SECOND]}, tmp_path), out).run()
    after = _unit_times(out)

    # no unit trained again; the real arm's units gain the new generator's diagnostics, nothing else
    assert real_before and {k: after[k] for k in before if not _is_real(k)} == {k: before[k] for k in before
                                                                                 if not _is_real(k)}
    for key, unit in real_before.items():
        now = json.loads((out / key).read_text())
        assert {k: v for k, v in now.items() if k != "fidelity"} == {k: v for k, v in unit.items() if k != "fidelity"}
        assert set(unit["fidelity"]) == {"dc"} and set(now["fidelity"]) == {"dc", "mlp"}
        assert now["fidelity"]["dc"] == unit["fidelity"]["dc"]  # the real network trained again is the same one
    assert {r["generator"] for r in first["fidelity"]} == {"dc"}
    assert {r["generator"] for r in grown["fidelity"]} == {"dc", "mlp"}
    assert any(k.endswith(".pt") for k in trained) and _file_times(out / "generators" / "dc") == trained
    added = sorted(set(after) - set(before))
    assert added and all("mlp" in key for key in added)
    assert {r["label"] for r in first["arms"]} == {"real", "synthetic[dc]x1"}
    assert {r["label"] for r in grown["arms"]} == {"real", "synthetic[dc]x1", "synthetic[mlp]x1"}
    same = {r["label"]: r for r in first["arms"]}
    for row in grown["arms"]:
        if row["label"] in same:
            assert (row["auc"], row["accuracy"]) == (same[row["label"]]["auc"], same[row["label"]]["accuracy"])
    marker = json.loads((out / "study.json").read_text())["resolved"]
    assert [g["name"] for g in marker["generators"]] == ["dc", "mlp"]


def test_the_t_sne_is_drawn_again_with_a_generator_that_joins_the_folder(tmp_path, monkeypatch):
    drawn = []

    def record_tsne(trained, fold, seed, preset, copies, synthetic, figures):
        drawn.append(sorted(synthetic))
        figures.mkdir(parents=True, exist_ok=True)
        (figures / "tsne.png").write_bytes(b"")
        return figures / "tsne.png"

    monkeypatch.setattr("medsyn.study.diagnostics.tsne_figures", record_tsne)
    out = tmp_path / "out"
    StudyRunner(study_from_dict({**RAW, "tsne": True}, tmp_path), out).run()
    grown = StudyRunner(study_from_dict({**RAW, "tsne": True, "generators": [FIRST, SECOND]}, tmp_path), out)
    grown.prepare()
    # what --jobs and --plan ask: the real units on disk are not done until they are diagnosed
    real_tasks = [t for t in plan_tasks(grown) if t.kind == "classifier" and t.args[2].arm is Arm.REAL]
    assert real_tasks and not any(task_done(grown, t) for t in real_tasks)
    assert grown.run()["figures"]["tsne"] == "figures/tsne.png"
    assert drawn == [["dc"], ["dc", "mlp"]] and all(task_done(grown, t) for t in real_tasks)
    # diagnosed once: a third run finds every unit done and trains nothing
    again = StudyRunner(study_from_dict({**RAW, "tsne": True, "generators": [FIRST, SECOND]}, tmp_path), out)
    again.run()
    assert drawn == [["dc"], ["dc", "mlp"]]


def test_a_run_that_leaves_a_generator_out_keeps_its_diagnostics(tmp_path):
    out = tmp_path / "out"
    StudyRunner(study_from_dict(RAW, tmp_path), out).run()
    StudyRunner(study_from_dict({**RAW, "generators": [SECOND]}, tmp_path), out).run()  # dc left out, mlp added
    real = {k: t for k, t in _unit_times(out).items() if _is_real(k)}
    assert real and all(set(json.loads((out / k).read_text())["fidelity"]) == {"dc", "mlp"} for k in real)
    both = StudyRunner(study_from_dict({**RAW, "generators": [FIRST, SECOND]}, tmp_path), out).run()
    assert {k: t for k, t in _unit_times(out).items() if _is_real(k)} == real  # nothing to diagnose again
    assert {r["generator"] for r in both["fidelity"]} == {"dc", "mlp"}


def test_a_trained_name_keeps_its_settings_even_after_a_run_that_left_it_out(tmp_path):
    out = tmp_path / "out"
    StudyRunner(study_from_dict({**RAW, "generators": [FIRST, SECOND]}, tmp_path), out).run()
    # a run of the first entry alone is part of the same folder; the marker still holds both
    StudyRunner(study_from_dict(RAW, tmp_path), out).prepare()
    changed = {**SECOND, "steps": 4}
    with pytest.raises(RunError, match=r"its generator 'mlp' was trained with other settings \(steps\); "
                                       r"give the changed entry a new name"):
        StudyRunner(study_from_dict({**RAW, "generators": [FIRST, changed]}, tmp_path), out).prepare()
    with pytest.raises(RunError, match=r"its generator 'mlp' was trained with other settings"):
        StudyRunner(study_from_dict({**RAW, "generators": [changed]}, tmp_path), out).prepare()


def test_other_changes_beside_a_new_generator_are_still_refused(tmp_path):
    out = tmp_path / "out"
    StudyRunner(study_from_dict(RAW, tmp_path), out).run()
    other = {**RAW, "generators": [FIRST, SECOND], "seeds": [0, 1]}
    with pytest.raises(RunError, match=r"holds a study with other settings \(seeds\)"):
        StudyRunner(study_from_dict(other, tmp_path), out).prepare()
