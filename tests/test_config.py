import pytest

from medsyn.config import TrainConfig, build_config, parse_overrides
from medsyn.errors import ConfigError
from medsyn.registry import Registry


def test_unknown_key_is_an_error_with_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'lr_g'"):
        build_config({"lr_gg": 1e-3})


def test_values_are_typed_from_strings():
    cfg = build_config(parse_overrides(["batch=16", "betas=0.0,0.9", "per_class=true", "lr_drop_at=none", "lr_d=1e-4"]))
    assert cfg.batch == 16 and cfg.betas == (0.0, 0.9) and cfg.per_class is True
    assert cfg.lr_drop_at is None and cfg.lr_d == pytest.approx(1e-4)


def test_later_layers_win():
    cfg = build_config({"batch": 8, "seed": 3}, {"batch": 32})
    assert (cfg.batch, cfg.seed) == (32, 3)


@pytest.mark.parametrize("pairs, message", [
    (["batch=zero"], "cannot read 'zero' as int"),
    (["batch=0"], "batch must be at least 1"),
    (["optimizer=adamw"], "optimizer must be"),
    (["betas=0.5"], "takes 2 values"),
    (["steps=10", "epochs=2"], "not both"),
])
def test_bad_values_are_rejected(pairs, message):
    with pytest.raises(ConfigError, match=message):
        build_config(parse_overrides(pairs))


def test_set_needs_key_value():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["batch"])


def test_registry_rejects_duplicates_and_suggests():
    reg = Registry("thing")
    reg.register("dcgan", 1)
    with pytest.raises(ValueError):
        reg.register("dcgan", 2)
    with pytest.raises(ConfigError, match="did you mean 'dcgan'"):
        reg.get("dcgann")
    assert TrainConfig().model in ("dcgan",)
