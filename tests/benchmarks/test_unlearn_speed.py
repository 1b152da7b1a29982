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


@pytest.mark.slow
def test_the_frontier_names_each_methods_cheapest_landing_or_none(prepared_dir, tmp_path,
                                                                   capsys):
    import re

    from e2urec.training.finetune import train_split
    from tests.helpers import quick_train, tiny_backbone

    original = tmp_path / "original"
    train_split(prepared_dir, "train", tiny_backbone(), quick_train(epochs=2), original)
    frontier = load_benchmark("forgetting_frontier")
    frontier.main(["--data", str(prepared_dir), "--original", str(original), "--methods",
                   "neggrad,npo", "--lr-scales", "0.05,1", "--epochs", "1",
                   "--workdir", str(tmp_path / "work")])
    lines = capsys.readouterr().out.strip().splitlines()
    last = lines[-2:]
    assert [line.split(":")[0] for line in last] == ["neggrad", "npo"]
    pattern = (r"(cheapest inside 0\.7-1\.3: lr_scale [\d.]+, \d+ steps, [\d.]+x Retrain's "
               r"rows, [\d.]+x its seconds|none inside 0\.7-1\.3 on all three with test AUC "
               r"within 0\.01)")
    assert all(re.fullmatch(pattern, line.split(": ", 1)[1]) for line in last), last
    rows = [line.split() for line in lines if line.startswith(("neggrad ", "npo "))]
    assert len(rows) == 4  # two lrs each
    assert (tmp_path / "work" / "forgetting_frontier.png").stat().st_size > 10_000


@pytest.mark.slow
def test_exact_path_choices_sets_each_k_and_r_against_retrain_and_names_the_best(
        prepared_dir, tmp_path, capsys):
    import json

    from e2urec.checkpoints.folders import read_meta

    config = tmp_path / "recipe.yaml"
    config.write_text("name: tiny\nbackbone: {name: tiny-llama, tiny_hidden: 32, tiny_layers: 1,"
                      " tiny_heads: 2, tiny_intermediate: 64, tiny_vocab: 600}\n"
                      "train: {epochs: 2, lr: 1.0e-3, batch_size: 8, early_stopping: false}\n"
                      "methods: {retrain: {}}\n")
    load_benchmark("exact_path_choices").main(
        ["--config", str(config), "--data", str(prepared_dir), "--choices",
         "2x1,3x2:cumulative:e1", "--positives", "5", "--workdir", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    results = json.loads(lines[-1])
    assert set(results) == {"2x1", "3x2:cumulative:e1"}
    assert lines[-2].startswith("best choice: ")
    work = tmp_path / "exact-choices-0"
    sliced = read_meta(work / "3x2-cumulative-e1" / "initial")
    # K shards drawn on a copy of the data, R slices a shard, the recipe recorded.
    assert len(sliced["members"]) == 3 and [len(b) for b in sliced["slice_bounds"]] == [1] * 3
    record = read_meta(work / "3x2-cumulative-e1" / "initial" / "shard_0")["train_record"]
    assert record["train"]["epochs"] == 1 and record["first_slice"] == 0  # e1 over epochs: 2
    # The one-user request retrained the one shard that held the user.
    assert len(read_meta(work / "3x2-cumulative-e1" / "one-user")["retrained_shards"]) == 1
    assert all(r["one_user_vs_retrain"] > 0 for r in results.values())
