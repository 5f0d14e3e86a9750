"""What a study will run: its arms (one per generator and volume for synthetic ones), the unit keys
of its classifiers, and which generator entries share one trained generator."""
from __future__ import annotations

from dataclasses import dataclass

from medsyn.evaluate.arms import Arm
from medsyn.study.config import StudyConfig, to_plain


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
            specs += [ArmSpec(arm, g.name, v) for g in cfg.generators for v in cfg.volumes]
        else:
            specs.append(ArmSpec(arm))
    return specs


def classifier_unit_key(cfg: StudyConfig, classifier: str, seed: int, fold: int, spec: ArmSpec, copies: int) -> str:
    """Where one classifier's unit on one arm is stored. A sweep's choice of classic copies may change
    as values are added to it, so its classic arms carry their number of copies in the key; a fixed
    number keeps the key it always had, so older study folders resume."""
    suffix = f"_c{copies}" if cfg.classic.sweep and spec.arm.uses_classic else ""
    return f"cls/{classifier}/seed{seed}/fold{fold}/{spec.key}{suffix}"


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
