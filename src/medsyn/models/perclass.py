"""One network per class behind the conditional interface, for training per class as the papers did.

The liver-lesion paper trained one DCGAN per lesion class. Wrapping K independent networks as one
module lets the same loop, loss objects, optimiser, EMA and checkpoint serve both modes: each
sub-network only ever sees the images (or latents) of its own class.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class PerClassGenerator(nn.Module):
    def __init__(self, generators: list[nn.Module]):
        super().__init__()
        self.nets = nn.ModuleList(generators)
        self.z_dim = generators[0].z_dim

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        out = None
        for k, net in enumerate(self.nets):
            mask = labels == k
            if not _present(mask):
                continue
            part = net(z[mask], None)
            if out is None:
                out = part.new_empty((z.shape[0], *part.shape[1:]))
            out[mask] = part
        assert out is not None, "labels name no class of this generator"
        return out


class PerClassDiscriminator(nn.Module):
    def __init__(self, discriminators: list[nn.Module]):
        super().__init__()
        self.nets = nn.ModuleList(discriminators)

    def forward(self, x: Tensor, labels: Tensor) -> tuple[Tensor, None]:
        scores = x.new_empty(x.shape[0], dtype=torch.float32)
        for k, net in enumerate(self.nets):
            mask = labels == k
            if not _present(mask):
                continue
            score, _ = net(x[mask], None)
            scores[mask] = score.float()
        return scores, None


def _present(mask: Tensor) -> bool:
    # A class absent from the batch is skipped (BN cannot run on zero images); one host sync per class.
    return bool(mask.any())
