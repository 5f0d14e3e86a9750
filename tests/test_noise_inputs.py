"""Noise inputs (models/noise.py): per-pixel N(0, 1) noise that is a pure function of each latent."""
import pytest
import torch

from medsyn.errors import ConfigError
from medsyn.models.base import ImageSpec, NetOptions
from medsyn.models.noise import LatentNoise
from medsyn.models.sngan import SNGANGenerator


def test_latent_noise_is_standard_normal_white_and_independent_across_latents():
    noise = LatentNoise(side=32, z_dim=128)
    images = noise(torch.randn(512, 128, generator=torch.Generator().manual_seed(1)))
    assert images.shape == (512, 1, 32, 32) and images.dtype == torch.float32
    assert abs(images.mean().item()) < 0.01 and abs(images.std().item() - 1) < 0.01
    flat = images.view(512, -1)
    neighbours = torch.corrcoef(torch.stack([flat[:, 40], flat[:, 41], flat[:, 40 + 32]]))  # right and below
    assert neighbours[0, 1].abs() < 0.15 and neighbours[0, 2].abs() < 0.15
    # no pixel pattern shared by the samples: the mean image is as small as independent draws make it
    assert flat.mean(0).std() < 1.3 / 512 ** 0.5
    # third and fourth moments of a normal (Box-Muller), not of the sine's arcsine law (kurtosis 1.5)
    standardised = (flat - flat.mean()) / flat.std()
    assert abs((standardised**3).mean()) < 0.05 and abs((standardised**4).mean() - 3) < 0.1


def test_latent_noise_follows_the_latent_whatever_the_batch():
    noise = LatentNoise(side=16, z_dim=8)
    z = torch.randn(10, 8)
    whole = noise(z)
    # a torchrun rank's shard, a resumed step and a re-drawn sample see their latents' own noise
    assert torch.equal(noise(z[3:7]), whole[3:7])
    assert torch.equal(LatentNoise(side=16, z_dim=8)(z), whole)  # the frequencies are architecture, not state
    assert not torch.equal(noise(z.flip(0)), whole)
    assert not torch.equal(LatentNoise(side=16, z_dim=8, salt=1)(z), whole)  # each layer its own image
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(noise(z), whole)  # computed in float32 under autocast


def _generator(noise_inputs: bool, seed: int = 0) -> SNGANGenerator:
    torch.manual_seed(seed)
    return SNGANGenerator(ImageSpec(32, 1, 3), NetOptions(z_dim=32, width=0.125, noise_inputs=noise_inputs)).eval()


def test_sngan_noise_inputs_start_silent_then_vary_texture_not_the_draw():
    plain, noisy = _generator(False), _generator(True)
    z, labels = torch.randn(6, 32), torch.arange(6) % 3
    with torch.no_grad():
        # strengths start at 0 (StyleGAN): the network is the plain one until training moves them
        assert torch.allclose(noisy(z, labels), plain(z, labels), atol=1e-6)
        strengths = [p for name, p in noisy.named_parameters() if name.endswith("strength")]
        assert len(strengths) == 2 * len(noisy.blocks)
        for strength in strengths:
            strength.fill_(0.5)
        first = noisy(z, labels)
        assert torch.equal(noisy(z, labels), first)  # deterministic: the same latent, the same image
        assert (first - plain(z, labels)).abs().mean() > 1e-3
    # checkpoints keep the strengths, not the frequencies (rebuilt at construction)
    keys = noisy.state_dict().keys()
    assert any(k.endswith("strength") for k in keys) and not any("frequencies" in k for k in keys)


def test_noise_inputs_belong_to_sngan_only(tmp_path, make_npz):
    from medsyn.train.run import DataOptions, prepare_run

    data = DataOptions(make_npz())
    tiny = {"noise_inputs": True, "width": 0.0625, "device": "cpu"}
    prepare_run(tmp_path / "sngan", [{"model": "sngan", **tiny}], data, resume=False)
    with pytest.raises(ConfigError, match="noise_inputs is a setting of sngan; dcgan does not use it"):
        prepare_run(tmp_path / "dcgan", [{"model": "dcgan", **tiny}], data, resume=False)
