"""Downstream classifiers: every registry entry builds for the data's geometry, training is
seeded and selects on validation AUC, saved classifiers predict the same after loading."""
import numpy as np
import pytest
import torch

from medsyn.data.types import LabeledImages
from medsyn.errors import ConfigError, DataError
from medsyn.evaluate.classify import (
    extract_features, load_classifier, predict_proba, save_classifier, train_classifier,
)
from medsyn.metrics.classification import auc_score
from medsyn.models.classifiers import CLASSIFIERS, ClassifierNet, SvmClassifier, build_classifier, resolve_classifier_config

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads mostly wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TORCH_NAMES = [n for n in CLASSIFIERS if CLASSIFIERS.get(n).kind == "torch"]


def shapes(n_per_class: int, size: int = 16, seed: int = 0, source: str = "shapes") -> LabeledImages:
    """Class 0: a horizontal bar, class 1: a vertical bar, at random places, over noise."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 0.3, (2 * n_per_class, 1, size, size)).astype(np.float32)
    labels = np.repeat([0, 1], n_per_class)
    for i, label in enumerate(labels):
        r, c = rng.integers(2, size - 6, 2)
        if label == 0:
            images[i, 0, r:r + 2, c - 2:c + 6] = 1.0
        else:
            images[i, 0, r - 2:r + 6, c:c + 2] = 1.0
    return LabeledImages(images, labels.astype(np.int64), ["horizontal", "vertical"], source, "test")


@pytest.mark.parametrize("name", TORCH_NAMES)
@pytest.mark.parametrize("size", [28, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_classifier_builds_for_the_data_geometry(name, size, channels):
    # On the meta device the whole graph is built and shape-checked without computing anything.
    with torch.device("meta"):
        model = build_classifier(name, size, channels, 3).eval()
        x = torch.empty(2, channels, size, size)
        assert isinstance(model, ClassifierNet)
        assert model(x).shape == (2, 3)
        assert model.features(x).ndim == 2 and model.features(x).shape[0] == 2


@pytest.mark.parametrize("name, size", [("lesion-cnn", 28), ("lesion-cnn", 64), ("resnet18", 28)])
def test_real_forward_gives_logits_and_features(name, size):
    torch.manual_seed(0)
    model = build_classifier(name, size, 1, 4).eval()
    with torch.no_grad():
        x = torch.rand(3, 1, size, size)
        logits, feats = model(x), model.features(x)
    assert logits.shape == (3, 4) and torch.isfinite(logits).all()
    assert torch.allclose(model.head(feats), logits, atol=1e-5)


def test_paper_architectures_and_recipes():
    lesion = build_classifier("lesion-cnn", 64, 1, 3)
    assert 1.25e6 < sum(p.numel() for p in lesion.parameters()) < 1.4e6  # the paper's "approx. 1.3M"
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in lesion.modules())
    cfg = resolve_classifier_config("lesion-cnn")
    assert (cfg.optimizer, cfg.nesterov, cfg.momentum, cfg.lr, cfg.batch, cfg.epochs) == ("sgd", True, 0.9, 1e-3, 64, 150)
    with torch.device("meta"):
        brain = build_classifier("resnet50-brain", 64, 1, 2)
    assert [type(m).__name__ for m in brain.head] == ["Dropout", "Linear", "BatchNorm1d"]
    cfg = resolve_classifier_config("resnet50-brain")
    assert (cfg.optimizer, cfg.lr, cfg.batch, cfg.loss, cfg.patience) == ("sgd", 1e-2, 96, "bce", 20)
    cfg = resolve_classifier_config("resnet18")
    assert (cfg.optimizer, cfg.lr, cfg.batch, cfg.epochs, cfg.lr_decay_at) == ("adam", 1e-3, 128, 100, (0.5, 0.75))
    with torch.device("meta"):
        small, large = build_classifier("resnet18", 28, 1, 2), build_classifier("resnet18", 128, 1, 2)
    assert small.trunk.conv1.kernel_size == (3, 3) and isinstance(small.trunk.maxpool, torch.nn.Identity)
    assert large.trunk.conv1.kernel_size == (7, 7)


def test_config_errors_suggest_the_right_name():
    with pytest.raises(ConfigError, match="did you mean 'resnet18'"):
        resolve_classifier_config("resnet-18")
    with pytest.raises(ConfigError, match="did you mean 'lr_decay_at'"):
        resolve_classifier_config("resnet18", {"lr_decay_att": "0.5,0.75"})
    with pytest.raises(ConfigError, match="optimizer"):
        resolve_classifier_config("resnet18", {"optimizer": "adamw"})
    assert resolve_classifier_config("resnet18", {"lr": "0.01", "batch": "32"}, epochs=3).lr == 0.01


def test_imagenet_weights_load_from_a_local_file_and_adapt_to_grey(tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model = build_classifier("resnet18", 128, 1, 2, weights=tmp_path / "r18.pth")
    assert torch.allclose(model.trunk.conv1.weight, reference.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(model.trunk.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    torch.save({"nonsense": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(DataError, match="bad.pth"):
        build_classifier("resnet18", 28, 1, 2, weights=tmp_path / "bad.pth")


@pytest.fixture(scope="module")
def shape_sets():
    return shapes(40, seed=0), shapes(10, seed=1), shapes(20, seed=2)


def test_training_is_seeded_better_than_chance_and_survives_save_load(shape_sets, tmp_path):
    train, val, test = shape_sets
    overrides = {"optimizer": "adam", "batch": 16}
    calls = []
    a = train_classifier("lesion-cnn", train, val, epochs=4, seed=3, device="cpu", overrides=overrides,
                         on_epoch=lambda e, t, s: calls.append((e, t)))
    b = train_classifier("lesion-cnn", train, val, epochs=4, seed=3, device="cpu", overrides=overrides)
    pa, pb = predict_proba(a, test), predict_proba(b, test)
    assert np.array_equal(pa, pb)  # same seed, same predictions
    assert calls == [(e, 4) for e in range(1, 5)]
    assert pa.shape == (len(test), 2) and np.allclose(pa.sum(axis=1), 1)
    assert auc_score(test.labels, pa) > 0.9 and (pa.argmax(1) == test.labels).mean() > 0.6
    assert a.best_val_auc == max(h["val_auc"] for h in a.history) and 1 <= a.best_epoch <= 4
    assert extract_features(a, test).shape == (len(test), 128)
    path = save_classifier(a, tmp_path / "c.pt")
    assert not list(tmp_path.glob(".*tmp*"))
    assert np.allclose(predict_proba(load_classifier(path, "cpu"), test), pa, atol=1e-6)


def test_amp_trains_in_bf16_where_native_deterministically_and_is_recorded(shape_sets, tmp_path):
    from medsyn.train.setup import native_bf16

    train, val, test = shape_sets
    overrides = {"optimizer": "adam", "batch": 16}
    runs = {amp: [train_classifier("resnet18", train, val, epochs=3, seed=1, device="cpu",
                                   overrides={**overrides, "amp": amp}) for _ in range(2)] for amp in (True, False)}
    assert resolve_classifier_config("resnet18").amp is True  # the default, as for generators
    assert runs[True][0].precision == ("bf16 autocast" if native_bf16(torch.device("cpu")) else "float32")
    assert runs[False][0].precision == "float32"
    for first, second in runs.values():
        assert np.array_equal(predict_proba(first, test), predict_proba(second, test))  # same seed, same result
        assert auc_score(test.labels, predict_proba(first, test)) > 0.8
    if native_bf16(torch.device("cpu")):  # bf16 rounding really changed the training
        assert not np.array_equal(predict_proba(runs[True][0], test), predict_proba(runs[False][0], test))
    loaded = load_classifier(save_classifier(runs[True][0], tmp_path / "amp.pt"), "cpu")
    assert loaded.precision == runs[True][0].precision and loaded.config.amp is True


def test_channels_last_entries_train_and_predict_in_that_layout_as_contiguous_would(shape_sets, tmp_path):
    train, val, test = shape_sets
    assert any(CLASSIFIERS.get(n).channels_last for n in TORCH_NAMES)  # the layout is on for some entries
    name = next(n for n in ("resnet18", *TORCH_NAMES) if CLASSIFIERS.get(n).channels_last)
    trained = train_classifier(name, train, val, epochs=2, seed=4, device="cpu", overrides={"batch": 16})
    again = train_classifier(name, train, val, epochs=2, seed=4, device="cpu", overrides={"batch": 16})
    assert trained.memory_format == torch.channels_last
    conv = next(m for m in trained.model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1
                and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    proba = predict_proba(trained, test)
    assert np.array_equal(proba, predict_proba(again, test))  # same seed, same result in this layout too
    # The same weights in the contiguous layout predict the same, to float rounding: a layout, not a model.
    trained.model.to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        logits = trained.model(torch.from_numpy(test.images)).double()
    assert np.allclose(torch.softmax(logits, 1).numpy(), proba, atol=1e-5)
    loaded = load_classifier(save_classifier(trained, tmp_path / "cl.pt"), "cpu")
    assert loaded.memory_format == torch.channels_last
    assert np.allclose(predict_proba(loaded, test), proba, atol=1e-6)


def test_bce_head_and_online_augmentation_run(shape_sets):
    train, val, test = shape_sets
    trained = train_classifier("lesion-cnn", train, val, epochs=1, seed=0, device="cpu", online_augment="brain-mri",
                               overrides={"loss": "bce", "batch": 32, "lr_decay_every": 1})
    proba = predict_proba(trained, test)
    assert np.allclose(proba.sum(axis=1), 1) and np.isfinite(proba).all()


def test_svm_selects_c_on_validation_and_refits_on_load(shape_sets, tmp_path):
    train, val, test = shape_sets
    trained = train_classifier("svm", train, val, seed=0)
    assert isinstance(trained.model, SvmClassifier) and len(trained.history) == 3
    proba = predict_proba(trained, test)
    assert ((proba.argmax(1) == test.labels).mean()) > 0.6
    loaded = load_classifier(save_classifier(trained, tmp_path / "svm.pt"))
    assert np.allclose(predict_proba(loaded, test), proba)


def test_predicting_on_other_geometry_or_classes_is_an_error(shape_sets):
    train, val, _ = shape_sets
    trained = train_classifier("lesion-cnn", train, val, epochs=1, seed=0, device="cpu")
    with pytest.raises(DataError, match="16x16"):
        predict_proba(trained, shapes(2, size=20, source="other"))
    renamed = shapes(2)
    renamed.class_names = ["a", "b"]
    with pytest.raises(DataError, match="classes"):
        predict_proba(trained, renamed)
