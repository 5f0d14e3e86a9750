"""A study's generator units, part of ``StudyRunner``: per fold, and per seed when the study's
``generator_seeds`` is on, train (or load) each generator, sample it, train its refiner and refine,
then FID and audit.

With ``generator_seeds`` every seed of the study trains its own generators on every fold, and the
classifiers of seed s add the samples of the generators of seed s, so the spread over seeds
includes the generators' as well as the classifiers'. Without it, one generator per fold serves
every seed (the layout older study folders have: ``generators/<entry>/fold<k>``; with it,
``generators/<entry>/fold<k>/seed<s>``).
"""
from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np

from medsyn.data import load_source
from medsyn.data.types import LabeledImages
from medsyn.study.audit import audit_unit
from medsyn.study.folds import Fold, join_sets, take_rows, write_fold_npz
from medsyn.study.plan import same_generator
from medsyn.study.store import write_json_atomic


class GeneratorUnits:
    """The generator half of ``StudyRunner`` (which provides cfg, out, store, folds, synthetic,
    on_unit, on_progress, _tick, _resolve and the settings helpers)."""

    # -- which generators -------------------------------------------------------------------------
    def generator_seeds(self) -> tuple[int | None, ...]:
        """The seeds each generator entry is trained with on each fold (None: one run, the default seed)."""
        return tuple(self.cfg.seeds) if self.cfg.generator_seeds else (None,)

    def generator_seed_for(self, seed: int) -> int | None:
        """The generator seed whose samples the classifiers of ``seed`` add."""
        return seed if self.cfg.generator_seeds else None

    def slot(self, fold_index: int, gseed: int | None = None) -> str:
        """The folder and unit-key part of one trained generator: ``fold0``, or ``fold0/seed1`` with
        generator seeds (``gseed`` None: the first seed's)."""
        if not self.cfg.generator_seeds:
            return f"fold{fold_index}"
        return f"fold{fold_index}/seed{self.cfg.seeds[0] if gseed is None else gseed}"

    def slot_label(self, fold_index: int, gseed: int | None = None) -> str:
        return self.slot(fold_index, gseed).replace("fold", "fold ").replace("/seed", " seed ")

    def synthetic_set(self, gen_name: str, fold_index: int, gseed: int | None = None) -> LabeledImages:
        return self.synthetic[(gen_name, self.slot(fold_index, gseed))]

    # -- where ------------------------------------------------------------------------------------
    def _entry_folder(self, gen_name: str, fold_index: int, gseed: int | None = None) -> Path:
        return self.out / "generators" / gen_name / self.slot(fold_index, gseed)

    def _generator_paths(self, gen, fold_index: int, gseed: int | None = None) -> tuple[Path, Path]:
        """(run, samples) of the generator ``gen`` uses: the first entry's that trains the same one."""
        base = self._entry_folder(self._trained_by(gen), fold_index, gseed)
        return base / "run", base / "samples"

    def _refiner_paths(self, gen, fold_index: int, gseed: int | None = None) -> tuple[Path, Path]:
        """(refiner run, refined set) of a refiner entry: its own, never shared."""
        base = self._entry_folder(gen.name, fold_index, gseed)
        return base / "refiner", base / "refined"

    def synthetic_folder(self, gen, fold_index: int, gseed: int | None = None) -> Path:
        """Where an entry's synthetic images are (its arm's): the refined set of a refiner entry, else the samples."""
        if gen.refiner:
            return self._refiner_paths(gen, fold_index, gseed)[1]
        return self._generator_paths(gen, fold_index, gseed)[1]

    def _trained_by(self, gen) -> str:
        """The first entry that trains the same generator as ``gen``: a refiner entry such as
        pggan+unit refines the samples of the pggan entry beside it instead of training a copy."""
        return next(g.name for g in self.cfg.generators if same_generator(g, gen))

    # -- units ------------------------------------------------------------------------------------
    def run_generators(self, fold: Fold, names: tuple[str, ...] | None = None,
                       gseeds: tuple[int | None, ...] | None = None) -> None:
        """The units of the generator entries ``names`` (default: all) on ``fold`` for each generator
        seed in ``gseeds`` (default: all), in the YAML's order: training, samples (refiner training,
        refined set), FID, audit. An entry that shares another's generator needs that entry's units
        done first (``_trained_by``)."""
        for gseed in self.generator_seeds() if gseeds is None else gseeds:
            for gen in self.cfg.generators:
                if names is None or gen.name in names:
                    self.synthetic[(gen.name, self.slot(fold.index, gseed))] = self._synthetic_set(gen, fold, gseed)
                    if self.cfg.fid.enabled:
                        self._fid(gen.name, fold, gseed)
                    if self.cfg.audit.enabled:
                        audit_unit(self, gen.name, fold, gseed)

    def load_synthetic_sets(self, gens, fold: Fold, gseed: int | None) -> None:
        """Read finished synthetic sets from disk (a parallel run's classifier worker)."""
        for gen in gens:
            self.synthetic[(gen.name, self.slot(fold.index, gseed))] = self.load_synthetic(gen, fold, gseed)

    def generator_done(self, gen, fold_index: int, gseed: int | None) -> bool:
        """Whether every unit of the entry ``gen`` on this fold and seed is on disk."""
        run_dir, samples = self._generator_paths(gen, fold_index, gseed)
        done = (bool(gen.run) or self._generator_finished(run_dir, gen.steps)) and (samples / "samples.npz").is_file()
        if gen.refiner:
            refiner_dir, refined = self._refiner_paths(gen, fold_index, gseed)
            done = (done and self._generator_finished(refiner_dir, gen.refiner_steps)
                    and (refined / "manifest.csv").is_file())
        slot = self.slot(fold_index, gseed)
        return (done and (not self.cfg.fid.enabled or self.store.has(f"fid/{gen.name}/{slot}"))
                and (not self.cfg.audit.enabled or self.store.has(f"audit/{gen.name}/{slot}")))

    def _synthetic_set(self, gen, fold: Fold, gseed: int | None) -> LabeledImages:
        """Train (or resume) the fold's generator, then sample enough images for the largest volume."""
        from medsyn.sample import write_samples

        run_dir, samples_dir = self._generator_paths(gen, fold.index, gseed)
        if gen.run:
            run_dir = Path(self._resolve(gen.run))
        elif not self._generator_finished(run_dir, gen.steps):
            self._train_run(gen.name, self._generator_settings(gen), gen.steps, fold, gseed, run_dir)
        if not (samples_dir / "samples.npz").is_file():
            self.on_unit(f"sample {gen.name} {self.slot_label(fold.index, gseed)}")
            write_samples(run_dir, samples_dir, self._synthetic_per_class(fold), fmt="npz", seed=fold.index,
                          device=self.cfg.device)
        self._tick(), self._tick()  # training and sampling
        if gen.refiner:
            self._refined_samples(gen, fold, gseed, str(samples_dir / "samples.npz"))
        return self.load_synthetic(gen, fold, gseed)

    def load_synthetic(self, gen, fold: Fold, gseed: int | None = None) -> LabeledImages:
        """The entry's finished synthetic set on ``fold`` (its samples, or its refined set), read from disk."""
        from medsyn.evaluate.arms import check_compatible

        folder = self.synthetic_folder(gen, fold.index, gseed)
        synthetic = load_source(str(folder if gen.refiner else folder / "samples.npz"))
        check_compatible(fold.train, synthetic)
        return synthetic

    def _refined_samples(self, gen, fold: Fold, gseed: int | None, samples: str) -> None:
        """Train (or resume) the fold's refiner on its real training images with ``samples`` as
        source, then refine them."""
        from medsyn.refine import write_refined

        refiner_dir, refined_dir = self._refiner_paths(gen, fold.index, gseed)
        if not self._generator_finished(refiner_dir, gen.refiner_steps):
            self._train_run(f"{gen.name} refiner {gen.refiner}", self._refiner_settings(gen),
                            gen.refiner_steps, fold, gseed, refiner_dir, refine_source=samples)
        if not (refined_dir / "manifest.csv").is_file():
            self.on_unit(f"refine {gen.name} {self.slot_label(fold.index, gseed)} with {gen.refiner}")
            write_refined(refiner_dir, samples, refined_dir, seed=fold.index, device=self.cfg.device)
        self._tick(), self._tick()  # refiner training and refining

    def _synthetic_per_class(self, fold: Fold) -> int:
        return max(1, math.ceil(max(self.cfg.volumes) * max(fold.train.class_counts())))  # volumes multiply each class

    @staticmethod
    def _generator_finished(run_dir: Path, steps: int) -> bool:
        state = run_dir / "state.json"
        return state.is_file() and json.loads(state.read_text()).get("step", 0) >= steps

    def _train_run(self, label: str, settings: dict, steps: int, fold: Fold, gseed: int | None, run_dir: Path,
                   refine_source: str | None = None) -> None:
        from medsyn.train.run import DataOptions, execute_run, prepare_run

        data_file = write_fold_npz(fold.train, self.out / "folds" / f"fold{fold.index}_train.npz")
        layers = self._run_layers(settings, steps)
        if gseed is not None:  # each seed's generators start from their own weights and draw their own batches
            layers.append({"seed": gseed})
        resume = (run_dir / "checkpoint.pt").is_file()
        where = self.slot_label(fold.index, gseed)
        self.on_unit(f"train {label} {where} ({steps} steps{', resuming' if resume else ''})")
        options = None if resume else DataOptions(str(data_file), refine_source=refine_source)
        prepared = prepare_run(run_dir, layers, options, resume=resume)

        def progress(step, total, values, rate):
            if self.on_progress:
                self.on_progress("gan", step, total, f"{rate:,.0f} img/s" if rate else "")

        result = execute_run(prepared, progress)
        if result.interrupted:
            raise KeyboardInterrupt
        write_json_atomic(run_dir / "state.json", {"step": result.step})  # what _generator_finished reads

    def _fid(self, gen_name: str, fold: Fold, gseed: int | None) -> None:
        key = f"fid/{gen_name}/{self.slot(fold.index, gseed)}"
        if self.store.has(key):
            self._tick()
            return
        from medsyn.metrics.cache import FeatureCache
        from medsyn.metrics.features import InceptionExtractor
        from medsyn.metrics.fid import SmallSampleWarning, fid_between
        from medsyn.train.setup import resolve_device

        self.on_unit(f"FID {gen_name} {self.slot_label(fold.index, gseed)}")
        started = time.perf_counter()
        # Both FIDs use m images a side, so the small-sample bias of the score and of its floor match.
        pool = join_sets(fold.train, fold.val)
        generated = self.synthetic_set(gen_name, fold.index, gseed)
        m = min(self.cfg.fid.max_images, len(pool) // 2, len(generated))
        order = np.random.default_rng(fold.index).permutation(len(pool))
        real, other_real = pool.subset(np.sort(order[:m])), pool.subset(np.sort(order[m:2 * m]))
        synthetic = take_rows(generated, m, seed=fold.index)
        extractor, device = InceptionExtractor(), resolve_device(self.cfg.device)
        cache = FeatureCache(self.out / "cache")  # real features are shared by every generator of a fold
        on_batch = self._image_progress("FID", 3 * m)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SmallSampleWarning)  # kept as notices in the unit and the report
            score = fid_between(real, synthetic, extractor, cache=cache, device=device, on_batch=on_batch)
            floor = fid_between(real, other_real, extractor, cache=cache, device=device, on_batch=on_batch)
        self.store.save(key, {"generator": gen_name, "fold": fold.index, "generator_seed": gseed, "fid": score.fid,
                              "kid_mean": score.kid_mean, "kid_std": score.kid_std, "n_real": score.n_a,
                              "n_synthetic": score.n_b, "floor_fid": floor.fid, "floor_kid_mean": floor.kid_mean,
                              "floor_n": floor.n_a, "notices": list(score.notices),
                              "seconds": time.perf_counter() - started})
        self._tick()
