"""The speed benchmark's two implementations of an E2URec step must agree."""

import importlib

import pytest

from tests.helpers import read_table


def load_benchmark(name: str):
    return importlib.import_module(f"benchmarks.{name}")


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-t5"])
def test_reference_style_and_ours_take_the_same_first_step(model, prepared_dir, capsys):
    speed = load_benchmark("unlearn_speed")
    speedup = speed.run(speed.build_parser().parse_args(
        ["--model", model, "--data", str(prepared_dir), "--steps", "2", "--epochs", "2",
         "--batch-size", "4", "--lora-r", "4", "--device", "cpu"]))
    out = capsys.readouterr().out
    gap = next(line for line in out.splitlines()
               if line.startswith("first-step loss difference"))
    assert float(gap.split(":")[1].split()[0]) <= 1e-5
    rows = {r["implementation"]: r for r in read_table(out, "implementation")}
    # Same data, model and initialisation: the first losses agree (the table's 6 decimals).
    assert float(rows["reference"]["first loss"]) == pytest.approx(
        float(rows["ours"]["first loss"]), abs=2e-6)
    # The returned ratio is that of the printed totals (rounded to 0.01 s in the table).
    ref, ours = float(rows["reference"]["total s"]), float(rows["ours"]["total s"])
    assert (ref - 0.005) / (ours + 0.005) <= speedup <= (ref + 0.005) / (ours - 0.005)


@pytest.mark.slow
def test_unlearn_vs_retrain_ends_with_e2urecs_and_the_exact_paths_ratios(prepared_dir,
                                                                          tmp_path, capsys):
    import re

    from e2urec.checkpoints.folders import read_meta
    from e2urec.data.samples import read_manifest, read_split

    bench = load_benchmark("unlearn_vs_retrain")
    bench.main(["--model", "tiny-llama", "--data", str(prepared_dir), "--epochs", "1",
                "--methods", "e2urec,sisa", "--e2urec-option", "schedule.epochs=1",
                "--e2urec-option", "augment_epochs=1", "--sisa-option", "slices=2",
                "--workdir", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"e2urec/retrain 20%: \d+\.\d\d", lines[-4])
    assert re.fullmatch(r"e2urec/retrain one user: \d+\.\d\d", lines[-3])
    assert re.fullmatch(r"sisa/retrain one user: \d+\.\d\d", lines[-2])
    assert re.fullmatch(r"sisa/retrain 20%: \d+\.\d\d", lines[-1])
    sisa = tmp_path / "vs-retrain-tiny-llama" / "one-user" / "sisa"
    assert read_meta(sisa / "initial")["slices"] == 2  # the option reached SISA
    one_user = tmp_path / "vs-retrain-tiny-llama" / "data-one-user"

    users = {r["user_id"] for r in read_split(one_user, "forget")}
    # The one user is a canary user, so the request's trigger shows whether it is forgotten.
    assert len(users) == 1 and set(read_manifest(one_user)["canaries"]["users"]) == users
    assert {r["user_id"] for r in read_split(one_user, "canary")} == users
    closure = next(line for line in lines if line.startswith("one user's canary lift"))
    # (nan where the tiny Original's lift equals Retrain's: no gap to close.)
    assert re.search(r"share of the gap closed: retrain (1\.00|nan), e2urec (-?\d|nan)",
                     closure)
    assert re.search(r"sisa (-?\d|nan)", closure)
    assert len(read_split(one_user, "forget")) + len(read_split(one_user, "retain")) == len(
        read_split(prepared_dir, "train"))
