"""Classic augmentation presets: determinism, per-image draws, paper bounds, offline writing."""
from __future__ import annotations

import csv
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from medsyn.augment import (
    PRESETS,
    BatchAugment,
    augment_dataset,
    augment_with_provenance,
    build_preset,
    liver_lesion_paper_count,
    write_augmented,
)
from medsyn.augment.presets import _sampling_grid
from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError, RunError

PRESET_NAMES = PRESETS.names()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def textured(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1] (no flat regions, so every transform shows)."""
    coarse = torch.rand(n, channels, 8, 8, generator=gen(seed))
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def gaussian_blob(size: int, cx: float, cy: float, sigma: float = 1.5) -> torch.Tensor:
    axis = torch.arange(size, dtype=torch.float32)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))[None]


def centroid(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 2) intensity-weighted (x, y) in pixels."""
    n, _, h, w = images.shape
    weights = images.sum(1).reshape(n, -1)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    total = weights.sum(1)
    return torch.stack([(weights * xs.reshape(-1)).sum(1) / total, (weights * ys.reshape(-1)).sum(1) / total], 1)


def toy_set(n_per_class: tuple[int, ...] = (5, 3), size: int = 28, channels: int = 1) -> LabeledImages:
    labels = np.repeat(np.arange(len(n_per_class)), n_per_class).astype(np.int64)
    images = textured(len(labels), channels, size).numpy()
    return LabeledImages(
        images=images, labels=labels, class_names=[f"class {i}" for i in range(len(n_per_class))],
        source="toy", format="phantoms", paths=[f"img{i}.png" for i in range(len(labels))],
        patient_ids=np.array([f"p{i // 2}" for i in range(len(labels))]),
    )


# ---- every preset --------------------------------------------------------------------------

@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_shape_dtype_range_and_determinism(name, channels):
    preset = build_preset(name, 32)
    assert isinstance(preset, BatchAugment) and isinstance(preset, v2.Transform)
    images = textured(6, channels, 32)
    first = preset(images, generator=gen(1))
    assert first.shape == images.shape and first.dtype == images.dtype and first.device == images.device
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert torch.equal(first, preset(images, generator=gen(1)))
    assert not torch.equal(first, preset(images, generator=gen(2)))


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_each_image_gets_its_own_parameters(name):
    image = textured(1, 3, 32)
    out = build_preset(name, 32)(image.repeat(8, 1, 1, 1), generator=gen(0))
    distinct = {out[i].numpy().tobytes() for i in range(8)}
    assert len(distinct) >= 6  # retina's flips repeat, but its colour factors never do


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_global_rng_is_used_without_generator_and_compose_works(name):
    preset = build_preset(name, 28)
    images = textured(4, 1, 28)
    torch.manual_seed(5)
    a = v2.Compose([preset])(images)
    torch.manual_seed(5)
    assert torch.equal(a, preset(images))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", PRESET_NAMES)
def test_cuda_matches_cpu_for_the_same_generator(name):
    preset = build_preset(name, 64)
    images = textured(16, 3, 64)
    on_gpu = preset(images.cuda(), generator=gen(3))
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), preset(images, generator=gen(3)), atol=1e-4, rtol=0)


def test_bad_inputs_and_unknown_names():
    with pytest.raises(ConfigError, match="did you mean 'brain-mri'"):
        build_preset("brain_mri", 64)
    preset = build_preset("retina", 64)
    with pytest.raises(ValueError, match="64"):
        preset(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="float"):
        preset(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))


def test_sampling_grid_equals_affine_grid():
    theta = torch.eye(3)[:2].repeat(5, 1, 1) + 0.2 * torch.randn(5, 2, 3, generator=gen(0))
    expected = F.affine_grid(theta, [5, 1, 20, 20], align_corners=False)
    torch.testing.assert_close(_sampling_grid(theta, 20), expected, atol=1e-6, rtol=0)


# ---- liver lesion ----------------------------------------------------------------------------

def test_liver_lesion_paper_count_and_shift_limit():
    assert liver_lesion_paper_count() == 480
    assert liver_lesion_paper_count(n_rot=1, n_flip=0, n_trans=0, n_scale=0) == 1
    assert build_preset("liver-lesion", 64).paper_copies == 480
    # p = min(4, 0.1 d), d = half the side; shifts are integers strictly inside (-p, p).
    assert build_preset("liver-lesion", 64).max_shift == 3  # p = 3.2
    assert build_preset("liver-lesion", 28).max_shift == 1  # p = 1.4
    assert build_preset("liver-lesion", 256).max_shift == 3  # p = 4 (open interval)


def test_liver_lesion_branch_proportions_follow_the_paper():
    params = build_preset("liver-lesion", 64).sample_params(20000, gen(0))
    flipped = (params.hflip | params.vflip).float().mean().item()
    full = torch.cat([params.matrix, torch.tensor([0.0, 0.0, 1.0]).expand(20000, 1, 3)], 1)
    zoomed = (torch.linalg.det(full) - 1).abs().gt(1e-4).float().mean().item()
    assert flipped == pytest.approx(3 / 16, abs=0.015)
    assert zoomed == pytest.approx(5 / 16, abs=0.015)


def test_liver_lesion_reflection_fill_keeps_tissue_in_corners():
    flat = torch.full((64, 1, 64, 64), 0.5)
    out = build_preset("liver-lesion", 64)(flat, generator=gen(0))
    torch.testing.assert_close(out, flat, atol=1e-5, rtol=0)  # no black corners after rotation


# ---- brain MRI -------------------------------------------------------------------------------

def test_brain_mri_moves_the_centre_only_by_the_shift():
    size = 64
    blob = gaussian_blob(size, (size - 1) / 2, (size - 1) / 2)  # centred exactly: only shifts move it
    out = build_preset("brain-mri", size)(blob.expand(500, 1, size, size), generator=gen(0))
    moved = (centroid(out) - (size - 1) / 2).abs()
    assert moved.max() <= 0.08 * size + 0.25
    assert moved.max() > 0.06 * size  # the shifts do reach near their limit


def test_brain_mri_off_centre_displacement_within_paper_limits():
    size, radius = 64, 16.0
    c = (size - 1) / 2
    blob = gaussian_blob(size, c + radius, c)
    out = build_preset("brain-mri", size)(blob.expand(500, 1, size, size), generator=gen(1))
    # The linear part R(<=10 deg) . shear(<=0.08) . zoom(<=8%) moves a point at radius r by at most
    # r * (2 sin 5deg + 1.08 * 0.08 + 0.08); the shift adds up to 8% of the side per axis.
    bound = radius * (2 * math.sin(math.radians(5)) + 1.08 * 0.08 + 0.08) + 0.08 * size * math.sqrt(2) + 0.5
    # Flips send the blob to one of four mirror positions; measure from the nearest.
    targets = torch.tensor([[c + radius, c], [c - radius, c]])
    dist = torch.cdist(centroid(out), targets).min(1).values
    assert dist.max() <= bound
    assert dist.max() > 0.5 * bound


def test_brain_mri_fills_with_black():
    flat = torch.full((64, 1, 64, 64), 0.5)
    out = build_preset("brain-mri", 64)(flat, generator=gen(0))
    assert (out < 0.25).any()  # rotated/shifted-out corners are constant 0, as in the paper


# ---- retina ----------------------------------------------------------------------------------

def test_retina_always_flips_vertically_and_sometimes_horizontally():
    size, n = 32, 3000
    ys, xs = torch.meshgrid(torch.arange(size) / size, torch.arange(size) / size, indexing="ij")
    image = (0.2 + 0.5 * ys + 0.1 * xs).expand(n, 1, size, size)  # grey: saturation cannot reorder it
    out = build_preset("retina", size)(image, generator=gen(0))
    rows = out[:, 0].mean(-1)  # brightness/contrast factors > 0 keep order, so the gradient's sign shows a flip
    assert (rows[:, 1:] < rows[:, :-1]).all()  # every image upside down
    cols = out[:, 0].mean(-2)
    hflipped = (cols[:, 1:] < cols[:, :-1]).all(1).float().mean().item()
    assert hflipped == pytest.approx(0.1, abs=0.02)


def test_upright_never_flips_up_down_and_flips_left_right_half_the_time():
    """Chest X-rays and ultrasound have a top: the upright preset keeps it there, unlike brain-mri."""
    size, n = 32, 2000
    ys, xs = torch.meshgrid(torch.arange(size) / size, torch.arange(size) / size, indexing="ij")
    image = (0.2 + 0.5 * ys + 0.2 * xs).expand(n, 1, size, size)

    def flips(name: str) -> tuple[float, float]:
        out = build_preset(name, size)(image, generator=gen(3))[:, 0]
        # centre rows and columns: the rotation (<= 10 degrees), shift and black fill touch the border
        rows, cols = out[:, 8:24, 8:24].mean(-1), out[:, 8:24, 8:24].mean(-2)
        up_down = (rows[:, -1] < rows[:, 0]).float().mean().item()
        left_right = (cols[:, -1] < cols[:, 0]).float().mean().item()
        return up_down, left_right

    upright, brain = flips("upright"), flips("brain-mri")
    assert upright[0] == 0.0 and upright[1] == pytest.approx(0.5, abs=0.04)
    assert brain[0] == pytest.approx(0.5, abs=0.04)  # the preset it derives from does flip


def test_retina_colour_matches_torchvision_definitions_within_range():
    preset = build_preset("retina", 28)
    images = textured(8, 3, 28, seed=4)
    params = preset.sample_params(8, gen(7))
    assert params.colour.min() >= 0.7 and params.colour.max() <= 0.9
    out = preset.apply_params(images, params)
    for i in range(8):
        b, c, s = params.colour[i].tolist()
        ref = images[i]
        ref = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(ref, b), c), s)
        ref = ref.flip(-2) if params.vflip[i] else ref
        ref = ref.flip(-1) if params.hflip[i] else ref
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_retina_brightness_ratio_on_a_flat_grey_image():
    flat = torch.full((200, 3, 28, 28), 0.6)  # contrast and saturation leave a flat grey image alone
    ratio = build_preset("retina", 28)(flat, generator=gen(0)).mean(dim=(1, 2, 3)) / 0.6
    assert ratio.min() >= 0.7 - 1e-5 and ratio.max() <= 0.9 + 1e-5
    assert ratio.max() - ratio.min() > 0.15


# ---- offline ---------------------------------------------------------------------------------

def test_augment_dataset_preserves_labels_and_provenance():
    ds = toy_set()
    aug = augment_dataset(ds, "brain-mri", copies=3, seed=1)
    assert len(aug) == 4 * len(ds) and aug.format == "augmented"
    assert aug.class_counts() == [4 * k for k in ds.class_counts()]
    np.testing.assert_array_equal(aug.labels, np.tile(ds.labels, 4))
    np.testing.assert_array_equal(aug.patient_ids, np.tile(ds.patient_ids, 4))
    np.testing.assert_array_equal(aug.images[: len(ds)], ds.images)
    assert aug.paths[0] == "img0.png" and aug.paths[len(ds)] == "img0.png#aug=1"
    assert aug.images.dtype == np.float32 and 0 <= aug.images.min() and aug.images.max() <= 1

    again = augment_dataset(ds, "brain-mri", copies=3, seed=1, batch_size=3)
    np.testing.assert_array_equal(again.images, aug.images)  # batch size does not change the draws
    other = augment_dataset(ds, "brain-mri", copies=3, seed=2)
    assert not np.array_equal(other.images, aug.images)

    only = augment_with_provenance(ds, "retina", copies=2, include_original=False)
    assert len(only.data) == 2 * len(ds) and set(only.copy.tolist()) == {1, 2}


def test_augment_dataset_copy_counts():
    ds = toy_set((1, 1))
    assert len(augment_dataset(ds, "liver-lesion", copies=None)) == 2 * (480 + 1)
    with pytest.raises(ConfigError, match="copies"):
        augment_dataset(ds, "brain-mri", copies=None)
    with pytest.raises(ConfigError, match="did you mean"):
        augment_dataset(ds, "retna", copies=1)


def test_write_augmented_writes_images_manifest_and_grids(tmp_path):
    ds = toy_set(channels=3)
    out = write_augmented(ds, tmp_path / "aug", "retina", copies=2, seed=3)
    with open(out / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * len(ds)
    assert {"path", "label", "class_name", "source_index", "copy", "preset", "seed", "patient_id"} <= set(rows[0])
    assert sorted({r["copy"] for r in rows}) == ["0", "1", "2"]
    assert all((out / r["path"]).is_file() for r in rows)
    assert {r["preset"] for r in rows} == {"retina"} and {r["seed"] for r in rows} == {"3"}
    assert (out / "grid_class_0.png").is_file() and (out / "grid_class_1.png").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["aug"]  # no temporary folder left behind
    with pytest.raises(RunError):
        write_augmented(ds, out, "retina", copies=1)


def test_online_batch_speed(capsys):
    images = textured(256, 1, 64)
    for name in PRESET_NAMES:
        preset = build_preset(name, 64)
        preset(images, generator=gen(0))
        best = min(_timed(preset, images) for _ in range(3))
        with capsys.disabled():
            print(f"\n{name}: 256 x 1 x 64 x 64 in {best * 1000:.1f} ms")
        assert best < 2.0  # target 0.5 s; loose so a busy CI machine does not fail it


def _timed(preset, images) -> float:
    start = time.perf_counter()
    preset(images, generator=gen(1))
    return time.perf_counter() - start
