"""Exponential moving average of generator weights (samples come from the EMA copy)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """Keeps ``decay``-weighted averages of a module's parameters; buffers (BN statistics) are copied."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Ramp-up: early on the generator changes fast, so a long average would only blur it.
        decay = min(self.decay, (1 + step) / (10 + step))
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_buf, buf in zip(self.module.buffers(), model.buffers()):
            ema_buf.copy_(buf)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)


@torch.no_grad()
def recalibrate_batch_norm(generator: nn.Module, make_inputs, batches: int = 16) -> nn.Module:
    """Re-estimate BN running statistics of ``generator`` for its own (EMA) weights, in place.

    Averaged weights with statistics copied from the live generator do not match each other, and a
    BN generator in eval mode then renders dark, washed-out images ("standing statistics", BigGAN).
    ``make_inputs(i) -> (z, labels)`` (or (z, labels, sources)) gives batch i; the result is in eval mode.
    """
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return generator.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    generator.train()
    for i in range(batches):
        generator(*make_inputs(i))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    return generator.eval()


def calibration_inputs(cfg, num_classes: int, device: torch.device, seed: int, batch: int = 64, sources=None):
    """Seeded (z, labels) batches with classes balanced, for ``recalibrate_batch_norm``.

    With ``sources`` (a ``SourcePool``, for image-input generators) the batches are
    (z, labels, real images of those classes), drawn from the same seed.
    """
    from medsyn.train.batches import step_seed
    from medsyn.train.setup import sample_latent

    def make(i: int):
        gen = torch.Generator().manual_seed(step_seed(seed, i, stream=77))
        labels = torch.arange(batch) % max(1, num_classes)
        z = sample_latent(batch, cfg, torch.device("cpu"), generator=gen).to(device)
        if sources is None:
            return z, labels.to(device)
        return z, labels.to(device), sources.pick(labels, gen)[0].to(device)

    return make
