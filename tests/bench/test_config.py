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


def test_the_frontier_is_a_study_of_every_stepping_method():
    methods = load_study(CONFIGS / "frontier.yaml").methods
    assert len(methods) == 4 * 3 * 2
    assert all(m["stop"] == {"kind": "none"} for m in methods.values())


@pytest.mark.parametrize("grid", ["[0.3, 1]", "{schedule.lr_scale: []}",
                                  "{schedule.lr_scale: 0.3}", "{schedule.lr_sacle: [1]}"])
def test_a_malformed_grid_or_a_typo_in_it_is_refused(tmp_path, grid):
    study = tmp_path / "sweep.yaml"
    study.write_text(f"extends: {CONFIGS / 'smoke.yaml'}\nmethods:\n  npo:\n"
                     f"    grid: {grid}\n")
    with pytest.raises(ConfigError, match="grid|lr_sacle"):
        load_study(study)
