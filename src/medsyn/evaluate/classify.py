"""Train a downstream classifier, keep its best-validation-AUC weights, predict, save and load it.

Batches come straight from in-memory tensors (no DataLoader workers: the sets are small and a
worker start costs more than an epoch). Epoch e shuffles with a generator seeded from
(seed, e) and re-seeds torch's global RNG from the same pair for dropout and online
augmentation, so on the CPU the same seed gives the same weights and the same predictions.
Model selection looks only at the validation split; the test split is never touched here.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from medsyn.config import to_dict
from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError, DataError, RunError
from medsyn.metrics.classification import auc_score
from medsyn.models.classifiers import (
    CLASSIFIERS, ClassifierConfig, ClassifierNet, SvmClassifier, build_classifier, resolve_classifier_config,
)
from medsyn.train.batches import step_seed
from medsyn.train.checkpoint import torch_save_atomic
from medsyn.train.setup import mixed_precision, resolve_device

FORMAT = "medsyn-classifier-1"
EVAL_BATCH = 512  # images per forward pass when predicting (memory only; results do not depend on it)
EpochHook = Callable[[int, int, str], None]  # (epoch done, total epochs, one-line summary)


@dataclass
class TrainedClassifier:
    """A fitted classifier with what is needed to use, report and save it.

    Attributes:
        name: registry name.
        config: the resolved training recipe.
        model: a ``ClassifierNet`` in eval mode holding the best-validation weights, or a fitted ``SvmClassifier``.
        class_names: the training data's classes, in label order.
        size, channels: the image geometry it takes.
        seed: the training seed.
        best_epoch: epoch (1-based) whose weights were kept; for the SVM the index of the chosen C.
        best_val_auc: the validation score of those weights (AUC; accuracy when val lacks a class).
        history: one dict per epoch: epoch, loss, val_auc, lr, images_per_second.
        precision: what the training steps computed in: "bf16 autocast" or "float32" (``amp`` on this device).
        device: where the network lives.
        extractor: for an SVM on features, the network that makes them.
        svm_data: for an SVM, (features, labels, C) it was fitted on (saved so loading can refit it).
    """

    name: str
    config: ClassifierConfig
    model: Any
    class_names: list[str]
    size: int
    channels: int
    seed: int
    best_epoch: int
    best_val_auc: float
    history: list[dict[str, float]] = field(default_factory=list)
    precision: str = "float32"
    device: torch.device = torch.device("cpu")
    extractor: "TrainedClassifier | None" = None
    svm_data: tuple[np.ndarray, np.ndarray, float] | None = None

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout the network and its inputs use: its registry entry's (channels-last where measured faster)."""
        return CLASSIFIERS.get(self.name).memory_format


def train_classifier(
    name: str, train: LabeledImages, val: LabeledImages, *, epochs: int | None = None, seed: int = 0,
    device: str = "auto", online_augment: str | None = None, overrides: dict[str, Any] | None = None,
    weights: str | Path | None = None, on_epoch: EpochHook | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> TrainedClassifier:
    """Train ``name`` on ``train``, keeping the weights of the epoch with the best validation AUC.

    Args:
        name: registry name (see ``medsyn.models.classifiers.CLASSIFIERS``).
        train: training images (an arm: real, plus classic and/or synthetic images).
        val: validation images, used only for model selection and early stopping.
        epochs: most epochs; None keeps the entry's paper default.
        seed: initialisation, shuffling, dropout and augmentation seed.
        device: auto | cpu | cuda[:N].
        online_augment: a classic preset applied to every training batch, or None.
        overrides: config keys over the paper defaults (``--set`` pairs); unknown keys are errors.
        weights: local ImageNet weights for the torchvision models.
        on_epoch: called after every epoch with (epoch, total, summary line).
        on_batch: called after every training batch with the number of images in it.

    Raises:
        ConfigError: unknown classifier, key or value; an empty validation split.
        DataError: train and val disagree on classes, size or channels.
    """
    cfg = resolve_classifier_config(name, overrides, epochs)
    _check_same_geometry(train, val)
    if len(val) == 0:
        raise ConfigError("model selection needs a non-empty validation split")
    if CLASSIFIERS.get(name).kind == "svm":
        return _train_svm(name, cfg, train, val, seed, device, on_epoch)
    torch_device = resolve_device(device)
    torch.manual_seed(seed)  # network initialisation
    model: ClassifierNet = build_classifier(name, train.size, train.channels, train.num_classes, weights)
    model.set_normalization(cfg.normalize, train.images)
    trained = TrainedClassifier(name, cfg, model, list(train.class_names), train.size, train.channels, seed,
                                best_epoch=0, best_val_auc=-math.inf, device=torch_device)
    model.to(torch_device, memory_format=trained.memory_format)
    _fit(trained, train, val, online_augment, on_epoch, on_batch)
    return trained


def _fit(trained: TrainedClassifier, train: LabeledImages, val: LabeledImages, online_augment: str | None,
         on_epoch: EpochHook | None, on_batch: Callable[[int], None] | None) -> None:
    cfg, model, dev = trained.config, trained.model, trained.device
    optimizer = _optimizer(cfg, model.parameters(), dev)
    trained.precision, autocast = mixed_precision(dev, cfg.amp)
    images, labels = torch.from_numpy(train.images).to(dev), torch.from_numpy(train.labels).to(dev)
    augment = None
    if online_augment:
        from medsyn.augment import build_preset

        augment = build_preset(online_augment, train.size)
    best_state, best_loss, stale = None, math.inf, 0
    for epoch in range(cfg.epochs):
        lr = cfg.lr * _lr_scale(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        started = time.perf_counter()
        loss = _train_epoch(trained, images, labels, augment, optimizer, autocast, step_seed(trained.seed, epoch),
                            on_batch)
        rate = len(images) / max(time.perf_counter() - started, 1e-9)
        val_proba = predict_proba(trained, val)
        score, val_loss = _selection_score(val.labels, val_proba), _log_loss(val.labels, val_proba)
        trained.history.append({"epoch": epoch + 1, "loss": loss, "val_auc": score, "val_loss": val_loss, "lr": lr,
                                "images_per_second": rate})
        # Ties on AUC (it saturates at 1.0 on easy sets while the decision threshold still
        # improves) go to the lower validation loss.
        if (score, -val_loss) > (trained.best_val_auc, -best_loss):
            trained.best_val_auc, trained.best_epoch, best_loss, stale = score, epoch + 1, val_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if on_epoch is not None:
            on_epoch(epoch + 1, cfg.epochs, f"loss {loss:.3f} val AUC {score:.3f} | {rate:,.0f} img/s")
        if cfg.patience is not None and stale >= cfg.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()


def _train_epoch(trained: TrainedClassifier, images: torch.Tensor, labels: torch.Tensor, augment, optimizer,
                 autocast, seed: int, on_batch: Callable[[int], None] | None) -> float:
    cfg, model = trained.config, trained.model
    model.train()
    torch.manual_seed(seed)  # dropout masks of this epoch
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed)).to(images.device)
    aug_gen = torch.Generator().manual_seed(step_seed(seed, 0, stream=1))
    total, seen = torch.zeros((), device=images.device), 0  # summed on the device: no host sync per step
    for start in range(0, len(order), cfg.batch):
        idx = order[start:start + cfg.batch]
        if len(idx) < 2 and seen:  # a batch of one breaks batch norm; that image is in another batch next epoch
            break
        x, y = images.index_select(0, idx), labels.index_select(0, idx)
        if augment is not None:
            x = augment(x, generator=aug_gen)
        loss = _train_step(model, optimizer, autocast, cfg, x.contiguous(memory_format=trained.memory_format), y)
        total += loss.detach() * len(idx)
        seen += len(idx)
        if on_batch is not None:
            on_batch(len(idx))
    return float(total) / max(seen, 1)


def _train_step(model: ClassifierNet, optimizer: torch.optim.Optimizer, autocast, cfg: ClassifierConfig,
                x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One optimiser step on a batch (forward under ``autocast``, the recipe's loss); returns the loss."""
    with autocast():
        logits = model(x)
    loss = _loss(cfg, logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def measure_training_rate(name: str, size: int, channels: int, num_classes: int, cfg: ClassifierConfig,
                          device: torch.device, steps: int = 3, warmup: int = 1,
                          memory_format: torch.memory_format | None = None) -> float:
    """Training images per second of classifier ``name`` at this geometry and recipe on ``device``.

    Times ``steps`` of training's own step (batch ``cfg.batch``, the entry's optimiser, layout and
    precision) on random images after ``warmup`` untimed ones; validation passes are not included.
    The global random state is left as it was. For time estimates (``medsyn study --plan``) and
    bench/classifier_speed.py (which passes ``memory_format`` to compare layouts).
    """
    layout = memory_format or CLASSIFIERS.get(name).memory_format
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        model = build_classifier(name, size, channels, num_classes).to(device, memory_format=layout).train()
        optimizer = _optimizer(cfg, model.parameters(), device)
        _, autocast = mixed_precision(device, cfg.amp)
        x = torch.rand(cfg.batch, channels, size, size, device=device).contiguous(memory_format=layout)
        y = torch.randint(0, num_classes, (cfg.batch,), device=device)
        for step in range(warmup + steps):
            if step == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                started = time.perf_counter()
            _train_step(model, optimizer, autocast, cfg, x, y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return cfg.batch * steps / max(time.perf_counter() - started, 1e-9)


def _loss(cfg: ClassifierConfig, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if cfg.loss == "bce":
        return F.binary_cross_entropy_with_logits(logits, F.one_hot(y, logits.shape[1]).to(logits.dtype))
    return F.cross_entropy(logits, y)


def _optimizer(cfg: ClassifierConfig, params, device: torch.device) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=device.type == "cuda")


def _lr_scale(cfg: ClassifierConfig, epoch: int) -> float:
    """Multiplier of the base lr in (0-based) ``epoch``: step decays at fractions or every N epochs."""
    if cfg.lr_decay_at is not None:
        # A milestone at epoch 0 would just lower the base lr; short runs keep at least one full-lr epoch.
        drops = sum(epoch >= max(1, round(f * cfg.epochs)) for f in cfg.lr_decay_at)
    elif cfg.lr_decay_every is not None:
        drops = epoch // cfg.lr_decay_every
    else:
        drops = 0
    return cfg.lr_gamma ** drops


def _log_loss(y_true: np.ndarray, proba: np.ndarray) -> float:
    return float(-np.log(np.clip(proba[np.arange(len(y_true)), y_true], 1e-12, None)).mean())


def _selection_score(y_true: np.ndarray, proba: np.ndarray) -> float:
    """Validation AUC; accuracy when the validation split lacks a class (AUC is undefined then)."""
    score = auc_score(y_true, proba)
    return float((proba.argmax(axis=1) == y_true).mean()) if math.isnan(score) else score


# ---- SVM -------------------------------------------------------------------------------------

def _train_svm(name: str, cfg: ClassifierConfig, train: LabeledImages, val: LabeledImages, seed: int,
               device: str, on_epoch: EpochHook | None) -> TrainedClassifier:
    """Fit one SVC per C in the grid and keep the best on validation AUC."""
    extractor = load_classifier(cfg.svm_features, device) if cfg.svm_features else None
    x_train, x_val = _svm_inputs(extractor, train), _svm_inputs(extractor, val)
    trained = TrainedClassifier(name, cfg, None, list(train.class_names), train.size, train.channels, seed,
                                best_epoch=0, best_val_auc=-math.inf, extractor=extractor)
    for i, c in enumerate(cfg.svm_c_grid):
        svm = SvmClassifier(train.size, train.channels, train.num_classes)
        svm.fit(x_train, train.labels, c, cfg.svm_kernel, seed)
        score = _selection_score(val.labels, svm.predict_proba(x_val))
        trained.history.append({"epoch": i + 1, "c": c, "val_auc": score})
        if score > trained.best_val_auc:
            trained.model, trained.best_val_auc, trained.best_epoch = svm, score, i + 1
            trained.svm_data = (x_train, train.labels, c)
        if on_epoch is not None:
            on_epoch(i + 1, len(cfg.svm_c_grid), f"C {c:g} val AUC {score:.3f}")
    return trained


def _svm_inputs(extractor: TrainedClassifier | None, ds: LabeledImages) -> np.ndarray:
    if extractor is None:
        return ds.images.reshape(len(ds), -1).astype(np.float64)
    return extract_features(extractor, ds).astype(np.float64)


# ---- prediction ------------------------------------------------------------------------------

def _check_same_geometry(reference: LabeledImages | TrainedClassifier, ds: LabeledImages) -> None:
    ref_name = getattr(reference, "source", f"classifier {getattr(reference, 'name', '')}")
    if list(reference.class_names) != list(ds.class_names):
        raise DataError(ds.source, f"classes {list(ds.class_names)} differ from {ref_name}'s {list(reference.class_names)}")
    if (reference.size, reference.channels) != (ds.size, ds.channels):
        raise DataError(ds.source, f"images are {ds.size}x{ds.size}x{ds.channels}, {ref_name} has "
                                   f"{reference.size}x{reference.size}x{reference.channels}")


@torch.no_grad()
def _network_outputs(trained: TrainedClassifier, ds: LabeledImages, features: bool) -> np.ndarray:
    model: ClassifierNet = trained.model
    model.eval()
    out = []
    for start in range(0, len(ds), EVAL_BATCH):
        x = torch.from_numpy(ds.images[start:start + EVAL_BATCH]).to(trained.device)
        x = x.contiguous(memory_format=trained.memory_format)
        y = model.features(x) if features else model(x)
        out.append(y.float().cpu().numpy())
    width = None if out else (0 if features else len(trained.class_names))
    return np.concatenate(out) if out else np.zeros((0, width or 0), dtype=np.float32)


def predict_proba(trained: TrainedClassifier, ds: LabeledImages) -> np.ndarray:
    """(N, K) class probabilities, rows summing to one.

    Softmax of the logits; for the sigmoid (bce) heads, the per-class sigmoids divided by their sum.

    Raises:
        DataError: ``ds`` has other classes, size or channels than the training data.
    """
    _check_same_geometry(trained, ds)
    if isinstance(trained.model, SvmClassifier):
        return trained.model.predict_proba(_svm_inputs(trained.extractor, ds))
    logits = torch.from_numpy(_network_outputs(trained, ds, features=False)).double()
    if trained.config.loss == "bce":
        probs = torch.sigmoid(logits)
        return (probs / probs.sum(dim=1, keepdim=True).clamp_min(1e-300)).numpy()
    return torch.softmax(logits, dim=1).numpy()


def extract_features(trained: TrainedClassifier, ds: LabeledImages) -> np.ndarray:
    """(N, D) penultimate features (the input of the last dense layer); for an SVM, its inputs."""
    if (ds.size, ds.channels) != (trained.size, trained.channels):
        raise DataError(ds.source, f"images are {ds.size}x{ds.size}x{ds.channels}, classifier {trained.name} takes "
                                   f"{trained.size}x{trained.size}x{trained.channels}")
    if isinstance(trained.model, SvmClassifier):
        return _svm_inputs(trained.extractor, ds)
    return _network_outputs(trained, ds, features=True)


# ---- save / load -----------------------------------------------------------------------------

def save_classifier(trained: TrainedClassifier, path: str | Path) -> Path:
    """Write the classifier as state_dicts and plain values (never pickled code), atomically."""
    path = Path(path)
    state: dict[str, Any] = {
        "format": FORMAT, "name": trained.name, "config": to_dict(trained.config),
        "class_names": list(trained.class_names), "size": trained.size, "channels": trained.channels,
        "seed": trained.seed, "best_epoch": trained.best_epoch, "best_val_auc": float(trained.best_val_auc),
        "history": trained.history, "precision": trained.precision,
    }
    if isinstance(trained.model, SvmClassifier):
        # A fitted SVC is only picklable; its training features and C let load_classifier refit the
        # very same model (SVC is deterministic for a fixed random_state).
        x, y, c = trained.svm_data
        state["svm"] = {"features": torch.from_numpy(np.asarray(x)), "labels": torch.from_numpy(np.asarray(y)),
                        "c": float(c)}
    else:
        state["state_dict"] = {k: v.detach().cpu() for k, v in trained.model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    return torch_save_atomic(state, path)


def load_classifier(path: str | Path, device: str = "auto") -> TrainedClassifier:
    """Read a classifier written by ``save_classifier``, ready to predict on ``device``.

    Raises:
        RunError: the file is missing, unreadable or not a medsyn classifier.
    """
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no saved classifier here")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same problem for the user
        raise RunError(f"{path}: cannot read classifier ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RunError(f"{path}: not a medsyn classifier file")
    cfg = resolve_classifier_config(state["name"], state["config"])
    common = dict(name=state["name"], config=cfg, class_names=list(state["class_names"]), size=int(state["size"]),
                  channels=int(state["channels"]), seed=int(state["seed"]), best_epoch=int(state["best_epoch"]),
                  best_val_auc=float(state["best_val_auc"]), history=list(state["history"]),
                  precision=str(state.get("precision", "float32")))  # files from before amp trained in float32
    if "svm" in state:
        extractor = load_classifier(cfg.svm_features, device) if cfg.svm_features else None
        x, y, c = state["svm"]["features"].numpy(), state["svm"]["labels"].numpy(), state["svm"]["c"]
        svm = SvmClassifier(common["size"], common["channels"], len(common["class_names"]))
        svm.fit(x, y, c, cfg.svm_kernel, common["seed"])
        return TrainedClassifier(model=svm, extractor=extractor, svm_data=(x, y, c), **common)
    torch_device = resolve_device(device)
    model = build_classifier(state["name"], common["size"], common["channels"], len(common["class_names"]))
    model.load_state_dict(state["state_dict"])
    trained = TrainedClassifier(model=model, device=torch_device, **common)
    model.to(torch_device, memory_format=trained.memory_format).eval()
    return trained
