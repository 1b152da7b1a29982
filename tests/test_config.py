import pytest

from e2urec.config import (
    BackboneConfig,
    ConfigError,
    TrainConfig,
    config_hash,
    from_dict,
    parse_overrides,
)


def test_values_are_typed_and_nested_configs_built():
    config = from_dict(TrainConfig, {"epochs": "2", "lr": "5e-4", "use_lora": "true",
                                     "lora": {"r": 8, "targets": "q,k,v"}})
    assert (config.epochs, config.lr, config.use_lora) == (2, 5e-4, True)
    assert config.lora.r == 8 and config.lora.targets == ["q", "k", "v"]


def test_typos_and_bad_values_are_named():
    with pytest.raises(ConfigError, match="unknown key 'epoch'; did you mean 'epochs'"):
        from_dict(TrainConfig, {"epoch": 3})
    with pytest.raises(ConfigError, match=r"train\.lora\.r: expected an integer"):
        from_dict(TrainConfig, {"lora": {"r": "eight"}}, "train")
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        from_dict(TrainConfig, {"epochs": 0})
    with pytest.raises(ConfigError, match="tiny_hidden must divide"):
        from_dict(BackboneConfig, {"tiny_hidden": 30, "tiny_heads": 4})


def test_overrides_nest_and_hash_is_stable():
    assert parse_overrides(["train.lr=1e-3", "train.lora.r=4", "a=b=c"]) == {
        "train": {"lr": "1e-3", "lora": {"r": "4"}}, "a": "b=c"}
    with pytest.raises(ConfigError):
        parse_overrides(["novalue"])
    assert config_hash(TrainConfig()) == config_hash(TrainConfig())
    assert config_hash(TrainConfig()) != config_hash(TrainConfig(lr=0.1))
