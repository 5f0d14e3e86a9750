"""The domain-invariant perceptual term of UNIT/MUNIT: instance-normalised VGG features must match.

Huang et al. 2018 (MUNIT, Sec. 5) compare a translated image with its source on VGG features after
instance normalisation, which removes the style (feature means and variances) and keeps the
content. The network is torchvision's VGG-19 with ImageNet weights read from a file the user
gives (``--set perceptual_weights=vgg19.pth``); nothing is ever downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsyn.errors import ConfigError

VGG_INPUT = 224  # the side VGG was trained at (and the brain-MRI paper's image side)
VGG19_RELU5_4 = 36  # features[:36] ends at relu5_4, the deepest ReLU (UNIT's VGG-16 used relu5_3)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OFF_NOTICE = "perceptual term off (no --set perceptual_weights=...)"


def load_vgg19_features(path: str | Path) -> nn.Module:
    """VGG-19 convolutional features through relu5_4 from a torchvision ``vgg19`` state_dict file."""
    from torchvision.models import vgg19

    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"perceptual_weights: {path} is not a file (a torchvision VGG-19 ImageNet state_dict, .pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        network = vgg19(weights=None)
        network.load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - any unreadable or mismatched file is the same problem for the user
        raise ConfigError(f"perceptual_weights: {path} is not a torchvision VGG-19 state_dict ({type(err).__name__})") from None
    return network.features[:VGG19_RELU5_4]


class PerceptualLoss(nn.Module):
    """mean((IN(f(x)) - IN(f(y)))^2) for images in [-1, 1] and a frozen feature network f.

    Args:
        features: RGB ImageNet-normalised (N, 3, H, W) -> feature maps; VGG-19's through relu5_4.
        input_size: images smaller than this are upsampled to it first, so the deepest features
            still have a spatial extent (28 px would reach relu5_4 as 1x1, which IN maps to 0).
    """

    def __init__(self, features: nn.Module, input_size: int = VGG_INPUT):
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)  # the feature network stays in eval mode

    def _prepare(self, images: Tensor) -> Tensor:
        rgb = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        if rgb.shape[-1] < self.input_size:
            rgb = F.interpolate(rgb, size=self.input_size, mode="bilinear", align_corners=False)
        return ((rgb + 1) / 2 - self.mean) / self.std

    def forward(self, image: Tensor, target: Tensor) -> Tensor:
        fx = F.instance_norm(self.features(self._prepare(image)))
        fy = F.instance_norm(self.features(self._prepare(target)))
        return (fx - fy).pow(2).mean()
