from dataclasses import dataclass

import pytest

from e2urec.config import ConfigError
from e2urec.methods import REGISTRY, Unlearner, get_method, register, run_method
from tests.helpers import quick_train, tiny_backbone

# The package's own machinery; every other module in methods/ is one method.
MACHINERY = {"base", "ensemble_base", "registry", "run", "accounting"}


def test_each_method_file_registers_one_method_found_by_its_name():
    import collections
    import pkgutil

    import e2urec.methods

    files = {m.name for m in pkgutil.iter_modules(e2urec.methods.__path__)} - MACHINERY
    per_file = collections.Counter(cls.__module__.rsplit(".", 1)[1]
                                   for cls in REGISTRY.values())
    assert set(per_file) == files and set(per_file.values()) == {1}
    for name, cls in REGISTRY.items():
        assert get_method(name) is cls and cls.name == name


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


def test_peak_memory_is_each_methods_own_not_the_process_peak_so_far():
    import numpy as np

    from e2urec.methods.accounting import PeakMemory

    memory = PeakMemory()
    memory.start()
    big = np.ones(300 * 2**20 // 8)  # 300 MB, touched
    big.sum()
    first = memory.read()
    del big
    memory.start()
    second = memory.read()
    if first["peak_memory_kind"] != "rss_high_water_mark":
        pytest.skip("no resettable high-water mark on this platform")
    assert first["peak_memory_mb"] - second["peak_memory_mb"] > 200


def test_unlearn_seconds_run_from_the_original_loaded_to_the_result_saved(prepared_dir,
                                                                         tmp_path):
    import time

    from e2urec.methods.base import Unlearned
    from e2urec.methods.registry import REGISTRY

    @dataclass
    class SleepOptions:
        pass

    class Sleeper(Unlearner):
        """Loading 0.6 s (not counted), unlearning 0.2 s and saving 0.3 s (counted)."""

        name = "test-sleeper"
        Options = SleepOptions
        needs_original = False

        def load_original(self):
            time.sleep(0.6)

        def unlearn(self, original):
            time.sleep(0.2)
            return Unlearned(record={"history": {}})

        def save(self, result):
            time.sleep(0.3)
            self.ctx.out_dir.mkdir(parents=True)

        def parameter_counts(self, result):
            return 1, 2

    register(Sleeper)
    try:
        record = run_method("test-sleeper", prepared_dir, None, tiny_backbone(),
                            quick_train(), {}, tmp_path / "out")
    finally:
        del REGISTRY["test-sleeper"]
    assert 0.5 <= record["unlearn_seconds"] < 0.9
    assert (record["trainable_params"], record["total_params"]) == (1, 2)


def test_every_method_states_where_its_seed_sits_and_whether_a_store_serves_it():
    from e2urec.config import TrainConfig
    from e2urec.methods.ensemble_base import ShardEnsembleUnlearner
    from e2urec.methods.registry import parse_options

    train = TrainConfig(seed=5)
    for name, cls in REGISTRY.items():
        raw = cls.with_seed({}, 123)
        parsed = parse_options(name, raw)
        assert cls.seed_of(parsed, train) == (5 if cls.seed_option is None else 123), name
        assert cls.serves_one_model == (not issubclass(cls, ShardEnsembleUnlearner)), name
