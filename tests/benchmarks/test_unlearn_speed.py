"""The speed benchmark's two implementations of an E2URec step must agree."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_reference_style_and_ours_take_the_same_first_step(model, prepared_dir, capsys):
    speed = load_benchmark("unlearn_speed")
    speedup = speed.run(speed.build_parser().parse_args(
        ["--model", model, "--data", str(prepared_dir), "--steps", "2", "--epochs", "2",
         "--batch-size", "4", "--lora-r", "4", "--device", "cpu"]))
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.endswith("(ok)") for line in lines)
    assert lines[-1] == f"speedup: {speedup:.2f}" and speedup > 0
