"""Studies: strict YAML, a tiny study end to end on CPU, interrupted and resumed, and its report."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medsyn.errors import ConfigError
from medsyn.study import StudyInterrupted, StudyRunner, load_study
from medsyn.study.config import study_from_dict

STUDIES = Path(__file__).parents[1] / "studies"

TINY = {
    "name": "tiny",
    "data": {"source": "phantoms", "size": 28, "per_class": 10, "seed": 0},
    "split": {"kind": "kfold", "folds": 2, "seed": 0},
    "generators": [{"name": "dc", "model": "dcgan", "per_class": True, "steps": 3, "set": {"width": 0.05, "batch": 8}}],
    "classic": {"preset": "liver-lesion", "copies": 1},
    "arms": ["real", "classic", "synthetic", "classic+synthetic"],
    "volumes": [0.5, 1],
    "classifiers": [{"name": "lesion-cnn", "epochs": 1}],
    "seeds": [0],
    "fid": {"enabled": False},
    "audit": {"enabled": False},
    "device": "cpu",
}


@pytest.fixture(autouse=True)
def fewer_bootstrap_resamples(monkeypatch):
    """The CIs' 1000 resamples per metric and arm cost most of a tiny study; 50 still exercise them."""
    monkeypatch.setattr("medsyn.study.results.BOOTSTRAP", 50)


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("name", ["liver-lesions", "retina-wgan", "breast-ultrasound", "pneumonia", "brain-two-step",
                                  "brain-two-step-phantoms"])
def test_shipped_studies_load(name):
    cfg = load_study(STUDIES / f"{name}.yaml")
    assert cfg.classifiers and cfg.arms
    if cfg.data.source != "phantoms":
        from medsyn.study.folds import resolve_source

        assert Path(resolve_source(cfg)).is_file(), "shipped study points at data that is not in ../shared"
    quick = cfg.with_quick()
    assert all(g.steps <= cfg.quick.steps for g in quick.generators) and len(quick.seeds) == 1


@pytest.mark.parametrize("change, message", [
    ({"clasifiers": []}, "did you mean 'classifiers'"),
    ({"split": {"kind": "kfold", "fold": 3}}, "did you mean 'folds'"),
    ({"arms": ["real", "gan"]}, "unknown arm 'gan'"),
    ({"classic": {"preset": None}}, "classic.preset is not set"),
    ({"generators": [{"name": "g"}]}, "exactly one of model"),
    ({"generators": [{"name": "g", "model": "pggan", "refiner": "dcgan"}]}, "is a generator, not a refiner"),
    ({"generators": [{"name": "g", "model": "pggan", "refiner_set": 3}]}, "refiner_set: expected a mapping"),
    ({"classic": {"preset": "liver-lesion", "copies": [1, 2, 1]}}, "1 listed more than once"),
    ({"classic": {"preset": "liver-lesion", "copies": [0, 2]}}, "positive whole number"),
    ({"classic": {"preset": "liver-lesion", "copies": [1, 2.5]}}, "positive whole number"),
    ({"classic": {"preset": "liver-lesion", "copies": []}}, "the list is empty"),
    ({"classic": {"preset": "liver-lesion", "copies": [1, 2], "copise": 1}}, "did you mean 'copies'"),
    ({"classic": {"preset": "liver-lesion", "copies": [1, 2]}, "arms": ["real", "synthetic"]}, "no arm uses classic"),
])
def test_bad_config_rejected(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        study_from_dict({**TINY, **change}, tmp_path)


def test_unknown_classifier_fails_before_training(tmp_path):
    cfg = study_from_dict({**TINY, "classifiers": [{"name": "resnet19"}]}, tmp_path)
    with pytest.raises(ConfigError, match="resnet18"):
        StudyRunner(cfg, tmp_path / "out").prepare()
    assert not (tmp_path / "out").exists()


def _units(out: Path) -> list[Path]:
    return sorted((out / "units").rglob("*.json"))


def test_tiny_study_interrupted_resumes_to_the_same_results(tmp_path):
    cfg = study_from_dict({**TINY, "tsne": False}, tmp_path)  # t-SNE has its own tests; this one is about resuming
    whole = StudyRunner(cfg, tmp_path / "whole").run()

    started = []

    def stop_at_fourth(text):
        started.append(text)
        if len(started) == 4:
            raise KeyboardInterrupt

    with pytest.raises(StudyInterrupted):
        StudyRunner(cfg, tmp_path / "cut", on_unit=stop_at_fourth).run()
    kept = _units(tmp_path / "cut")
    assert kept, "units finished before Ctrl-C must be on disk"
    again = []
    resumed = StudyRunner(cfg, tmp_path / "cut", on_unit=again.append).run()
    assert not any(t in again for t in started[:3] if t.startswith("lesion-cnn")), "finished units were redone"
    assert len(_units(tmp_path / "cut")) == len(_units(tmp_path / "whole"))

    # 2 folds x (real, classic, 2 arms x 2 volumes) = 6 labels, pooled over folds
    assert len(whole["arms"]) == 6
    for a, b in zip(whole["arms"], resumed["arms"]):
        assert a["label"] == b["label"] and a["auc"] == pytest.approx(b["auc"], abs=1e-12)
    assert {r["n_test"] for r in whole["arms"]} == {30}, "k-fold pooling must test every image once"
    assert len(whole["mcnemar"]) == 15 and all(0 <= r["p_holm"] <= 1 for r in whole["mcnemar"])
    assert all(r["p_holm"] >= r["p"] for r in whole["mcnemar"])
    assert {v["verdict"] for v in whole["verdicts"]} <= {"helped", "hurt", "no significant difference",
                                                         "not comparable: an arm predicts one class for every test image"}


def test_report_has_every_section(tmp_path):
    from medsyn.report import write_report

    cfg = study_from_dict({**TINY, "audit": {"enabled": True}}, tmp_path)
    StudyRunner(cfg, tmp_path / "s").run()
    page = write_report(tmp_path / "s").read_text()
    for heading in ("Did synthetic images help?", "Classification per arm", "McNemar", "Volume sweep",
                    "Synthetic samples", "t-SNE of classifier features", "t-SNE of pixels", "Audit: copies and membership",
                    "Configuration", "Versions"):
        assert heading in page, heading
    audit = json.loads((tmp_path / "s" / "results.json").read_text())["audit"]
    assert [row["generator"] for row in audit] == ["dc"]
    assert audit[0]["synthetic"] > 0 and 0 <= audit[0]["copies"] <= audit[0]["synthetic"]
    attacks = audit[0]["membership_auc"]  # GAN-Leaks in pixels and in Inception features
    assert len(attacks) == 2 and all(k.startswith("gan-leaks") and 0 <= v <= 1 for k, v in attacks.items())
    for folder in audit[0]["folders"]:  # the full audit of each fold, linked from the report
        assert (tmp_path / "s" / folder).is_file() and folder in page
    assert page.count("data:image/png;base64,") >= 4  # volume curve, 3 class grids, t-SNE
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert (tmp_path / "s" / "table_arms.csv").read_text().count("\n") == len(results["arms"]) + 1


def test_study_progress_counts_finished_units(tmp_path):
    """The bar reads N/N only when the last unit has ended, never while one still runs."""
    cfg = study_from_dict({**TINY, "arms": ["real", "synthetic"], "volumes": [1], "tsne": False}, tmp_path)
    events = []
    runner = StudyRunner(cfg, tmp_path / "s", on_unit=lambda text: events.append(("start", text)),
                         on_progress=lambda kind, done, total, info: kind == "study" and events.append((done, total)))
    runner.run()
    counts = [e for e in events if e[0] != "start"]
    assert counts[-1] == (runner.units_total(), runner.units_total())
    assert [done for done, _ in counts] == list(range(1, runner.units_total() + 1))
    last_start = max(i for i, e in enumerate(events) if e[0] == "start")
    assert events[last_start + 1:] == [counts[-1]], "the last unit is counted when it ends"


def test_study_cli_bad_config_one_line(tmp_path):
    path = _write(tmp_path, {**TINY, "seedz": [0]})
    proc = subprocess.run([sys.executable, "-m", "medsyn", "study", str(path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "seedz" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_folder_of_another_study_is_refused(tmp_path):
    from medsyn.errors import RunError

    cfg = study_from_dict({**TINY, "arms": ["real"], "tsne": False}, tmp_path)
    StudyRunner(cfg, tmp_path / "s").run()
    other = study_from_dict({**TINY, "arms": ["real"], "tsne": False, "seeds": [1]}, tmp_path)
    with pytest.raises(RunError, match="seeds"):
        StudyRunner(other, tmp_path / "s").prepare()
    StudyRunner(cfg, tmp_path / "s").prepare()  # the same study may continue


def test_two_step_generator_trains_a_refiner_on_its_samples_and_resumes(tmp_path):
    """PGGAN samples -> a refiner trained on the fold's real images -> the refined set is the arm's synthetic set.
    The refiner entry shares the plain entry's PGGAN (same settings): trained once, refined as sampled."""
    from medsyn.study.results import _grids

    pggan = {"model": "pggan", "per_class": True, "steps": 2, "set": {"width": 0.05, "batch": 4}}
    raw = {**TINY, "arms": ["real", "synthetic"], "volumes": [1], "tsne": False,
           "data": {"source": "phantoms", "size": 28, "per_class": 12, "seed": 0},
           "generators": [{"name": "pg", **pggan},
                          {"name": "two", **pggan, "refiner": "simgan", "refiner_steps": 2,
                           "refiner_set": {"width": 0.05, "batch": 4}}]}
    raw["split"] = {"kind": "patient", "seed": 0}
    cfg = study_from_dict(raw, tmp_path)
    units = []
    runner = StudyRunner(cfg, tmp_path / "out", on_unit=units.append)
    results = runner.run()
    shared, fold = tmp_path / "out" / "generators" / "pg" / "fold0", tmp_path / "out" / "generators" / "two" / "fold0"
    assert [u for u in units if u.startswith("train")] == ["train pg fold 0 (2 steps)",
                                                           "train two refiner simgan fold 0 (2 steps)"]
    assert not (fold / "run").exists() and not (fold / "samples").exists()
    refiner = torch.load(fold / "refiner" / "checkpoint.pt", weights_only=False)
    assert refiner["model"]["name"] == "simgan" and refiner["step"] == 2
    assert refiner["data"]["load"]["refine_source"] == str(shared / "samples" / "samples.npz")
    manifest = (fold / "refined" / "manifest.csv").read_text().splitlines()
    assert "refiner" in manifest[0] and len(manifest) - 1 == len(np.load(shared / "samples" / "samples.npz")["train_labels"])
    assert any(u.startswith("refine two") for u in units)
    assert {a["label"] for a in results["arms"]} == {"real", "synthetic[pg]x1", "synthetic[two]x1"}
    grids = _grids(runner)  # the report shows each arm's own images: the refined ones for the refiner entry
    assert grids["pg"] and all(g.startswith("generators/pg/fold0/samples/") for g in grids["pg"])
    assert grids["two"] and all(g.startswith("generators/two/fold0/refined/") for g in grids["two"])
    again = []
    StudyRunner(cfg, tmp_path / "out", on_unit=again.append).run()
    assert not any(u.startswith(("train", "refine")) for u in again), "finished refiner units were redone"


def test_an_arm_that_predicts_one_class_is_not_called_helped():
    """resnet50 after 2 epochs on PneumoniaMNIST: real says 'normal' for all, synthetic 'pneumonia' for all;
    McNemar is significant, but the difference is only which class an untrained network picked."""
    from medsyn.study.results import _verdicts

    def row(label, generator, confusion, accuracy):
        return {"classifier": "resnet50", "label": label, "arm": label.split("[")[0], "generator": generator,
                "auc": 0.6, "accuracy": accuracy, "confusion": confusion}

    rows = [row("real", None, [[234, 0], [390, 0]], 0.375),
            row("synthetic[gan]x1", "gan", [[0, 234], [0, 390]], 0.625),
            row("synthetic[cgan]x1", "cgan", [[200, 34], [100, 290]], 0.785)]
    tests = [{"classifier": "resnet50", "arm_a": "real", "arm_b": b, "p_holm": 1e-9} for b in ("synthetic[gan]x1",
                                                                                                "synthetic[cgan]x1")]
    words = {v["arm"]: v["verdict"] for v in _verdicts(rows, tests)}
    assert words["synthetic[gan]x1"].startswith("not comparable")
    assert words["synthetic[cgan]x1"].startswith("not comparable")  # its reference, real, is one-class
    rows[0]["confusion"] = [[200, 34], [190, 200]]
    assert {v["verdict"] for v in _verdicts(rows, tests)} == {"helped", "not comparable: an arm predicts one class for every test image"}


@pytest.mark.parametrize("change, message", [
    ({"generators": [TINY["generators"][0], {"name": "wg", "model": "wgan-gp", "set": {"gp_wieght": 1}}]},
     r"generator 'wg': .*did you mean 'gp_weight'"),
    ({"generators": [TINY["generators"][0], {"name": "dc2", "model": "dcgan", "set": {"cycle_weight": 5}}]},
     "generator 'dc2': cycle_weight is a setting of unit and munit"),
    ({"generators": [{"name": "pg", "model": "pggan", "refiner": "unit", "refiner_set": {"history_size": 3}}]},
     "generator 'pg' refiner unit: history_size is a setting of simgan"),
    ({"classifiers": [{"name": "lesion-cnn", "set": {"lr": "fast"}}]}, "classifier 'lesion-cnn': "),
])
def test_every_entry_config_is_checked_before_the_first_unit(tmp_path, change, message):
    """A typo in the last entry's settings fails at once, before any fold, run or unit is written."""
    cfg = study_from_dict({**TINY, **change}, tmp_path)
    started = []
    with pytest.raises(ConfigError, match=message):
        StudyRunner(cfg, tmp_path / "out", on_unit=started.append).run()
    assert not started and not (tmp_path / "out").exists()


def test_the_report_warns_about_an_arm_that_predicts_one_class():
    from medsyn.report import _arms_section

    def row(label, confusion):
        metrics = {m: 0.5 for m in ("accuracy", "precision", "recall", "auc")}
        return {"classifier": "resnet50", "label": label, "n_train": 10, "sensitivity": [1.0, 0.0],
                "specificity": [0.0, 1.0], "confusion": confusion, **metrics,
                **{f"{m}_ci": [0.4, 0.6] for m in metrics}}

    results = {"data": {"classes": ["normal", "pneumonia"]},
               "arms": [row("real", [[234, 0], [390, 0]]), row("synthetic[gan]x1", [[200, 34], [100, 290]])]}
    html = _arms_section(results)
    assert html.count("Warning: arm") == 1 and "arm real: the classifier predicted &#x27;normal&#x27;" in html


@pytest.mark.parametrize("copies, quick_cap, expected, quick_expected", [
    (4, 2, 4, 2),  # one number: as before, capped by --quick
    ([8, 1, 2, 4], 2, (1, 2, 4, 8), (1, 2)),  # a list is a sweep (kept sorted); --quick keeps it up to the cap
    ([4, 8], 2, (4, 8), (2,)),  # values above the cap meet there: still a sweep, of one
])
def test_classic_copies_take_a_number_or_a_list_to_choose_from(tmp_path, copies, quick_cap, expected, quick_expected):
    cfg = study_from_dict({**TINY, "classic": {"preset": "liver-lesion", "copies": copies},
                           "quick": {"classic_copies": quick_cap}}, tmp_path)
    assert cfg.classic.copies == expected and cfg.classic.sweep == isinstance(copies, list)
    assert cfg.with_quick().classic.copies == quick_expected


def test_the_sweep_chooses_its_copies_on_validation_never_on_test():
    """Validation prefers 2 copies, the test images 4: the choice is 2. Ties go to the fewest copies,
    and scores are averaged over seeds before choosing."""
    from medsyn.study.sweep import choose_copies

    y_test = np.array([0, 1, 0, 1])
    right, wrong = np.eye(2)[y_test], np.eye(2)[1 - y_test]

    def unit(copies, val_accuracy, test_proba, seed=0):
        return {"classic_copies": copies, "seed": seed, "val_accuracy": val_accuracy, "y_true": y_test,
                "proba": test_proba, "test_index": np.arange(4)}

    units = [unit(1, 0.50, wrong), unit(2, 0.75, wrong), unit(4, 0.60, right)]
    assert choose_copies(units) == 2
    assert choose_copies([unit(1, 0.75, wrong), unit(2, 0.75, right), unit(4, 0.5, right)]) == 1
    two_seeds = [unit(1, 0.9, wrong, seed=0), unit(1, 0.3, wrong, seed=1), unit(2, 0.6, wrong, seed=0),
                 unit(2, 0.7, wrong, seed=1)]
    assert choose_copies(two_seeds) == 2  # 0.65 against 0.60


def test_a_sweep_study_chooses_copies_per_fold_reports_them_and_reuses_units_when_values_are_added(tmp_path,
                                                                                                  monkeypatch):
    from medsyn.errors import RunError
    from medsyn.report import write_report

    raw = {**TINY, "arms": ["real", "classic", "classic+synthetic"], "volumes": [1], "tsne": False,
           "classic": {"preset": "liver-lesion", "copies": [1, 2]}}
    started = []
    runner = StudyRunner(study_from_dict(raw, tmp_path), tmp_path / "s", on_unit=started.append)
    results = runner.run()
    assert runner.units_seen == runner.units_total()
    sweep = results["classic_sweep"]
    assert sweep["values"] == [1, 2] and sweep["metric"] == "validation accuracy"
    assert [r["copies"] for r in sweep["rows"]] == [1, 2] and [c["fold"] for c in sweep["choice"]] == [0, 1]
    assert sum(started.count(f"lesion-cnn seed 0 fold {f}: classic, {n} cop{'y' if n == 1 else 'ies'} (sweep)")
               for f in (0, 1) for n in (1, 2)) == 4
    assert not any(u.endswith(": classic") for u in started), "the classic arm is the sweep's chosen unit"
    chosen = {c["fold"]: c["copies"] for c in sweep["choice"]}
    for fold, copies in chosen.items():  # the synthetic images go on top of the fold's chosen classic set
        unit = runner.store.load(f"cls/lesion-cnn/seed0/fold{fold}/classic-synthetic_dc_x1_c{copies}")
        assert unit["classic_copies"] == copies
    assert {r["label"] for r in results["arms"]} == {"real", "classic", "classic+synthetic[dc]x1"}
    page = write_report(tmp_path / "s").read_text()
    assert "Classic augmentation sweep" in page and "copies chosen" in page and "validation images" in page
    assert (tmp_path / "s" / "figures" / "classic_sweep_lesion-cnn.png").is_file()
    assert (tmp_path / "s" / "table_classic_sweep.csv").read_text().count("\n") == 3

    again = []
    grown = study_from_dict({**raw, "classic": {"preset": "liver-lesion", "copies": [1, 2, 3]}}, tmp_path)
    results = StudyRunner(grown, tmp_path / "s", on_unit=again.append).run()
    now = {c["fold"]: c["copies"] for c in results["classic_sweep"]["choice"]}
    expected = [f"lesion-cnn seed 0 fold {f}: classic, 3 copies (sweep)" for f in (0, 1)]
    expected += [f"lesion-cnn seed 0 fold {f}: classic+synthetic[dc]x1" for f in (0, 1) if now[f] != chosen[f]]
    assert sorted(again) == sorted(expected), "only the added value, and arms whose choice moved, may train"
    with pytest.raises(RunError, match="classic"):  # a fixed number's units are not keyed by it
        StudyRunner(study_from_dict({**raw, "classic": {"preset": "liver-lesion", "copies": 2}}, tmp_path),
                    tmp_path / "s").prepare()


def test_a_fold_without_validation_images_stops_before_the_first_unit(tmp_path):
    """A sweep (and every classifier's epoch) is chosen on validation images; with none, nothing may run."""
    from medsyn.errors import DataError

    cfg = study_from_dict({**TINY, "data": {**TINY["data"], "per_class": 3},
                           "classic": {"preset": "liver-lesion", "copies": [1, 2]}}, tmp_path)
    with pytest.raises(DataError, match="fold 0 has no validation images"):
        StudyRunner(cfg, tmp_path / "out").prepare()
    assert not (tmp_path / "out").exists()
