"""Every registered GAN, at every size and channel count the data may bring, plus the papers' architectures."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from medsyn.config import TrainConfig, build_config
from medsyn.errors import ConfigError
from medsyn.models import MODELS, Conditioning, ImageSpec, NetOptions, create_discriminator, create_generator
from medsyn.models.base import GeneratorInputs

TINY = NetOptions(z_dim=16, width=1 / 16)
SIZES = (28, 40, 64, 128)
BATCH = 3  # > 1: batch norm in training mode needs two samples
CLASSES = 3
PAPER_MODELS = ("dcgan", "acgan", "wgan", "wgan-gp", "lungct-gan", "gan", "cgan", "gaunet", "pggan")
PAPER_REFINERS = ("simgan", "unit", "munit")  # synthetic image -> refined image; tested in test_refiners.py
RECIPE_MODELS = ("sngan",)  # not a paper of medsyn's five: the networks of the recommended recipe
GENERATORS = [n for n in MODELS if MODELS.get(n).role == "generator"]


def class_counts(conditioning: Conditioning) -> tuple[int, ...]:
    return {Conditioning.NEVER: (0,), Conditioning.OPTIONAL: (0, CLASSES), Conditioning.ALWAYS: (CLASSES,)}[conditioning]


def cases():
    for name in GENERATORS:
        for size in SIZES:
            for channels in (1, 3):
                for classes in class_counts(MODELS.get(name).conditioning):
                    yield pytest.param(name, size, channels, classes, id=f"{name}-{size}px-{channels}ch-{classes}cls")


def first_layer(module: nn.Module) -> nn.Module:
    return next(m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)))


def weight_grad(layer: nn.Module) -> torch.Tensor:
    """The gradient of a layer's trained weight (under spectral norm: the unnormalised original)."""
    if hasattr(layer, "parametrizations"):
        return layer.parametrizations.weight.original.grad
    return layer.weight.grad


def draw(batch: int, classes: int, z_dim: int = TINY.z_dim) -> tuple[torch.Tensor, torch.Tensor | None]:
    z = torch.rand(batch, z_dim) * 2 - 1
    labels = torch.arange(batch) % classes if classes else None
    return z, labels


def with_images(name: str, spec: ImageSpec, G: nn.Module, D: nn.Module, batch: int = BATCH):
    """G and D as G(z, labels), D(x, labels): image-input models (gaunet) get fixed real images to rewrite and pair with."""
    if MODELS.get(name).inputs is not GeneratorInputs.SAME_CLASS_PAIRS:
        return G, D
    sources = torch.rand(batch, spec.channels, spec.size, spec.size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return (lambda z, labels: G(z, labels, sources)), (lambda x, labels: D(torch.cat([sources, x], 1), labels))


@pytest.mark.parametrize("name,size,channels,classes", list(cases()))
def test_networks_build_run_and_backpropagate(name, size, channels, classes):
    torch.manual_seed(0)
    spec = ImageSpec(size, channels, classes)
    G, D = create_generator(name, spec, TINY), create_discriminator(name, spec, TINY)
    assert G.z_dim == TINY.z_dim
    call_G, call_D = with_images(name, spec, G, D)
    z, labels = draw(BATCH, classes)
    images = call_G(z, labels)
    assert images.shape == (BATCH, channels, size, size)
    if any(isinstance(m, nn.Tanh) for m in G.modules()):
        assert images.abs().max() <= 1.0
    score, class_logits = call_D(images, labels)
    assert score.shape == (BATCH,)
    if name == "acgan":  # the auxiliary classifier head; every objective adds its class term
        assert class_logits.shape == (BATCH, classes)
    else:
        assert class_logits is None
    score.sum().backward()
    assert weight_grad(first_layer(G)).abs().sum() > 0
    assert weight_grad(first_layer(D)).abs().sum() > 0
    # The note says "crops" exactly when the generator renders another size.
    assert bool(MODELS.get(name).size_note(size)) == (getattr(G, "render_size", size) != size)


@pytest.mark.parametrize("name", [n for n in GENERATORS if MODELS.get(n).conditioning is not Conditioning.NEVER])
def test_labels_change_the_output(name):
    torch.manual_seed(0)
    spec = ImageSpec(32, 1, CLASSES)
    G, D = create_generator(name, spec, TINY), create_discriminator(name, spec, TINY)
    D.eval()  # no dropout noise
    G, D = with_images(name, spec, G, D, batch=4)
    z, labels = draw(4, CLASSES)
    # Labels vary within each batch: a label shared by the whole batch is a constant shift that
    # training-mode batch norm would remove.
    other = (labels + 1) % CLASSES
    torch.manual_seed(2)  # the same dropout masks (gaunet's generator has dropout)
    first = G(z, labels)
    torch.manual_seed(2)
    assert not torch.allclose(first, G(z, other))
    images = torch.rand(4, 1, 32, 32) * 2 - 1
    score, class_logits = D(images, labels)
    if class_logits is None:  # projection / input concatenation: the label enters the score
        assert not torch.allclose(score, D(images, other)[0])
    else:  # ACGAN: D predicts the label, it does not take it
        assert torch.equal(score, D(images, other)[0])


@pytest.mark.parametrize("name", [n for n in GENERATORS if MODELS.get(n).conditioning is not Conditioning.ALWAYS])
def test_unconditional_networks_accept_no_labels(name):
    spec = ImageSpec(32, 1, 0)
    G, D = create_generator(name, spec, TINY), create_discriminator(name, spec, TINY)
    score, class_logits = D(G(*draw(2, 0)), None)
    assert score.shape == (2,) and class_logits is None


def test_conditional_networks_ask_for_labels():
    G = create_generator("acgan", ImageSpec(32, 1, CLASSES), TINY)
    with pytest.raises(ValueError, match="labels"):
        G(torch.zeros(2, TINY.z_dim), None)


def test_registry_holds_the_papers_generators_and_refiners():
    from medsyn.train.losses import LOSSES

    assert sorted(MODELS.names()) == sorted(PAPER_MODELS + PAPER_REFINERS + RECIPE_MODELS)
    for name in MODELS:
        spec = MODELS.get(name)
        assert spec.name == name and spec.paper
        assert spec.role == ("refiner" if name in PAPER_REFINERS else "generator")
        if spec.role == "generator":  # refiners name their objective class (models/refiners_*.py)
            assert spec.objective in LOSSES


def test_unknown_model_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="did you mean 'dcgan'"):
        create_generator("dcgna", ImageSpec(64, 1, 0), TINY)
    with pytest.raises(ConfigError, match="did you mean 'wgan-gp'"):
        create_discriminator("wgan_gp", ImageSpec(64, 1, 0), TINY)


@pytest.mark.parametrize(
    "name,classes,problem",
    [("acgan", 0, "needs labeled data"), ("cgan", 0, "needs labeled data"), ("gan", 3, "one model per class")],
)
def test_conditioning_is_enforced(name, classes, problem):
    for create in (create_generator, create_discriminator):
        with pytest.raises(ConfigError, match=problem):
            create(name, ImageSpec(64, 1, classes), TINY)


def test_too_small_images_are_refused():
    with pytest.raises(ConfigError, match="at least"):
        create_generator("dcgan", ImageSpec(8, 1, 0), TINY)


@pytest.mark.parametrize("name", list(MODELS))
def test_train_defaults_build_a_valid_config(name):
    defaults = MODELS.get(name).train_defaults
    assert set(defaults) <= {f.name for f in dataclasses.fields(TrainConfig)}
    config = build_config(defaults)
    for key, value in defaults.items():
        assert getattr(config, key) == value


def test_size_notes_name_the_crop():
    dcgan, lungct = MODELS.get("dcgan"), MODELS.get("lungct-gan")
    assert dcgan.size_note(28) == "dcgan renders 32x32 and centre-crops to 28x28"
    assert "48x48" in dcgan.size_note(40)
    assert dcgan.size_note(64) == dcgan.size_note(128) == ""
    assert lungct.size_note(40) == lungct.size_note(64) == ""
    assert lungct.size_note(30) == "lungct-gan renders 32x32 and centre-crops to 30x30"
    assert MODELS.get("gan").size_note(30) == ""
    G = create_generator("lungct-gan", ImageSpec(30, 1, 0), TINY)
    assert G(*draw(2, 0)).shape == (2, 1, 30, 30)


def layers_of(module: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


def test_dcgan_matches_the_liver_lesion_paper():
    spec, full = ImageSpec(64, 1, 0), NetOptions()
    G, D = create_generator("dcgan", spec, full), create_discriminator("dcgan", spec, full)
    assert first_layer(G).in_features == 100 and first_layer(G).out_features == 4 * 4 * 1024
    ups = layers_of(G, nn.ConvTranspose2d)
    assert [m.kernel_size for m in ups] == [(5, 5)] * 4
    assert [(m.in_channels, m.out_channels) for m in ups] == [(1024, 512), (512, 256), (256, 128), (128, 1)]
    assert len(layers_of(G, nn.BatchNorm2d)) == 4  # all but the output layer
    assert isinstance(list(G.modules())[-1], nn.Tanh)
    convs = layers_of(D, nn.Conv2d)
    assert [(m.out_channels, m.kernel_size, m.stride) for m in convs] == [(c, (5, 5), (2, 2)) for c in (64, 128, 256, 512)]
    assert len(layers_of(D, nn.BatchNorm2d)) == 3  # all but the input layer
    assert all(m.negative_slope == 0.2 for m in layers_of(D, nn.LeakyReLU))
    assert layers_of(D, nn.Linear)[0].in_features == 512 * 4 * 4


def test_wgan_gp_critic_has_no_batch_norm():
    D = create_discriminator("wgan-gp", ImageSpec(64, 1, 0), TINY)
    assert not layers_of(D, nn.BatchNorm2d) and len(layers_of(D, nn.GroupNorm)) == 3
    assert layers_of(create_discriminator("wgan", ImageSpec(64, 1, 0), TINY), nn.BatchNorm2d)


def test_lungct_gan_matches_the_lung_ct_paper():
    spec, full = ImageSpec(64, 1, 0), NetOptions()
    G, D = create_generator("lungct-gan", spec, full), create_discriminator("lungct-gan", spec, full)
    ups = layers_of(G, nn.ConvTranspose2d)
    assert [m.out_channels for m in ups] == [256, 128, 64, 32, 16, 1]
    assert [m.kernel_size for m in ups] == [(3, 3)] * 6
    assert [m.stride for m in ups] == [(2, 2)] * 2 + [(1, 1)] * 4
    assert len(layers_of(G, nn.BatchNorm2d)) == 5 and not layers_of(G, nn.Tanh)  # linear output
    convs = layers_of(D, nn.Conv2d)
    assert [(m.out_channels, m.kernel_size) for m in convs] == [(c, (3, 3)) for c in (256, 128, 64, 32)]
    assert [m.stride for m in convs] == [(2, 2)] + [(1, 1)] * 3
    dropouts = layers_of(D, nn.Dropout)
    assert len(dropouts) == 4 and all(m.p == 0.6 for m in dropouts)
    assert [m.out_features for m in layers_of(D, nn.Linear)] == [128, 1]


def test_weights_follow_the_dcgan_initialisation():
    torch.manual_seed(0)
    G = create_generator("dcgan", ImageSpec(64, 1, 0), NetOptions(width=0.5))
    conv = layers_of(G, nn.ConvTranspose2d)[0]
    assert abs(conv.weight.std().item() - 0.02) < 0.002
    norm = layers_of(G, nn.BatchNorm2d)[0]
    assert abs(norm.weight.mean().item() - 1.0) < 0.01 and torch.all(norm.bias == 0)


def test_channels_last_inputs_work():
    spec = ImageSpec(64, 3, CLASSES)
    G, D = create_generator("dcgan", spec, TINY), create_discriminator("dcgan", spec, TINY)
    G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    z, labels = draw(2, CLASSES)
    images = G(z, labels).contiguous(memory_format=torch.channels_last)
    assert D(images, labels)[0].shape == (2,)


@pytest.mark.parametrize("name", ["dcgan", "acgan", "lungct-gan"])
def test_label_code_leaves_the_noise_most_of_the_first_layer(name):
    """A class code as long as z made conditional DCGANs collapse to one image per class.

    Measured on the generator's first layer at initialisation: the share of its variance that
    stays within a class (that the noise carries). With PyTorch's N(0, 1) embedding it was 0.60.
    """
    torch.manual_seed(0)
    G = create_generator(name, ImageSpec(48, 1, CLASSES), NetOptions(z_dim=100, width=0.25))
    z, labels = draw(3000, CLASSES, z_dim=100)
    with torch.no_grad():
        first = first_layer(G)(G.labels(z, labels))
    first = first.flatten(1)
    within = torch.stack([first[labels == k].var(0) for k in range(CLASSES)]).mean(0)
    assert float((within / first.var(0)).mean()) > 0.9


@pytest.mark.slow
def test_conditional_dcgan_samples_vary_within_a_class(tmp_path):
    """600 steps of the demo's conditional DCGAN: samples of one class must differ from each other."""
    from medsyn.data import load_source
    from medsyn.data.phantoms import write_phantoms
    from medsyn.sample import load_generator, synthesize
    from medsyn.train.run import DataOptions, execute_run, prepare_run

    write_phantoms(tmp_path / "phantoms", size=48, per_class=200, seed=0)
    cfg = {"model": "dcgan", "width": 0.25, "batch": 32, "steps": 600, "device": "cpu", "ckpt_every": 600}
    execute_run(prepare_run(tmp_path / "run", [cfg], DataOptions(str(tmp_path / "phantoms")), resume=False))
    real = load_source(str(tmp_path / "phantoms"))
    images, labels = synthesize(load_generator(tmp_path / "run", device="cpu"), 64, seed=1)

    def spread(x: np.ndarray) -> float:  # mean pairwise RMS distance
        flat = torch.as_tensor(x).float().flatten(1)
        return float(torch.cdist(flat, flat).mean() / flat.shape[1] ** 0.5)

    for k, name in enumerate(real.class_names):
        real_spread = spread(real.images[real.labels == k][:64])
        assert spread(images[labels == k]) > 0.4 * real_spread, name  # collapsed: 0.1 x
