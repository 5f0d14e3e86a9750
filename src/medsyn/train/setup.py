"""Everything a run needs before its first step: device, config resolution, networks, optimisers."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from medsyn.config import PIXEL_OFFSETS, LatentDistribution, Optimizer, TrainConfig, build_config, check_family_keys
from medsyn.errors import ConfigError
from medsyn.models import MODELS, create_discriminator, create_generator
from medsyn.models.base import AnySpec, Conditioning, ImageSpec, ModelSpec, NetOptions, Role
from medsyn.models.perclass import PerClassDiscriminator, PerClassGenerator
from medsyn.train.losses import objective_families

MIN_SIZE, MAX_SIZE = 28, 256


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but no CUDA GPU is visible; use --device cpu")
    if not (name == "cpu" or name.startswith("cuda")):
        raise ConfigError(f"device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether the device has bf16 arithmetic units: CUDA GPUs from Ampere on, x86 CPUs with AVX512-BF16
    or AMX. Elsewhere bf16 is emulated by conversions, with no speed-up to expect."""
    if device.type == "cuda":  # compute capability 8 (Ampere) on; is_bf16_supported() also counts emulation
        return bool(torch.version.hip) or torch.cuda.get_device_properties(device).major >= 8
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own CPUID probes
    return device.type == "cpu" and any(getattr(torch.cpu, name, lambda: False)() for name in probes)


COMPUTE_DTYPES = {"bf16 autocast": torch.bfloat16, "float32": torch.float32}  # mixed_precision's names


def mixed_precision(device: torch.device, amp: bool) -> tuple[str, Callable[[], ContextManager]]:
    """(name, factory of the autocast context) for a run's training steps: bf16 autocast when asked
    for and native on the device, else float32. Parameters, optimiser state and losses stay float32."""
    if amp and native_bf16(device):
        return "bf16 autocast", lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return "float32", contextlib.nullcontext


def resolve_config(*layers: dict[str, Any], user_layers: int | None = None) -> tuple[TrainConfig, AnySpec]:
    """Config = TrainConfig defaults < the model paper's defaults < layers (stored run, file, --set, flags).

    Args:
        layers: key/value layers, later ones win.
        user_layers: how many of the last layers the user gave (default: all). Their keys are checked
            against the model's family: a key only another family reads is an error, not ignored.
            A resumed run's stored config is not a user layer.
    """
    layers = _last_length_wins(layers)
    user = {}
    for layer in layers:
        user.update(layer)
    spec = MODELS.get(str(user.get("model", TrainConfig.model)))
    defaults = dict(spec.train_defaults)
    if any(key in layer for layer in layers for key in RUN_LENGTH):
        defaults.pop("steps", None), defaults.pop("epochs", None)  # a given length replaces the paper's, either way
    if spec.role is Role.GENERATOR:
        defaults["objective"] = spec.objective
    cfg = build_config(defaults, *layers)
    given_layers = layers if user_layers is None else layers[len(layers) - user_layers:]
    given = {key: value for layer in given_layers for key, value in layer.items()}
    families = spec.families | (objective_families(cfg.objective) if cfg.objective else frozenset())
    check_family_keys(given, families, spec.name)
    if spec.conditioning == Conditioning.ALWAYS and cfg.per_class:
        raise ConfigError(f"{spec.name} is class-conditional by design; drop --per-class")
    if spec.conditioning == Conditioning.NEVER and not cfg.per_class:
        # Vanilla GAN has no labels: labeled output needs one generator per class.
        cfg = replace(cfg, per_class=True)
    return cfg, spec


RUN_LENGTH = ("steps", "epochs")


def _last_length_wins(layers: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """The last layer that sets steps or epochs decides the run's length: earlier layers' steps and
    epochs are dropped (a stored run of 70 epochs resumed with ``--steps 9`` runs 9 steps)."""
    given = [i for i, layer in enumerate(layers) if any(layer.get(key) is not None for key in RUN_LENGTH)]
    if not given:
        return list(layers)
    return [layer if i >= given[-1] else {k: v for k, v in layer.items() if k not in RUN_LENGTH}
            for i, layer in enumerate(layers)]


@dataclass
class Networks:
    generator: nn.Module
    discriminator: nn.Module
    image_spec: ImageSpec


def build_networks(spec: ModelSpec, cfg: TrainConfig, size: int, channels: int, num_classes: int) -> Networks:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ConfigError(f"image size {size} is outside {MIN_SIZE}..{MAX_SIZE}; pass --set size=64 to resize")
    options = NetOptions(z_dim=cfg.z_dim, width=cfg.width, kernel=cfg.kernel, pixel_offset=PIXEL_OFFSETS[cfg.pixel_range],
                         noise_inputs=cfg.noise_inputs)
    if cfg.per_class:
        single = ImageSpec(size, channels, 0)
        G = PerClassGenerator([create_generator(spec.name, single, options) for _ in range(num_classes)])
        D = PerClassDiscriminator([create_discriminator(spec.name, single, options) for _ in range(num_classes)])
    else:
        image_spec = ImageSpec(size, channels, num_classes)
        G, D = create_generator(spec.name, image_spec, options), create_discriminator(spec.name, image_spec, options)
    return Networks(G, D, ImageSpec(size, channels, num_classes))


def build_optimizer(params, cfg: TrainConfig, lr: float, device: torch.device) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.optimizer is Optimizer.ADAM:
        fused = device.type == "cuda"  # one kernel per step on the GPU; CPU keeps the reference path
        return torch.optim.Adam(params, lr=lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer is Optimizer.RMSPROP:
        return torch.optim.RMSprop(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)


def learning_rate_scale(cfg: TrainConfig, step: int, total_steps: int) -> float:
    if cfg.lr_drop_at is not None and step >= cfg.lr_drop_at * total_steps:
        return cfg.lr_drop_factor
    return 1.0


def sample_latent(n: int, cfg: TrainConfig, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    if cfg.z_dist is LatentDistribution.UNIFORM:  # the papers' U[-1, 1]
        return torch.rand(n, cfg.z_dim, device=device, generator=generator) * 2 - 1
    return torch.randn(n, cfg.z_dim, device=device, generator=generator)


def apply_spectral_norm(discriminator: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of every conv, linear and embedding weight, in place.

    Each weight is divided by its largest singular value (one power iteration per training forward),
    so the discriminator is about 1-Lipschitz layer by layer: it cannot sharpen without bound on a
    small set. The power-iteration vectors are buffers, saved in checkpoints, so resume stays exact.
    """
    from torch.nn.utils.parametrizations import spectral_norm

    for module in list(discriminator.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.Embedding)) and not hasattr(module, "parametrizations"):
            spectral_norm(module)
    return discriminator
