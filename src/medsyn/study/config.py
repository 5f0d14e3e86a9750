"""A study's YAML, typed and strict: every section rejects unknown keys before anything runs."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medsyn.config import build_config, check_keys, load_yaml
from medsyn.errors import ConfigError
from medsyn.evaluate.arms import Arm

ARMS = (Arm.REAL, Arm.CLASSIC, Arm.SYNTHETIC, Arm.CLASSIC_SYNTHETIC)  # the brain-MRI paper's four; tstr is listed by hand
SPLIT_KINDS = ("source", "patient", "kfold")
# The study as written is its ``full`` budget (the papers' lengths, for a GPU); ``quick`` is its
# ``quick:`` section applied by the runner; a ``budgets:`` mapping adds named ones (``standard``:
# classifiers converged and generators at the quality targets within about 2 hours on a 2-core CPU).
FULL, QUICK = "full", "quick"
# what a budget may replace: everything but what names the study, its data and its split
BUDGET_KEYS = ("generators", "classifiers", "classic", "arms", "volumes", "sweep_arms", "seeds", "generator_seeds",
               "fid", "audit", "tsne", "device")


@dataclass(frozen=True)
class DataSection:
    source: str = "phantoms"  # a path (relative to the YAML's folder), a MedMNIST name, or "phantoms"
    size: int | None = None  # resize to this side (default: the data's own; phantoms: 64)
    channels: int | None = None
    per_class: int = 60  # phantoms only: images per class
    seed: int = 0  # phantoms only


@dataclass(frozen=True)
class SplitSection:
    kind: str = "source"  # source (the file's own train/val/test) | patient (7:1:2) | kfold (patient-level)
    folds: int = 3  # kfold: the liver-lesion paper's 3-fold cross-validation
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SPLIT_KINDS:
            raise ConfigError(f"split.kind must be one of {', '.join(SPLIT_KINDS)}, got {self.kind!r}")


@dataclass(frozen=True)
class GeneratorSection:
    name: str  # label used in tables and folder names
    model: str | None = None  # a registered generator (`medsyn models`), trained here on each fold's training images
    run: str | None = None  # or an already trained run folder (only with a single split)
    # or a shipped recipe (`small-data`: medsyn's recommended one); its model and settings, under ``set``
    recipe: str | None = None
    per_class: bool | None = None  # one generator per class; None: the model's default (dcgan: per class, as its paper)
    steps: int = 2000
    set: dict = field(default_factory=dict)  # TrainConfig overrides (width, batch, lr_g, ...)
    # The brain-MRI paper's second step: a refiner (simgan, unit, munit) trained on each fold's real
    # training images with this generator's samples as its source; the refined samples are the arm's.
    refiner: str | None = None
    refiner_steps: int = 2000
    refiner_set: dict = field(default_factory=dict)  # TrainConfig overrides of the refiner

    def __post_init__(self) -> None:
        recipe_model = None
        if self.recipe is not None:
            from medsyn.recipes import load_recipe

            recipe_model = load_recipe(self.recipe)["model"]  # an unknown recipe fails here
        # a recipe fills in its model (so replace() and a resolved config that carry both are accepted)
        model = None if self.model == recipe_model else self.model
        if sum(x is not None for x in (model, self.run, self.recipe)) != 1:
            raise ConfigError(f"generator {self.name!r}: give exactly one of model or recipe (train here) or run (load)")
        if recipe_model is not None:
            object.__setattr__(self, "model", recipe_model)
        if self.refiner is not None:
            from medsyn.models import MODELS
            from medsyn.models.base import Role

            if MODELS.get(self.refiner).role is not Role.REFINER:
                raise ConfigError(f"generator {self.name!r}: refiner {self.refiner!r} is a generator, not a refiner "
                                  "(simgan, unit, munit)")

    @property
    def recipe_settings(self) -> dict:
        """The recipe's training settings (without its model), which ``set`` overrides."""
        from medsyn.recipes import load_recipe

        return {k: v for k, v in load_recipe(self.recipe).items() if k != "model"} if self.recipe else {}


@dataclass(frozen=True)
class ClassifierSection:
    name: str  # a registered classifier
    epochs: int | None = None  # default: the classifier's own
    set: dict = field(default_factory=dict)  # classifier config overrides


@dataclass(frozen=True)
class ClassicSection:
    preset: str | None = None  # a registered classic-augmentation preset (medsyn.augment.PRESETS)
    # Augmented copies per real image. A list sweeps them, as the liver-lesion paper grew its classic
    # set: the classic arm is trained at each, the best on each fold's validation split is kept, and
    # every arm with classic augmentation uses that one (medsyn.study.sweep).
    copies: int | tuple[int, ...] = 4
    # Augment every training batch of the classic arms on the fly instead of adding copies: each epoch
    # sees a new random variant of every image (real and synthetic), at the real arm's cost per epoch.
    online: bool = False

    def __post_init__(self) -> None:
        if self.online and isinstance(self.copies, tuple):
            raise ConfigError("classic.online augments every batch on the fly and adds no copies: "
                              "drop the classic.copies list, or set online: false to sweep it")
        values = self.copies if isinstance(self.copies, tuple) else (self.copies,)
        if not values:
            raise ConfigError("classic.copies: the list is empty; give the numbers of copies to choose from")
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in values):
            shown = list(values) if isinstance(self.copies, tuple) else self.copies
            raise ConfigError(f"classic.copies: expected a positive whole number or a list of them, got {shown!r}")
        repeated = sorted({c for c in values if values.count(c) > 1})
        if repeated:
            raise ConfigError(f"classic.copies: {', '.join(map(str, repeated))} listed more than once")
        if isinstance(self.copies, tuple):
            object.__setattr__(self, "copies", tuple(sorted(values)))

    @property
    def sweep(self) -> bool:
        """Whether copies is a list to choose from (even a list of one) rather than one fixed number."""
        return isinstance(self.copies, tuple)

    @property
    def copies_values(self) -> tuple[int, ...]:
        return self.copies if isinstance(self.copies, tuple) else (self.copies,)

    def capped(self, most: int) -> "ClassicSection":
        """--quick: every value at most ``most`` (a sweep's values that meet there are merged)."""
        if self.sweep:
            return dataclasses.replace(self, copies=tuple(sorted({min(c, most) for c in self.copies})))
        return dataclasses.replace(self, copies=min(self.copies, most))


@dataclass(frozen=True)
class FidSection:
    enabled: bool = True
    max_images: int = 2000  # per side; more costs time without changing FID much


@dataclass(frozen=True)
class AuditSection:
    """``medsyn audit`` of every generator's synthetic set on every fold: copies of the fold's training
    images (calibrated on its test images) and how well they give away who was in training."""

    enabled: bool = True
    max_images: int = 2000  # synthetic images audited per generator and fold


@dataclass(frozen=True)
class QuickSection:
    """--quick: the same protocol with every budget shrunk, to finish in minutes on a CPU."""

    steps: int = 200  # generator steps
    generator_width: float | None = 0.25  # channel multiplier for every trained generator (paper widths are slow on CPU)
    generator_batch: int | None = 32
    epochs: int = 3  # classifier epochs
    fid_images: int = 200
    max_train_per_class: int | None = 200  # cap real training images per class
    classic_copies: int = 2  # most copies per real image; a sweep keeps its values up to this one
    volumes: int = 2  # keep the smallest and the largest volume of the sweep


@dataclass(frozen=True)
class StudyConfig:
    name: str
    data: DataSection
    split: SplitSection
    generators: tuple[GeneratorSection, ...]
    classifiers: tuple[ClassifierSection, ...]
    classic: ClassicSection = ClassicSection()
    arms: tuple[Arm, ...] = ARMS
    volumes: tuple[float, ...] = (1.0,)  # synthetic images per class, as a multiple of that class's real count
    # The arms trained at every volume; the other arms with synthetic images use the first volume only.
    # None: every one. The liver-lesion paper's Fig. 8 sweeps real+synthetic; sweeping TSTR and
    # classic+synthetic as well costs 2.7x as many image-epochs on a MedMNIST study.
    sweep_arms: tuple[Arm, ...] | None = None
    seeds: tuple[int, ...] = (0,)
    fid: FidSection = FidSection()
    audit: AuditSection = AuditSection()
    quick: QuickSection = QuickSection()
    tsne: bool = True
    # Train every generator once per seed (classifier seed s adds generator seed s's samples), so the
    # spread over seeds is the generators' too; off, one generator per fold serves every seed.
    generator_seeds: bool = False
    device: str = "auto"
    base_dir: str = "."  # folder of the YAML (relative data paths start here); set by load_study
    budget: str = FULL  # which of the YAML's budgets this is (its ``budgets:`` section); set by load_study

    def __post_init__(self) -> None:
        object.__setattr__(self, "arms", tuple(Arm.parse(a) for a in self.arms))
        if self.sweep_arms is not None:
            object.__setattr__(self, "sweep_arms", tuple(Arm.parse(a) for a in self.sweep_arms))
            for arm in self.sweep_arms:
                if arm not in self.arms or not arm.uses_synthetic:
                    raise ConfigError(f"sweep_arms: {arm.value} is not one of this study's arms with synthetic images "
                                      f"({', '.join(a.value for a in self.arms if a.uses_synthetic) or 'none'})")
        uses_classic = any(a.uses_classic for a in self.arms)
        if uses_classic and not self.classic.preset:
            raise ConfigError("arms include classic augmentation but classic.preset is not set")
        if self.classic.sweep and not uses_classic:
            raise ConfigError(f"classic.copies lists {list(self.classic.copies)} to choose from, but no arm uses "
                              "classic augmentation (add classic or classic+synthetic to arms)")
        if any(a.uses_synthetic for a in self.arms) and not self.generators:
            raise ConfigError("arms include synthetic images but no generators are listed")
        if not self.classifiers:
            raise ConfigError("classifiers: list at least one")
        if any(v <= 0 for v in self.volumes):
            raise ConfigError(f"volumes must be positive multiples of the real per-class count, got {list(self.volumes)}")
        names = [g.name for g in self.generators]
        if len(set(names)) != len(names):
            raise ConfigError(f"generators: names must be unique, got {names}")
        if self.generator_seeds and any(g.run for g in self.generators):
            raise ConfigError("generator_seeds trains every generator once per seed; a loaded run (run:) is one "
                              "generator: give model: or recipe: instead")
        if self.split.kind == "kfold" and any(g.run for g in self.generators):
            raise ConfigError("a loaded generator run cannot serve k folds (it saw other folds' test images); "
                              "give model: to train one per fold")

    def with_quick(self) -> "StudyConfig":
        q = self.quick
        shrink = {k: v for k, v in (("width", q.generator_width), ("batch", q.generator_batch)) if v is not None}
        gens = tuple(dataclasses.replace(g, steps=min(g.steps, q.steps), set={**g.set, **shrink},
                                         refiner_steps=min(g.refiner_steps, q.steps),
                                         refiner_set={**g.refiner_set, **{k: v for k, v in shrink.items() if k == "width"}})
                     for g in self.generators)
        clss = tuple(dataclasses.replace(c, epochs=min(c.epochs or q.epochs, q.epochs)) for c in self.classifiers)
        vols = sorted(self.volumes)
        vols = tuple(vols if len(vols) <= q.volumes else vols[: q.volumes - 1] + vols[-1:])
        return dataclasses.replace(
            self, generators=gens, classifiers=clss, seeds=self.seeds[:1], volumes=vols,
            classic=self.classic.capped(q.classic_copies),
            fid=dataclasses.replace(self.fid, max_images=min(self.fid.max_images, q.fid_images)))


def _section(values: Any, cls: type, where: str):
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    return build_config(values, cls=cls, where=where)


def _list_of(values: Any, cls: type, where: str) -> tuple:
    if values is None:
        return ()
    if not isinstance(values, list):
        raise ConfigError(f"{where}: expected a list")
    out = []
    for i, item in enumerate(values):
        item = {"name": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(f"{where}[{i}]: expected a mapping with a name")
        check_keys(item, cls, f"{where}[{i}]")
        mappings = [k for k in ("set", "refiner_set") if k in {f.name for f in dataclasses.fields(cls)}]
        scalars = {k: v for k, v in item.items() if k not in mappings}
        built = build_config(scalars, cls=cls, where=f"{where}[{i}]")
        for key in mappings:
            extra = item.get(key) or {}
            if not isinstance(extra, dict):
                raise ConfigError(f"{where}[{i}].{key}: expected a mapping of key: value")
            built = dataclasses.replace(built, **{key: dict(extra)})
        out.append(built)
    return tuple(out)


def _classic_section(values: Any) -> ClassicSection:
    """The classic section; ``copies`` is one number or a list of them, which build_config does not type."""
    if not isinstance(values, dict) or "copies" not in values:
        return _section(values, ClassicSection, "classic")
    check_keys(values, ClassicSection, "classic")
    built = build_config({k: v for k, v in values.items() if k != "copies"}, cls=ClassicSection, where="classic")
    return dataclasses.replace(built, copies=_copies(values["copies"]))


def _copies(value: Any) -> int | tuple[int, ...]:
    def whole(item: Any) -> int:
        if isinstance(item, bool) or not isinstance(item, (int, float, str)):
            raise ValueError(item)
        number = float(item)
        if not number.is_integer():
            raise ValueError(item)
        return int(number)

    try:
        return tuple(whole(v) for v in value) if isinstance(value, list) else whole(value)
    except ValueError:
        raise ConfigError(f"classic.copies: expected a positive whole number or a list of them, got {value!r}") from None


def _scalars(values: Any, kind: type, where: str) -> tuple:
    items = values if isinstance(values, list) else [values]
    try:
        return tuple(kind(v) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a list of {kind.__name__}, got {values!r}") from None


def study_from_dict(raw: dict[str, Any], base_dir: Path, where: str = "study", budget: str = FULL) -> StudyConfig:
    """The study ``raw`` describes at ``budget``: "full" (as written), or a name in its ``budgets:``
    whose keys replace the study's top-level ones. Every budget is checked, whichever is chosen,
    so a mistake in one fails on any run. ("quick" is the runner's: load "full" and pass quick=True.)"""
    raw = dict(raw)
    budgets = _budgets(raw.pop("budgets", None), where)
    if budget != FULL and budget not in budgets:
        known = ", ".join([FULL, QUICK, *budgets])
        raise ConfigError(f"{where}: no budget {budget!r}; this study has {known} (add it under budgets:)")
    for name in budgets:
        if name != budget:
            _budget_study(raw, budgets, base_dir, where, name)
    return _budget_study(raw, budgets, base_dir, where, budget)


def _budget_study(raw: dict[str, Any], budgets: dict[str, dict], base_dir: Path, where: str, name: str) -> StudyConfig:
    if name == FULL:
        return _study(raw, base_dir, where, name)
    try:
        return _study({**raw, **budgets[name]}, base_dir, where, name)
    except ConfigError as err:  # which budget: the same key may be right in the study and wrong in the budget
        raise ConfigError(f"{where}: budgets.{name}: {str(err).removeprefix(where + ': ')}") from None


def _budgets(values: Any, where: str) -> dict[str, dict]:
    if values is None:
        return {}
    if not isinstance(values, dict) or not all(isinstance(v, dict) for v in values.values()):
        raise ConfigError(f"{where}: budgets: expected a mapping of budget name to a mapping of study keys")
    for name, overlay in values.items():
        if name in (FULL, QUICK):
            raise ConfigError(f"{where}: budgets.{name}: {name} is built in (the study as written"
                              f"{'' if name == FULL else ', shrunk by its quick: section'}); name the budget otherwise")
        extra = sorted(set(overlay) - set(BUDGET_KEYS))
        if extra:
            import difflib

            hint = difflib.get_close_matches(extra[0], BUDGET_KEYS, n=1)
            raise ConfigError(f"{where}: budgets.{name}: cannot set {', '.join(extra)}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else "")
                              + f"; a budget replaces only {', '.join(BUDGET_KEYS)}")
    return {str(k): v for k, v in values.items()}


def _study(raw: dict[str, Any], base_dir: Path, where: str, budget: str) -> StudyConfig:
    check_keys(raw, StudyConfig, where)
    for key in ("base_dir", "budget"):
        if key in raw:
            raise ConfigError(f"{where}: {key} is set by medsyn, not in the YAML"
                              + (" (choose one with --budget; define them under budgets:)" if key == "budget" else ""))
    kwargs: dict[str, Any] = {
        "name": str(raw.get("name") or Path(where).stem),
        "data": _section(raw.get("data"), DataSection, "data"),
        "split": _section(raw.get("split"), SplitSection, "split"),
        "generators": _list_of(raw.get("generators"), GeneratorSection, "generators"),
        "classifiers": _list_of(raw.get("classifiers"), ClassifierSection, "classifiers"),
        "classic": _classic_section(raw.get("classic")),
        "fid": _section(raw.get("fid"), FidSection, "fid"),
        "audit": _section(raw.get("audit"), AuditSection, "audit"),
        "quick": _section(raw.get("quick"), QuickSection, "quick"),
        "base_dir": str(base_dir),
        "budget": budget,
    }
    for key, kind in (("arms", str), ("volumes", float), ("sweep_arms", str), ("seeds", int)):
        if key in raw and not (key == "sweep_arms" and raw[key] is None):  # sweep_arms: null is its default
            kwargs[key] = _scalars(raw[key], kind, key)
    for key in ("tsne", "generator_seeds", "device"):
        if key in raw:
            kwargs[key] = build_config({key: raw[key]}, cls=_Flags, where=where).__dict__[key]
    return StudyConfig(**kwargs)


@dataclass(frozen=True)
class _Flags:
    tsne: bool = True
    generator_seeds: bool = False
    device: str = "auto"


def load_study(path: str | Path, budget: str = FULL) -> StudyConfig:
    """Read and check a study YAML at ``budget`` (see study_from_dict); relative data paths are taken
    from the YAML's folder."""
    path = Path(path)
    return study_from_dict(load_yaml(path), path.resolve().parent, where=str(path), budget=budget)


def to_plain(cfg: StudyConfig) -> dict[str, Any]:
    """The resolved study as plain data (for results.json and the report)."""
    return dataclasses.asdict(cfg)
