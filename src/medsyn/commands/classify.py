"""`medsyn classify`: train one arm's classifier, report test metrics with 95% CIs, save everything."""
from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer

from medsyn.errors import ConfigError, DataError
from medsyn.ui import PRESET_NAMES, console, out_console, progress, say


def parse_volume(text: Optional[str]) -> int | float | None:
    """'200' -> 200 synthetic images per class; '1.5x' -> 1.5 times the real per-class count."""
    if text is None:
        return None
    try:
        value = float(text[:-1]) if text.lower().endswith("x") else int(text)
    except ValueError:
        raise ConfigError(f"--volume takes a count per class (200) or a multiple of the real count (1.5x), got {text!r}") from None
    if value <= 0:
        raise ConfigError(f"--volume must be positive, got {text!r}")
    return value


def classify(
    data: str = typer.Option(..., "--data", help="Real data (any source `medsyn data info` reads); its own train/val/test split, else a patient-level 70/10/20 split."),
    classifier: Optional[str] = typer.Option(None, "--classifier", help="lesion-cnn | resnet18 | resnet50 | resnet101 | densenet121 | densenet121-retina | densenet161 | resnet50-brain | svm (default: none; then --discriminator is required)."),
    out: Path = typer.Option(..., "--out", help="Folder to create: metrics.json, predictions.csv, confusion.png, classifier.pt."),
    synthetic: Optional[str] = typer.Option(None, "--synthetic", help="Labeled synthetic images to add (e.g. a `medsyn sample` folder; default: none, the real arm)."),
    classic: Optional[str] = typer.Option(None, "--classic", help=f"Add classic augmentation copies: {PRESET_NAMES} (default: none)."),
    copies: Optional[int] = typer.Option(None, "--copies", help="Classic copies per real image (default 1)."),
    volume: Optional[str] = typer.Option(None, "--volume", help="Synthetic images per class (200), or a multiple of each class's real training count (0.5x adds half as many synthetic images as real ones to every class); default: all, balanced."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Most epochs (default: the classifier's paper recipe)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    seed: int = typer.Option(0, "--seed", help="Seeds weights, data order, augmentation and the choice of synthetic images."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local ImageNet state_dict for the torchvision models (never downloaded; default: random initialisation)."),
    manifest: Optional[str] = typer.Option(None, "--manifest", help="CSV with path,label[,patient_id][,split] for folder, DICOM or NIfTI data (default: read the folder's class subfolders)."),
    set_: list[str] = typer.Option([], "--set", help="key=value over the classifier's training recipe (repeatable)."),
    discriminator: Optional[Path] = typer.Option(None, "--discriminator", help="Instead of training --classifier, score the test split with the class head of an ACGAN run's discriminator (the liver-lesion paper's comparison; default: none)."),
):
    """Train a classifier on real (+classic, +synthetic) images and report test AUC, accuracy, precision,
    recall and per-class sensitivity/specificity with 95% bootstrap confidence intervals."""
    from medsyn.config import parse_overrides, to_dict
    from medsyn.evaluate.arms import arm_for, build_arm
    from medsyn.imageio import ensure_new_dir
    from medsyn.models.classifiers import resolve_classifier_config

    if (classifier is None) == (discriminator is None):
        raise ConfigError("give --classifier NAME to train a classifier, or --discriminator RUN to score with an "
                          "ACGAN run's discriminator (one of them)")
    if discriminator is not None:
        return _score_discriminator(discriminator, data, manifest, out, device, seed)
    overrides = parse_overrides(set_)
    cfg = resolve_classifier_config(classifier, overrides, epochs)  # a bad name or key fails before any work
    if copies is not None and not classic:
        raise ConfigError("--copies needs --classic PRESET")
    if copies is not None and copies < 1:
        raise ConfigError(f"--copies must be at least 1, got {copies}")
    wanted_volume = parse_volume(volume)
    if wanted_volume is not None and not synthetic:
        raise ConfigError("--volume needs --synthetic DIR")
    ensure_new_dir(out)
    train, val, test, pool = _load_sets(data, manifest, seed, synthetic, classic, wanted_volume)
    arm = arm_for(bool(classic), bool(synthetic))
    train_set = build_arm(arm, train, synthetic=pool, classic_preset=classic, classic_copies=copies or 1,
                          volume=wanted_volume, seed=seed)
    console.print(f"training {classifier} on {len(train_set)} images ({arm.value} arm: the {len(train)} images of "
                  f"{data}'s train split{' and more' if len(train_set) > len(train) else ''}; {train.size}x{train.size}x"
                  f"{train.channels}, {train.num_classes} classes), validating on its val split ({len(val)}), testing "
                  f"on its test split ({len(test)}), up to {cfg.epochs} epochs", highlight=False, soft_wrap=True)
    trained, seconds = _train(classifier, train_set, val, cfg.epochs, seed, device, overrides, weights)
    report = _evaluate(trained, test, seed)
    _print_report(report, trained.class_names)
    info = {"classifier": classifier, "arm": arm.value, "data": data, "synthetic": synthetic, "classic": classic,
            "copies": (copies or 1) if classic else None, "volume": volume, "seed": seed, "device": str(trained.device),
            "precision": trained.precision,
            "config": to_dict(trained.config), "n_train": len(train_set), "n_val": len(val), "n_test": len(test),
            "class_names": trained.class_names, "best_epoch": trained.best_epoch, "best_val_auc": trained.best_val_auc,
            "epochs_run": len(trained.history), "seconds_training": seconds,
            "seconds_per_epoch": seconds / max(1, len(trained.history)), "history": trained.history, **report}
    _write_outputs(out, trained, test, report, info)
    out_console.print(f"wrote metrics.json, predictions.csv, confusion.png and classifier.pt to {out}",
                      highlight=False, soft_wrap=True)


def _score_discriminator(run: Path, data: str, manifest: str | None, out: Path, device: str, seed: int) -> None:
    """The liver-lesion paper's ACGAN-discriminator classifier: its class head on the test split."""
    from medsyn.data import load_source, source_split
    from medsyn.evaluate.discriminator import discriminator_probabilities
    from medsyn.imageio import atomic_dir, ensure_new_dir
    from medsyn.provenance import overlaps, record_of_run
    from medsyn.train.checkpoint import load_checkpoint

    ensure_new_dir(out)
    state = load_checkpoint(run)
    found = overlaps([record_of_run(run, state["data"], "discriminator training")], data, manifest)
    if found:
        raise DataError(str(run), f"trained on held-out images of {data}: {found[0].describe()}; its test "
                                  f"scores would not be independent")
    model = state["model"]
    real = source_split(load_source(data, manifest=manifest, size=model["size"], channels=model["channels"],
                                    interpolation=state["data"].get("interpolation", "bilinear")))
    say(real.notices)
    test = real.split("test")
    if len(test) == 0:
        raise DataError(data, "has no test images to score")
    report = _test_report(test, discriminator_probabilities(state, run, test, device=device), seed)
    console.print(f"scoring {len(test)} images of {data}'s test split with the class head of {run}'s "
                  f"{model['name']} discriminator (trained on its train split; nothing is trained here)",
                  highlight=False, soft_wrap=True)
    _print_report(report, list(test.class_names))
    info = {"classifier": f"{model['name']} discriminator", "run": str(run), "data": data, "n_test": len(test),
            "class_names": list(test.class_names), **{k: v for k, v in report.items() if k != "proba"}}
    with atomic_dir(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(_json_safe(info), indent=2) + "\n")
        _write_predictions(tmp / "predictions.csv", test, report["proba"])
        _plot_confusion(np.asarray(report["test"]["confusion"]), list(test.class_names), tmp / "confusion.png")
    out_console.print(f"wrote metrics.json, predictions.csv and confusion.png to {out}", highlight=False, soft_wrap=True)


def _load_sets(data, manifest, seed, synthetic, classic, volume):
    """(train, val, test, synthetic pool or None), every input checked before any training starts."""
    from medsyn.augment import build_preset
    from medsyn.data import load_source, source_split
    from medsyn.evaluate.arms import check_compatible, synthetic_per_class

    # the source's one split, whatever --seed: the split the generator's run held out too
    real = source_split(load_source(data, manifest=manifest))
    say(real.notices)
    if real.num_classes < 2:
        raise DataError(data, f"has one class ({real.class_names[0]!r}); a classifier needs at least 2: put each class "
                              f"in its own folder, or pass a CSV manifest with labels")
    train, val, test = (real.split(name) for name in ("train", "val", "test"))
    for name, part in (("train", train), ("val", val), ("test", test)):
        if len(part) == 0:
            raise DataError(data, f"has no {name} images; classify needs train, val and test images")
    if classic:
        build_preset(classic, real.size)
    pool = None
    if synthetic:
        from medsyn.provenance import check_made_without_held_out

        pool = load_source(synthetic)
        check_compatible(train, pool)
        say(check_made_without_held_out(synthetic, data, manifest))  # refuses a set made from val/test images
        synthetic_per_class(train, pool, volume)  # too small a pool fails here, not after training
    return train, val, test, pool


def _train(name, train_set, val, epochs, seed, device, overrides, weights):
    from medsyn.evaluate.classify import train_classifier

    with progress() as bar:
        task = bar.add_task("classify", total=epochs * len(train_set), info="")
        started, done, last = time.perf_counter(), [0], [""]

        def on_batch(n: int) -> None:
            done[0] += n
            rate = done[0] / max(time.perf_counter() - started, 1e-9)
            bar.update(task, completed=done[0], info=f"{last[0]} | {rate:,.0f} img/s")

        def on_epoch(epoch: int, total: int, summary: str) -> None:
            last[0] = f"epoch {epoch}/{total} " + summary.split(" | ")[0]
            bar.update(task, info=last[0])

        trained = train_classifier(name, train_set, val, epochs=epochs, seed=seed, device=device, overrides=overrides,
                                   weights=weights, on_epoch=on_epoch, on_batch=on_batch)
        bar.update(task, completed=bar.tasks[0].total)
    return trained, time.perf_counter() - started


def _evaluate(trained, test, seed: int) -> dict[str, Any]:
    from medsyn.evaluate.classify import predict_proba

    return _test_report(test, predict_proba(trained, test), seed)


def _test_report(test, proba: np.ndarray, seed: int) -> dict[str, Any]:
    """Metrics of predictions on the test split, their bootstrap CIs, and the warning of a classifier
    that calls every test image one class."""
    from medsyn.metrics.classification import bootstrap_cis, classification_metrics, one_class_warning

    metrics = classification_metrics(test.labels, proba)
    warning = one_class_warning(metrics["confusion"], list(test.class_names))
    return {"proba": proba, "test": metrics,
            "ci95": {k: list(v) for k, v in bootstrap_cis(test.labels, proba, n_boot=1000, seed=seed).items()},
            "warnings": [] if warning is None else [warning]}


def _fmt(value: float, ci) -> str:
    return f"{value:.4f} (95% CI {ci[0]:.4f}-{ci[1]:.4f})"


def _print_report(report: dict[str, Any], class_names: list[str]) -> None:
    test, ci = report["test"], report["ci95"]
    out_console.print(f"test AUC {_fmt(test['auc'], ci['auc'])}", highlight=False, soft_wrap=True)
    for name in ("accuracy", "precision", "recall"):
        out_console.print(f"{name} {_fmt(test[name], ci[name])}", highlight=False, soft_wrap=True)
    for k, cls in enumerate(class_names):
        out_console.print(f"class {cls!r}: sensitivity {_fmt(test['sensitivity'][k], ci[f'sensitivity_{k}'])}, "
                          f"specificity {_fmt(test['specificity'][k], ci[f'specificity_{k}'])}", highlight=False, soft_wrap=True)
    say([f"warning: {w}" for w in report["warnings"]])


def _json_safe(value):
    """NaN and inf become null (JSON has no NaN); numpy values become Python ones."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _write_outputs(out: Path, trained, test, report: dict[str, Any], info: dict[str, Any]) -> None:
    from medsyn.evaluate.classify import save_classifier
    from medsyn.imageio import atomic_dir

    proba = report["proba"]
    with atomic_dir(out) as tmp:
        info = {k: v for k, v in info.items() if k != "proba"}
        (tmp / "metrics.json").write_text(json.dumps(_json_safe(info), indent=2) + "\n")
        _write_predictions(tmp / "predictions.csv", test, proba, trained.class_names)
        _plot_confusion(np.asarray(report["test"]["confusion"]), trained.class_names, tmp / "confusion.png")
        save_classifier(trained, tmp / "classifier.pt")


def _write_predictions(path: Path, test, proba: np.ndarray, class_names: list[str] | None = None) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "true", "predicted", *(f"prob_{name}" for name in class_names or test.class_names)])
        for i, (y, p) in enumerate(zip(test.labels, proba)):
            writer.writerow([i, int(y), int(p.argmax()), *(f"{v:.6f}" for v in p)])


def _plot_confusion(cm: np.ndarray, class_names: list[str], path: Path) -> None:
    from matplotlib.figure import Figure

    k = len(class_names)
    fig = Figure(figsize=(1.2 * k + 2.5, 1.2 * k + 2), dpi=120)  # a bare Figure: no pyplot state, Agg rendering
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(k), class_names, rotation=30, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("test confusion matrix")
    fig.savefig(path, format="png", bbox_inches="tight")
