from pathlib import Path

import pytest

from e2urec.bench.config import load_study
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


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def run_args(*argv: str):
    from e2urec.cli.layers import run_configs
    from e2urec.cli.parser import build_parser

    return run_configs(build_parser().parse_args(list(argv)))


def test_precedence_is_defaults_then_file_then_set_then_flags(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("backbone: {name: tiny-t5, tiny_hidden: 32}\ntrain: {epochs: 3}\n"
                      "method: {alpha: 3.0, schedule: {lr: 0.1}}\n")
    base = ["unlearn", "--method", "e2urec", "--data", "d", "--out", "o", "--config",
            str(config)]
    backbone, train, options = run_args(*base)
    assert (backbone.name, backbone.tiny_hidden, train.epochs) == ("tiny-t5", 32, 3)
    assert train.lr == TrainConfig().lr  # not in the file: the default
    assert options == {"alpha": 3.0, "schedule": {"lr": 0.1}}
    backbone, train, options = run_args(*base, "--set", "backbone.name=tiny-llama",
                                        "--set", "train.epochs=4",
                                        "--option", "schedule.epochs=2")
    assert (backbone.name, backbone.tiny_hidden, train.epochs) == ("tiny-llama", 32, 4)
    assert options == {"alpha": 3.0, "schedule": {"lr": 0.1, "epochs": "2"}}
    backbone, train, _ = run_args(*base, "--set", "backbone.name=tiny-llama", "--model",
                                  "smollm2-135m", "--set", "train.epochs=4", "--seed", "9")
    assert (backbone.name, train.epochs, train.seed) == ("smollm2-135m", 4, 9)
    backbone, train, _ = run_args("train", "--data", "d", "--out", "o", "--config",
                                  str(config), "--epochs", "7")
    assert (backbone.name, train.epochs) == ("tiny-t5", 7)


def test_a_study_file_gives_train_and_unlearn_its_backbone_train_and_method(tmp_path):
    study = load_study(CONFIGS / "demo-seeds.yaml")
    backbone, train, options = run_args("unlearn", "--method", "e2urec/paper", "--data", "d",
                                        "--out", "o", "--config",
                                        str(CONFIGS / "demo-seeds.yaml"))
    assert backbone == study.backbone and train == study.train
    assert options == study.methods["e2urec/paper"] == {"preset": "paper"}
    backbone, train, _ = run_args("train", "--data", "d", "--out", "o", "--config",
                                  str(CONFIGS / "smoke.yaml"))
    assert backbone.tiny_hidden == 32 and train.epochs == 1
    (tmp_path / "bad.yaml").write_text("backbone: {}\nmodels: {}\n")
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['models'\]"):
        run_args("train", "--data", "d", "--out", "o", "--config", str(tmp_path / "bad.yaml"))


def test_overrides_go_over_a_study_file_and_its_extends_and_a_typo_is_named():
    plain = load_study(CONFIGS / "demo-seeds.yaml")
    study = load_study(CONFIGS / "demo-seeds.yaml",
                       parse_overrides(["train.lr=5e-4", "backbone.tiny_hidden=256"]))
    assert (study.train.lr, study.backbone.tiny_hidden) == (5e-4, 256)
    # Everything else stays as the file (and the file it extends) has it.
    assert study.train.epochs == plain.train.epochs and study.seeds == plain.seeds
    assert study.backbone.tiny_layers == plain.backbone.tiny_layers
    assert study.methods == plain.methods
    with pytest.raises(ConfigError, match="unknown key 'lrr'; did you mean 'lr'"):
        load_study(CONFIGS / "demo.yaml", parse_overrides(["train.lrr=1"]))


def test_the_command_line_defaults_are_the_demos():
    study = load_study(CONFIGS / "demo.yaml")
    backbone, train, _ = run_args("train", "--data", "d", "--out", "o")
    assert backbone == study.backbone
    assert train == study.train


def test_a_misplaced_option_points_at_its_block():
    from e2urec.methods.neggrad import NegGradOptions

    with pytest.raises(ConfigError, match="did you mean 'schedule.lr'"):
        from_dict(NegGradOptions, {"lr": 1e-3})


def test_a_partial_nested_block_keeps_the_methods_own_defaults():
    from e2urec.methods.npo import NPOOptions
    from e2urec.methods.registry import parse_options
    from e2urec.training.unlearn_loop import Schedule

    own = NPOOptions().schedule.lr_scale
    assert own != Schedule().lr_scale  # else this test could not tell the two apart
    options = parse_options("npo", {"schedule": {"lr": 1e-3}, "stop": {"check_every": 2}})
    assert (options.schedule.lr, options.schedule.lr_scale) == (1e-3, own)
    assert (options.stop.check_every, options.stop.kind) == (2, "membership")


def test_the_paper_preset_is_the_reference_budget_and_options_override_it():
    from e2urec.methods.registry import parse_options

    paper = parse_options("e2urec", {"preset": "paper", "alpha": 3})
    assert paper.alpha == 3 and paper.stop.kind == "none"
    assert paper.schedule.max_grad_norm is None and paper.augment_weight_decay == 0.01
    assert round(paper.schedule.epochs * 812) == 1000 and round(paper.augment_epochs * 812) == 1200
    assert round(parse_options("neggrad", {"preset": "paper"}).schedule.epochs * 812) == 3000
    with pytest.raises(ConfigError, match="unknown preset 'fast' \\(presets of sisa: none\\)"):
        parse_options("sisa", {"preset": "fast"})


def test_a_calibrated_alpha_without_its_probe_is_refused_in_one_line():
    from e2urec.methods.registry import parse_options

    assert parse_options("e2urec", {}).calibrate_alpha is True
    assert parse_options("e2urec", {"preset": "paper"}).calibrate_alpha is False
    for options in ({"stop": {"kind": "none"}}, {"teacher_scope": "vocab"}):
        with pytest.raises(ConfigError, match="calibrate_alpha needs teacher_scope: answer "
                                              "and stop kind membership"):
            parse_options("e2urec", options)
    assert parse_options("e2urec", {"stop": {"kind": "none"}, "calibrate_alpha": False}).alpha == 32
