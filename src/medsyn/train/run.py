"""A training run as a folder: create or resume it, load its data, train, leave nothing half-made."""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from medsyn.atomic import write_text
from medsyn.config import TrainConfig, to_dict
from medsyn.data import load_source
from medsyn.data.loader import parse_spec
from medsyn.data.splits import source_split, take_split
from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError, DataError, RunError
from medsyn.models.base import AnySpec, Conditioning, Role
from medsyn.provenance import image_hashes
from medsyn.recipes import DEFAULT_RECIPE, describe_recipe, load_recipe
from medsyn.train.checkpoint import CHECKPOINT, load_checkpoint
from medsyn.train.gan import GanTrainer
from medsyn.train.loop import TrainResult, fit
from medsyn.train.refiner import RefinerTrainer
from medsyn.train.setup import resolve_config

# keys a resumed run may change: they say how long and where it runs, not what it learns
RESUMABLE_KEYS = {"steps", "epochs", "device", "log_every", "ckpt_every", "grid_every", "amp", "recompute_blocks"}


@dataclass(frozen=True)
class DataOptions:
    """How the training images are read (saved with the run, so --resume needs no --data)."""

    source: str
    manifest: str | None = None
    axis: int = 2
    slices: tuple[int, int] | None = None
    window: tuple[float, float] | None = None
    refine_source: str | None = None  # refiners: the synthetic images to refine (--source; any load_source source)

    @classmethod
    def from_stored(cls, load: dict[str, Any]) -> "DataOptions":
        """The options a run saved in data.json / its checkpoint ("load"), as they were given."""
        return cls(load["source"], load["manifest"], load["axis"], tuple(load["slices"]) if load["slices"] else None,
                   tuple(load["window"]) if load["window"] else None, load.get("refine_source"))


def fingerprint(data: LabeledImages) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(data.images).tobytes())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()[:16]


def load_training_data(options: DataOptions, cfg: TrainConfig, purpose: str = "training on") -> LabeledImages:
    """The images a run trains on: the train split (``source_split``) of the source, or the split
    the source spec (``x.npz:test``) or ``split`` names, with a notice saying which (and a warning
    in ``notices`` prefixed "warning:" when it is a held-out split)."""
    data = load_source(options.source, size=cfg.size, channels=cfg.channels, interpolation=cfg.interpolation,
                       manifest=options.manifest, axis=options.axis, slices=options.slices, window=options.window)
    explicit = parse_spec(options.source)[1]
    data = take_split(source_split(data), explicit or cfg.split, purpose)
    counts = data.class_counts()
    empty = [data.class_names[k] for k, c in enumerate(counts) if c == 0]
    if cfg.per_class and empty:
        raise DataError(options.source, f"class {empty[0]!r} has no images; per-class training needs every class")
    if len(data) < 2:
        raise DataError(options.source, f"needs at least 2 images to train, found {len(data)}")
    return data


def small_data_warning(data: LabeledImages, cfg: TrainConfig) -> list[str]:
    """A warning when a batch is larger than the images it draws from (the set, or a class per class)."""
    smallest = min(c for c in data.class_counts() if c) if cfg.per_class else len(data)
    if smallest >= cfg.batch:
        return []
    what = "images in its smallest class (one generator per class)" if cfg.per_class else "training images"
    return [f"warning: {smallest} {what}, fewer than the batch of {cfg.batch}: every batch repeats images and the "
            f"discriminator can memorise them; use --batch {smallest} or fewer, or more data"]


def _data_info(options: DataOptions, data: LabeledImages, cfg: TrainConfig) -> dict[str, Any]:
    """data.json: how the training images were read, and each one's identity (medsyn.provenance)."""
    load = asdict(options)
    load["source"] = _resolved(options.source)
    if options.refine_source is not None:
        load["refine_source"] = _resolved(options.refine_source)
    return {
        "load": load, "format": data.format, "class_names": list(data.class_names), "class_counts": data.class_counts(),
        "images": len(data), "size": data.size, "channels": data.channels, "bit_depth": data.bit_depth,
        "interpolation": cfg.interpolation, "split": str(data.splits[0]) if data.splits is not None else "train",
        "fingerprint": fingerprint(data), "notices": list(data.notices), "image_hashes": image_hashes(data.images),
    }


def _resolved(source: str) -> str:
    return str(Path(source).resolve()) if Path(source.split(":")[0]).exists() else source


def _refiner_data(options: DataOptions, cfg: TrainConfig, real: LabeledImages, spec: AnySpec) -> LabeledImages:
    """The synthetic images a refiner learns to refine, checked against the real ones before any training."""
    if options.refine_source is None:
        raise ConfigError(f"{spec.name} is a refiner: --source SYNTHETIC is required (the images to refine, "
                          "e.g. a `medsyn sample` folder), next to --data REAL")
    synthetic = load_training_data(DataOptions(options.refine_source), cfg)
    if (synthetic.size, synthetic.channels) != (real.size, real.channels):
        raise DataError(options.refine_source, f"synthetic images are {synthetic.size}x{synthetic.size}x{synthetic.channels} "
                        f"but the real ones are {real.size}x{real.size}x{real.channels}; pass --set size=... channels=... to conform both")
    if list(synthetic.class_names) != list(real.class_names):
        raise DataError(options.refine_source, f"classes {list(synthetic.class_names)} differ from the real data's "
                        f"{list(real.class_names)}; refiners keep labels, so both sets need the same classes")
    return synthetic


def _check_unchanged(out: Path, resolved: dict[str, Any], stored: dict[str, Any]) -> None:
    # compare typed values: "--set width=0.25" arrives as a string but resolves to the stored 0.25
    def same(a, b):
        return list(a) == list(b) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b
    changed = {k for k, v in resolved.items() if k not in RESUMABLE_KEYS and k in stored and not same(v, stored[k])}
    if changed:
        raise ConfigError(f"{out}: cannot change {', '.join(sorted(changed))} when resuming; start a new --out instead")


@dataclass
class PreparedRun:
    trainer: GanTrainer | RefinerTrainer
    spec: AnySpec
    data: LabeledImages
    notices: list[str] = field(default_factory=list)


def prepare_run(out: Path, layers: list[dict[str, Any]], data_options: DataOptions | None, resume: bool) -> PreparedRun:
    """Validate everything (config, data, run folder) before anything is written."""
    out = Path(out)
    state = None
    recipe_notice = None
    if not resume and not any("model" in layer for layer in layers):
        # No model chosen: medsyn's recommended recipe, under everything the user did set.
        layers = [load_recipe(DEFAULT_RECIPE), *layers]
        recipe_notice = (f"no --model given: training medsyn's recommended recipe {DEFAULT_RECIPE!r} "
                         f"({describe_recipe()}); pass --model NAME for a paper's model")
    user_layers = len(layers)
    if resume:
        state = load_checkpoint(out)
        stored = dict(state["config"])
        if any(k in layer for layer in layers for k in ("steps", "epochs")):
            # a new run length replaces the stored one, whichever of steps/epochs gave it
            stored.pop("steps"), stored.pop("epochs")
        layers = [stored, *layers]
        if data_options is None:
            data_options = DataOptions.from_stored(state["data"]["load"])
    else:
        if (out / CHECKPOINT).exists():
            raise RunError(f"{out}: a run is already here; pass --resume to continue it or choose another --out")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise RunError(f"{out}: exists and is not empty; choose another --out")
        if data_options is None:
            raise ConfigError("--data is required for a new run")
    cfg, spec = resolve_config(*layers, user_layers=user_layers)
    if state is not None:
        _check_unchanged(out, to_dict(cfg), state["config"])
        if data_options.refine_source is None and state["data"]["load"].get("refine_source"):
            data_options = replace(data_options, refine_source=state["data"]["load"]["refine_source"])
    refiner = spec.role is Role.REFINER
    if not refiner and data_options.refine_source is not None:
        raise ConfigError(f"--source is for refiners (simgan, unit, munit); {spec.name} is a generator and trains on --data alone")
    data = load_training_data(data_options, cfg)
    data.notices = [*data.notices, *small_data_warning(data, cfg)]
    synthetic = _refiner_data(data_options, cfg, data, spec) if refiner else None
    info = _data_info(data_options, data, cfg)
    if synthetic is not None:
        info["synthetic"] = {"fingerprint": fingerprint(synthetic), "images": len(synthetic),
                             "class_counts": synthetic.class_counts(), "format": synthetic.format}
    if state is not None and state["data"]["fingerprint"] != info["fingerprint"]:
        raise RunError(f"{out}: the data differ from the data this run was trained on ({state['data']['images']} "
                       f"images then, {info['images']} now); resume with the same --data (a run made before medsyn "
                       f"kept held-out images out trained on the whole of a source without a split)")
    if state is not None and state["data"].get("synthetic") != info.get("synthetic"):
        raise RunError(f"{out}: the synthetic images differ from those this run was trained on; resume with the same --source")
    if synthetic is not None:
        trainer = RefinerTrainer(cfg, spec, data, synthetic, out, info)
    else:
        trainer = GanTrainer(cfg, spec, data, out, info)
    if state is not None:
        trainer.load_state_dict(state)
    notices = list(data.notices) + (list(synthetic.notices) if synthetic is not None else []) + trainer.notices
    if recipe_notice:
        notices.insert(0, recipe_notice)
    if refiner:
        notices.append(f"{spec.name}: {'one refiner per class' if cfg.per_class else 'one refiner for all classes'}; "
                       "labels pass through unchanged")
    elif spec.conditioning is Conditioning.NEVER and not any(l.get("per_class") for l in layers):
        notices.append(f"{spec.name} has no class input: training one generator per class")
    elif cfg.per_class and not any("per_class" in l for l in layers):
        notices.append(f"{spec.name}: one generator per class, as its paper trained it (--conditional: one "
                       f"generator conditioned on all classes)")
    if not any(k in l for l in layers for k in ("steps", "epochs")) and ("steps" in spec.train_defaults
                                                                          or "epochs" in spec.train_defaults):
        length = "steps" if "steps" in spec.train_defaults else "epochs"
        notices.append(f"{spec.name}: {spec.train_defaults[length]:g} {length}, its paper's run length "
                       f"({trainer.total_steps} steps here; --steps or --epochs to change it)")
    note = spec.size_note(data.size)
    if note:
        notices.append(note)
    return PreparedRun(trainer, spec, data, notices)


def execute_run(prepared: PreparedRun, on_progress: Callable | None = None) -> TrainResult:
    """Create the run folder and train; a run that fails before its first checkpoint leaves no folder."""
    trainer = prepared.trainer
    out, main = trainer.run_dir, trainer.ctx.is_main
    trainer.ctx.barrier()  # under torchrun: every rank has checked the run folder before rank 0 writes it
    created = not out.exists() or not any(out.iterdir())
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yaml", yaml.safe_dump(to_dict(trainer.cfg), sort_keys=False))
        write_text(out / "data.json", json.dumps(trainer.data_info, indent=2))
    try:
        return fit(trainer, on_progress)
    except BaseException:
        if main and created and not (out / CHECKPOINT).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
