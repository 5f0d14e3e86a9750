"""Run a study: generators per fold -> synthetic sets -> FID -> classifiers per arm -> results.json.
With a list of classic copies, each classifier first sweeps them on the fold (medsyn.study.sweep).

Every unit (a GAN run, a sample set, an FID, one classifier on one arm) lands on disk atomically the
moment it finishes, and a rerun skips it, so a crash or Ctrl-C loses only the unit in progress.
``--jobs`` runs the units as Ray tasks (medsyn.study.parallel), each through the methods here.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError, DataError, RunError
from medsyn.evaluate.arms import Arm
from medsyn.study.config import StudyConfig, to_plain
from medsyn.study.folds import Fold, check_run_held_out, load_study_data, make_folds, split_notices
from medsyn.study.plan import ArmSpec, answer_order, arm_unit_key, classifier_units_per_fold
from medsyn.study.store import UnitStore, check_same_study, write_study_marker
from medsyn.study.generators import GeneratorUnits
from medsyn.study.sweep import accuracy, choose_copies, sweep_key


class StudyInterrupted(Exception):
    """Ctrl-C during a study: everything finished so far is on disk."""


Event = Callable[[str], None]


class StudyRunner(GeneratorUnits):
    """Runs every unit of a study that is not on disk yet. ``on_unit`` is told each unit as it starts."""

    def __init__(self, cfg: StudyConfig, out: Path, quick: bool = False, on_unit: Event | None = None,
                 on_progress: Callable | None = None):
        self.cfg, self.out, self.quick = (cfg.with_quick() if quick else cfg), Path(out), quick
        self.given_cfg = cfg  # as given, before --quick: what a parallel run's workers rebuild the runner from
        self.store = UnitStore(self.out)
        self.on_unit = on_unit or (lambda text: None)
        self.on_progress = on_progress  # (kind, done, total, info) for the inner progress of long units
        self.data: LabeledImages | None = None
        self.folds: list[Fold] = []
        self.synthetic: dict[tuple[str, str], LabeledImages] = {}  # (entry, slot) -> its synthetic set
        self.arm_unit_keys: list[str] = []  # this plan's classifier units, in run order: what results gather
        self.sweep_unit_keys: list[str] = []
        self.chosen_copies: dict[tuple[str, int], int] = {}  # (classifier, fold) -> classic copies chosen on val
        self.units_seen = 0
        self.notices: list[str] = []  # said once the study is prepared: the split, checks that could not run

    def _tick(self) -> None:
        """One more unit finished (now, or found on disk): moves the study's own progress bar."""
        self.units_seen += 1
        if self.on_progress:
            self.on_progress("study", self.units_seen, self.units_total(), "")

    # -- plan -------------------------------------------------------------------------------------
    def prepare(self) -> None:
        self.data = load_study_data(self.cfg)
        self.folds = make_folds(self.cfg, self.data, train_cap=self._train_cap())
        self.notices += [*self.data.notices, *split_notices(self.cfg, self.data)]
        from medsyn.augment import build_preset
        from medsyn.models.classifiers import CLASSIFIERS

        if self.cfg.classic.preset:
            build_preset(self.cfg.classic.preset, self.data.size)  # an unknown preset fails before any training
        for clf in self.cfg.classifiers:
            CLASSIFIERS.get(clf.name)
        self._check_generators()
        self._check_configs()
        self._check_folds()
        self._check_same_study()

    def _check_folds(self) -> None:
        """Classifiers choose their epoch, and a sweep its classic copies, on each fold's validation
        images; a fold without any would fail at its first classifier, after the generators trained."""
        for fold in self.folds:
            if len(fold.val) == 0:
                raise DataError(self.data.source, f"fold {fold.index} has no validation images ({len(fold.train)} "
                                "training images): classifiers choose their epoch, and a classic.copies list its "
                                "number of copies, on validation images only; give more images per class")

    def _check_same_study(self) -> None:
        # the budget's name is not compared: what it sets is, and older folders have no name
        resolved = {k: v for k, v in to_plain(self.cfg).items() if k not in ("base_dir", "budget")}
        # entries without a recipe compare as they did before recipes existed, so older folders resume
        resolved["generators"] = [{k: v for k, v in g.items() if k != "recipe" or v is not None}
                                  for g in resolved["generators"]]
        if not resolved["generator_seeds"]:  # likewise for studies with one generator per fold
            del resolved["generator_seeds"]
        if not resolved["classic"]["online"]:  # and for classic augmentation by copies
            del resolved["classic"]["online"]
        if resolved["sweep_arms"] is None:  # and for studies that sweep every arm
            del resolved["sweep_arms"]
        resolved["quick_mode"] = self.quick
        self._resolved = check_same_study(self.out, resolved)

    def _train_cap(self) -> int | None:
        return self.cfg.quick.max_train_per_class if self.quick else None

    def _check_generators(self) -> None:
        from medsyn.models import MODELS

        for gen in self.cfg.generators:
            if gen.model:
                MODELS.get(gen.model)
            elif not (Path(self._resolve(gen.run)) / "checkpoint.pt").is_file():
                raise RunError(f"{gen.run}: generator {gen.name!r} names a run folder without checkpoint.pt")
            else:  # a finished run may serve only if it trained on none of the folds' held-out images
                self.notices += check_run_held_out(self.cfg, self.folds, self.data, gen.name,
                                                   Path(self._resolve(gen.run)))

    def _check_configs(self) -> None:
        """Every entry's training config and every classifier's config, resolved before the first unit:
        a typo in the last entry's ``set`` fails now, not hours into the study."""
        from medsyn.models.classifiers import resolve_classifier_config
        from medsyn.train.setup import resolve_config

        for gen in self.cfg.generators:
            entries = [("", self._generator_settings(gen), gen.steps)] if gen.model else []
            if gen.refiner:
                entries.append((f" refiner {gen.refiner}", self._refiner_settings(gen), gen.refiner_steps))
            for what, settings, steps in entries:
                try:
                    resolve_config(*self._run_layers(settings, steps))
                except ConfigError as err:
                    raise ConfigError(f"generator {gen.name!r}{what}: {err}") from None
        for clf in self.cfg.classifiers:
            try:
                resolve_classifier_config(clf.name, dict(clf.set), clf.epochs)
            except ConfigError as err:
                raise ConfigError(f"classifier {clf.name!r}: {err}") from None

    def _generator_settings(self, gen) -> dict:
        chosen = {} if gen.per_class is None else {"per_class": gen.per_class}
        return {"model": gen.model, **gen.recipe_settings, **chosen, **gen.set}

    def _refiner_settings(self, gen) -> dict:
        return {"model": gen.refiner, **gen.refiner_set}

    def _run_layers(self, settings: dict, steps: int) -> list[dict]:
        return [settings, {"steps": steps, "device": self.cfg.device}]

    def _resolve(self, path: str) -> str:
        candidate = Path(self.cfg.base_dir) / path
        return str(candidate) if not Path(path).is_absolute() and candidate.exists() else path

    def units_total(self) -> int:
        per_fold = sum(2 + 2 * bool(g.refiner) + int(self.cfg.fid.enabled) + int(self.cfg.audit.enabled)
                       for g in self.cfg.generators)
        return (per_fold * len(self.generator_seeds()) + classifier_units_per_fold(self.cfg)) * len(self.folds)

    # -- run --------------------------------------------------------------------------------------
    def run(self) -> dict:
        if self.data is None:
            self.prepare()
        write_study_marker(self.out, self._resolved)
        self.arm_unit_keys.clear(), self.sweep_unit_keys.clear()  # a second run() gathers its units afresh
        try:
            for fold in self.folds:
                self.run_generators(fold)
                for clf in self.cfg.classifiers:
                    copies = self._classic_copies(clf, fold)
                    for seed, spec in answer_order(self.cfg):
                        self._classifier_unit(clf, seed, fold, spec, copies)
        except KeyboardInterrupt:
            raise StudyInterrupted() from None
        from medsyn.study.results import assemble_results

        return assemble_results(self)

    def run_classifier(self, clf_name: str, seed: int, fold: Fold, spec: ArmSpec) -> None:
        """One classifier unit, its fold's generator and sweep units already on disk (a parallel run's worker)."""
        clf = next(c for c in self.cfg.classifiers if c.name == clf_name)
        needed = self.cfg.generators if spec.arm is Arm.REAL else [g for g in self.cfg.generators
                                                                      if g.name == spec.generator]
        # the real arm's diagnostics look at every synthetic set of the fold (of its seed's generators)
        self.load_synthetic_sets(needed, fold, self.generator_seed_for(seed))
        self._classifier_unit(clf, seed, fold, spec, self._classic_copies(clf, fold))

    def _classic_copies(self, clf, fold: Fold) -> int:
        """The classic copies of ``clf``'s classic arms on ``fold``: the fixed number, or the sweep's
        choice on the fold's validation images once every seed's sweep units are done."""
        classic = self.cfg.classic
        if not classic.sweep:
            return classic.copies
        keys = [self._sweep_unit(clf, seed, fold, copies) for seed in self.cfg.seeds for copies in classic.copies]
        chosen = choose_copies([self.store.load(key) for key in keys])
        self.chosen_copies[(clf.name, fold.index)] = chosen
        return chosen

    def _sweep_unit(self, clf, seed: int, fold: Fold, copies: int) -> str:
        key = sweep_key(clf.name, seed, fold.index, copies)
        self.sweep_unit_keys.append(key)
        if not self.store.has(key):
            self._run_classifier(key, clf, seed, fold, ArmSpec(Arm.CLASSIC), copies,
                                 f"{copies} cop{'y' if copies == 1 else 'ies'} (sweep)")
        self._tick()
        return key

    def _classifier_unit(self, clf, seed: int, fold: Fold, spec: ArmSpec, copies: int) -> None:
        key = arm_unit_key(self.cfg, clf.name, seed, fold.index, spec, copies)
        self.arm_unit_keys.append(key)
        if self.cfg.classic.sweep and spec.arm is Arm.CLASSIC:  # the sweep trained it already
            return
        if not self.store.has(key):
            self._run_classifier(key, clf, seed, fold, spec, copies)
        elif spec.arm is Arm.REAL:
            unit = self.store.load(key)
            if self.undiagnosed(unit):
                self._diagnose_again(key, unit, clf, seed, fold, copies)
        self._tick()

    def classifier_unit_done(self, key: str, spec: ArmSpec) -> bool:
        """On disk and, for the real arm, diagnosed with every generator of this plan's study."""
        return self.store.has(key) and not (spec.arm is Arm.REAL and self.undiagnosed(self.store.load(key)))

    def undiagnosed(self, real_unit: dict) -> list[str]:
        """The generators a real unit's label fidelity and t-SNE leave out: those added to the folder
        after it was trained (studies grow one generator at a time)."""
        diagnosed = real_unit.get("fidelity") or {}
        return [g.name for g in self.cfg.generators if g.name not in diagnosed]

    def _diagnose_again(self, key: str, result: dict, clf, seed: int, fold: Fold, copies: int) -> None:
        """The diagnostics need the trained real-only network, which units do not keep: train it
        again (the same data and seed; on CPU the same network) and replace only the unit's
        diagnostics, so every measured value of the real arm stays as it was (``result`` is the unit as
        stored)."""
        missing = ", ".join(self.undiagnosed(result))
        self.on_unit(f"{clf.name} seed {seed} fold {fold.index}: real, trained again to diagnose {missing}")
        trained, _ = self._train_arm(clf, seed, fold, ArmSpec(Arm.REAL), copies)
        diagnosed = result.get("fidelity") or {}
        self._diagnose(result, trained, clf, seed, fold)
        # generators this run leaves out keep theirs: a later run with them needs no retraining
        result["fidelity"] = {**diagnosed, **result["fidelity"]}
        self.store.save(key, result)

    def _classic_online(self, spec: ArmSpec) -> bool:
        """Whether the arm's classic augmentation is drawn afresh for every batch instead of added as copies."""
        return self.cfg.classic.online and spec.arm.uses_classic

    def _train_arm(self, clf, seed: int, fold: Fold, spec: ArmSpec, copies: int):
        """``clf`` trained on the arm ``spec`` of ``fold`` (early-stopped on its validation images), and
        the arm's training set."""
        from medsyn.evaluate.arms import build_arm
        from medsyn.evaluate.classify import train_classifier

        synthetic = self.synthetic_set(spec.generator, fold.index, self.generator_seed_for(seed)) if spec.generator \
            else None
        volume = None if spec.volume is None else float(spec.volume)  # a multiple of each class's real count
        online = self._classic_online(spec)
        train_set = build_arm(spec.arm.without_classic if online else spec.arm, fold.train, synthetic=synthetic,
                              classic_preset=self.cfg.classic.preset, classic_copies=copies, volume=volume, seed=seed)
        trained = train_classifier(clf.name, train_set, fold.val, epochs=clf.epochs, seed=seed, device=self.cfg.device,
                                   online_augment=self.cfg.classic.preset if online else None,
                                   overrides=dict(clf.set), on_epoch=self._epoch_progress(clf.epochs))
        return trained, train_set

    def _run_classifier(self, key: str, clf, seed: int, fold: Fold, spec: ArmSpec, copies: int, note: str = "") -> None:
        """Train ``clf`` on the arm ``spec`` of ``fold``, test it, and store the unit under ``key``."""
        from medsyn.evaluate.classify import predict_proba

        self.on_unit(f"{clf.name} seed {seed} fold {fold.index}: {spec.label}" + (f", {note}" if note else ""))
        started = time.perf_counter()
        trained, train_set = self._train_arm(clf, seed, fold, spec, copies)
        online = self._classic_online(spec)
        proba = predict_proba(trained, fold.test)
        result = {"classifier": clf.name, "seed": seed, "fold": fold.index, "arm": spec.arm, "generator": spec.generator,
                  "volume": spec.volume, "label": spec.label, "n_train": len(train_set),
                  "classic_copies": copies if spec.arm.uses_classic and not online else None,
                  "classic_online": online,
                  "test_index": fold.test_index, "y_true": fold.test.labels, "proba": proba,
                  "best_epoch": getattr(trained, "best_epoch", None), "val_auc": getattr(trained, "best_val_auc", None),
                  "precision": getattr(trained, "precision", "float32"),
                  "val_accuracy": accuracy(fold.val.labels, predict_proba(trained, fold.val)), "n_val": len(fold.val)}
        if spec.arm is Arm.REAL:
            self._diagnose(result, trained, clf, seed, fold)
        result["seconds"] = time.perf_counter() - started
        self.store.save(key, result)

    def _image_progress(self, kind: str, total: int):
        done, started = [0], time.perf_counter()

        def on_batch(n: int) -> None:
            done[0] += n
            if self.on_progress:
                rate = done[0] / max(time.perf_counter() - started, 1e-9)
                self.on_progress(kind, min(done[0], total), total, f"{rate:,.1f} img/s")
        return on_batch

    def _epoch_progress(self, epochs):
        def on_epoch(epoch, total, info=""):
            if self.on_progress:
                self.on_progress("classifier", epoch, total, info)
        return on_epoch

    def _diagnose(self, result: dict, trained, clf, seed: int, fold: Fold) -> None:
        """What the real-only classifier says about the synthetic sets; the t-SNE once, on fold 0."""
        from medsyn.study.diagnostics import fidelity, tsne_figures

        gseed = self.generator_seed_for(seed)
        synthetic = {gen.name: self.synthetic_set(gen.name, fold.index, gseed) for gen in self.cfg.generators}
        result["fidelity"] = fidelity(trained, fold, synthetic)
        if fold.index == 0 and seed == self.cfg.seeds[0] and clf.name == self.cfg.classifiers[0].name and self.cfg.tsne:
            copies = self.chosen_copies.get((clf.name, fold.index), self.cfg.classic.copies_values[0])
            path = tsne_figures(trained, fold, seed, self.cfg.classic.preset, copies, synthetic, self.out / "figures")
            result["tsne"] = str(path.relative_to(self.out))
