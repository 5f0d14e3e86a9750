"""Time to quality: train for M minutes of wall clock and measure FID against a real-vs-real floor as it goes.

    python bench/quality.py --data ../shared/data/medmnist/breastmnist.npz --minutes 30
    python bench/quality.py --data phantoms-seed0 --reference phantoms-seed1 --minutes 5 --model dcgan --set width=0.25

Definition, identical for both sides: the reference is held-out real data (``--reference``, else
the test split of SRC: its own, or the seeded split every medsyn command uses), the floor is FID(n real training images,
reference) and F is FID(n synthetic images, reference), both n-image sets drawn with the training
split's class proportions (largest-remainder rounding, a seeded draw per class). A generator that
copies its training images therefore scores ratio 1 at best. Precision and recall (Kynkäänniemi et
al. 2019, k=3) compare the same synthetic and reference Inception features. Diversity is, for the
least varied class, the mean pairwise distance between its synthetic images' Inception features
over the same for its real training images (1: as varied as the real class; a class drawn as one
repeated image scores 0). Pattern is the fixed-pattern coherence of the synthetic images
(``medsyn.metrics.texture``: about 1 when each image's fine texture is its own, up to sqrt(n) when
all share one, as a checkerboard drawn at the same pixels in every sample), beside the real images'.

Every --every minutes of training (evaluation time excluded) and at the end, the run stops at a
step boundary (its checkpoint saved), is evaluated from its folder as a user would (the EMA
generator through ``medsyn.sample``, medsyn's FID with its feature cache), and resumes. It prints a
header line and one line per evaluation; the last line is the final evaluation's. ``quality.json``
in the run folder holds every line's numbers, the arguments, the torch version and thread count.
"""
from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from medsyn.atomic import write_json
from medsyn.config import parse_overrides
from medsyn.data import load_source
from medsyn.data.loader import parse_spec
from medsyn.data.splits import source_split
from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError, MedsynError
from medsyn.metrics.cache import FeatureCache
from medsyn.metrics.features import FeatureExtractor, InceptionExtractor
from medsyn.metrics.fid import SmallSampleWarning, compute_features, fid_from_features
from medsyn.metrics.prdc import precision_recall
from medsyn.metrics.texture import fixed_pattern_coherence
from medsyn.recipes import load_config_layer
from medsyn.sample import load_generator, synthesize
from medsyn.train.run import DataOptions, PreparedRun, execute_run, prepare_run

PR_K = 3  # Kynkäänniemi et al.'s neighbourhood size
UNBOUNDED_STEPS = 10**9  # the clock, not the step count, ends the run unless the user gives steps or epochs
LINE = ("{minutes:5.1f} min  step {step:5d}  FID {fid:.2f} floor {floor:.2f} ratio {ratio:.3f}  "
        "precision {precision:.3f} recall {recall:.3f}  diversity {diversity:.2f}  pattern {pattern:.2f} (real {pattern_real:.2f})")


@dataclass(frozen=True)
class Scores:
    minutes: float  # training wall clock so far, evaluations excluded
    step: int
    fid: float
    floor: float
    precision: float
    recall: float
    diversity: float  # the least diverse class: its within-class spread over the real images' (1 = as varied)
    pattern: float  # fixed-pattern coherence of the synthetic images (medsyn.metrics.texture; ~1 independent textures)
    pattern_real: float  # the same for the n real training images

    @property
    def ratio(self) -> float:
        return self.fid / self.floor

    def line(self) -> str:
        return LINE.format(ratio=self.ratio, **asdict(self))


def class_quota(counts: list[int], n: int) -> list[int]:
    """n split over classes in proportion to ``counts``, by largest remainder (ties to the lower class)."""
    total = sum(counts)
    exact = [n * c / total for c in counts]
    quota = [int(e) for e in exact]
    for k in sorted(range(len(counts)), key=lambda k: (quota[k] - exact[k], k))[:n - sum(quota)]:
        quota[k] += 1
    return quota


def within_class_spread(features: np.ndarray, quota: list[int]) -> np.ndarray:
    """Mean pairwise Euclidean distance between the Inception features of each class's images.

    ``features`` are class-major with ``quota[k]`` rows of class k. A class drawn as one repeated
    image has spread 0; NaN for a class with fewer than two images.
    """
    spreads, start = [], 0
    for count in quota:
        block = features[start:start + count].astype(np.float64)
        start += count
        if count < 2:
            spreads.append(np.nan)
            continue
        squared = (block**2).sum(1)
        distances = np.sqrt(np.clip(squared[:, None] + squared[None, :] - 2 * block @ block.T, 0, None))
        spreads.append(distances.sum() / (count * (count - 1)))
    return np.array(spreads)


def diversity_ratio(synthetic: np.ndarray, real: np.ndarray, quota: list[int]) -> float:
    """The smallest ratio over classes of the synthetic images' within-class spread to the real ones'."""
    with np.errstate(invalid="ignore", divide="ignore"):  # a class without spread on both sides is left out
        ratios = within_class_spread(synthetic, quota) / within_class_spread(real, quota)
    return float(np.nanmin(ratios)) if np.isfinite(ratios).any() else float("nan")


def proportional_draw(labels: np.ndarray, quota: list[int], seed: int) -> np.ndarray:
    """Indices of a seeded draw without replacement of quota[k] rows of each class k, class-major."""
    rng = np.random.default_rng(seed)
    return np.concatenate([np.sort(rng.choice(np.flatnonzero(labels == k), count, replace=False))
                           for k, count in enumerate(quota)]).astype(np.int64)


def real_draw(train: LabeledImages, quota: list[int], seed: int) -> np.ndarray:
    """The n real training images both sides are compared with, class-major by ``quota``."""
    return train.images[proportional_draw(train.labels, quota, seed)]


def synthetic_draw(run_dir: Path, quota: list[int], seed: int, device: str) -> tuple[np.ndarray, int]:
    """(n synthetic images of the run's EMA generator drawn with ``quota``'s proportions, the checkpoint's step)."""
    loaded = load_generator(run_dir, device)
    classes = max(1, loaded.model["num_classes"])
    quota = quota if classes == len(quota) else [sum(quota)]  # unconditional: one pool
    images, labels = synthesize(loaded, max(quota), seed)
    return images[proportional_draw(labels, quota, seed)], loaded.step


@dataclass
class Evaluator:
    """Scores a run folder against fixed reference features; the floor is computed once, at build time.

    Attributes:
        extractor: the FID Inception (or any FeatureExtractor).
        cache: feature cache for the real sides (synthetic images change every time: never cached).
        device: where the generator and the extractor run.
        seed: seeds the real draw and the synthesis.
        quota: images per class on each side (the training split's proportions of n).
        reference: reference features (R, D).
        floor: FID(n real training images, reference).
    """

    extractor: FeatureExtractor
    cache: FeatureCache | None
    device: str
    seed: int
    quota: list[int]
    reference: np.ndarray
    real: np.ndarray  # features of the n real training images, class-major by quota
    floor: float
    pattern_real: float  # fixed-pattern coherence of the same n real images

    @classmethod
    def build(cls, train: LabeledImages, reference: LabeledImages, n: int, seed: int, extractor: FeatureExtractor,
              cache: FeatureCache | None, device: str) -> "Evaluator":
        quota = class_quota(train.class_counts(), n)
        ref = compute_features(reference, extractor, cache=cache, device=device)
        real_images = real_draw(train, quota, seed)
        real = compute_features(real_images, extractor, cache=cache, device=device)
        return cls(extractor, cache, device, seed, quota, ref, real, fid(real, ref), fixed_pattern_coherence(real_images))

    def synthetic(self, run_dir: Path) -> tuple[np.ndarray, int]:
        """(n synthetic images drawn with the training proportions, the checkpoint's step)."""
        return synthetic_draw(run_dir, self.quota, self.seed, self.device)

    def __call__(self, run_dir: Path, minutes: float) -> Scores:
        images, step = self.synthetic(run_dir)
        feats = compute_features(images, self.extractor, cache=None, device=self.device)
        precision, recall = precision_recall(self.reference, feats, k=PR_K)
        quota = self.quota if len(feats) == len(self.real) else [len(feats)]
        diversity = diversity_ratio(feats, self.real, self.quota) if quota == self.quota else float("nan")
        return Scores(minutes, step, fid(feats, self.reference), self.floor, precision, recall, diversity,
                      fixed_pattern_coherence(images), self.pattern_real)


@functools.lru_cache(maxsize=2)
def inception(weights: Path | None) -> InceptionExtractor:
    """The FID Inception, built once per process (loading and folding it takes seconds)."""
    return InceptionExtractor(weights=weights)


def fid(a: np.ndarray, b: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)  # both sides have the same n: the bias cancels in the ratio
        return fid_from_features(a, b).fid


class Segments:
    """Trains a run in pieces up to given totals of training wall clock, stopping at step boundaries.

    Only the time inside the training loop counts: from entering ``execute_run`` to the step at which
    the budget is met. Resuming (``prepare_run``) and the stop's checkpoint write are left out.
    """

    def __init__(self, out: Path, layers: list[dict], on_first_step):
        self.out, self.layers, self.on_first_step = out, layers, on_first_step
        self.spent = 0.0  # seconds of training so far
        self.finished = False  # the run reached its own steps (or epochs)

    def train_until(self, prepared: PreparedRun | None, seconds: float) -> None:
        prepared = prepared or prepare_run(self.out, self.layers, None, resume=True)
        started = time.perf_counter()
        asked = [False]

        def on_progress(step, total, values, rate):
            nonlocal started
            if self.on_first_step is not None:  # the run folder now holds config.yaml
                paused = time.perf_counter()
                self.on_first_step()
                self.on_first_step = None
                started += time.perf_counter() - paused
            spent = self.spent + time.perf_counter() - started
            asked[0] = spent >= seconds
            if asked[0]:
                self.spent = spent
            return asked[0]

        result = execute_run(prepared, on_progress)
        if result.interrupted and not asked[0]:
            raise KeyboardInterrupt  # Ctrl-C: the loop saved the checkpoint; stop here
        if not asked[0]:
            self.spent += time.perf_counter() - started
            self.finished = True


def evaluation_points(minutes: float, every: float) -> list[float]:
    """Training minutes at which to evaluate: every ``every``, and at ``minutes``."""
    points = [every * i for i in range(1, int(minutes / every) + 1) if every * i < minutes * (1 - 1e-9)]
    return points + [minutes]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="Training data, any source medsyn reads; its train split is used.")
    parser.add_argument("--reference", help="Held-out real data (default: the test split of --data).")
    parser.add_argument("--minutes", type=float, required=True, help="Training wall clock in minutes.")
    parser.add_argument("--every", type=float, help="Minutes of training between evaluations (default: M/6, at least 1).")
    parser.add_argument("--model", help="Generator (default: the recommended recipe).")
    parser.add_argument("--config", help="YAML file of config keys, or a shipped recipe name (small-data).")
    parser.add_argument("--set", dest="set_", action="append", default=[], help="key=value config override (repeatable).")
    parser.add_argument("--seed", type=int, help="Training seed (default: the config's); also seeds the draws.")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (training and evaluation).")
    parser.add_argument("--out", type=Path, help="Run folder to create (default: a new temporary folder, kept).")
    parser.add_argument("--n", type=int, help="Images per side (default: min(len(reference), len(training set))).")
    parser.add_argument("--fid-weights", type=Path, help="TorchScript FID Inception (default: as `medsyn fid`).")
    parser.add_argument("--cache", type=Path, help="Feature cache folder (default: as `medsyn fid`).")
    args = parser.parse_args(argv)
    if not args.minutes > 0:
        raise ConfigError(f"--minutes must be positive, got {args.minutes}")
    args.every = args.every if args.every is not None else max(1.0, args.minutes / 6)
    if not args.every > 0:
        raise ConfigError(f"--every must be positive, got {args.every}")
    return args


def train_layers(args: argparse.Namespace) -> list[dict]:
    """[yaml, --set overrides, flags], as `medsyn train` layers them; no model at all means the recommended one."""
    layers = [load_config_layer(args.config) if args.config else {}, parse_overrides(args.set_)]
    flags = {"model": args.model, "seed": args.seed, "device": args.device}
    if not any(key in layer for layer in layers for key in ("steps", "epochs")):
        flags["steps"] = UNBOUNDED_STEPS
    return layers + [{k: v for k, v in flags.items() if v is not None}]


def load_reference(reference: str | None, data: str, train: LabeledImages,
                   interpolation: str) -> tuple[str, LabeledImages]:
    """The reference spec and images, at the training images' size and channels: ``reference``,
    else the test split of ``data`` (its own, or the seeded split every medsyn command uses)."""
    if reference is not None:
        spec = reference
        images = load_source(spec, size=train.size, channels=train.channels, interpolation=interpolation)
    else:
        source = parse_spec(data)[0]
        spec = f"{source}:test"
        whole = load_source(source, size=train.size, channels=train.channels, interpolation=interpolation)
        images = source_split(whole).split("test")
    if len(images) <= PR_K:
        raise ConfigError(f"{spec}: {len(images)} reference images; precision and recall need more than {PR_K}")
    return spec, images


def choose_n(args: argparse.Namespace, train: LabeledImages, reference: LabeledImages) -> int:
    n = args.n if args.n is not None else min(len(reference), len(train))
    if n > len(train):
        raise ConfigError(f"--n {n} is more than the {len(train)} training images")
    if n <= PR_K:
        raise ConfigError(f"--n must be more than {PR_K} (precision and recall use k={PR_K} neighbours), got {n}")
    return n


def describe_run(out: Path, args: argparse.Namespace) -> tuple[str, dict]:
    """'dcgan (recommended recipe; RUN/config.yaml)' from the run folder's resolved config, and that config."""
    config = yaml.safe_load((out / "config.yaml").read_text())
    given = f"--config {args.config}" if args.config else "--model" if args.model else "recommended recipe"
    mode = "per class" if config.get("per_class") else "conditional"
    return (f"{config['model']} ({given}; {mode}, batch {config['batch']}, width {config['width']}; "
            f"{out / 'config.yaml'})"), config


def run(args: argparse.Namespace) -> list[Scores]:
    out = args.out or Path(tempfile.mkdtemp(prefix="medsyn-quality-"))
    try:
        return measure(args, out)
    finally:
        if args.out is None and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # refused before training began: leave no empty temporary folder behind


def measure(args: argparse.Namespace, out: Path) -> list[Scores]:
    layers = train_layers(args)
    prepared = prepare_run(out, layers, DataOptions(args.data), resume=False)  # validates, writes nothing
    train, cfg = prepared.data, prepared.trainer.cfg
    ref_spec, reference = load_reference(args.reference, args.data, train, cfg.interpolation)
    n = choose_n(args, train, reference)
    for notice in prepared.notices:
        print(f"notice: {notice}", file=sys.stderr)
    extractor = inception(args.fid_weights)
    device = str(prepared.trainer.device)
    evaluator = Evaluator.build(train, reference, n, cfg.seed, extractor, FeatureCache(args.cache), device)
    report = {"arguments": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "torch": torch.__version__, "threads": torch.get_num_threads(), "device": device, "run": str(out),
              "data": args.data, "reference": ref_spec, "n": n, "quota": evaluator.quota, "evaluations": []}

    def header() -> None:
        model, report["config"] = describe_run(out, args)
        print(f"quality: data {args.data} ({len(train)} training images) | reference {ref_spec} ({len(reference)} "
              f"images) | n {n} | model {model} | device {device} | threads {report['threads']}", flush=True)

    segments, history = Segments(out, layers, header), []
    for target in evaluation_points(args.minutes, args.every):
        segments.train_until(prepared, target * 60)
        prepared = None  # later segments resume from the run folder
        started = time.perf_counter()
        scores = evaluator(out, segments.spent / 60)
        history.append(scores)
        print(scores.line(), flush=True)
        report["evaluations"].append({**asdict(scores), "ratio": scores.ratio,
                                      "evaluation_seconds": time.perf_counter() - started})
        write_json(out / "quality.json", report)
        if segments.finished:
            break
    return history


def main(argv: list[str] | None = None) -> int:
    try:
        run(parse_args(argv))
    except MedsynError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted; the run folder's checkpoint is saved", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
