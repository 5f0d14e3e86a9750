"""`medsyn audit SYN --holdout HELD --out DIR`: fidelity, diversity, copies of training images and membership leaks."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer

from medsyn.errors import ConfigError, DataError
from medsyn.ui import console, out_console, progress, say


@dataclass
class Inputs:
    """The three sets (LabeledImages), where the held-out ones came from, and SYN's run folder if it is one."""

    synthetic: Any
    train: Any
    held: Any
    held_spec: str
    run: Path | None
    notices: list[str]


def audit_command(
    synthetic: str = typer.Argument(..., help="Synthetic set: any source `medsyn data` reads (x.npz, x.npz:test, a class folder, a `medsyn sample` folder) or a run folder (sampled here, as `medsyn fid` does)."),
    out: Path = typer.Option(..., "--out", help="Folder to create: audit.json, audit.html, copies.csv, nearest.csv, closest_pairs.png, distances.png."),
    real: Optional[str] = typer.Option(None, "--real", help="The images the generator was trained on (a source's train split unless the spec names one). Default for a run folder: the run's own training images; required otherwise."),
    holdout: Optional[str] = typer.Option(None, "--holdout", help="Real images the generator never saw (e.g. breastmnist.npz:test). Default: the test split of the training images' source."),
    features: str = typer.Option("inception", "--features", help="inception (the packaged FID Inception) | domain (a `medsyn classify` classifier.pt from --weights) | pixels (32x32 pixels: quick, no network) | densenet121 | densenet169."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="The feature network's file (see --features; default: none, the packaged Inception needs none)."),
    n: Optional[int] = typer.Option(None, "--n", help="Images per class to sample when SYN is a run folder (default: as many as the training images of the class)."),
    seed: int = typer.Option(0, "--seed", help="Seeds sampling from a run and the bootstrap intervals."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    batch: int = typer.Option(32, "--batch", help="Images per forward pass of the feature network."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache folder (default: $MEDSYN_CACHE_DIR, else ~/.cache/medsyn/features)."),
):
    """Audit a synthetic set: precision/recall/density/coverage, copies of training images (nearest neighbours
    in pixels, blind to flips and 2-pixel shifts, and in features, calibrated by held-out images), authenticity,
    and membership-inference AUCs (GAN-Leaks; LOGAN with a run's discriminator)."""
    from medsyn.audit import audit_sets, check_sets, write_audit
    from medsyn.commands.fid import is_run_folder
    from medsyn.curate import build_extractor, parse_feature_source
    from medsyn.imageio import atomic_dir, ensure_new_dir
    from medsyn.metrics.cache import FeatureCache

    started = time.perf_counter()
    parse_feature_source(features)  # a typo fails before any loading
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    is_run = is_run_folder(synthetic)
    if n is not None and not is_run:
        raise ConfigError("--n sets how many images to sample from a run folder, and SYN is not one")
    if not is_run and real is None:
        raise ConfigError("--real is needed: the images the generator was trained on (only a run folder knows its own)")
    ensure_new_dir(out)
    inputs = _load_inputs(synthetic, real, holdout, n, seed, device, is_run)
    say(inputs.notices)
    check_sets(inputs.synthetic, inputs.train, inputs.held)
    extractor = build_extractor(features, weights, device, inputs.train)
    feats = _features(inputs, extractor, FeatureCache(cache), batch, device)
    scorer = _discriminator(inputs.run, device)
    console.print(f"auditing {len(inputs.synthetic)} synthetic images against {len(inputs.train)} training and "
                  f"{len(inputs.held)} held-out images", highlight=False, soft_wrap=True)
    with progress() as bar:
        result = audit_sets(inputs.synthetic, inputs.train, inputs.held, extractor, features=feats, seed=seed,
                            discriminator=scorer, track=_tracker(bar))
    record = {"synthetic": synthetic, "real": real, "holdout": holdout or inputs.held_spec, "features": features,
              "weights": str(weights) if weights else None, "n": n, "seed": seed, "notices": inputs.notices}
    with atomic_dir(out) as tmp:
        write_audit(tmp, result, inputs.synthetic.images, inputs.train.images, record)
    say(result.warnings)
    _print_tables(result)
    console.print(f"wrote {out} (audit.html, audit.json, copies.csv) in {time.perf_counter() - started:.1f} s",
                  highlight=False, soft_wrap=True)
    out_console.print(result.verdict(), highlight=False)


def _load_inputs(synthetic: str, real: str | None, holdout: str | None, n: int | None, seed: int, device: str,
                 is_run: bool) -> Inputs:
    """The three sets. The real ones first: a held-out set that made SYN is refused before a run is sampled."""
    from medsyn.commands.fid import load_data_side, sample_run_side
    from medsyn.provenance import read_provenance, record_of_run

    notices: list[str] = []
    if is_run:
        state, cfg = _run_state(synthetic)
        geometry = {"size": state["model"]["size"], "channels": state["model"]["channels"],
                    "interpolation": cfg.interpolation}
        load = dict(state["data"]["load"])
        if real is None:
            from medsyn.train.run import DataOptions, load_training_data

            train = load_training_data(DataOptions.from_stored(load), cfg, purpose="auditing against")
            train_spec, manifest = load["source"], load.get("manifest")
        else:
            train, train_spec, manifest = _read_train(real, geometry), real, None
        records, run = [record_of_run(synthetic, state["data"], "generator training")], Path(synthetic)
    else:
        geometry, records, run = {}, read_provenance(synthetic), None
        train, train_spec, manifest = _read_train(real, geometry), real, None
    notices += train.notices
    held_spec, held_manifest = (holdout, None) if holdout else _default_holdout(train_spec, manifest, train)
    held = _read(held_spec, geometry, held_manifest)
    notices.append(f"held-out: {len(held)} images of {held_spec}" + ("" if holdout else " (the test split of the "
                                                                       "training images' source; --holdout to choose)"))
    if _same_split(held_spec, train_spec, train):
        raise ConfigError(f"--holdout {held_spec} is the split the generator was trained on; give images it never saw")
    from medsyn.provenance import image_hashes

    training = set(image_hashes(train.images))  # both checks below compare against the training images
    notices += _check_provenance(synthetic, records, training, held_spec, held_manifest)
    held = _without_training_duplicates(held, training, notices)
    if is_run:
        syn = sample_run_side(synthetic, train, n, seed, device).images
    else:
        syn = load_data_side(synthetic).images
        notices += syn.notices
    return Inputs(syn, train, held, held_spec, run, notices)


def _same_split(held_spec: str, train_spec: str, train) -> bool:
    from medsyn.commands.fid import source_origin
    from medsyn.data.loader import parse_spec

    (held_base, held_split), (train_base, _) = parse_spec(held_spec), parse_spec(train_spec)
    trained_split = str(train.splits[0]) if train.splits is not None and len(train) else None
    return source_origin(held_base) == source_origin(train_base) and held_split == trained_split


def _run_state(run: str):
    from medsyn.train.checkpoint import load_checkpoint
    from medsyn.train.setup import resolve_config

    state = load_checkpoint(Path(run))
    cfg, _ = resolve_config(state["config"], user_layers=0)
    return state, cfg


def _read(spec: str, geometry: dict, manifest: str | None = None):
    from medsyn.data import load_source

    return load_source(spec, manifest=manifest, **geometry)


def _read_train(spec: str, geometry: dict):
    """TRAIN as given: a spec naming a split is that split; a source with splits gives its train split."""
    from medsyn.data.loader import parse_spec
    from medsyn.data.splits import source_split, take_split

    data = _read(spec, geometry)
    if parse_spec(spec)[1] is not None:
        return data
    return take_split(source_split(data), "train", "auditing against")


def _default_holdout(train_spec: str, manifest: str | None, train) -> tuple[str, str | None]:
    """The test split of the training images' source, as a spec; refused when the training images are that split."""
    from medsyn.data.loader import parse_spec

    base, split = parse_spec(train_spec)
    if split == "test" or (train.splits is not None and len(train) and train.splits[0] == "test"):
        raise ConfigError(f"the training images are the test split of {base}: give --holdout, real images the "
                          f"generator never saw")
    return f"{base}:test", manifest


def _check_provenance(synthetic: str, records, training: set[str], held_spec: str, held_manifest: str | None
                      ) -> list[str]:
    """Refuse SYN when any held-out image went into making it (``training``: the training images'
    identities); notices say what was checked."""
    from medsyn.provenance import image_hashes

    notices = []
    if records is None:
        notices.append(f"warning: {synthetic} has no provenance.json: medsyn cannot check that none "
                       f"of the held-out images went into making it")
    for record in records or []:
        if not record.image_hashes:
            notices.append(f"warning: the {record.role} record of {record.run or record.source} holds no image "
                           f"identities (made before medsyn recorded them): the held-out images cannot be checked "
                           f"against it")
            continue
        load = record.load
        geometry = {k: load.get(k) for k in ("size", "channels")} | {"interpolation": load.get("interpolation",
                                                                                              "bilinear")}
        reread = _read(held_spec, geometry, held_manifest)
        # An image a dataset holds in both splits (BreastMNIST has one) reached the generator as a
        # training image: not a leak, but no measure of newness either (left out below).
        shared = len(set(image_hashes(reread.images)) & set(record.image_hashes) - training)
        if shared:
            where = f" (run {record.run})" if record.run else ""
            raise DataError(synthetic, f"was made from {shared} of the held-out images {held_spec} ({record.role}"
                                       f"{where}): they cannot calibrate or test it; give --holdout images the "
                                       f"generator never saw")
        notices.append(f"provenance: none of the {len(reread)} held-out images is among the {record.images} "
                       f"{record.role} images of {record.run or record.source}, other than copies of training images")
    return notices


def _without_training_duplicates(held, training: set[str], notices: list[str]):
    """The held-out set without images that are pixel for pixel training images (a dataset that holds
    a scan in two splits): the generator saw them, so they cannot say what a new image looks like."""
    from medsyn.provenance import image_hashes

    new = np.array([h not in training for h in image_hashes(held.images)], dtype=bool)
    if new.all():
        return held
    if new.sum() < len(new) / 2:  # not a dataset's few duplicates: the wrong images were given
        raise DataError(held.source, f"{int((~new).sum())} of its {len(new)} images are pixel for pixel images the "
                                     f"generator was trained on: give --holdout images the generator never saw")
    notices.append(f"warning: {int((~new).sum())} of the held-out images are pixel for pixel training images; "
                   f"left out of the held-out set ({int(new.sum())} remain)")
    return held.subset(np.flatnonzero(new))


def _features(inputs: Inputs, extractor, store, batch: int, device: str):
    from medsyn.commands.progress import features_with_progress
    from medsyn.train.setup import resolve_device

    torch_device = resolve_device(device)
    console.print(f"features: {extractor.name} on {torch_device}", highlight=False)
    return tuple(features_with_progress(label, data, extractor, store, batch, torch_device)
                 for label, data in (("synthetic", inputs.synthetic), ("train", inputs.train),
                                     ("held-out", inputs.held)))


def _discriminator(run: Path | None, device: str):
    if run is None:
        return None
    from medsyn.audit.discriminator import discriminator_scorer

    scorer, why_not = discriminator_scorer(run, device)
    if why_not:
        say([why_not])
    return scorer


def _tracker(bar):
    """track(label, total) for audit_sets: one bar per search, with its images per second."""
    def track(label: str, total: int):
        task = bar.add_task(label, total=total, info="")
        started, done = time.perf_counter(), [0]

        def advance(count: int) -> None:
            done[0] += count
            rate = done[0] / max(time.perf_counter() - started, 1e-9)
            bar.update(task, completed=done[0], info=f"{rate:,.0f} img/s")

        return advance

    return track


def _print_tables(result) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title="medsyn audit", box=box.SIMPLE)  # no vertical rules: fits 80 columns (a log file's)
    for column in ("class", "images", "copies", "share", "precision", "recall", "density", "coverage"):
        table.add_column(column, justify="left" if column == "class" else "right", no_wrap=True,
                         min_width=len(column), max_width=16 if column == "class" else None)
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    overall = (result.fidelity or {}).get("overall") or {}
    rows = [("all", {"synthetic": len(result.copies), "copies": int(result.copies.sum()),
                     "share": float(result.copies.mean()), **overall})] + list(result.per_class().items())
    for name, row in rows:
        table.add_row(name, str(row["synthetic"]), str(row["copies"]), f"{100 * row['share']:.1f}%",
                      *(fmt(row.get(m)) for m in ("precision", "recall", "density", "coverage")))
    console.print(table)
    pix = result.pixels.summary()
    console.print(f"pixel thresholds: copies under {pix['copy_threshold']:.4g} (half the held-out 1st percentile, "
                  f"{pix['threshold_held_out_p1']:.4g}); close (under the percentile): {pix['below_threshold']}; below "
                  f"the held-out minimum: {pix['below_minimum']}; authenticity {pix['authenticity']:.3f}", highlight=False,
                  soft_wrap=True)
