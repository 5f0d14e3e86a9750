"""What a study will run: its arms (one per generator and volume for synthetic ones), the unit keys
of its classifiers, and which generator entries share one trained generator."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from medsyn.evaluate.arms import Arm
from medsyn.study.config import StudyConfig, to_plain

if TYPE_CHECKING:
    from medsyn.models.classifiers import ClassifierConfig


@dataclass(frozen=True)
class ArmSpec:
    arm: Arm
    generator: str | None = None
    volume: float | None = None

    @property
    def label(self) -> str:
        return self.arm if self.generator is None else f"{self.arm}[{self.generator}]x{self.volume:g}"

    @property
    def key(self) -> str:
        return self.label.replace("[", "_").replace("]", "_").replace("+", "-")


def arm_specs(cfg: StudyConfig) -> list[ArmSpec]:
    specs = []
    for arm in cfg.arms:
        if arm.uses_synthetic:
            swept = cfg.sweep_arms is None or arm in cfg.sweep_arms
            specs += [ArmSpec(arm, g.name, v) for g in cfg.generators for v in (cfg.volumes if swept else cfg.volumes[:1])]
        else:
            specs.append(ArmSpec(arm))
    return specs


def answer_order(cfg: StudyConfig) -> list[tuple[int, ArmSpec]]:
    """One classifier's (seed, arm) units per fold in the order they run: every seed of an arm before
    the next arm, arms as the YAML lists them, and the first volume listed before the other volumes.
    A long study stopped part way (it resumes) has then compared its first arms over every seed."""
    units = [(seed, spec) for spec in arm_specs(cfg) for seed in cfg.seeds]
    return sorted(units, key=lambda u: u[1].volume not in (None, cfg.volumes[0]))  # stable: arm order kept


def classifier_unit_key(cfg: StudyConfig, classifier: str, seed: int, fold: int, spec: ArmSpec, copies: int) -> str:
    """Where one classifier's unit on one arm is stored. A sweep's choice of classic copies may change
    as values are added to it, so its classic arms carry their number of copies in the key; a fixed
    number keeps the key it always had, so older study folders resume."""
    suffix = f"_c{copies}" if cfg.classic.sweep and spec.arm.uses_classic else ""
    return f"cls/{classifier}/seed{seed}/fold{fold}/{spec.key}{suffix}"


def arm_unit_key(cfg: StudyConfig, classifier: str, seed: int, fold: int, spec: ArmSpec, copies: int) -> str:
    """The unit that holds an arm's predictions: with a classic sweep, the classic arm is the sweep's
    unit at the chosen number of copies (not trained again); every other arm has its own."""
    from medsyn.study.sweep import sweep_key

    if cfg.classic.sweep and spec.arm is Arm.CLASSIC:
        return sweep_key(classifier, seed, fold, copies)
    return classifier_unit_key(cfg, classifier, seed, fold, spec, copies)


def classifier_units_per_fold(cfg: StudyConfig) -> int:
    """Classifier units of one fold. A sweep trains the classic arm at every number of copies, and the
    unit of the chosen number is the classic arm's, not trained again."""
    classic = cfg.classic
    per_seed = len(arm_specs(cfg)) - (classic.sweep and Arm.CLASSIC in cfg.arms)
    per_seed += len(classic.copies_values) if classic.sweep else 0
    return len(cfg.classifiers) * len(cfg.seeds) * per_seed


def same_generator(a, b) -> bool:
    """Whether two generator entries train (or load) the same generator on each fold; their refiners may differ."""
    fields = ("model", "recipe", "run", "per_class", "steps", "set")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def plan_summary(cfg: StudyConfig) -> dict:
    return {"arms": [s.label for s in arm_specs(cfg)], "config": to_plain(cfg)}


def arm_images(spec: ArmSpec, class_counts: list[int], copies: int) -> int:
    """Training images of one arm on a fold with these real counts per class (its size, before training);
    ``copies`` 0 for classic augmentation on the fly."""
    real = sum(class_counts)
    base = real * (copies + 1) if spec.arm.uses_classic else real if spec.arm.uses_real else 0
    if spec.arm.uses_synthetic:  # as evaluate.arms.synthetic_per_class: a multiple of each class's count
        base += sum(max(1, round(spec.volume * n)) if n else 0 for n in class_counts)
    return base


def describe_plan(runner) -> list[str]:
    """What a prepared runner's study will run, in lines for ``medsyn study --plan``: generator runs
    and classifier units with how many are on disk, and the most image-epochs each classifier may
    train (training images x epochs, summed over its units: divide by a measured images/s for time)."""
    from medsyn.models.classifiers import CLASSIFIERS, resolve_classifier_config
    from medsyn.study.parallel import plan_tasks, task_done

    cfg, folds = runner.cfg, runner.folds
    tasks = plan_tasks(runner)
    sizes = ", ".join(f"{len(f.train)}/{len(f.val)}/{len(f.test)}" for f in folds)
    budget = "quick" if runner.quick else cfg.budget
    lines = [f"study {cfg.name}, budget {budget}: {len(folds)} fold(s) of train/val/test {sizes}; seeds "
             f"{', '.join(map(str, cfg.seeds))}"]
    gen_tasks = [t for t in tasks if t.kind == "generators"]
    if gen_tasks:
        seeds = len(runner.generator_seeds())
        per = "; ".join(f"{g.name}: {g.model} {g.steps} steps"
                        + (f" + {g.refiner} {g.refiner_steps}" if g.refiner else "") for g in cfg.generators)
        done = sum(task_done(runner, t) for t in gen_tasks)
        lines.append(f"generators: {len(gen_tasks)} runs ({len(gen_tasks) // (len(folds) * seeds)} trained entries x "
                     f"{seeds} generator seed(s) x {len(folds)} fold(s)), {done} done; {per}")
    for clf in cfg.classifiers:
        units = [t for t in tasks if t.kind in ("sweep", "classifier") and t.args[0] == clf.name]
        svm = CLASSIFIERS.get(clf.name).kind == "svm"
        recipe = None if svm else resolve_classifier_config(clf.name, dict(clf.set), clf.epochs)
        epochs = 1 if svm else recipe.epochs
        done = image_epochs = first_volume = left = 0
        for t in units:
            counts = [int(n) for n in next(f for f in folds if f.index == t.fold).train.class_counts()]
            # a sweep unit has its copies; a classic arm uses the sweep's choice, at most the largest
            spec, copies = ((ArmSpec(Arm.CLASSIC), t.args[2]) if t.kind == "sweep"
                            else (t.args[2], 0 if cfg.classic.online else max(cfg.classic.copies_values)))
            unit = arm_images(spec, counts, copies) * epochs
            finished = task_done(runner, t)
            done += finished
            image_epochs += unit
            first_volume += unit if spec.volume in (None, cfg.volumes[0]) else 0
            left += 0 if finished else unit
        lines.append(f"{clf.name}: {len(units)} units ({len(arm_specs(cfg))} arms x {len(cfg.seeds)} seed(s) x "
                     f"{len(folds)} fold(s)" + (f", with the classic sweep's" if cfg.classic.sweep else "")
                     + f"), {done} done; "
                     + (f"one fit per C, {image_epochs:,} images" if svm
                        else f"at most {epochs} epochs, {image_epochs:,} image-epochs at most"
                        + (f" ({first_volume:,} for every arm at volume {cfg.volumes[0]:g}, which run first)"
                           if first_volume < image_epochs else "")))
        if left and not svm:
            lines.append(_time_estimate(runner, clf.name, recipe, left))
    return lines


def _time_estimate(runner, name: str, recipe: "ClassifierConfig", image_epochs: int) -> str:
    """The classifier's remaining image-epochs over its training rate, measured now on the study's
    device with a few steps on random images at the study's geometry (validation passes, generators,
    FID and audit not included: a bound on the classifiers' training time, not the study's)."""
    from medsyn.errors import ConfigError
    from medsyn.evaluate.classify import measure_training_rate
    from medsyn.train.setup import mixed_precision, resolve_device

    train = runner.folds[0].train
    try:
        device = resolve_device(runner.cfg.device)
    except ConfigError as err:
        return f"  time not estimated: {err}"
    rate = measure_training_rate(name, train.size, train.channels, train.num_classes, recipe, device, steps=2)
    seconds = image_epochs / rate
    took = f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
    return (f"  {image_epochs:,} image-epochs left: at most {took} of training at {rate:,.0f} images/s, "
            f"measured now on {device} in {mixed_precision(device, recipe.amp)[0]} (early stopping ends most "
            f"units sooner; generators, FID and audit come on top)")
