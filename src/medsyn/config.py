"""Typed, strict configuration: unknown keys are errors, the resolved config is saved with every run."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import yaml

from medsyn.errors import ConfigError
from medsyn.registry import Registry


class Objective(StrEnum):
    """The adversarial objective of a generator GAN (one loss object each, medsyn.train.losses)."""

    BCE = "bce"  # non-saturating GAN, Goodfellow et al. 2014 (the papers' DCGAN, GAN, cGAN, ACGAN)
    HINGE = "hinge"  # hinge loss, Lim & Ye 2017 / Miyato et al. 2018 (SNGAN, BigGAN)
    WGAN_CLIP = "wgan-clip"  # WGAN with weight clipping, Arjovsky et al. 2017 (retina paper)
    WGAN_GP = "wgan-gp"  # WGAN with gradient penalty, Gulrajani et al. 2017
    WGAN_GP_DRIFT = "wgan-gp-drift"  # WGAN-GP plus PGGAN's drift term, Karras et al. 2018


class Optimizer(StrEnum):
    ADAM = "adam"
    RMSPROP = "rmsprop"  # the retina paper's WGAN (Arjovsky et al.: momentum destabilises clipped critics)
    SGD = "sgd"  # generators: Nesterov momentum 0.9; refiners: plain SGD, as the brain-MRI paper's SimGAN


class LatentDistribution(StrEnum):
    UNIFORM = "uniform"  # U[-1, 1], the papers' DCGANs
    NORMAL = "normal"  # N(0, I)


# pixel_range -> what the networks add to medsyn's [-1, 1] images (a model's linear output makes this a real choice)
PIXEL_OFFSETS = {"-1,1": 0.0, "0,2": 1.0}


def only_for(default: Any, *families: str) -> Any:
    """A config field read only by models of the given families (``ModelSpec.families`` tags).

    Setting it for a model of another family is an error (``check_family_keys``), not a value that
    is saved and silently ignored. Tags: "gan" (every generator GAN), "refiner" (every refiner),
    "simgan", "unit" (unit and munit), "lungct-gan", "sngan", and the objectives'
    "gradient-penalty" (wgan-gp, wgan-gp-drift) and "weight-clipping" (wgan-clip).
    """
    return dataclasses.field(default=default, metadata={"families": families})


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run. Model defaults (the papers') fill what the user leaves out."""

    model: str = "dcgan"
    steps: int | None = None  # total generator steps of the run (resume counts from the start)
    epochs: float | None = None  # alternative to steps: passes over the training images
    batch: int = 64  # images per step (per class with per_class)
    per_class: bool = False  # one G/D pair per class, as the liver-lesion paper trained its DCGAN
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # optimisation (the model's paper decides the defaults)
    optimizer: Optimizer = Optimizer.ADAM
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.0  # L2 on both networks (lung-CT paper: 1e-5)
    lr_drop_at: float | None = None  # fraction of the run after which both lrs are multiplied by lr_drop_factor
    lr_drop_factor: float = 0.5
    # generator GANs
    objective: Objective | None = only_for(None, "gan")  # default: the model paper's (bce, hinge, wgan-clip, wgan-gp, ...)
    critic_steps: int = only_for(1, "gan")  # discriminator updates per generator update
    # Images per discriminator pass (None: the whole batch). The batch's gradient is accumulated
    # over passes of this many images, so the result is the same batch's but the memory is the
    # pass's: StyleGAN2-ADA's batch_gpu. Only for discriminators that judge each image on its own
    # (no batch norm, no minibatch statistics).
    micro_batch: int | None = only_for(None, "gan")
    kernel: int = only_for(3, "lungct-gan")  # the lung-CT paper's Fig. 1 compares 3x3 (its choice) with 5x5
    pixel_range: str = only_for("-1,1", "lungct-gan")  # "0,2": the lung-CT paper's intensity scaling
    noise_inputs: bool = only_for(False, "sngan")  # StyleGAN's per-pixel noise inputs in the generator (models/noise.py)
    gp_weight: float = only_for(10.0, "gradient-penalty")  # WGAN-GP penalty
    # Lazy penalty (StyleGAN2's lazy regularisation): the gradient penalty on every gp_every-th critic
    # update only, weighted gp_every times, so the average pull is unchanged and its double backward
    # runs 1/gp_every as often. 1 = the papers' penalty on every update.
    gp_every: int = only_for(1, "gradient-penalty")
    clip: float = only_for(0.01, "weight-clipping")  # WGAN weight clipping
    z_dim: int = only_for(100, "gan")
    z_dist: LatentDistribution = only_for(LatentDistribution.UNIFORM, "gan")
    width: float = 1.0  # channel multiplier of both networks
    ema_decay: float = only_for(0.995, "gan")  # EMA of generator weights, used for sampling (ramped up from 0 early on)
    augment: str | None = only_for(None, "gan")  # classic preset applied online to real images (on the device)
    # data-efficient training (small sets): what the discriminator sees and how it is regularised
    diffaug: str | None = only_for(None, "gan", "refiner")  # DiffAugment policy, e.g. "color,translation,cutout" (Zhao et al. 2020)
    ada_target: float | None = only_for(None, "gan")  # ADA: adapt the augmentation probability p so E[sign D(real)] -> target (0.6)
    ada_kimg: float = only_for(100.0, "gan")  # ADA: thousands of images for p to move from 0 to 1 (StyleGAN2-ADA: 500)
    r1: float = only_for(0.0, "gan")  # R1 penalty weight gamma: gamma/2 E|grad D(real)|^2 (Mescheder et al. 2018)
    r1_every: int = only_for(16, "gan")  # lazy R1: every r1_every-th critic update, weighted to match (StyleGAN2)
    lecam: float = only_for(0.0, "gan")  # LeCam regularisation weight lambda (Tseng et al. 2021: 0.3 with DiffAugment); 0 = off
    spectral_norm: bool = only_for(False, "gan", "refiner")  # spectral normalisation of the discriminator's weights (Miyato et al. 2018)
    # refiners (brain-MRI paper, Tables 2 and 3)
    lr_halve_every: int | None = only_for(None, "refiner")  # halve both lrs every N steps (UNIT/MUNIT: every 20k of 100k)
    # Activation checkpointing of the translator's residual blocks: the forward keeps each block's
    # input only and the backward runs the block again for the rest, so a step holds one block's
    # activations instead of all of them, for one more forward of the blocks. The same update
    # (batch norm's running statistics are not updated twice); the model's default says where it is on.
    recompute_blocks: bool = only_for(False, "refiner")
    pretrain_steps: int = only_for(0, "simgan")  # SimGAN: first refiner steps on the self-regulariser alone (paper: 500)
    refiner_steps: int = only_for(1, "simgan")  # SimGAN: refiner updates per discriminator update (paper: 5)
    history_size: int = only_for(0, "simgan")  # SimGAN: refined images kept for the discriminator (0 = no history buffer)
    reg_weight: float = only_for(5e-5, "simgan")  # SimGAN: lambda of the L1 self-regulariser, summed over pixels as in Shrivastava et al.
    gan_weight: float = only_for(1.0, "unit")  # UNIT/MUNIT: adversarial (LSGAN) term
    recon_weight: float = only_for(10.0, "unit")  # UNIT/MUNIT: within-domain image reconstruction (L1)
    kl_weight: float = only_for(0.01, "unit")  # UNIT/MUNIT: KL of the latent code of the reconstruction stream
    cycle_weight: float = only_for(10.0, "unit")  # UNIT/MUNIT: cycle reconstruction (L1)
    cycle_kl_weight: float = only_for(0.01, "unit")  # UNIT/MUNIT: KL of the latent code of the cycle stream
    perceptual_weight: float = only_for(1.0, "unit")  # UNIT/MUNIT: domain-invariant perceptual term (used only with perceptual_weights)
    perceptual_weights: str | None = only_for(None, "unit")  # UNIT/MUNIT: torchvision VGG-19 ImageNet state_dict (.pth); never downloaded
    # data
    size: int | None = None  # image side the model works at; default: the data's
    channels: int | None = None  # 1 or 3; default: the data's
    interpolation: str = "bilinear"
    split: str = "train"  # split of a source that has its own (MedMNIST); ignored otherwise
    # bookkeeping
    ckpt_every: int = 250
    log_every: int = 25
    grid_every: int = 250
    amp: bool = only_for(True, "gan")  # bf16 autocast where bf16 is native (CUDA 8.0+ GPUs; CPUs with AVX512-BF16 or AMX), else float32

    def __post_init__(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise ConfigError("give steps or epochs, not both")
        if self.pixel_range not in PIXEL_OFFSETS:
            raise ConfigError(f"pixel_range must be one of {', '.join(PIXEL_OFFSETS)}, got {self.pixel_range!r}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ConfigError(f"kernel must be an odd number (3 or 5 in the lung-CT paper), got {self.kernel}")
        for name in ("batch", "critic_steps", "gp_every", "r1_every", "ckpt_every", "log_every", "grid_every", "z_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.micro_batch is not None and self.micro_batch < 1:
            raise ConfigError(f"micro_batch must be at least 1, got {self.micro_batch}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.width <= 0:
            raise ConfigError(f"width must be positive, got {self.width}")
        if self.refiner_steps < 1 or self.pretrain_steps < 0 or self.history_size < 0:
            raise ConfigError("refiner_steps must be at least 1, pretrain_steps and history_size at least 0")
        if self.lr_halve_every is not None and self.lr_halve_every < 1:
            raise ConfigError(f"lr_halve_every must be at least 1, got {self.lr_halve_every}")
        if self.ada_target is not None and not 0.0 < self.ada_target < 1.0:
            raise ConfigError(f"ada_target must be in (0, 1) (StyleGAN2-ADA: 0.6), got {self.ada_target}")
        if self.ada_kimg <= 0 or self.r1 < 0 or self.lecam < 0:
            raise ConfigError("ada_kimg must be positive, and r1 and lecam at least 0")


FAMILY_NAMES = {
    "gan": "generator GANs", "refiner": "refiners (simgan, unit, munit)", "simgan": "simgan",
    "unit": "unit and munit", "gradient-penalty": "the wgan-gp objectives", "weight-clipping": "the wgan-clip objective",
}


def check_family_keys(values: dict[str, Any], families: frozenset[str], model: str, cls: type = TrainConfig) -> None:
    """Refuse keys that only other families read (e.g. cycle_weight on dcgan): they would be ignored.

    Args:
        values: the keys the user gave (config file, --set, flags, a study entry), not the model's defaults.
        families: the tags of the chosen model and objective.
        model: the model's name, for the message.
    """
    owners = {f.name: f.metadata.get("families", ()) for f in fields(cls)}
    for key in values:
        wanted = owners.get(key, ())
        if wanted and not families.intersection(wanted):
            readers = " or ".join(FAMILY_NAMES.get(w, w) for w in wanted)
            raise ConfigError(f"{key} is a setting of {readers}; {model} does not use it (drop it, or choose "
                              f"a model that does: `medsyn models`)")


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Convert a YAML or --set value to the annotated type, or raise ConfigError."""
    hint = typing.get_type_hints(TrainConfig)[name] if isinstance(annotation, str) else annotation
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(name, value, args[0])
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        inner = typing.get_args(hint)
        if len(items) != len(inner):
            raise ConfigError(f"{name} takes {len(inner)} values, got {value!r}")
        return tuple(_coerce(name, v, t) for v, t in zip(items, inner))
    if isinstance(hint, type) and issubclass(hint, Enum):
        try:
            return hint(str(value).lower())
        except ValueError:
            choices = ", ".join(member.value for member in hint)
            raise ConfigError(f"{name} must be one of {choices}, got {value!r}") from None
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(value)
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) else int(value)
        if hint is float:
            return float(value)
        if hint is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot read {value!r} as {hint.__name__}") from None
    return value


def config_keys(cls: type = TrainConfig) -> list[str]:
    return [f.name for f in fields(cls)]


def check_keys(values: dict[str, Any], cls: type = TrainConfig, where: str = "config") -> None:
    """Reject keys the config class does not have, with a did-you-mean hint."""
    known = Registry[None]("config key")
    for key in config_keys(cls):
        known.register(key, None)
    for key in values:
        if key not in known:
            try:
                known.get(key)
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None


def build_config(*layers: dict[str, Any], cls: type = TrainConfig, where: str = "config"):
    """Merge layers left to right (later wins), type-check every value, and build the frozen config."""
    merged: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for layer in layers:
        check_keys(layer, cls, where)
        for key, value in layer.items():
            merged[key] = _coerce(key, value, hints[key])
    return cls(**merged)


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ``--set key=value`` pairs into a dict (values stay strings; build_config types them)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set takes key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value")
    return data


def to_dict(config) -> dict[str, Any]:
    """Plain YAML/JSON types (tuples as lists, enums as their strings), as saved in every run."""
    out = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v.value if isinstance(v, Enum) else v for k, v in out.items()}
