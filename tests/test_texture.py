"""Fixed-pattern coherence (medsyn.metrics.texture): independent textures ~1, one repeated texture sqrt(n)."""
import numpy as np
import pytest

from medsyn.metrics.texture import fixed_pattern_coherence


def test_independent_noise_scores_about_one_and_a_repeated_texture_sqrt_n():
    rng = np.random.default_rng(0)
    noise = rng.normal(0.5, 0.1, (100, 1, 32, 32))
    assert fixed_pattern_coherence(noise) == pytest.approx(1.0, abs=0.1)
    one_texture = np.repeat(rng.normal(0.5, 0.1, (1, 1, 32, 32)), 100, axis=0)
    assert fixed_pattern_coherence(one_texture) == pytest.approx(10.0, rel=1e-6)
    # a checkerboard at the same pixels under independent noise of equal strength is caught
    checker = 0.1 * (np.indices((32, 32)).sum(0) % 2)
    assert fixed_pattern_coherence(noise + checker) > 3


def test_a_shared_smooth_shape_barely_counts_and_colour_is_averaged():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:32, :32]
    blob = 0.3 * np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 60.0)  # a lesion at the centre of every image
    images = blob + rng.normal(0, 0.05, (64, 32, 32))
    assert fixed_pattern_coherence(images) < 2  # the blur removes most of a smooth shared shape (cf. > 3 above)
    rgb = np.repeat(images[:, None], 3, axis=1)
    assert fixed_pattern_coherence(rgb) == pytest.approx(fixed_pattern_coherence(images))


def test_undefined_cases():
    assert np.isnan(fixed_pattern_coherence(np.ones((5, 8, 8))))  # no texture at all
    assert np.isnan(fixed_pattern_coherence(np.random.default_rng(0).random((1, 8, 8))))
    with pytest.raises(ValueError, match="shape"):
        fixed_pattern_coherence(np.zeros((4, 8)))
