"""The teacher-signal benchmark prints one row per augmented model and teacher space."""

import pytest

from tests.benchmarks.test_unlearn_speed import load_benchmark
from tests.methods.conftest import family_name


def test_the_teacher_signal_table_accounts_for_every_forget_sample(prepared_dir, original_dir,
                                                                   capsys):
    if family_name(original_dir) != "tiny-llama":
        pytest.skip("one family is enough for the table's shape")
    signal = load_benchmark("teacher_signal")
    signal.main(["--data", str(prepared_dir), "--original", str(original_dir),
                 "--augment-epochs", "1,2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "the calibration's target" in lines[0]
    rows = [line.split() for line in lines if line.split()[0] in ("1", "2")]
    assert [(r[0], r[3]) for r in rows] == [
        ("1", "logits"), ("1", "logprobs"), ("2", "logits"), ("2", "logprobs")]
    for row in rows:
        away, toward, none = (float(row[i]) for i in (4, 5, 6))
        assert away + toward + none == pytest.approx(1.0, abs=0.02)  # two-decimal rounding
        assert 0.0 <= float(row[7]) <= 32.0
