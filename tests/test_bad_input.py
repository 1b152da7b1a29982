"""Bad input through the real command: one clear line, exit code 2, nothing changed on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2urec.cli import main
from e2urec.config import PrepareConfig
from e2urec.training.finetune import train_split
from tests.helpers import TINY, fails, quick_train, tiny_backbone

TINY_SETS = [f"--set=backbone.{k}={v}" for k, v in TINY.items()]
UNWRITABLE = Path("/proc/e2urec-test-output")  # /proc takes no new files, even for root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, prepared_dir) -> Path:
    out = tmp_path_factory.mktemp("model") / "original"
    train_split(prepared_dir, "train", tiny_backbone(), quick_train(epochs=1), out)
    return out


def prepare_argv(raw: Path, out: Path, *extra: str) -> list[str]:
    return ["prepare", "--data-dir", str(raw), "--allow-modified-data", "--protocol", "paper",
            "--holdout-fraction", "0", "--out", str(out), *extra]


# -- output paths -------------------------------------------------------------------------


def test_prepare_and_train_refuse_a_folder_of_someone_elses_files(tmp_path, synthetic_raw,
                                                                  prepared_dir, capsys):
    theirs = tmp_path / "theirs"
    (theirs / "sub").mkdir(parents=True)
    (theirs / "thesis.tex").write_text("years of work")
    (theirs / "sub" / "data.csv").write_text("1,2,3")
    fails(prepare_argv(synthetic_raw, theirs), capsys, str(theirs), "--overwrite",
          unchanged=(tmp_path,))
    fails(["train", "--data", str(prepared_dir), *TINY_SETS, "--out", str(theirs)], capsys,
          str(theirs), "--overwrite", unchanged=(tmp_path,))


def test_own_earlier_output_is_replaced_and_overwrite_is_explicit(tmp_path, synthetic_raw,
                                                                  capsys):
    out = tmp_path / "data"
    assert main(prepare_argv(synthetic_raw, out)) == 0
    assert main(prepare_argv(synthetic_raw, out, "--window", "50")) == 0  # its own: replaced
    assert json.loads((out / "manifest.json").read_text())["counts"]["train"] == 30
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("x")
    assert main(prepare_argv(synthetic_raw, theirs, "--overwrite")) == 0
    assert (theirs / "manifest.json").is_file() and not (theirs / "notes.txt").exists()
    capsys.readouterr()


@pytest.mark.parametrize("command", ["prepare", "train", "unlearn"])
def test_an_existing_file_as_out_is_refused_before_any_work(command, tmp_path, synthetic_raw,
                                                            prepared_dir, model_dir, capsys):
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    argv = {"prepare": prepare_argv(synthetic_raw, out),
            "train": ["train", "--data", str(prepared_dir), *TINY_SETS, "--out", str(out)],
            "unlearn": ["unlearn", "--method", "neggrad", "--data", str(prepared_dir),
                        "--original", str(model_dir), "--out", str(out)]}[command]
    start = time.perf_counter()
    fails(argv, capsys, "is an existing file", unchanged=(tmp_path,))
    assert time.perf_counter() - start < 5  # refused before training anything
    assert out.read_text() == "keep me"


def test_evaluate_refuses_a_foreign_file_and_a_folder(tmp_path, prepared_dir, model_dir,
                                                      capsys):
    foreign = tmp_path / "report.json"
    foreign.write_text('{"mine": true}')
    base = ["evaluate", "--data", str(prepared_dir), "--model", str(model_dir)]
    fails([*base, "--out", str(foreign)], capsys, "not an e2urec result",
          unchanged=(tmp_path,))
    folder = tmp_path / "folder"
    folder.mkdir()
    fails([*base, "--out", str(folder)], capsys, "is a folder", unchanged=(tmp_path,))
    own = tmp_path / "eval.json"
    assert main([*base, "--out", str(own)]) == 0
    assert main([*base, "--out", str(own)]) == 0  # its own earlier result: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json", "folder", "report.json"]
    capsys.readouterr()


def _proc_is_writable() -> bool:
    try:
        UNWRITABLE.parent.joinpath(".e2urec-probe").touch()
    except OSError:
        return False
    return True


@pytest.mark.skipif(_proc_is_writable(), reason="this machine lets /proc be written")
@pytest.mark.parametrize("command", ["prepare", "train", "unlearn", "evaluate"])
def test_an_unwritable_output_is_refused_before_any_work(command, tmp_path, synthetic_raw,
                                                         prepared_dir, model_dir, capsys):
    out = UNWRITABLE / "out"
    argv = {"prepare": prepare_argv(synthetic_raw, out),
            "train": ["train", "--data", str(prepared_dir), *TINY_SETS, "--out", str(out)],
            "unlearn": ["unlearn", "--method", "neggrad", "--data", str(prepared_dir),
                        "--original", str(model_dir), "--out", str(out)],
            "evaluate": ["evaluate", "--data", str(prepared_dir), "--model", str(model_dir),
                         "--out", str(out)]}[command]
    fails(argv, capsys, "cannot write", unchanged=(prepared_dir, model_dir))


# -- data -------------------------------------------------------------------------------


def test_a_truncated_ratings_file_is_named_and_allowed_only_on_purpose(tmp_path, real_ml100k,
                                                                       capsys):
    if not (real_ml100k / "u.data").is_file():
        pytest.skip("needs the GroupLens files")
    cut = tmp_path / "ml-100k"
    shutil.copytree(real_ml100k, cut)
    text = (cut / "u.data").read_bytes()
    (cut / "u.data").write_bytes(text[: int(len(text) * 0.6) + 5])  # inside a timestamp
    out = tmp_path / "data"
    fails(["prepare", "--data-dir", str(cut), "--protocol", "paper", "--out", str(out)], capsys,
          f"{cut / 'u.data'}", "--allow-modified-data", unchanged=(tmp_path,))
    assert main(["prepare", "--data-dir", str(cut), "--allow-modified-data", "--protocol", "paper",
                 "--window", "500",
                 "--holdout-fraction", "0",
                 "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["raw_sha256"] and manifest["config"]["allow_modified_data"] is True
    capsys.readouterr()


def test_a_ratings_count_off_the_published_one_is_refused(tmp_path, capsys):
    from e2urec.data.sources import DataIntegrityError, check_ratings_count

    with pytest.raises(DataIntegrityError, match="99,999 ratings where the published ml-100k"):
        check_ratings_count("ml-100k", 99_999, tmp_path)
    check_ratings_count("ml-100k", 99_999, tmp_path, allow_modified=True)
    check_ratings_count("ml-100k", 100_000, tmp_path)


def test_a_window_larger_than_the_data_is_an_error(tmp_path, synthetic_raw, capsys):
    fails(prepare_argv(synthetic_raw, tmp_path / "d", "--window", "1000000"), capsys,
          "window 1,000,000 exceeds the 208 samples", unchanged=(tmp_path,))


def test_a_malformed_sample_names_file_and_line(tmp_path, prepared_dir, capsys):
    data = tmp_path / "data"
    shutil.copytree(prepared_dir, data)
    lines = (data / "valid.jsonl").read_text().splitlines()
    row = json.loads(lines[2])
    row["label"] = "x"
    lines[2] = json.dumps(row)
    (data / "valid.jsonl").write_text("\n".join(lines) + "\n")
    fails(["train", "--data", str(data), *TINY_SETS, "--out", str(tmp_path / "m")], capsys,
          f"{data / 'valid.jsonl'}:3: label 'x' is not 0 or 1", unchanged=(tmp_path,))


def test_a_yaml_syntax_error_is_one_line_with_the_file(tmp_path, capsys):
    study = tmp_path / "study.yaml"
    study.write_text("name: broken\nmethods: {e2urec: {}\ndata: [\n")
    fails(["bench", "--config", str(study), "--out", str(tmp_path / "out")], capsys,
          f"{study}:", "YAML syntax error", unchanged=(tmp_path,))
    fails(["train", "--data", str(tmp_path), "--config", str(study), "--out",
           str(tmp_path / "m")], capsys, "YAML syntax error", unchanged=(tmp_path,))


def test_the_bench_keys_its_stages_by_the_raw_data_read(tmp_path, synthetic_raw):
    from e2urec.bench.config import StudyConfig
    from e2urec.bench.stages import Stages, prepare_stage
    from e2urec.data.sources import find_raw

    raw_dir = tmp_path / "ml-100k"
    shutil.copytree(synthetic_raw, raw_dir)
    study = StudyConfig(data=PrepareConfig(protocol="paper", data_dir=str(raw_dir),
                                           allow_modified_data=True, holdout_fraction=0),
                        methods={"neggrad": {}})
    logs: list[str] = []
    stages = Stages(tmp_path / "bench", logs.append)
    first = prepare_stage(stages, study, find_raw(study.data))
    assert prepare_stage(stages, study, find_raw(study.data)) == first  # same bytes: reused
    with (raw_dir / "u.data").open("a") as handle:
        handle.write("1\t3\t5\t1999999\n")
    second = prepare_stage(stages, study, find_raw(study.data))
    assert second != first
    assert [line.split()[2] for line in logs] == ["running", "reusing", "running"]


# -- models -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-gpt", "./no/such/folder"])
def test_an_unknown_model_fails_in_under_a_second(name, tmp_path, prepared_dir, capsys):
    start = time.perf_counter()
    first = fails(["train", "--data", str(prepared_dir), "--model", name, "--out",
                   str(tmp_path / "m")], capsys, name, unchanged=(tmp_path,))
    assert time.perf_counter() - start < 1.0
    if name == "tiny-gpt":
        assert "tiny-llama, tiny-t5, smollm2-135m" in first
    else:
        assert "no such model folder" in first


def test_a_truncated_weights_file_is_named(tmp_path, prepared_dir, model_dir, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    fails(["evaluate", "--data", str(prepared_dir), "--model", str(broken), "--out",
           str(tmp_path / "e.json")], capsys, str(weights), "truncated", unchanged=(tmp_path,))
    fails(["unlearn", "--method", "neggrad", "--data", str(prepared_dir), "--original",
           str(broken), "--out", str(tmp_path / "u")], capsys, str(weights),
          unchanged=(tmp_path,))


def test_a_lora_target_the_model_lacks_fails_before_any_training(tmp_path, prepared_dir,
                                                                  model_dir, capsys):
    start = time.perf_counter()
    fails(["unlearn", "--method", "e2urec", "--data", str(prepared_dir), "--original",
           str(model_dir), "--option", "lora.targets=[all-linear]", "--out",
           str(tmp_path / "u")], capsys, "LoRA target '[all-linear]' matches no layer",
          "q_proj", unchanged=(tmp_path,))
    assert time.perf_counter() - start < 5.0  # the augmented model was never trained


# -- concurrency --------------------------------------------------------------------------

HOLD_LOCK = """
import sys, time
from e2urec.fileio import folder_lock
with folder_lock(sys.argv[1], "e2urec bench"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_bench_on_one_folder_fails_at_once_and_a_stale_lock_is_taken(tmp_path,
                                                                             capsys):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
        first = fails(["bench", "--config", str(smoke), "--out", str(out)], capsys,
                      f"PID {holder.pid}", "--wait", unchanged=(tmp_path,))
        assert "in use by another e2urec bench" in first
    finally:
        holder.kill()  # killed, as kill -9 would: the lock file stays behind
        holder.wait()
    from e2urec.fileio import LOCK_FILE, folder_lock

    assert (out / LOCK_FILE).read_text().strip() == str(holder.pid)
    with folder_lock(out, "e2urec bench"):  # a stale lock is taken over
        assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())


# -- adapters with plain peft ----------------------------------------------------------------

LOAD_WITH_PEFT = """
import sys
from peft import AutoPeftModelForCausalLM, PeftModel
from transformers import AutoModelForCausalLM
adapter = sys.argv[1]
model = AutoPeftModelForCausalLM.from_pretrained(adapter)
base = AutoModelForCausalLM.from_pretrained(model.peft_config["default"].base_model_name_or_path)
PeftModel.from_pretrained(base, adapter)
print("loaded", type(model).__name__)
"""


@pytest.mark.slow
def test_an_e2urec_adapter_loads_with_plain_peft_from_another_directory(
        tmp_path, prepared_dir, model_dir, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "original").symlink_to(model_dir)
    monkeypatch.chdir(work)  # the run names the Original by a relative path
    assert main(["unlearn", "--method", "e2urec", "--data", str(prepared_dir), "--original",
                 "original", "--option", "schedule.epochs=1", "--option", "augment_epochs=1",
                 "--option", "stop.kind=none", "--option", "calibrate_alpha=false",
                 "--out", "adapter"]) == 0
    config = json.loads((work / "adapter" / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-c", LOAD_WITH_PEFT, str(work / "adapter")],
                          cwd=elsewhere, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "loaded PeftModelForCausalLM" in done.stdout
    capsys.readouterr()
