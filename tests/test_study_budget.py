"""Study budgets: `--budget standard` takes the YAML's budgets.standard over the study as written;
every budget is checked on any run; the budget's name lands in results.json and the report."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from medsyn.errors import ConfigError, RunError
from medsyn.study import StudyRunner, load_study
from medsyn.study.config import study_from_dict

from test_study import STUDIES, TINY

STANDARD = {"seeds": [0, 1, 2], "classifiers": [{"name": "lesion-cnn", "epochs": 2, "set": {"patience": 1}}]}
RAW = {**TINY, "budgets": {"standard": STANDARD}}
PUBLISHED = ["breast-ultrasound", "pneumonia", "retina-wgan", "liver-lesions"]


def test_standard_replaces_only_the_keys_it_names(tmp_path):
    full = study_from_dict(RAW, tmp_path)
    standard = study_from_dict(RAW, tmp_path, budget="standard")
    assert (full.budget, standard.budget) == ("full", "standard")
    assert full.seeds == (0,) and standard.seeds == (0, 1, 2)
    assert full.classifiers[0].epochs == 1 and standard.classifiers[0].epochs == 2
    assert standard.classifiers[0].set == {"patience": 1}
    assert standard.generators == full.generators and standard.arms == full.arms and standard.data == full.data


@pytest.mark.parametrize("budgets, budget, message", [
    ({"standard": STANDARD}, "long", r"no budget 'long'; this study has full, quick, standard"),
    ({}, "standard", r"no budget 'standard'; this study has full, quick \(add it under budgets:\)"),
    ({"standard": {"name": "other"}}, "standard", r"budgets.standard: cannot set name; a budget replaces only"),
    ({"standard": {"split": {"kind": "patient"}}}, "full", r"cannot set split"),
    ({"quick": {"seeds": [1]}}, "full", r"budgets.quick: quick is built in"),
    ({"standard": [1, 2]}, "full", r"budgets: expected a mapping of budget name"),
    # a mistake in a budget that is not chosen still fails, naming the budget
    ({"standard": {"clasifiers": []}}, "full", r"budgets.standard: cannot set clasifiers \(did you mean 'classifiers'"),
    ({"standard": {"classifiers": [{"name": "lesion-cnn", "epoch": 3}]}}, "full",
     r"budgets.standard.*did you mean 'epochs'"),
])
def test_bad_budgets_are_refused(tmp_path, budgets, budget, message):
    with pytest.raises(ConfigError, match=message):
        study_from_dict({**TINY, "budgets": budgets}, tmp_path, budget=budget)


def test_budget_is_not_a_yaml_key(tmp_path):
    with pytest.raises(ConfigError, match="budget is set by medsyn.*--budget"):
        study_from_dict({**TINY, "budget": "standard"}, tmp_path)


def test_a_folder_keeps_one_budget(tmp_path):
    """Units are reused by key, so a standard run must not resume from a full run's folder."""
    out, raw = tmp_path / "out", {**RAW, "arms": ["real"], "tsne": False, "generators": []}
    StudyRunner(study_from_dict(raw, tmp_path), out).run()
    other = StudyRunner(study_from_dict(raw, tmp_path, budget="standard"), out)
    with pytest.raises(RunError, match=r"holds a study with other settings \(classifiers, seeds\)"):
        other.prepare()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medsyn", "study", *args], capture_output=True, text=True)


def test_cli_runs_the_standard_budget_and_says_so(tmp_path):
    raw = {**RAW, "arms": ["real"], "tsne": False, "generators": [],
           "budgets": {"standard": {"seeds": [0, 1], "classifiers": [{"name": "lesion-cnn", "epochs": 1}]}}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = _cli(str(path), "--budget", "standard", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["budget"] == "standard" and results["config"]["seeds"] == [0, 1]
    assert results["arms"][0]["seeds"] == 2
    assert "Budget: standard." in (tmp_path / "out" / "report.html").read_text()


@pytest.mark.parametrize("args, message", [
    (["--budget", "standard", "--quick"], "--quick and --budget standard ask for two budgets"),
    (["--budget", "huge"], "no budget 'huge'"),
])
def test_cli_budget_errors_are_one_line(tmp_path, args, message):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(RAW))
    done = _cli(str(path), *args, "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and message in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_studies_have_a_standard_budget(name):
    """Three seeds; every network classifier stops early on validation AUC; every generator trains."""
    cfg = load_study(STUDIES / f"{name}.yaml", budget="standard")
    assert cfg.budget == "standard" and len(cfg.seeds) == 3
    networks = [c for c in cfg.classifiers if c.name != "svm"]
    assert networks and all(c.set.get("patience") for c in networks)
    assert cfg.generators and all(g.model for g in cfg.generators)


def test_a_generator_entry_may_name_the_recipe(tmp_path):
    """`recipe: small-data` trains medsyn's recommended recipe: its model and settings, ``set`` on top."""
    from medsyn.recipes import load_recipe

    entry = {"name": "r", "recipe": "small-data", "steps": 3, "set": {"width": 0.05}}
    cfg = study_from_dict({**TINY, "generators": [entry]}, tmp_path)
    runner = StudyRunner(cfg, tmp_path / "out")
    settings = runner._generator_settings(cfg.generators[0])
    assert settings == {**load_recipe("small-data"), "width": 0.05}
    with pytest.raises(ConfigError, match="no recipe 'small-dat'"):
        study_from_dict({**TINY, "generators": [{**entry, "recipe": "small-dat"}]}, tmp_path)
    with pytest.raises(ConfigError, match="exactly one of model or recipe"):
        study_from_dict({**TINY, "generators": [{**entry, "model": "dcgan"}]}, tmp_path)


def test_generator_seeds_train_one_generator_per_seed_and_each_seed_uses_its_own(tmp_path):
    """With generator_seeds, seed s's classifiers add the samples of the generators trained with seed s."""
    from medsyn.study.parallel import plan_tasks

    raw = {**TINY, "arms": ["real", "synthetic"], "volumes": [1], "tsne": False, "seeds": [0, 1],
           "generator_seeds": True, "fid": {"enabled": True, "max_images": 20}}
    runner = StudyRunner(study_from_dict(raw, tmp_path), tmp_path / "out")
    runner.prepare()
    generator_tasks = [t for t in plan_tasks(runner) if t.kind == "generators"]
    assert [(t.fold, t.args[1]) for t in generator_tasks] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert runner.units_total() == 2 * (2 * 3 + 2 * 2)  # folds x (seeds x train, sample, FID + seeds x 2 arms)
    results = runner.run()

    for fold in (0, 1):
        a, b = (np.load(tmp_path / "out" / "generators" / "dc" / f"fold{fold}" / f"seed{s}" / "samples" / "samples.npz")
                for s in (0, 1))
        assert not np.array_equal(a["train_images"], b["train_images"])  # two generators, not one sampled twice
    assert [r["generator_seeds"] for r in results["fid"]] == [2] and results["fid"][0]["folds"] == 2
    ratio = np.mean([u["fid"] / u["floor_fid"] for u in runner.store.all("fid")])
    assert results["fid"][0]["fid_ratio"] == pytest.approx(ratio)

    # the synthetic arm of seed 1 holds generator seed 1's images: rebuild it and compare
    from medsyn.evaluate.arms import build_arm

    fold = runner.folds[0]
    unit = runner.store.load("cls/lesion-cnn/seed1/fold0/synthetic_dc_x1")
    own = build_arm("synthetic", fold.train, synthetic=runner.synthetic_set("dc", 0, 1), volume=1.0, seed=1)
    other = build_arm("synthetic", fold.train, synthetic=runner.synthetic_set("dc", 0, 0), volume=1.0, seed=1)
    assert unit["n_train"] == len(own) and not np.array_equal(own.images, other.images)
    rerun = StudyRunner(study_from_dict(raw, tmp_path), tmp_path / "out", on_unit=pytest.fail)
    assert rerun.run()["arms"] == results["arms"]  # every unit found on disk, none run again


def test_generator_seeds_refuse_a_loaded_run(tmp_path):
    with pytest.raises(ConfigError, match="generator_seeds trains every generator once per seed"):
        study_from_dict({**TINY, "split": {"kind": "source"}, "generator_seeds": True,
                         "generators": [{"name": "g", "run": "somewhere"}]}, tmp_path)


def test_plan_counts_the_units_and_writes_nothing(tmp_path):
    raw = {**RAW, "arms": ["real", "classic", "synthetic", "tstr"], "volumes": [1], "tsne": False}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    done = _cli(str(path), "--budget", "standard", "--plan", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "out").exists()
    lines = done.stdout.splitlines()
    assert lines[0].startswith("study tiny, budget standard: 2 fold(s)") and "seeds 0, 1, 2" in lines[0]
    assert "generators: 2 runs (1 trained entries x 1 generator seed(s) x 2 fold(s)), 0 done" in lines[1]
    # 4 arms x 3 seeds x 2 folds; each fold trains on its real images: real n, classic 2n (1 copy),
    # synthetic 2n (volume 1), tstr n, for at most 2 epochs
    runner = StudyRunner(study_from_dict(raw, tmp_path, budget="standard"), tmp_path / "x")
    runner.prepare()
    n = [len(f.train) for f in runner.folds]
    total = sum(6 * k * 3 * 2 for k in n)
    assert f"lesion-cnn: 24 units (4 arms x 3 seed(s) x 2 fold(s)), 0 done; at most 2 epochs, " \
           f"{total:,} image-epochs at most" in lines[2]
    # and the time they may take at a training rate measured on this machine, nothing done yet
    left, rest = lines[3].strip().split(" image-epochs left: at most ")
    took, rest = rest.split(" of training at ")
    rate = float(rest.split(" images/s, measured now on cpu in ")[0].replace(",", ""))
    assert int(left.replace(",", "")) == total and rate > 0
    value, unit = took.split(" ")
    assert float(value) * {"h": 3600, "min": 60}[unit] == pytest.approx(total / rate, abs=0.051 * {"h": 3600, "min": 60}[unit])
