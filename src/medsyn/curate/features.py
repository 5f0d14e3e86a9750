"""The feature networks curation can cluster with, all built as ``FeatureExtractor``s (so the cache applies).

inception (default): the packaged TF-FID InceptionV3 (pool3, 2048-d). It is always available
offline, and it is the space FID is measured in, so clusters and scores speak the same language as
the fidelity numbers.
densenet121 / densenet169: a torchvision DenseNet with ImageNet weights from a local file (the
brain-MRI paper clustered DenseNet-169 features); global-average-pooled last block.
domain: the penultimate features of a classifier trained on the real data (``medsyn classify``'s
classifier.pt), the same space as the domain Frechet distance of ``medsyn.evaluate.fidelity``.
pixels: flattened 32x32 pixels; only for quick runs and tests, it sees intensity, not content.
"""
from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import torch
import torchvision
from torch import nn

from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError, DataError
from medsyn.metrics.features import FeatureExtractor, InceptionExtractor, ModuleFeatureExtractor, resize

PIXEL_SIDE = 32  # 1024 values per grey image: enough to tell flat from textured, small enough for k-means
IMAGENET_SIDE = 224  # the input side the torchvision ImageNet weights were trained at
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureSource(StrEnum):
    INCEPTION = "inception"
    DENSENET121 = "densenet121"
    DENSENET169 = "densenet169"
    DOMAIN = "domain"
    PIXELS = "pixels"


def parse_feature_source(name: str) -> FeatureSource:
    try:
        return FeatureSource(name)
    except ValueError:
        known = ", ".join(s.value for s in FeatureSource)
        raise ConfigError(f"unknown --features {name!r} (known: {known})") from None


class PixelExtractor:
    """Images resized to 32x32 (bilinear) and flattened: a network-free stand-in for quick runs and tests."""

    name = "pixels"
    layer = "pixels"

    def __init__(self, side: int = PIXEL_SIDE):
        self.side = side
        self.dim = None  # set by the first batch: side * side * channels
        self.key = f"{self.name}|size={side}|resize=bilinear"

    def to(self, device: torch.device | str) -> "PixelExtractor":
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        feats = resize(images.float(), self.side, "bilinear").flatten(1)
        self.dim = int(feats.shape[1])
        return feats


class ImageNetDenseNet(nn.Module):
    """An unmodified ImageNet DenseNet whose ``features`` are the pooled last block (1024-d for 121, 1664-d for 169).

    The ImageNet normalisation is a buffer here, so [0, 1] RGB at 224x224 goes in, as the
    weights expect (ModuleFeatureExtractor does the grey->RGB and the resize).
    """

    def __init__(self, arch: str, weights: str | Path):
        super().__init__()
        from medsyn.models.classifiers import load_imagenet_weights  # the same loader (and errors) the classifiers use

        net = getattr(torchvision.models, arch)(weights=None)
        load_imagenet_weights(net, str(weights), arch)
        self.body = net.features
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        # torchvision's DenseNet.forward does exactly this before its classifier
        return torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(self.body(x)), 1), 1)


def build_extractor(source: FeatureSource | str, weights: str | Path | None = None, device: str = "auto",
                    synthetic: LabeledImages | None = None) -> FeatureExtractor:
    """The feature network named by ``--features``.

    Args:
        source: a FeatureSource value.
        weights: inception: TorchScript file (None: the packaged one); densenet*: a torchvision
            ImageNet state_dict (required); domain: a classifier.pt written by ``medsyn classify``
            (required); pixels: must be None.
        device: where a domain classifier is loaded.
        synthetic: the set to curate; a domain classifier must know its classes, size and channels.

    Raises:
        ConfigError: a missing or superfluous weights file, or a classifier without features (SVM).
        DataError: a domain classifier trained on other classes, sizes or channels than ``synthetic``.
    """
    source = parse_feature_source(source)
    if source is FeatureSource.INCEPTION:
        return InceptionExtractor(weights)
    if source is FeatureSource.PIXELS:
        if weights is not None:
            raise ConfigError("--features pixels uses no network; leave out --weights")
        return PixelExtractor()
    if source is FeatureSource.DOMAIN:
        return _domain_extractor(weights, device, synthetic)
    if weights is None:
        raise ConfigError(f"--features {source.value} needs --weights FILE, a torchvision ImageNet state_dict "
                          f"(e.g. {source.value}-*.pth; medsyn never downloads): a randomly initialised DenseNet "
                          f"groups images by noise, not by what they show; or use --features inception, which is "
                          f"packaged")
    net = ImageNetDenseNet(source.value, weights)
    return ModuleFeatureExtractor(net, f"{source.value}-imagenet", size=IMAGENET_SIDE, channels=3)


def _domain_extractor(weights: str | Path | None, device: str, synthetic: LabeledImages | None) -> FeatureExtractor:
    from medsyn.evaluate.classify import load_classifier

    if weights is None:
        raise ConfigError("--features domain needs --weights CLASSIFIER.pt, a classifier trained on the real data "
                          "(`medsyn classify --data REAL --classifier resnet18 --out RUN` writes RUN/classifier.pt)")
    trained = load_classifier(weights, device)
    if not hasattr(trained.model, "features"):
        raise ConfigError(f"{weights}: a {trained.name} classifier has no feature layer; use a network classifier")
    if synthetic is not None:
        if list(trained.class_names) != list(synthetic.class_names):
            raise DataError(weights, f"classifier trained on classes {list(trained.class_names)}, "
                                     f"{synthetic.source} has {list(synthetic.class_names)}")
        if (trained.size, trained.channels) != (synthetic.size, synthetic.channels):
            raise DataError(weights, f"classifier takes {trained.size}x{trained.size}x{trained.channels} images, "
                                     f"{synthetic.source} has {synthetic.size}x{synthetic.size}x{synthetic.channels}")
    return ModuleFeatureExtractor(trained.model, f"domain-{trained.name}",
                                  size=trained.size, channels=trained.channels)
