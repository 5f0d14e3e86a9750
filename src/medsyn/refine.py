"""Trained refiner (simgan, unit, munit) + a labeled image set -> the refined set on disk, written atomically.

Labels pass through unchanged; the output is a sample folder like ``medsyn sample`` writes (class
folders, classes.txt, manifest.csv, a grid per class), so every later stage reads it the same way.
The manifest keeps the input manifest's columns (a ``medsyn sample`` folder's model, checkpoint and
seed) and adds the refiner's provenance and each input image's path.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from medsyn.data import load_source, source_split
from medsyn.data.loader import parse_spec
from medsyn.data.splits import take_split
from medsyn.data.types import LabeledImages
from medsyn.errors import DataError, RunError
from medsyn.imageio import atomic_dir, class_dir_name, ensure_new_dir, save_grid, write_image_folder
from medsyn.train.batches import step_seed
from medsyn.train.checkpoint import CHECKPOINT, file_sha256, load_checkpoint
from medsyn.models.base import Role
from medsyn.provenance import Record, read_provenance, record_of_images, record_of_run, write_provenance
from medsyn.train.refiner import build_translators
from medsyn.train.setup import resolve_config, resolve_device

STYLE_STREAM = 2000  # seeds the per-image MUNIT style codes
GRID_PAIRS = 4  # rows of 8 inputs, each above its row of 8 refinements, per class grid
GRID_ROW = 8
OWN_COLUMNS = ("path", "label", "class_name")  # rewritten for the output, not carried over


@dataclass
class LoadedRefiner:
    translators: list[torch.nn.Module]  # one per class (per_class runs) or one for all classes
    cfg: object
    model: dict
    data: dict
    step: int
    checkpoint_sha256: str
    device: torch.device
    run_dir: Path | None = None


def load_refiner(run_dir: str | Path, device: str = "auto") -> LoadedRefiner:
    """The refining networks of a refiner run, in eval mode on ``device``."""
    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir)
    model = state["model"]
    if model.get("role") != Role.REFINER:
        raise RunError(f"{run_dir}: a {model['name']} generator run; `medsyn refine` needs a refiner run "
                       "(simgan, unit, munit); use `medsyn sample` for generators")
    cfg, spec = resolve_config(state["config"], user_layers=0)  # as the run saved it
    groups = model["num_classes"] if model["per_class"] else 1
    torch_device = resolve_device(device)
    translators = build_translators(spec, cfg, model["size"], model["channels"], groups)
    for translator, saved in zip(translators, state["refiners"], strict=True):
        translator.load_state_dict(saved["generator"])
        translator.to(torch_device).eval()
    return LoadedRefiner(translators, cfg, model, state["data"], int(state["step"]),
                         file_sha256(run_dir / CHECKPOINT), torch_device, run_dir)


@torch.no_grad()
def refine_images(loaded: LoadedRefiner, images: np.ndarray, labels: np.ndarray, seed: int = 0, batch: int = 64,
                  on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Refine float32 (N, C, S, S) images in [0, 1]; image i goes through its class's refiner.

    Deterministic: image i depends only on itself, its label and (for MUNIT's style) (seed, i).
    """
    out = np.empty_like(images)
    groups = [labels == k for k in range(len(loaded.translators))] if len(loaded.translators) > 1 else [np.ones(len(labels), bool)]
    for translator, member in zip(loaded.translators, groups):
        index = np.flatnonzero(member)
        for start in range(0, len(index), batch):
            chunk = index[start:start + batch]
            x = torch.from_numpy(images[chunk]).to(loaded.device) * 2 - 1
            style = None
            if translator.style_dim:
                style = torch.stack([torch.randn(translator.style_dim, generator=torch.Generator().manual_seed(
                    step_seed(seed, int(i), stream=STYLE_STREAM))) for i in chunk]).to(loaded.device)
            refined = translator.refine(x, style)
            out[chunk] = ((refined.float() + 1) / 2).clamp_(0, 1).cpu().numpy()
            if on_batch is not None:
                on_batch(len(chunk))
    return out


def read_input(loaded: LoadedRefiner, source: str) -> LabeledImages:
    """The images to refine, conformed as the run conformed its data, and checked against the run.

    A synthetic set is refined whole; of a real source, only its train split (the source's one
    split), unless the spec names another split (then with a warning in ``notices``).
    """
    cfg, model = loaded.cfg, loaded.model
    data = load_source(source, size=cfg.size, channels=cfg.channels, interpolation=cfg.interpolation)
    data = take_split(source_split(data), parse_spec(source)[1] or "train", "refining")
    if (data.size, data.channels) != (model["size"], model["channels"]):
        raise DataError(source, f"images are {data.size}x{data.size}x{data.channels} but the refiner was trained on "
                        f"{model['size']}x{model['size']}x{model['channels']}")
    trained = list(loaded.data["class_names"])
    if model["per_class"] and list(data.class_names) != trained:
        raise DataError(source, f"classes {list(data.class_names)} differ from the classes the per-class refiners "
                        f"were trained on {trained}")
    if len(data) == 0:
        raise DataError(source, "holds no images to refine")
    return data


def input_manifest(source: str, data: LabeledImages) -> tuple[list[str], list[dict[str, str]]]:
    """Columns of the input's manifest.csv (if it has one) and its row for every input image."""
    root = Path(source)
    csv_path = root / "manifest.csv"
    if not (root.is_dir() and csv_path.is_file() and data.paths is not None):
        return [], [{} for _ in range(len(data))]
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        columns = [c for c in (reader.fieldnames or []) if c not in OWN_COLUMNS]
        by_path = {str((root / row["path"]).resolve()): row for row in reader if row.get("path")}
    rows = [by_path.get(str(Path(p).resolve()), {}) for p in data.paths]
    return columns, [{c: row.get(c, "") for c in columns} for row in rows]


def write_refined(run: str | Path | LoadedRefiner, source: str, out: str | Path, seed: int = 0, batch: int = 64,
                  device: str = "auto", on_batch: Callable[[int], None] | None = None) -> Path:
    """Refine every image of ``source`` (any load_source source) into the sample folder ``out``."""
    ensure_new_dir(out)
    loaded = run if isinstance(run, LoadedRefiner) else load_refiner(run, device)
    data = read_input(loaded, source)
    refined = refine_images(loaded, data.images, data.labels, seed=seed, batch=batch, on_batch=on_batch)
    columns, carried = input_manifest(source, data)
    rows = [{**{c: row[c] for c in columns if c not in ("refiner", "input_path")},
             "refiner": loaded.model["name"], "refiner_checkpoint_sha256": loaded.checkpoint_sha256,
             "refiner_step": loaded.step, "refine_seed": seed,
             "input_path": data.paths[i] if data.paths is not None else f"{source}#{i}"}
            for i, row in enumerate(carried)]
    with atomic_dir(out) as tmp:
        write_image_folder(tmp, refined, data.labels, data.class_names, bit_depth=data.bit_depth, rows=rows, stem="ref")
        write_provenance(tmp, refined_provenance(loaded, source, data), {
            "command": "refine", "run": str(Path(loaded.run_dir).resolve()) if loaded.run_dir else None,
            "model": loaded.model["name"], "checkpoint_sha256": loaded.checkpoint_sha256, "step": loaded.step,
            "seed": seed, "input": source})
        for k, name in enumerate(data.class_names):
            member = np.flatnonzero(data.labels == k)[: GRID_PAIRS * GRID_ROW]
            if len(member):
                save_grid(tmp / f"grid_{class_dir_name(name)}.png", before_after(data.images[member], refined[member]),
                          nrow=GRID_ROW)
    return Path(out)


def refined_provenance(loaded: LoadedRefiner, source: str, data: LabeledImages) -> list[Record]:
    """The input's records (a synthetic set's own, or the real input images themselves), plus the
    real images the refiner trained on."""
    if data.format == "medsyn-samples":
        inherited = read_provenance(source) or []
    else:
        inherited = [record_of_images("refined real images", data, loaded.cfg.interpolation)]
    return inherited + [record_of_run(loaded.run_dir, loaded.data, "refiner training")]


def before_after(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Rows of GRID_ROW inputs, each followed by the row of their refinements (blank cells pad the last row)."""
    rows = []
    for start in range(0, len(before), GRID_ROW):
        for part in (before[start:start + GRID_ROW], after[start:start + GRID_ROW]):
            pad = np.ones((GRID_ROW - len(part), *part.shape[1:]), dtype=part.dtype)
            rows.append(np.concatenate([part, pad]))
    return np.concatenate(rows)
