"""Downstream classifiers of the papers, reachable by name through CLASSIFIERS.

Every torch classifier is a ``ClassifierNet``: ``forward(x) -> logits (N, K)`` and
``features(x) -> penultimate features (N, D)``, with x in [0, 1] and the input normalisation kept
as buffers inside the network (so a saved state_dict is all a later prediction needs). The data
defines the interface: size, channels and classes come from the dataset, never from the model.

Each entry carries its paper's training recipe as a frozen ``ClassifierConfig``; a user's
``--set key=value`` layers on top of it and unknown keys are errors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torchvision
from torch import nn

from medsyn import papers
from medsyn.config import build_config
from medsyn.errors import ConfigError, DataError
from medsyn.registry import Registry

SMALL_STEM_MAX = 64  # at or below this side the MedMNIST small-image stem replaces the ImageNet one


class Optimizer(StrEnum):
    ADAM = "adam"
    SGD = "sgd"


class Loss(StrEnum):
    CE = "ce"  # softmax cross-entropy
    BCE = "bce"  # one sigmoid per class on one-hot targets (the brain-MRI paper's binary cross-entropy)


class Normalize(StrEnum):
    MEAN = "mean"  # subtract the training set's mean image value per channel (liver-lesion paper)
    HALF = "half"  # (x - 0.5) / 0.5, as the MedMNIST v2 benchmark
    IMAGENET = "imagenet"  # ImageNet mean/std, for ImageNet-initialised weights
    NONE = "none"


@dataclass(frozen=True)
class ClassifierConfig:
    """Training recipe of a classifier: the entry's paper gives the defaults, ``--set`` the rest."""

    optimizer: str = "adam"  # adam | sgd
    lr: float = 1e-3
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0
    batch: int = 128
    epochs: int = 100  # the most epochs; early stopping (patience) may end sooner
    lr_decay_at: tuple[float, float] | None = None  # fractions of the epochs where lr *= lr_gamma
    lr_decay_every: int | None = None  # or: lr *= lr_gamma every this many epochs
    lr_gamma: float = 0.1
    patience: int | None = None  # stop after this many epochs without a better validation AUC
    loss: str = "ce"  # ce | bce
    normalize: str = "half"  # mean | half | imagenet | none
    svm_c_grid: tuple[float, float, float] = (0.1, 1.0, 10.0)  # SVC C values tried, best validation AUC kept
    svm_kernel: str = "rbf"
    svm_features: str | None = None  # saved classifier (.pt) whose penultimate features feed the SVM; None: pixels
    # bf16 autocast for the training steps where bf16 is native (CUDA 8.0+ GPUs; CPUs with AVX512-BF16 or
    # AMX), else float32; weights, optimiser state and predictions stay float32. A ResNet-18 at 28x28
    # trained 2.14x faster with it on the development CPU (bench/real_baseline.py --float32-baseline).
    amp: bool = True

    def __post_init__(self) -> None:
        for name, enum in (("optimizer", Optimizer), ("loss", Loss), ("normalize", Normalize)):
            if getattr(self, name) not in {e.value for e in enum}:
                known = ", ".join(e.value for e in enum)
                raise ConfigError(f"{name} must be one of {known}, got {getattr(self, name)!r}")
        for name in ("batch", "epochs"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.lr_decay_at is not None and self.lr_decay_every is not None:
            raise ConfigError("give lr_decay_at or lr_decay_every, not both")
        if self.lr_decay_every is not None and self.lr_decay_every < 1:
            raise ConfigError(f"lr_decay_every must be at least 1, got {self.lr_decay_every}")
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"patience must be at least 1, got {self.patience}")
        if self.svm_kernel not in ("rbf", "linear", "poly", "sigmoid"):
            raise ConfigError(f"svm_kernel must be rbf, linear, poly or sigmoid, got {self.svm_kernel!r}")
        if min(self.svm_c_grid) <= 0:
            raise ConfigError(f"svm_c_grid values must be positive, got {self.svm_c_grid}")


# The MedMNIST v2 benchmark recipe for ResNet-18/50: Adam lr 1e-3, batch 128, 100 epochs,
# lr x0.1 at epochs 50 and 75, inputs normalised to [-1, 1].
MEDMNIST_RECIPE = ClassifierConfig(optimizer="adam", lr=1e-3, batch=128, epochs=100, lr_decay_at=(0.5, 0.75),
                                   lr_gamma=0.1, normalize="half")


@dataclass(frozen=True)
class ClassifierSpec:
    """A registered classifier: how to build it and the recipe its paper trained it with."""

    name: str
    paper: str
    defaults: ClassifierConfig
    build: Callable[[int, int, int, str | None], Any] = field(repr=False)
    kind: str = "torch"  # torch | svm
    # Train and predict in the channels-last memory layout: oneDNN's NHWC convolutions on CPU, tensor
    # cores on GPU. bench/classifier_speed.py measured it 1.10-1.18x a training step for ResNet-18,
    # DenseNet-121 and the lesion CNN in float32 on a 2-core CPU (docs/speed.md); an entry where it
    # measures slower sets False. Ignored by the SVM, which has no network.
    channels_last: bool = True

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout its network and inputs train and predict in."""
        return torch.channels_last if self.channels_last else torch.contiguous_format


CLASSIFIERS: Registry[ClassifierSpec] = Registry("classifier")


def resolve_classifier_config(name: str, overrides: dict[str, Any] | None = None,
                              epochs: int | None = None) -> ClassifierConfig:
    """The entry's paper defaults < ``overrides`` (``--set`` pairs or YAML) < ``epochs``.

    Raises:
        ConfigError: unknown classifier or key (with a did-you-mean hint), or a bad value.
    """
    spec = CLASSIFIERS.get(name)
    layers = [dict(vars(spec.defaults)), dict(overrides or {})]
    if epochs is not None:
        layers.append({"epochs": epochs})
    return build_config(*layers, cls=ClassifierConfig, where=f"classifier {name}")


def build_classifier(name: str, size: int, channels: int, num_classes: int, weights: str | Path | None = None):
    """Build a registered classifier for the data's image size, channels and classes.

    Args:
        name: registry name ("lesion-cnn", "resnet18", "resnet50", "densenet121", "densenet161",
            "resnet50-brain", "svm").
        size: square image side.
        channels: 1 or 3.
        num_classes: classes to predict (at least 2).
        weights: a local ImageNet state_dict file for the torchvision models (never downloaded);
            None trains from scratch.

    Returns:
        A ``ClassifierNet`` (torch entries) or an unfitted ``SvmClassifier``.

    Raises:
        ConfigError: unknown name, fewer than 2 classes, or weights for a model that takes none.
        DataError: the weights file cannot be read or does not fit the architecture.
    """
    spec = CLASSIFIERS.get(name)
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, the data has {num_classes}")
    if size < 8:
        raise ConfigError(f"image size {size} is too small for a classifier (at least 8)")
    return spec.build(size, channels, num_classes, None if weights is None else str(weights))


class ClassifierNet(nn.Module):
    """trunk (x -> penultimate features) + head (features -> logits), input normalisation as buffers."""

    def __init__(self, trunk: nn.Module, head: nn.Module, channels: int):
        super().__init__()
        self.trunk, self.head = trunk, head
        self.register_buffer("input_shift", torch.zeros(channels))
        self.register_buffer("input_scale", torch.ones(channels))

    def set_normalization(self, mode: str, images: np.ndarray | None = None) -> None:
        """Fix the input normalisation (before training; it is saved with the weights)."""
        c = len(self.input_shift)
        shift, scale = np.zeros(c), np.ones(c)
        if mode == Normalize.MEAN:
            shift = np.asarray(images, dtype=np.float64).mean(axis=(0, 2, 3))
        elif mode == Normalize.HALF:
            shift, scale = np.full(c, 0.5), np.full(c, 0.5)
        elif mode == Normalize.IMAGENET:
            mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
            shift, scale = (mean, std) if c == 3 else (np.full(c, mean.mean()), np.full(c, std.mean()))
        self.input_shift.copy_(torch.as_tensor(shift, dtype=torch.float32))
        self.input_scale.copy_(torch.as_tensor(scale, dtype=torch.float32))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.input_shift[None, :, None, None]) / self.input_scale[None, :, None, None]
        return torch.flatten(self.trunk(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


# ---- liver-lesion CNN ------------------------------------------------------------------------

def _lesion_cnn(size: int, channels: int, num_classes: int, weights: str | None) -> ClassifierNet:
    """Frid-Adar et al.'s lesion CNN: three conv pairs, each pair then a 2x2 max-pool; two dense layers.

    The text gives the layout, ReLU, dropout 0.5 and "approx. 1.3M parameters" but leaves kernel
    sizes and widths to its Fig. 2. 3x3 kernels with 32/64/128 filters and a 128-unit hidden dense
    layer give 1.34M parameters at the paper's 64x64 input, matching that count.
    """
    _no_weights("lesion-cnn", weights)
    layers: list[nn.Module] = []
    width_in, side = channels, size
    for width in (32, 64, 128):
        layers += [nn.Conv2d(width_in, width, 3, padding=1), nn.ReLU(inplace=True),
                   nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        width_in, side = width, side // 2
    trunk = nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * side * side, 128), nn.ReLU(inplace=True))
    return ClassifierNet(trunk, nn.Sequential(nn.Dropout(0.5), nn.Linear(128, num_classes)), channels)


# ---- torchvision families --------------------------------------------------------------------

def load_imagenet_weights(model: nn.Module, path: str, name: str) -> None:
    """Load a local torchvision ImageNet state_dict into the unmodified (3-channel, 1000-class) model."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        model.load_state_dict(state)
    except FileNotFoundError:
        raise DataError(path, "weights file not found") from None
    except Exception as err:  # noqa: BLE001 - unreadable and mismatched files are one problem for the user
        raise DataError(path, f"not a torchvision {name} ImageNet state_dict ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:160]})") from None


def _adapt_stem(conv: nn.Conv2d, channels: int, small: bool) -> nn.Conv2d:
    """The MedMNIST small-image stem (3x3, stride 1) or the ImageNet 7x7 one re-fitted to ``channels``.

    A 7x7 ImageNet kernel on grey input is summed over RGB (as timm's adapt_input_conv), so a grey
    image gives the response of the same grey image in RGB. The 3x3 stem starts fresh.
    """
    if small:
        return nn.Conv2d(channels, conv.out_channels, 3, stride=1, padding=1, bias=False)
    if channels == conv.in_channels:
        return conv
    new = nn.Conv2d(channels, conv.out_channels, 7, stride=2, padding=3, bias=False)
    with torch.no_grad():
        weight = conv.weight.sum(dim=1, keepdim=True)
        new.weight.copy_(weight.repeat(1, channels, 1, 1) / channels)
    return new


def _resnet(arch: str, head: Callable[[int, int], nn.Module] | None = None):
    def build(size: int, channels: int, num_classes: int, weights: str | None) -> ClassifierNet:
        model = getattr(torchvision.models, arch)(weights=None)
        if weights:
            load_imagenet_weights(model, weights, arch)
        small = size <= SMALL_STEM_MAX
        model.conv1 = _adapt_stem(model.conv1, channels, small)
        if small:
            model.maxpool = nn.Identity()
        width = model.fc.in_features
        model.fc = nn.Identity()
        return ClassifierNet(model, head(width, num_classes) if head else nn.Linear(width, num_classes), channels)

    return build


def _densenet(arch: str):
    def build(size: int, channels: int, num_classes: int, weights: str | None) -> ClassifierNet:
        model = getattr(torchvision.models, arch)(weights=None)
        if weights:
            load_imagenet_weights(model, weights, arch)
        small = size <= SMALL_STEM_MAX
        model.features.conv0 = _adapt_stem(model.features.conv0, channels, small)
        if small:
            model.features.pool0 = nn.Identity()
        width = model.classifier.in_features
        model.classifier = nn.Identity()
        return ClassifierNet(model, nn.Linear(width, num_classes), channels)

    return build


def _brain_head(width: int, num_classes: int) -> nn.Module:
    """Han et al. Table 4: 0.5 dropout, dense, batch norm, then the sigmoid (applied by the loss)."""
    return nn.Sequential(nn.Dropout(0.5), nn.Linear(width, num_classes), nn.BatchNorm1d(num_classes))


# ---- SVM -------------------------------------------------------------------------------------

class SvmClassifier:
    """scikit-learn SVC with Platt-scaled probabilities, on flattened pixels or on given features.

    Not a torch module: ``fit`` takes a feature matrix, ``predict_proba`` returns (N, K).
    ``evaluate.classify`` supplies the features (pixels, or a trained network's penultimate layer).
    """

    def __init__(self, size: int, channels: int, num_classes: int):
        self.size, self.channels, self.num_classes = size, channels, num_classes
        self.model = None

    def fit(self, features: np.ndarray, labels: np.ndarray, c: float, kernel: str, seed: int) -> "SvmClassifier":
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.model_selection import StratifiedKFold
        from sklearn.svm import SVC

        # Platt scaling fitted on 5-fold out-of-fold decision values, then one SVC on all data:
        # what SVC(probability=True) did (deprecated in scikit-learn 1.9), with seeded folds.
        counts = np.bincount(labels)
        folds = StratifiedKFold(n_splits=max(2, min(5, int(counts[counts > 0].min()))), shuffle=True, random_state=seed)
        self.model = CalibratedClassifierCV(SVC(C=c, kernel=kernel, gamma="scale"), method="sigmoid", cv=folds,
                                            ensemble=False)
        self.model.fit(features, labels)
        return self

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        proba = np.zeros((len(features), self.num_classes))
        proba[:, self.model.classes_] = self.model.predict_proba(features)
        return proba


def _svm(size: int, channels: int, num_classes: int, weights: str | None) -> SvmClassifier:
    _no_weights("svm", weights)
    return SvmClassifier(size, channels, num_classes)


def _no_weights(name: str, weights: str | None) -> None:
    if weights:
        raise ConfigError(f"{name} has no ImageNet weights; leave out the weights file")


# ---- registry --------------------------------------------------------------------------------

_LESION = ClassifierConfig(optimizer="sgd", lr=1e-3, momentum=0.9, nesterov=True, batch=64, epochs=150,
                           normalize="mean")  # Frid-Adar et al. 2018, section II-B
_BRAIN = ClassifierConfig(optimizer="sgd", lr=1e-2, momentum=0.9, batch=96, epochs=100, lr_decay_every=20,
                          lr_gamma=0.1, patience=20, loss="bce", normalize="half")  # Han et al. 2019, III-D
_SVM = ClassifierConfig(normalize="none")
# The retina paper: "a batch size of 64 with a learning rate of 0.0001 for 40 epochs" for ResNet-101
# and DenseNet-121; it names no optimiser, and Adam is the one that learning rate is usual for.
_RETINA = ClassifierConfig(optimizer="adam", lr=1e-4, batch=64, epochs=40)

for _spec in (
    ClassifierSpec("lesion-cnn", "Frid-Adar et al. 2018, liver lesion CNN (SGD Nesterov 0.9, lr 1e-3, batch 64, 150 epochs)",
                   _LESION, _lesion_cnn),
    ClassifierSpec("resnet18", "He et al. 2016; MedMNIST v2 benchmark recipe", MEDMNIST_RECIPE, _resnet("resnet18")),
    ClassifierSpec("resnet50", "He et al. 2016; MedMNIST v2 benchmark recipe", MEDMNIST_RECIPE, _resnet("resnet50")),
    ClassifierSpec("densenet121", "Huang et al. 2017; trained with the MedMNIST v2 ResNet recipe",
                   MEDMNIST_RECIPE, _densenet("densenet121")),
    ClassifierSpec("densenet161", "Huang et al. 2017; trained with the MedMNIST v2 ResNet recipe",
                   MEDMNIST_RECIPE, _densenet("densenet161")),
    ClassifierSpec("resnet50-brain", "Han et al. 2019, ResNet-50 with dropout/dense/BN head (SGD 0.9, lr 1e-2, batch 96)",
                   _BRAIN, _resnet("resnet50", _brain_head)),
    ClassifierSpec("resnet101", f"He et al. 2016; ResNet-101 of {papers.RETINA} (Adam, lr 1e-4, batch 64, 40 epochs)",
                   _RETINA, _resnet("resnet101")),
    ClassifierSpec("densenet121-retina", f"Huang et al. 2017; DenseNet-121 with the recipe of {papers.RETINA}",
                   _RETINA, _densenet("densenet121")),
    ClassifierSpec("svm", f"scikit-learn SVC (RBF) on pixels, as the SVM baseline of {papers.UNET}", _SVM, _svm, kind="svm"),
):
    CLASSIFIERS.register(_spec.name, _spec)
