"""Classic augmentation presets of the papers, applied per image to whole batches on any device.

Stock ``torchvision.transforms.v2`` random transforms draw one set of parameters per call, so a
batch would be rotated, flipped and jittered as one block. The presets here draw independent
parameters for every image (on the CPU, from an optional ``torch.Generator``, so a seed gives the
same result on CPU and CUDA) and apply them vectorised:

* geometry (rotation, translation, shear, zoom) composed into one (N, 2, 3) matrix per image ->
  one sampling grid (what ``F.affine_grid`` computes) + one ``F.grid_sample`` (bilinear);
* flips with ``torch.where`` on a per-image mask, after the geometric step (the papers' order);
* colour jitter with per-image factors, following torchvision's ``adjust_brightness``,
  ``adjust_contrast`` and ``adjust_saturation`` (each step blends and clamps to [0, 1]).

Presets only transform images; labels are never touched, so every preset is label-preserving.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms import v2

from medsyn.registry import Registry


class PresetName(StrEnum):
    LIVER_LESION = "liver-lesion"  # Frid-Adar et al., liver lesion ROIs (CT), section III-A
    BRAIN_MRI = "brain-mri"  # Han et al., brain MRI, the "classic DA" of the PGGAN study
    RETINA = "retina"  # retina fundus paper, "Classic Data Augmentation"
    UPRIGHT = "upright"  # brain-mri's without up-down flips, for images with a top (X-rays, ultrasound)


class Fill(StrEnum):
    """What ``grid_sample`` reads where a transformed image looks outside the input."""

    ZEROS = "zeros"  # black, as Keras fill_mode="constant", cval=0
    REFLECTION = "reflection"  # mirrored content, so rotated corners keep tissue


@dataclass
class AugmentParams:
    """Per-image parameters for one batch, kept on the CPU until applied.

    Attributes:
        matrix: (N, 2, 3) ``affine_grid`` thetas (output -> input, normalised coordinates), or None
            when the preset has no geometric step (then no resampling happens at all).
        hflip: (N,) bool, mirror left-right after the geometric step.
        vflip: (N,) bool, mirror up-down after the geometric step.
        colour: (N, 3) brightness, contrast, saturation factors, or None for no colour step.
    """

    matrix: Tensor | None
    hflip: Tensor
    vflip: Tensor
    colour: Tensor | None = None

    def __len__(self) -> int:
        return len(self.hflip)

    def __getitem__(self, index: slice) -> AugmentParams:
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return AugmentParams(pick(self.matrix), self.hflip[index], self.vflip[index], pick(self.colour))


# ---- per-image draws and matrices ------------------------------------------------------------
# Matrices are 3x3 homogeneous maps in grid_sample's normalised coordinates (x right, y down,
# [-1, 1] across the image, align_corners=False). They say where a source point lands; the
# sampling grid needs the inverse. Images are square, so a rotation here is a true rotation.

def _uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator | None) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def _coin(n: int, p: float, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator) < p


def _eye(n: int) -> Tensor:
    return torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)


def _rotation(degrees: Tensor) -> Tensor:
    m, rad = _eye(len(degrees)), torch.deg2rad(degrees)
    m[:, 0, 0], m[:, 0, 1] = torch.cos(rad), -torch.sin(rad)
    m[:, 1, 0], m[:, 1, 1] = torch.sin(rad), torch.cos(rad)
    return m


def _translation(shift_px: Tensor, size: int) -> Tensor:
    """(N, 2) shifts in pixels (x, y) -> matrices; one pixel is 2 / size normalised units."""
    m = _eye(len(shift_px))
    m[:, :2, 2] = shift_px * (2.0 / size)
    return m


def _shear_x(factor: Tensor) -> Tensor:
    m = _eye(len(factor))
    m[:, 0, 1] = factor  # x moves by factor * y
    return m


def _zoom(zx: Tensor, zy: Tensor) -> Tensor:
    """Magnification per axis: > 1 enlarges the content (less surrounding tissue in view)."""
    m = _eye(len(zx))
    m[:, 0, 0], m[:, 1, 1] = zx, zy
    return m


def _grid_theta(forward: Tensor) -> Tensor:
    """Where-it-lands matrices (N, 3, 3) -> ``affine_grid`` thetas (N, 2, 3), output -> input."""
    return torch.linalg.inv(forward)[:, :2, :].to(torch.float32)


def _sampling_grid(theta: Tensor, size: int) -> Tensor:
    """``F.affine_grid(theta, (N, C, size, size), align_corners=False)``, computed by broadcasting.

    Same numbers (to float rounding), but on CPU F.affine_grid runs a batched matmul with an inner
    dimension of 3 that costs ~10x the grid_sample it feeds (40 ms vs 4 ms for 256 x 64 x 64).
    """
    centres = (torch.arange(size, device=theta.device, dtype=theta.dtype) * 2 + 1) / size - 1
    xs, ys = centres.view(1, 1, size), centres.view(1, size, 1)
    t = theta[:, :, :, None, None]  # (N, 2, 3, 1, 1) broadcasts against (1, H, W)
    return torch.stack([t[:, i, 0] * xs + t[:, i, 1] * ys + t[:, i, 2] for i in (0, 1)], dim=-1)


# ---- colour, as torchvision defines it -------------------------------------------------------

def _grey(images: Tensor) -> Tensor:
    """torchvision's rgb_to_grayscale weights; a 1-channel image is its own grey."""
    if images.shape[1] == 1:
        return images
    r, g, b = images.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(image: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    return (factor * image + (1.0 - factor) * other).clamp(0.0, 1.0)


def _jitter(images: Tensor, factors: Tensor) -> Tensor:
    """Brightness, then contrast, then saturation, each with its own (N,) factors.

    torchvision's ColorJitter shuffles the order of the three per call; we fix it so the step
    stays one vectorised pass (all three factors are < 1 in the retina preset, so order matters little).
    """
    brightness, contrast, saturation = factors.to(images.device, images.dtype).T[..., None, None, None]
    out = (images * brightness).clamp(0.0, 1.0)  # adjust_brightness: blend with black
    mean = _grey(out).mean(dim=(-3, -2, -1), keepdim=True)  # adjust_contrast: per-image grey mean
    out = _blend(out, mean, contrast)
    if out.shape[1] == 3:  # adjust_saturation is a no-op on grey images
        out = _blend(out, _grey(out), saturation)
    return out


# ---- the preset base class -------------------------------------------------------------------

class BatchAugment(v2.Transform, abc.ABC):
    """A preset: ``preset(images, generator=g)`` augments a batch with independent per-image draws.

    ``images`` is a float (N, C, H, W) tensor in [0, 1] with C in {1, 3} and H = W = ``image_size``,
    on any device; the output has the same shape, dtype and device and stays in [0, 1]. The same
    generator state gives the same output. Without a generator torch's global CPU RNG is used
    (training seeds it per step). Subclasses only implement ``sample_params``.

    Attributes:
        name: registry name.
        fill: ``grid_sample`` padding for pixels that come from outside the image.
        paper_copies: augmented copies per image the paper made (None where the paper gives no count).
    """

    name: str = ""
    fill: Fill = Fill.ZEROS
    paper_copies: int | None = None

    def __init__(self, image_size: int):
        super().__init__()
        self.image_size = int(image_size)

    @abc.abstractmethod
    def sample_params(self, n: int, generator: torch.Generator | None = None) -> AugmentParams:
        """Draw per-image parameters for ``n`` images from ``generator`` (a CPU generator)."""

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        # v2.Transform.forward draws one parameter set for all inputs; a batch needs one per image.
        self._check(images)
        return self.apply_params(images, self.sample_params(len(images), generator))

    def apply_params(self, images: Tensor, params: AugmentParams) -> Tensor:
        """Apply drawn parameters; split a large set into batches with ``params[start:stop]``."""
        out = images
        if params.matrix is not None:
            theta = params.matrix.to(images.device, images.dtype)
            grid = _sampling_grid(theta, images.shape[-1])
            out = F.grid_sample(out, grid, mode="bilinear", padding_mode=str(self.fill), align_corners=False)
        out = torch.where(params.hflip.to(images.device)[:, None, None, None], out.flip(-1), out)
        out = torch.where(params.vflip.to(images.device)[:, None, None, None], out.flip(-2), out)
        if params.colour is not None:
            out = _jitter(out, params.colour)
        return out.clamp(0.0, 1.0)

    def _check(self, images: Tensor) -> None:
        if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f"{self.name}: expected a float tensor (N, C, H, W), got {_describe(images)}")
        n, c, h, w = images.shape
        if c not in (1, 3) or h != w or h != self.image_size:
            raise ValueError(
                f"{self.name}: built for (N, 1 or 3, {self.image_size}, {self.image_size}) images, "
                f"got {tuple(images.shape)}"
            )

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, fill={self.fill}"


def _describe(x: object) -> str:
    return f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


# ---- liver lesion ----------------------------------------------------------------------------
# The paper's counts per lesion ROI (section IV): N = Nrot * (1 + Nflip + Ntrans + Nscale) = 480.
N_ROT, N_FLIP, N_TRANS, N_SCALE = 30, 3, 7, 5
LESION_FRACTION = 0.5  # lesion diameter / ROI side; the ROIs are centred on the lesion but d is not given
FIELD_OF_VIEW = (0.8, 1.2)  # ROI side after "scaling" / before; see LiverLesionAugment


def liver_lesion_paper_count(
    n_rot: int = N_ROT, n_flip: int = N_FLIP, n_trans: int = N_TRANS, n_scale: int = N_SCALE
) -> int:
    """Augmented images per lesion ROI in the liver-lesion paper: Nrot x (1 + Nflip + Ntrans + Nscale)."""
    return n_rot * (1 + n_flip + n_trans + n_scale)


class LiverLesionAugment(BatchAugment):
    """Liver-lesion ROIs (CT, grey): rotation, then one of identity / flip / translation / scaling.

    What the paper did: each ROI was rotated Nrot=30 times at random angles in [0, 180] degrees;
    each rotated ROI was then flipped Nflip=3 times (up-down, left-right), translated Ntrans=7
    times by random integer pixel pairs (x, y) in (-p, p) with p = min(4, 0.1 d) for lesion
    diameter d, and scaled Nscale=5 times "by changing the amount of tissue around the lesion",
    with that margin s drawn from [0.1 d, 0.4 d]; no shearing (it deforms lesions). Together with
    the rotated ROI itself that is N = 30 x 16 = 480 images per lesion (``paper_copies``).

    What we do, per image: a rotation uniform in [0, 180] degrees, then one branch chosen with the
    paper's proportions 1 : Nflip : Ntrans : Nscale = 1 : 3 : 7 : 5 —
    identity; a flip (up-down, left-right or both, equally likely: our reading of Nflip=3);
    an integer translation in (-p, p) per axis; or a zoom. We do not know d, so we take
    d = LESION_FRACTION x ROI side (lesion about half the ROI): p = min(4, 0.05 x size), 3.2 px at
    64 px, i.e. integers in [-3, 3]. For the zoom, the paper's ROI side d + 2s spans [1.2 d, 1.8 d],
    a 1.5x range of field of view; not knowing where the originals sit in it, we centre it on them:
    the new field of view is uniform in [0.8, 1.2] x the ROI side (magnification 1/0.8 .. 1/1.2).

    Fill is reflection, not black: a rotated or zoomed-out square ROI has corners that no real ROI
    has; black corners would be an artefact a classifier or GAN could learn, while the paper's ROIs
    (cut from whole CT slices) always show tissue there. Mirrored tissue is the closest we can get.
    """

    name = PresetName.LIVER_LESION
    fill = Fill.REFLECTION
    paper_copies = liver_lesion_paper_count()
    BRANCH_WEIGHTS = (1.0, float(N_FLIP), float(N_TRANS), float(N_SCALE))  # identity, flip, translate, scale

    def __init__(self, image_size: int):
        super().__init__(image_size)
        p = min(4.0, 0.1 * LESION_FRACTION * self.image_size)
        self.max_shift = max(0, math.ceil(p) - 1)  # largest integer strictly inside (-p, p)

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> AugmentParams:
        # Every draw is made for every image, whatever its branch, so the stream a seed produces
        # does not depend on the branches drawn.
        angle = _uniform((n,), 0.0, 180.0, generator)
        branch = torch.multinomial(torch.tensor(self.BRANCH_WEIGHTS), n, replacement=True, generator=generator)
        flip_kind = torch.randint(0, 3, (n,), generator=generator)  # 0 up-down, 1 left-right, 2 both
        shift = torch.randint(-self.max_shift, self.max_shift + 1, (n, 2), generator=generator).double()
        field = _uniform((n,), *FIELD_OF_VIEW, generator)

        is_flip, is_shift, is_zoom = branch == 1, branch == 2, branch == 3
        shift = torch.where(is_shift[:, None], shift, torch.zeros_like(shift))
        zoom = torch.where(is_zoom, 1.0 / field, torch.ones_like(field))
        forward = _translation(shift, self.image_size) @ _zoom(zoom, zoom) @ _rotation(angle)
        return AugmentParams(
            matrix=_grid_theta(forward), hflip=is_flip & (flip_kind != 0), vflip=is_flip & (flip_kind != 1)
        )


# ---- brain MRI -------------------------------------------------------------------------------

class BrainMRIAugment(BatchAugment):
    """Brain MRI (grey): the Keras-style "classic DA" of the brain-MRI PGGAN paper.

    What the paper did: "a random combination of horizontal/vertical flipping, rotation up to 10
    degrees, width/height shift up to 8%, shearing up to 8%, zooming up to 8%, and constant filling
    of points outside the input boundaries" (the wording of Keras' ImageDataGenerator).

    What we do, per image: horizontal and vertical flip each with p = 0.5; rotation uniform in
    [-10, 10] degrees; shift uniform in [-8%, 8%] of the side per axis; horizontal shear factor
    uniform in [-0.08, 0.08] (x moves by up to 8% of y, a shear angle up to atan(0.08) = 4.57
    degrees; Keras before 2.2 read shear_range=0.08 in radians, 4.58 degrees, the same thing, while
    later Keras reads it in degrees, where 0.08 degrees would be a no-op and not "8%"); zoom per axis
    uniform in [0.92, 1.08] drawn independently for x and y as Keras does; black (0) fill.
    """

    name = PresetName.BRAIN_MRI
    fill = Fill.ZEROS
    MAX_ROTATION_DEG = 10.0
    MAX_SHIFT = 0.08  # fraction of the side
    MAX_SHEAR = 0.08  # shear factor (tan of the shear angle)
    MAX_ZOOM = 0.08  # magnification in [1 - 0.08, 1 + 0.08]
    P_HFLIP, P_VFLIP = 0.5, 0.5

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> AugmentParams:
        angle = _uniform((n,), -self.MAX_ROTATION_DEG, self.MAX_ROTATION_DEG, generator)
        shift = _uniform((n, 2), -self.MAX_SHIFT, self.MAX_SHIFT, generator) * self.image_size
        shear = _uniform((n,), -self.MAX_SHEAR, self.MAX_SHEAR, generator)
        zoom = _uniform((n, 2), 1.0 - self.MAX_ZOOM, 1.0 + self.MAX_ZOOM, generator)
        hflip, vflip = _coin(n, self.P_HFLIP, generator), _coin(n, self.P_VFLIP, generator)
        forward = (
            _translation(shift, self.image_size) @ _rotation(angle) @ _shear_x(shear) @ _zoom(zoom[:, 0], zoom[:, 1])
        )
        return AugmentParams(matrix=_grid_theta(forward), hflip=hflip, vflip=vflip)


class UprightAugment(BrainMRIAugment):
    """Images with a fixed top (chest X-rays, breast ultrasound: skin and transducer at the top):
    the brain-MRI preset's rotation up to 10 degrees, shift, shear and zoom up to 8% and left-right
    flips, never an up-down flip, which would put the lungs under the diaphragm or the skin band at
    the bottom, images no scanner makes. No paper of medsyn's names it; the MedMNIST studies'
    classic arms use it."""

    name = PresetName.UPRIGHT
    P_VFLIP = 0.0


# ---- retina ----------------------------------------------------------------------------------

class RetinaAugment(BatchAugment):
    """Retina fundus (RGB): vertical flip always, horizontal flip sometimes, darker/duller colour.

    What the paper did: copies vertically flipped with p = 1 (N-vf times), copies horizontally
    flipped with p = 0.1 (N-hf times), and N-col copies with brightness, contrast and saturation
    each "between 0.7 and 0.9"; N(1 + N-vf + N-hf + N-col) images in all; no shearing or elastic
    deformation (they change the retina's shape). The paper gives no values for N-vf, N-hf, N-col.

    What we do: every augmented image gets all three — a vertical flip (p = 1), a horizontal flip
    with p = 0.1, and brightness, contrast and saturation factors each uniform in [0.7, 0.9]
    (torchvision's definitions; saturation is a no-op on 1-channel images). Composing them avoids
    the paper's literal scheme, where 90% of the "horizontal flip" copies are exact duplicates.
    No resampling is done, so the flips are exact.
    """

    name = PresetName.RETINA
    fill = Fill.ZEROS
    P_VFLIP, P_HFLIP = 1.0, 0.1
    COLOUR_RANGE = (0.7, 0.9)  # brightness, contrast and saturation factors

    def sample_params(self, n: int, generator: torch.Generator | None = None) -> AugmentParams:
        vflip, hflip = _coin(n, self.P_VFLIP, generator), _coin(n, self.P_HFLIP, generator)
        colour = _uniform((n, 3), *self.COLOUR_RANGE, generator).to(torch.float32)
        return AugmentParams(matrix=None, hflip=hflip, vflip=vflip, colour=colour)


# ---- registry --------------------------------------------------------------------------------

PRESETS: Registry[type[BatchAugment]] = Registry("augmentation preset")
for _cls in (LiverLesionAugment, BrainMRIAugment, UprightAugment, RetinaAugment):
    PRESETS.register(str(_cls.name), _cls)


def build_preset(name: str, image_size: int) -> BatchAugment:
    """The preset registered as ``name`` for square images of side ``image_size``.

    Raises:
        ConfigError: unknown name (the message suggests the closest known one).
    """
    return PRESETS.get(name)(image_size)
