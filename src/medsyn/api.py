"""medsyn from Python: the functions behind the CLI, for notebooks and scripts.

    import medsyn

    run = medsyn.train_generator("breastmnist.npz", "runs/breast", steps=2000)  # the small-data recipe
    images, labels = run.sample(100, seed=0)                            # (200, 1, 28, 28) in [0, 1]
    medsyn.fid(images, medsyn.load_data("breastmnist.npz:test")).fid
    medsyn.classify("breastmnist.npz", synthetic="samples/", classifier="resnet18")["test"]["auc"]

Every function runs the same code as its command (``medsyn train``, ``sample``, ``fid``,
``classify``, ``study``), with the same checks: the same split, the same refusal of synthetic
images made from held-out ones, the same errors (``medsyn.errors.MedsynError`` subclasses).
Nothing here draws progress bars; notices and warnings are printed as the commands print them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medsyn.data import load_source
from medsyn.data.types import LabeledImages

__all__ = ["Run", "classify", "fid", "load_data", "load_run", "run_study", "train_generator"]


def load_data(source: str, **options: Any) -> LabeledImages:
    """Any source medsyn reads (``x.npz``, ``x.npz:test``, a class folder, DICOM, NIfTI, a manifest),
    as float32 (N, C, S, S) images in [0, 1] with labels; options as ``medsyn.data.load_source``."""
    return load_source(str(source), **options)


@dataclass
class Run:
    """A trained run folder: its EMA generator, ready to sample."""

    path: Path
    loaded: Any = field(repr=False)

    @property
    def class_names(self) -> list[str]:
        return list(self.loaded.data["class_names"])

    @property
    def step(self) -> int:
        return int(self.loaded.step)

    def sample(self, n_per_class: int, seed: int = 0, tensors: bool = False) -> tuple[Any, Any]:
        """``n_per_class`` images of every class: (images (N, C, S, S) in [0, 1], labels), class-major.

        Same seed, same images (image i of class k depends only on the seed, k and i). ``tensors``
        returns torch tensors instead of numpy arrays.
        """
        from medsyn.sample import synthesize

        images, labels = synthesize(self.loaded, n_per_class, seed)
        if tensors:
            return torch.from_numpy(images), torch.from_numpy(labels)
        return images, labels


def load_run(path: str | Path, device: str = "cpu") -> Run:
    """A run folder made by ``medsyn train`` (or :func:`train_generator`)."""
    from medsyn.sample import load_generator

    return Run(Path(path), load_generator(path, device=device))


def train_generator(data: str, out: str | Path, model: str | None = None, steps: int | None = None, *,
                    resume: bool = False, **settings: Any) -> Run:
    """Train a generator as ``medsyn train`` does and return the finished run.

    Args:
        data: the training source; its train split is used.
        out: the run folder to create (or to continue, with ``resume=True``).
        model: a name from ``medsyn models``; None trains the recommended small-data recipe.
        steps: run length; None keeps the model's (its paper's) default.
        settings: config keys, as ``--set key=value`` (e.g. ``width=0.5, diffaug="translation"``).
    """
    from medsyn.train.run import DataOptions, execute_run, prepare_run

    flags = {key: value for key, value in (("model", model), ("steps", steps)) if value is not None}
    layers = [{**settings, **flags}] if settings or flags else []
    execute_run(prepare_run(Path(out), layers, DataOptions(str(data)), resume=resume))
    return load_run(out, device=str(settings.get("device", "cpu")))


@dataclass
class FidScores:
    fid: float
    kid: float
    kid_std: float
    n_a: int
    n_b: int


def fid(a: Any, b: Any, *, weights: str | Path | None = None, cache: str | Path | None = None, device: str = "cpu",
        seed: int = 0) -> FidScores:
    """FID and KID between two image sets, in the TF-FID Inception features ``medsyn fid`` uses.

    ``a`` and ``b`` are sources (paths or specs), :class:`LabeledImages`, or (N, C, S, S) arrays
    in [0, 1]; labels are not needed.
    """
    from medsyn.metrics.cache import FeatureCache
    from medsyn.metrics.features import EXTRACTORS
    from medsyn.metrics.fid import compute_features, fid_from_features

    net = EXTRACTORS.get("inception")(weights=weights, resize="bilinear")
    store = FeatureCache(cache)
    feats = [compute_features(_images(side), net, cache=store, device=device) for side in (a, b)]
    result = fid_from_features(feats[0], feats[1], seed=seed)
    return FidScores(float(result.fid), float(result.kid_mean), float(result.kid_std), result.n_a, result.n_b)


def _images(side: Any) -> LabeledImages | np.ndarray:
    if isinstance(side, (LabeledImages, np.ndarray)):
        return side
    if isinstance(side, torch.Tensor):
        return side.detach().cpu().float().numpy()
    return load_source(str(side))


def classify(data: str, *, classifier: str = "lesion-cnn", synthetic: str | None = None, volume: int | float | None = None,
             classic: str | None = None, copies: int = 1, epochs: int | None = None, seed: int = 0,
             device: str = "cpu", manifest: str | None = None, **settings: Any) -> dict[str, Any]:
    """Train a classifier on one arm of ``data``'s train split and score it on its test split.

    As ``medsyn classify``: model selection on the val split; ``synthetic`` images made from any
    val or test image of ``data`` are refused. Returns ``test`` (accuracy, precision, recall, AUC,
    per-class sensitivity and specificity, confusion), ``ci95`` (bootstrap intervals), ``warnings``
    and ``n_train``.
    """
    from medsyn.commands.classify import _evaluate, _load_sets
    from medsyn.evaluate.arms import arm_for, build_arm
    from medsyn.evaluate.classify import train_classifier

    train_split, val, test, pool = _load_sets(str(data), manifest, seed, synthetic, classic, volume)
    arm = arm_for(bool(classic), bool(synthetic))
    train_set = build_arm(arm, train_split, synthetic=pool, classic_preset=classic, classic_copies=copies,
                          volume=volume, seed=seed)
    trained = train_classifier(classifier, train_set, val, epochs=epochs, seed=seed, device=device,
                               overrides=settings or None)
    report = _evaluate(trained, test, seed)
    return {"arm": arm.value, "n_train": len(train_set), "n_test": len(test), **report, "classifier": trained}


def run_study(config: str | Path, out: str | Path, quick: bool = False, device: str | None = None,
              jobs: int | None = None, address: str | None = None, budget: str = "full") -> dict[str, Any]:
    """Run (or resume) a study YAML as ``medsyn study`` does; returns results.json's content and
    writes report.html beside it. ``budget`` is ``--budget`` ("full", "standard", "quick"; ``quick=True``
    is "quick"). ``jobs`` and ``address`` run its units as Ray tasks, as ``--jobs`` and ``--address``
    do (``medsyn.study.parallel``)."""
    import dataclasses

    from medsyn.report import write_report
    from medsyn.study import StudyRunner, load_study
    from medsyn.study.parallel import check_jobs, run_parallel

    check_jobs(jobs)
    parallel = address is not None or (jobs or 1) > 1
    quick = quick or budget == "quick"
    cfg = load_study(config, budget="full" if quick else budget)
    if device:
        cfg = dataclasses.replace(cfg, device=device)
    runner = StudyRunner(cfg, Path(out).resolve() if parallel else Path(out), quick=quick)
    runner.prepare()
    if parallel:
        run_parallel(runner, jobs, address)
    results = runner.run()
    write_report(out)
    return results
