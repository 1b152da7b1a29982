from dataclasses import dataclass

import pytest

from e2urec.config import ConfigError
from e2urec.methods import REGISTRY, Unlearner, get_method, register, run_method
from tests.helpers import quick_train, tiny_backbone


def test_every_method_of_the_paper_is_registered():
    assert {"e2urec", "retrain", "sisa", "receraser", "neggrad", "bad-teacher",
            "bad-teacher-labels"} <= set(REGISTRY)


def test_unknown_method_and_option_typos_are_named(prepared_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown method 'e2u'; available: "):
        get_method("e2u")
    with pytest.raises(ConfigError, match="unknown key 'alpah'; did you mean 'alpha'"):
        run_method("e2urec", prepared_dir, tmp_path, tiny_backbone(), quick_train(),
                   {"alpah": 2}, tmp_path / "out")
    with pytest.raises(ConfigError, match="needs the Original model"):
        run_method("e2urec", prepared_dir, None, tiny_backbone(), quick_train(), {},
                   tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_registration_checks_the_interface():
    class NoOptions(Unlearner):
        name = "no-options"

        def unlearn(self):
            return {}

    with pytest.raises(TypeError, match="Options must be a dataclass"):
        register(NoOptions)

    @dataclass
    class Opts:
        pass

    class Clash(NoOptions):
        name = "e2urec"
        Options = Opts

    with pytest.raises(ValueError, match="two methods are named 'e2urec'"):
        register(Clash)
