"""Classic augmentation on the fly (``classic: {online: true}``) and the order a study's units run in."""
from __future__ import annotations

import json

import numpy as np
import pytest

from medsyn.errors import ConfigError
from medsyn.study import StudyRunner
from medsyn.study.config import study_from_dict
from medsyn.study.plan import answer_order, arm_specs, describe_plan

from test_study import TINY

ONLINE = {**TINY, "split": {"kind": "source"}, "classic": {"preset": "liver-lesion", "online": True},
          "volumes": [1], "tsne": False}


@pytest.fixture(autouse=True)
def fewer_bootstrap_resamples(monkeypatch):
    monkeypatch.setattr("medsyn.study.results.BOOTSTRAP", 50)


def _units(out) -> list[dict]:
    return [json.loads(p.read_text()) for p in (out / "units" / "cls").rglob("*.json")]


def test_online_classic_arms_augment_every_batch_instead_of_adding_copies(tmp_path, monkeypatch):
    seen = []
    import medsyn.evaluate.classify as classify

    real_train = classify.train_classifier

    def recording(name, train, val, **kw):
        seen.append((len(train), kw.get("online_augment")))
        return real_train(name, train, val, **kw)

    monkeypatch.setattr(classify, "train_classifier", recording)
    out = tmp_path / "out"
    StudyRunner(study_from_dict({**ONLINE, "split": {"kind": "kfold", "folds": 2, "seed": 0}}, tmp_path), out).run()
    units = [u for u in _units(out) if u["fold"] == 0]
    by_label = {u["label"]: u for u in units}
    real, classic = by_label["real"], by_label["classic"]
    synthetic, both = by_label["synthetic[dc]x1"], by_label["classic+synthetic[dc]x1"]
    # the classic arms hold exactly the images of their arm without classic augmentation
    assert classic["n_train"] == real["n_train"] and both["n_train"] == synthetic["n_train"] > real["n_train"]
    assert classic["classic_online"] and both["classic_online"] and not real["classic_online"]
    assert classic["classic_copies"] is None and both["classic_copies"] is None
    # every classic unit was trained with the preset on every batch, every other unit without
    assert sorted(map(str, (a for _, a in seen))) == sorted(["None", "None", "liver-lesion", "liver-lesion"] * 2)
    # same seed, same images, same initialisation: only the augmentation differs, and it changed training
    assert not np.array_equal(np.asarray(classic["proba"]), np.asarray(real["proba"]))


def test_online_classic_has_no_copies_to_sweep(tmp_path):
    with pytest.raises(ConfigError, match="classic.online augments every batch on the fly and adds no copies"):
        study_from_dict({**ONLINE, "classic": {"preset": "liver-lesion", "online": True, "copies": [1, 2]}}, tmp_path)


def test_the_folder_marker_names_online_only_when_it_is_on(tmp_path):
    """Folders made before classic.online existed have no such key and must still resume."""
    raw = {**ONLINE, "arms": ["real", "classic"], "generators": []}
    off = {**raw, "classic": {"preset": "liver-lesion", "copies": 1}}
    for name, config in (("on", raw), ("off", off)):
        runner = StudyRunner(study_from_dict(config, tmp_path), tmp_path / name)
        runner.prepare()
        classic = runner._resolved["classic"]
        assert ("online" in classic) == (name == "on")


def test_plan_counts_online_classic_arms_at_the_real_arms_size(tmp_path):
    def image_epochs(classic):
        runner = StudyRunner(study_from_dict({**ONLINE, "arms": ["real", "classic"], "generators": [],
                                              "classic": classic}, tmp_path), tmp_path / "plan")
        runner.prepare()
        line = next(line for line in describe_plan(runner) if line.startswith("lesion-cnn:"))
        return int(line.rsplit(", ", 1)[1].split(" ")[0].replace(",", ""))

    online = image_epochs({"preset": "liver-lesion", "online": True})
    copies = image_epochs({"preset": "liver-lesion", "copies": 3})
    assert online * 5 == copies * 2  # real + real (on the fly) against real + real x 4 (three copies)


def test_units_run_arm_by_arm_over_every_seed_first_volume_first(tmp_path):
    cfg = study_from_dict({**TINY, "arms": ["real", "synthetic", "classic"], "volumes": [1, 0.5], "seeds": [0, 1]},
                          tmp_path)
    order = [(spec.label, seed) for seed, spec in answer_order(cfg)]
    assert order == [("real", 0), ("real", 1), ("synthetic[dc]x1", 0), ("synthetic[dc]x1", 1),
                     ("classic", 0), ("classic", 1), ("synthetic[dc]x0.5", 0), ("synthetic[dc]x0.5", 1)]
    assert sorted(order) == sorted((s.label, seed) for s in arm_specs(cfg) for seed in cfg.seeds)


def test_a_study_trains_its_classifiers_in_that_order(tmp_path):
    started = []
    raw = {**ONLINE, "arms": ["real", "synthetic"], "seeds": [0, 1], "volumes": [1, 0.5]}
    runner = StudyRunner(study_from_dict(raw, tmp_path), tmp_path / "out", on_unit=started.append)
    runner.run()
    classifiers = [s.split(": ", 1)[1] for s in started if s.startswith("lesion-cnn")]
    assert classifiers == ["real", "real", "synthetic[dc]x1", "synthetic[dc]x1", "synthetic[dc]x0.5",
                           "synthetic[dc]x0.5"]
    assert [s.split(" fold")[0] for s in started if s.startswith("lesion-cnn")][:2] == ["lesion-cnn seed 0",
                                                                                         "lesion-cnn seed 1"]
