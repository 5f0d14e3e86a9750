"""DiffAugment: policy parsing, exact op semantics with stubbed draws, pairs, gradients, sharding."""
from __future__ import annotations

import pytest
import torch

from medsyn.augment.differentiable import POLICIES, DiffAugment, parse_policy
from medsyn.errors import ConfigError


def fixed(*columns: float):
    """A ``uniform`` that gives every sample the same numbers, one per column."""

    def uniform(n: int, k: int, device: torch.device) -> torch.Tensor:
        assert k == len(columns), f"op drew {k} columns, test gave {len(columns)}"
        return torch.tensor(columns, dtype=torch.float64, device=device).expand(n, k)

    return uniform


def textured(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---- policy parsing ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("color,translation,cutout", ("color", "translation", "cutout")),
        ("cutout, color", ("cutout", "color")),
        ("translation", ("translation",)),
        ("brightness,contrast,saturation", ("brightness", "contrast", "saturation")),
    ],
)
def test_parse_policy_keeps_order(text, expected):
    assert parse_policy(text) == expected
    assert set(expected) <= set(POLICIES)


@pytest.mark.parametrize(
    ("text", "closest"), [("colour", "color"), ("color,transaltion", "translation"), ("cutuot", "cutout")]
)
def test_parse_policy_unknown_name_suggests_closest(text, closest):
    with pytest.raises(ConfigError, match=f"did you mean '{closest}'"):
        parse_policy(text)


@pytest.mark.parametrize("text", ["", "  ", "color,", "color,,cutout"])
def test_parse_policy_rejects_empty(text):
    with pytest.raises(ConfigError):
        parse_policy(text)


def test_tuple_policy_is_validated_and_draws_are_counted():
    assert DiffAugment(("color", "translation", "cutout"), 1).draws == 3 + 2 + 2
    with pytest.raises(ConfigError, match="did you mean 'cutout'"):
        DiffAugment(("color", "cutot"), 1)


# ---- shape, determinism, gradients -------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_seeded_determinism(dtype):
    x = textured(8, 1, 16).to(dtype)
    aug = DiffAugment("color,translation,cutout", channels_per_image=1)
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    b = aug(x)
    assert a.shape == x.shape and a.dtype == dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, x)


def test_gradient_reaches_the_input():
    x = textured(4, 3, 16).requires_grad_(True)
    torch.manual_seed(0)
    out = DiffAugment("color,translation,cutout", channels_per_image=3)(x)
    (out * textured(4, 3, 16, seed=1)).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    assert all(x.grad[i].abs().sum() > 0 for i in range(4))  # every sample still receives gradient


def test_channels_must_split_into_images():
    with pytest.raises(ValueError, match="multiple of 3"):
        DiffAugment("color", channels_per_image=3)(torch.zeros(2, 4, 8, 8))


# ---- exact op semantics with stubbed draws -------------------------------------------------------

# 16 px: shifts are integers in [-2, 2], drawn as floor(u * 5) - 2
@pytest.mark.parametrize(
    ("uy", "ux", "dy", "dx"), [(0.9, 0.1, 2, -2), (0.5, 0.5, 0, 0), (0.3, 0.7, -1, 1), (0.0, 0.99, -2, 2)]
)
def test_translation_moves_a_pixel_by_the_drawn_amount(uy, ux, dy, dx):
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 5, 7] = 1.0
    out = DiffAugment("translation", 1, uniform=fixed(uy, ux))(x)
    assert out.sum() == 1.0
    assert out[0, 0, 5 + dy, 7 + dx] == 1.0


def test_translation_fills_the_vacated_border_with_zeros():
    out = DiffAugment("translation", 1, uniform=fixed(0.9, 0.1))(torch.ones(2, 1, 16, 16))  # dy=2, dx=-2
    assert (out[:, :, :2] == 0).all() and (out[:, :, :, -2:] == 0).all()
    assert (out[:, :, 2:, :-2] == 1).all()


def test_cutout_zeroes_exactly_a_half_side_square():
    u = 8.5 / 17  # centre = floor(u * 17) = 8 -> rows and columns 4..11
    out = DiffAugment("cutout", 1, uniform=fixed(u, u))(torch.ones(3, 1, 16, 16))
    expected = torch.ones(16, 16)
    expected[4:12, 4:12] = 0
    assert (out == expected).all()
    assert int((out[0] == 0).sum()) == (16 // 2) ** 2


def test_cutout_is_clipped_at_the_border():
    out = DiffAugment("cutout", 1, uniform=fixed(0.0, 8.5 / 17))(torch.ones(1, 1, 16, 16))  # centre row 0
    assert (out[0, 0, :4, 4:12] == 0).all()
    assert int((out == 0).sum()) == 4 * 8


def test_color_matches_the_closed_form():
    ub, us, uc = 0.8, 0.25, 0.9
    b, s, c = ub - 0.5, 2 * us, uc + 0.5
    x = textured(2, 3, 4).double()
    y = x + b
    m = y.mean(dim=1, keepdim=True)
    y = m + (y - m) * s
    m = y.mean(dim=(1, 2, 3), keepdim=True)
    expected = m + (y - m) * c
    out = DiffAugment("color", 3, uniform=fixed(ub, us, uc))(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_single_ops_match_their_formulas():
    x = textured(2, 1, 8).double()
    torch.testing.assert_close(DiffAugment("brightness", 1, uniform=fixed(0.1))(x), x - 0.4)
    torch.testing.assert_close(DiffAugment("saturation", 1, uniform=fixed(0.9))(x), x)  # grey: identity
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(DiffAugment("contrast", 1, uniform=fixed(0.0))(x), m + (x - m) * 0.5)


def test_pair_color_uses_one_parameter_set_and_per_image_means():
    ub, us, uc = 0.3, 0.75, 0.2
    anchor, image = textured(2, 3, 4, seed=1).double(), textured(2, 3, 4, seed=2).double()
    single = DiffAugment("color", 3, uniform=fixed(ub, us, uc))
    pair = DiffAugment("color", 3, uniform=fixed(ub, us, uc))(torch.cat([anchor, image], dim=1))
    torch.testing.assert_close(pair[:, :3], single(anchor), rtol=0, atol=1e-12)
    torch.testing.assert_close(pair[:, 3:], single(image), rtol=0, atol=1e-12)


@pytest.mark.parametrize("channels_per_image", [1, 3])
def test_pair_geometry_is_shared(channels_per_image):
    x = textured(8, channels_per_image, 16)
    torch.manual_seed(5)
    out = DiffAugment("color,translation,cutout", channels_per_image)(torch.cat([x, x], dim=1))
    assert torch.equal(out[:, :channels_per_image], out[:, channels_per_image:])
    assert not torch.equal(out[:, :channels_per_image], x)


def test_sharded_draws_equal_one_full_batch():
    n, policy = 4, "color,translation,cutout"

    def draw(k: int) -> torch.Tensor:  # one global draw for 2n samples
        return torch.rand(2 * n, k, generator=torch.Generator().manual_seed(11))

    def shard(rank: int):
        return lambda m, k, device: draw(k)[rank * m : (rank + 1) * m]

    x = textured(2 * n, 2, 16)
    whole = DiffAugment(policy, 1, uniform=lambda m, k, device: draw(k))(x)
    halves = [DiffAugment(policy, 1, uniform=shard(r))(x[r * n : (r + 1) * n]) for r in range(2)]
    assert torch.equal(torch.cat(halves), whole)
