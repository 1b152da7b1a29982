"""The speed benchmark's two implementations of an E2URec step must agree."""

import importlib
import json

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
def test_unlearn_vs_retrain_ends_with_both_paths_ratios_and_verdicts(prepared_dir, tmp_path,
                                                                     capsys):
    import re

    from e2urec.checkpoints.folders import read_meta
    from e2urec.data.samples import read_manifest, read_split

    bench = load_benchmark("unlearn_vs_retrain")
    bench.main(["--model", "tiny-llama", "--data", str(prepared_dir), "--epochs", "1",
                "--e2urec-option", "schedule.epochs=1", "--sisa-option", "slices=2",
                "--workdir", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    verdict = r" \((pass|fail: .+|no power: \d\.\d\d|-)\)"
    tail = lines[-5:] if lines[-4].startswith("e2urec/retrain batched") else lines[-4:]
    names = [line.split(":")[0] for line in tail]
    assert names == [n for n in bench.LAST_LINES if n in names]
    for line in tail:
        assert re.fullmatch(r"[a-z0-9/%, ]+: \d+\.\d\d" + verdict, line), line
    if "no power" in tail[0]:  # the approximate one-user request goes into a queued batch
        assert tail[1].startswith("e2urec/retrain batched, a user: ")
    work = tmp_path / "vs-retrain-tiny-llama"
    # The recommended settings reached both paths: E2URec distils from a shards teacher
    # trained before any request, SISA keeps user shards in (here) 2 slices.
    e2urec = json.loads((work / "20%" / "e2urec" / "unlearn_record.json").read_text())
    assert e2urec["teacher"]["kind"] == "shards" and e2urec["options"]["beta"] == 1.0
    initial = read_meta(work / "20%" / "sisa" / "initial")
    assert initial["slices"] == 2 and initial["scheme"] == "user_balanced"
    one_user = work / "data-one-user"
    users = {r["user_id"] for r in read_split(one_user, "forget")}
    # The one user is a canary user, so the request's trigger shows whether it is forgotten.
    assert len(users) == 1 and set(read_manifest(one_user)["canaries"]["users"]) == users
    assert {r["user_id"] for r in read_split(one_user, "canary")} == users
    assert len(read_split(one_user, "forget")) + len(read_split(one_user, "retain")) == len(
        read_split(prepared_dir, "train"))
