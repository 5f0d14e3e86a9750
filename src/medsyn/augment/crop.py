"""The brain-MRI paper's PGGAN augmentation: "random cropping in 0-15 pixels" (Han et al. 2019, Sec. III-B).

The paper gives no more than that sentence. A GAN's real images must keep the network's size,
so a crop has to be brought back to it, by resizing or by padding. We resize: the crop window
(side S - c, c drawn from [0, 15] px) sits at a random place inside the image and is stretched
back to S x S. That is a zoom-in of at most 15 / 240 = 6% with a random shift, and it adds no
border the real images do not have; padding instead would put black bars of up to 15 px on
random sides, which a GAN would learn to draw on data whose content reaches the border.

Amounts and offsets are drawn continuously (bilinear resampling interpolates anyway). The paper's
15 px is for its 240 x 240 slices (256 x 256 padded); at other sides the largest crop is scaled
to the same fraction, 15 / 240 of the side (2 px at 32, 4 px at 64), and capped at 15 px.
"""
from __future__ import annotations

import torch

from medsyn.augment.presets import PRESETS, AugmentParams, BatchAugment, Fill

PAPER_MAX_CROP_PX = 15.0
PAPER_SIDE = 240  # BraTS slices before the zero-padding to 256


class RandomCropAugment(BatchAugment):
    """Per image: crop c ~ U[0, max_crop] px at a uniform random offset, resized back to the full side."""

    name = "pggan-crop"
    # The window lies inside the image, but bilinear sampling of a window at the border reaches half
    # a pixel past it; reflection then reads the edge pixel (as resizing the cut-out crop would),
    # where zeros would darken the border.
    fill = Fill.REFLECTION

    def __init__(self, image_size: int):
        super().__init__(image_size)
        self.max_crop = min(PAPER_MAX_CROP_PX, PAPER_MAX_CROP_PX * self.image_size / PAPER_SIDE)

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> AugmentParams:
        size = float(self.image_size)
        crop = torch.rand(n, generator=generator, dtype=torch.float64) * self.max_crop
        offset = torch.rand(n, 2, generator=generator, dtype=torch.float64) * crop[:, None]  # (x, y) of the window
        window = size - crop
        # affine_grid theta (output -> input, normalised, align_corners=False): output [-1, 1] spans
        # the window [offset, offset + window] px, i.e. x_in = (window / S) x_out + centre.
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = theta[:, 1, 1] = window / size
        theta[:, :, 2] = (offset + window[:, None] / 2) * (2.0 / size) - 1.0
        no_flip = torch.zeros(n, dtype=torch.bool)
        return AugmentParams(matrix=theta.to(torch.float32), hflip=no_flip, vflip=no_flip)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, max_crop={self.max_crop:.2f}px"


PRESETS.register(RandomCropAugment.name, RandomCropAugment)
