"""A study file: grids of method options become variants, each judged like any method."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2urec.bench.config import load_study
from e2urec.config import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_a_grid_becomes_one_variant_per_combination(tmp_path):
    study = tmp_path / "sweep.yaml"
    study.write_text(f"extends: {CONFIGS / 'smoke.yaml'}\n"
                     "methods:\n"
                     "  npo:\n"
                     "    grid: {schedule.lr_scale: [0.3, 1], schedule.epochs: [1, 2]}\n"
                     "    stop: {kind: none}\n"
                     "  sisa: {}\n")
    methods = load_study(study).methods
    assert sorted(methods) == ["npo/lr_scale=0.3,epochs=1", "npo/lr_scale=0.3,epochs=2",
                               "npo/lr_scale=1,epochs=1", "npo/lr_scale=1,epochs=2", "sisa"]
    assert methods["npo/lr_scale=1,epochs=2"] == {"stop": {"kind": "none"},
                                                  "schedule": {"lr_scale": 1, "epochs": 2}}


def test_the_frontier_tunes_every_fast_method_under_its_own_stop_rule_and_ceiling():
    methods = load_study(CONFIGS / "frontier.yaml").methods
    variants = {name: m for name, m in methods.items() if "=" in name}
    for family in ("graddiff", "neggrad", "bad-teacher-labels"):
        assert sum(name.startswith(f"{family}/lr_scale=") for name in variants) == 3, family
    assert sum(name.startswith("npo/") for name in variants) == 3 * 2  # lr scale x beta
    shards = {n: m for n, m in variants.items() if n.startswith("e2urec/shards/")}
    assert len(shards) == 3 * 2
    # Distillation toward the clean teacher stops on its plateau; ascent methods on the
    # membership rule (their default); every variant within the same 6-epoch ceiling.
    assert all(m["stop"]["kind"] == "plateau" and m["forget_teacher"] == "shards"
               for m in shards.values())
    assert all("stop" not in m for n, m in variants.items() if not n.startswith("e2urec"))
    assert all(m["schedule"]["epochs"] == 6 for m in variants.values())


@pytest.mark.parametrize("grid", ["[0.3, 1]", "{schedule.lr_scale: []}",
                                  "{schedule.lr_scale: 0.3}", "{schedule.lr_sacle: [1]}"])
def test_a_malformed_grid_or_a_typo_in_it_is_refused(tmp_path, grid):
    study = tmp_path / "sweep.yaml"
    study.write_text(f"extends: {CONFIGS / 'smoke.yaml'}\nmethods:\n  npo:\n"
                     f"    grid: {grid}\n")
    with pytest.raises(ConfigError, match="grid|lr_sacle"):
        load_study(study)


def test_the_exact_path_study_cuts_user_shards_into_slices_on_the_demos_recipe():
    study = load_study(CONFIGS / "exact-path.yaml")
    assert study.data.shards == 8 and study.seeds == [42]
    assert sorted(study.methods) == ["receraser", "sisa/user/slices=1", "sisa/user/slices=2",
                                     "sisa/user/slices=4"]
    assert all(m == {"shard_by": "user", "slices": r} for r, m in
               zip((1, 2, 4), (study.methods[f"sisa/user/slices={r}"] for r in (1, 2, 4)),
                   strict=True))
    assert study.train == load_study(CONFIGS / "demo-seeds.yaml").train
