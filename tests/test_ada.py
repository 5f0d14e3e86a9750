"""ADA: exact identity at p = 0, each op with stubbed draws, pairs, gradients, the p heuristic, resume."""
from __future__ import annotations

import io
import math
from statistics import NormalDist

import pytest
import torch

from medsyn.augment.adaptive import DRAWS, AdaptiveAugment
from medsyn.errors import ConfigError


def stub(per_sample: list[dict[str, float]] | dict[str, float]):
    """A ``uniform`` where every gate is off (0.99) unless named; a list gives one dict per sample."""

    def uniform(n: int, k: int, device: torch.device) -> torch.Tensor:
        assert k == len(DRAWS)
        rows = per_sample if isinstance(per_sample, list) else [per_sample] * n
        u = torch.full((n, k), 0.99, device=device)
        for i, values in enumerate(rows):
            for name, value in values.items():
                u[i, DRAWS.index(name)] = value
        return u

    return uniform


def textured(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def ada(channels: int = 1, p: float = 0.5, **kwargs) -> AdaptiveAugment:
    aug = AdaptiveAugment(channels, **kwargs)
    aug.p = p
    return aug


# ---- identity and coverage ---------------------------------------------------------------------

def test_p_zero_is_the_identity_bit_for_bit():
    x = textured(8, 3, 16)
    aug = AdaptiveAugment(3)
    assert aug.p == 0.0
    torch.manual_seed(0)
    assert torch.equal(aug(x), x)


def test_samples_where_nothing_fires_keep_their_values():
    x = textured(4, 3, 28)  # 28 px: an identity grid would not reproduce the input bit for bit
    fire_all = {name: 0.0 for name in DRAWS if name.endswith("_gate")} | {"scale": 0.8, "hue": 0.7}
    aug = ada(3, uniform=stub([{}, fire_all, {}, fire_all]))
    out = aug(x)
    assert torch.equal(out[0], x[0]) and torch.equal(out[2], x[2])
    assert not torch.allclose(out[1], x[1], atol=1e-3) and not torch.allclose(out[3], x[3], atol=1e-3)


@pytest.mark.parametrize("channels", [1, 3])
def test_p_one_changes_every_sample_and_stays_finite(channels):
    x = textured(8, channels, 16).requires_grad_(True)
    torch.manual_seed(1)
    out = ada(channels, p=1.0)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.isfinite(out).all()
    assert ((out - x).abs().flatten(1).amax(dim=1) > 1e-3).all()
    (out * textured(8, channels, 16, seed=2)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_constructor_checks():
    with pytest.raises(ConfigError, match="ada_target"):
        AdaptiveAugment(1, target=1.5)
    with pytest.raises(ValueError):
        AdaptiveAugment(4, channels_per_image=3)
    with pytest.raises(ValueError, match="expected"):
        AdaptiveAugment(3)(torch.zeros(2, 1, 8, 8))


# ---- each geometric op with stubbed draws --------------------------------------------------------

def test_xflip_flips():
    x = textured(2, 3, 16)
    out = ada(3, uniform=stub({"xflip_gate": 0.0, "xflip": 0.75}))(x)
    torch.testing.assert_close(out, x.flip(-1), rtol=0, atol=1e-5)
    kept = ada(3, uniform=stub({"xflip_gate": 0.0, "xflip": 0.25}))(x)  # fired, drew 'no flip'
    torch.testing.assert_close(kept, x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_rot90_rotates(k):
    x = textured(2, 1, 16)
    out = ada(1, uniform=stub({"rot90_gate": 0.0, "rot90": (k + 0.5) / 4}))(x)
    torch.testing.assert_close(out, torch.rot90(x, k, dims=(-2, -1)), rtol=0, atol=1e-5)


def test_integer_translation_shifts_with_reflection():
    x = textured(2, 1, 32)
    # round((2u - 1) * 0.125 * 32): u = 0.75 -> +2 columns, u = 0.25 -> -2 rows
    out = ada(1, uniform=stub({"xint_gate": 0.0, "xint_x": 0.75, "xint_y": 0.25}))(x)
    expected = torch.cat([x[:, :, 2:], x[:, :, [31, 30]]], dim=2)  # up by 2, mirrored at the bottom
    expected = torch.cat([expected[..., [1, 0]], expected[..., :-2]], dim=3)  # right by 2, mirrored left
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_isotropic_scaling_zooms_about_the_centre():
    ramp = (torch.arange(16.0) - 7.5) / 8  # a centred horizontal ramp: zooming by s divides it by s
    x = ramp.expand(1, 1, 16, 16)
    out = ada(1, uniform=stub({"scale_gate": 0.0, "scale": NormalDist().cdf(1.0)}))(x)  # log2 s = 0.2
    torch.testing.assert_close(out, x / 2**0.2, rtol=0, atol=1e-5)


def test_fractional_translation_moves_by_the_normal_draw():
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 8] = 1.0
    u = NormalDist().cdf(0.5 / (0.125 * 16))  # +0.5 pixel along x
    out = ada(1, uniform=stub({"xfrac_gate": 0.0, "xfrac_x": u, "xfrac_y": 0.5}))(x)
    torch.testing.assert_close(out[0, 0, 8, 8:10], torch.tensor([0.5, 0.5]), rtol=0, atol=1e-4)


def test_rotation_gates_use_the_split_probability():
    p = 0.36
    p_rot = 1 - math.sqrt(1 - p)  # 0.2: each of pre and post fires with this probability
    x = textured(2, 1, 16)
    below = ada(1, p=p, uniform=stub({"rotate_pre_gate": p_rot - 0.01, "rotate_pre": 0.6}))(x)
    above = ada(1, p=p, uniform=stub({"rotate_post_gate": p_rot + 0.01, "rotate_post": 0.6}))(x)
    assert not torch.allclose(below, x, atol=1e-3)
    assert torch.equal(above, x)


# ---- colour ----------------------------------------------------------------------------------

def test_grey_brightness_and_contrast_closed_form():
    ub, uc = 0.8, 0.3
    b = NormalDist().inv_cdf(ub) * 0.2
    c = 2 ** (NormalDist().inv_cdf(uc) * 0.5)
    x = textured(2, 1, 8)
    draws = {"brightness_gate": 0.0, "brightness": ub, "contrast_gate": 0.0, "contrast": uc,
             "lumaflip_gate": 0.0, "lumaflip": 0.9, "saturation_gate": 0.0, "saturation": 0.9}
    out = ada(1, uniform=stub(draws))(x)  # luma flip and saturation do not apply to grey images
    torch.testing.assert_close(out, c * (x + b), rtol=0, atol=1e-5)


def test_rgb_lumaflip_and_saturation():
    x = textured(2, 3, 8)
    mean = x.mean(dim=1, keepdim=True)
    flipped = ada(3, uniform=stub({"lumaflip_gate": 0.0, "lumaflip": 0.9}))(x)
    torch.testing.assert_close(flipped, x - 2 * mean, rtol=0, atol=1e-5)  # reflect the luma axis
    duller = ada(3, uniform=stub({"saturation_gate": 0.0, "saturation": 0.1}))(x)
    s = 2 ** NormalDist().inv_cdf(0.1)  # log2 s ~ -1.28
    torch.testing.assert_close(duller, mean + (x - mean) * s, rtol=0, atol=1e-5)


def test_hue_rotation_keeps_luma():
    x = textured(2, 3, 8)
    out = ada(3, uniform=stub({"hue_gate": 0.0, "hue": 0.8}))(x)
    torch.testing.assert_close(out.mean(dim=1), x.mean(dim=1), rtol=0, atol=1e-5)
    assert not torch.allclose(out, x, atol=1e-2)


@pytest.mark.parametrize("channels_per_image", [1, 3])
def test_pairs_share_geometry_and_colour(channels_per_image):
    x = textured(4, channels_per_image, 16)
    aug = ada(2 * channels_per_image, p=1.0, channels_per_image=channels_per_image)
    torch.manual_seed(4)
    out = aug(torch.cat([x, x], dim=1))
    torch.testing.assert_close(out[:, :channels_per_image], out[:, channels_per_image:], rtol=0, atol=0)
    assert not torch.allclose(out[:, :channels_per_image], x, atol=1e-3)


def test_sharded_draws_equal_one_full_batch():
    n = 3
    full = torch.rand(2 * n, len(DRAWS), generator=torch.Generator().manual_seed(9))
    x = textured(2 * n, 3, 16)
    whole = ada(3, p=0.7, uniform=lambda m, k, device: full)(x)
    halves = [
        ada(3, p=0.7, uniform=lambda m, k, device, r=r: full[r * m : (r + 1) * m])(x[r * n : (r + 1) * n])
        for r in range(2)
    ]
    torch.testing.assert_close(torch.cat(halves), whole, rtol=0, atol=1e-6)


# ---- the p heuristic ---------------------------------------------------------------------------

def test_due_every_interval():
    aug = AdaptiveAugment(1, interval=4)
    assert [aug.due(i) for i in range(9)] == [False, False, False, False, True, False, False, False, True]


def test_adjust_follows_the_sign_of_real_scores():
    aug = AdaptiveAugment(1, target=0.6, speed_images=1000)
    aug.observe(torch.ones(8, 1))
    aug.observe(torch.full((8, 1), 3.0, dtype=torch.bfloat16))
    assert aug.adjust(images_seen=100) == {"ada_p": pytest.approx(0.1), "ada_rt": 1.0}
    assert aug.p == pytest.approx(0.1)
    aug.observe(torch.tensor([-1.0, -2.0, 1.0, 1.0]))  # r_t = 0 < target: only the new scores count
    assert aug.adjust(images_seen=100) == {"ada_p": pytest.approx(0.0, abs=1e-12), "ada_rt": 0.0}
    aug.observe(-torch.ones(4))
    assert aug.adjust(images_seen=100)["ada_p"] == 0.0  # clamped at 0
    stats = aug.adjust(images_seen=100)  # nothing observed since: p stays, r_t is NaN
    assert stats["ada_p"] == 0.0 and math.isnan(stats["ada_rt"])


def test_adjust_clamps_at_one_and_uses_reduce():
    aug = AdaptiveAugment(1, target=0.6, speed_images=10)
    aug.observe(torch.ones(4))
    assert aug.adjust(images_seen=100)["ada_p"] == 1.0
    aug.observe(torch.ones(4))  # this process: 4 positive; the other process: 4 negative
    other = torch.tensor([-4.0, 4.0])
    stats = aug.adjust(images_seen=1, reduce=lambda t: t + other)
    assert stats == {"ada_p": pytest.approx(0.9), "ada_rt": 0.0}


def test_state_dict_round_trip_continues_exactly():
    x = textured(4, 3, 16)
    a = AdaptiveAugment(3, speed_images=500)
    a.observe(torch.ones(16))
    a.adjust(images_seen=100)
    a.observe(torch.tensor([1.0, -1.0, 1.0]))  # mid-interval accumulators are saved too
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    b = AdaptiveAugment(3, speed_images=500)
    b.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    assert b.p == a.p == pytest.approx(0.2)
    torch.manual_seed(2)
    out_a = a(x)
    torch.manual_seed(2)
    assert torch.equal(b(x), out_a)
    for aug in (a, b):
        aug.observe(torch.tensor([-1.0, 1.0, 1.0]))
    expected = {"ada_p": pytest.approx(0.0), "ada_rt": 1 / 3}
    assert a.adjust(images_seen=100) == b.adjust(images_seen=100) == expected
