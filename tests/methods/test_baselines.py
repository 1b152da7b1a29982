import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from e2urec.backbones.scoring import answer_logits
from e2urec.checkpoints.folders import read_meta
from e2urec.checkpoints.scorers import EnsembleScorer, load_scorer
from e2urec.config import PrepareConfig
from e2urec.data.movielens import read_movielens
from e2urec.data.protocol import prepare, write_prepared
from e2urec.data.samples import read_split
from e2urec.evaluation.predict import predict
from e2urec.methods.base import RECORD_FILE
from e2urec.training.losses import answer_ce


def mean_p_true(model_dir, data_dir, split="forget") -> float:
    return float(predict(load_scorer(model_dir), read_split(data_dir, split)).p_true.mean())


def forget_ce(model_dir, data_dir) -> float:
    scorer = load_scorer(model_dir)
    encoder = scorer.encoder()
    batch = encoder.collate(encoder.encode(read_split(data_dir, "forget")))
    with torch.no_grad():  # the Yes/No token: what the Original was trained on
        logits = answer_logits(scorer.backbone.model.eval(), batch)[:, :1]
    return float(answer_ce(logits, batch["answer_ids"][:, :1], batch["answer_mask"][:, :1]))


def tree_digest(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_retrain_trains_on_retain_only(unlearn, prepared_dir):
    record, out = unlearn("retrain")
    meta = read_meta(out)
    assert meta["train_record"]["split"] == "retain"
    assert meta["train_record"]["samples"] == len(read_split(prepared_dir, "retain"))
    assert record["trainable_params"] == record["total_params"]
    # The record the call returns is the one written beside the model.
    assert json.loads((out / RECORD_FILE).read_text()) == json.loads(json.dumps(record))


def test_neggrad_raises_the_forget_loss(unlearn, prepared_dir, original_dir):
    record, out = unlearn("neggrad", {"weight": 1.0, "schedule": {"lr": 1e-3, "epochs": 2},
                                          "stop": {"kind": "none"}})
    assert forget_ce(out, prepared_dir) > forget_ce(original_dir, prepared_dir)
    assert record["trainable_params"] == record["total_params"]


@pytest.mark.parametrize("method,options", [
    ("graddiff", {"schedule": {"lr": 1e-3, "epochs": 2}, "stop": {"kind": "none"}}),
    ("npo", {"beta": 0.1, "schedule": {"lr": 1e-3, "epochs": 2}, "stop": {"kind": "none"}}),
])
def test_graddiff_and_npo_raise_the_forget_loss(method, options, unlearn, prepared_dir,
                                                original_dir):
    record, out = unlearn(method, options)
    assert forget_ce(out, prepared_dir) > forget_ce(original_dir, prepared_dir)
    assert record["trainable_params"] == record["total_params"]
    steps = record["history"]["steps"]
    assert steps and all("retain_ce" in s for s in steps)  # joint from the first step


def test_npo_loss_is_bounded_and_fades_once_a_sample_falls_below_the_reference():
    from e2urec.methods.npo import npo_loss

    ref = torch.zeros(4)
    at_reference = npo_loss(torch.zeros(4), ref, beta=0.1)
    assert float(at_reference) == pytest.approx(2 / 0.1 * np.log(2))
    grads = []
    for gap in (0.0, -5.0, -50.0):
        log_prob = torch.full((4,), gap, requires_grad=True)
        npo_loss(log_prob, ref, beta=0.5).backward()
        grads.append(float(log_prob.grad.abs().sum()))
    assert grads[0] > grads[1] > grads[2] and grads[2] < 1e-3  # gradient ascent never fades
    assert float(npo_loss(torch.full((4,), -50.0), ref, beta=0.5)) >= 0


@pytest.mark.parametrize("method", ["bad-teacher-labels", "bad-teacher"])
def test_bad_teachers_lower_forget_accuracy(method, unlearn, prepared_dir, original_dir):
    # Bad-Teacher distils only the incompetent teacher's Yes/No split (see its docs).
    extra = {"teacher_scope": "answer"} if method == "bad-teacher" else {}
    _, out = unlearn(method, {"schedule": {"lr": 1e-3, "epochs": 2}, "stop": {"kind": "none"},
                              **extra})
    before = predict(load_scorer(original_dir), read_split(prepared_dir, "forget"))
    after = predict(load_scorer(out), read_split(prepared_dir, "forget"))
    assert after.p_true.mean() < before.p_true.mean()
    assert np.mean((after.p_yes > 0.5) == after.labels) <= np.mean(
        (before.p_yes > 0.5) == before.labels)


@pytest.fixture(scope="module")
def one_user_forgotten(tmp_path_factory, synthetic_raw):
    """Eight SISA shards and one forgotten user, so that some shards hold none of it."""
    config = PrepareConfig(protocol="paper", window=None, forget_users=["5"], shards=8, seed=2,
                           holdout_fraction=0.25, min_holdout_users=4)
    return write_prepared(prepare(read_movielens(synthetic_raw), config),
                          tmp_path_factory.mktemp("one-user") / "data")


def run_shards(method: str, data_dir, out, options=None, **train):
    from e2urec.methods import run_method
    from tests.helpers import quick_train, tiny_backbone

    record = run_method(method, data_dir, None, tiny_backbone(),
                        quick_train(**{"epochs": 1, **train}), options or {}, out)
    return record, out


@pytest.fixture(scope="module")
def sisa_run(tmp_path_factory, one_user_forgotten):
    """One SISA run (initial ensemble of 8 shards, then unlearning) for the shard tests."""
    return run_shards("sisa", one_user_forgotten, tmp_path_factory.mktemp("sisa") / "out")


def test_sisa_retrains_exactly_the_affected_shards(sisa_run, one_user_forgotten):
    shards = json.loads((one_user_forgotten / "shards.json").read_text())
    affected = sorted({shards["sisa"][str(r["sample_id"])]
                       for r in read_split(one_user_forgotten, "forget")})
    assert 0 < len(affected) < 8
    record, out = sisa_run
    assert record["retrained_shards"] == affected
    initial = out / "initial"
    members = read_meta(out)["members"]
    for index in range(8):
        if index in affected:
            assert members[index] == f"shard_{index}"
        else:
            assert (out / members[index]).resolve() == (initial / f"shard_{index}").resolve()
            assert not (out / f"shard_{index}").exists()
    scorer = load_scorer(out)
    assert isinstance(scorer, EnsembleScorer) and len(scorer.members) == 8
    assert predict(scorer, read_split(one_user_forgotten, "test")).p_yes.shape == (
        len(read_split(one_user_forgotten, "test")),)


def test_a_given_initial_ensemble_is_reused_untouched(sisa_run, one_user_forgotten, tmp_path):
    _, first = sisa_run
    initial = first / "initial"
    before = tree_digest(initial)
    record, out = run_shards("sisa", one_user_forgotten, tmp_path / "again",
                             {"initial": str(initial)})
    assert tree_digest(initial) == before
    assert not (out / "initial").exists()
    assert record["retrained_shards"] == read_meta(first)["retrained_shards"]
    for member, earlier in zip(read_meta(out)["members"], read_meta(first)["members"],
                               strict=True):
        if earlier.startswith("shard_"):  # retrained: inside the new output
            assert member == earlier
        else:  # untouched: the given ensemble's own folder
            assert Path(member) == (initial / Path(earlier).name).resolve()


def test_sisa_ensemble_averages_member_logits(sisa_run, one_user_forgotten):
    scorer = load_scorer(sisa_run[1])
    encoder = scorer.encoder()
    batch = encoder.collate(encoder.encode(read_split(one_user_forgotten, "test")[:4]), True)
    with torch.no_grad():
        members = scorer.member_logits(batch)
        torch.testing.assert_close(scorer.slot_logits(batch), members.mean(1))


def test_receraser_retrains_the_users_shard_and_its_aggregator_round_trips(
        one_user_forgotten, tmp_path):
    shards = json.loads((one_user_forgotten / "shards.json").read_text())
    options = {"aggregator_hidden": 5, "aggregator_epochs": 3}
    record, out = run_shards("receraser", one_user_forgotten, tmp_path / "out", options)
    assert record["retrained_shards"] == [shards["user_balanced"]["5"]]
    meta = read_meta(out)
    assert meta["aggregation"] == "attention"
    # A shard left empty by the forgotten user is dropped from the ensemble.
    assert meta["aggregator"] == {"n_members": len(meta["members"]), "hidden": 5}
    scorer = load_scorer(out)  # a non-default aggregator size loads
    assert scorer.aggregator.proj.out_features == 5
    rows = read_split(one_user_forgotten, "test")[:6]
    batch = scorer.encoder().collate(scorer.encoder().encode(rows), True)
    with torch.no_grad():
        members = scorer.member_logits(batch)
        weights = scorer.aggregator.weights(scorer.member_yes_no(members))
        expected = (weights.unsqueeze(-1) * members).sum(1)
        torch.testing.assert_close(scorer.slot_logits(batch), expected)
    # The learned weights are not the uniform average, and reloading gives the same scores.
    uniform = torch.full_like(weights, 1 / len(meta["members"]))
    assert not torch.allclose(weights, uniform, atol=1e-3)
    np.testing.assert_allclose(predict(load_scorer(out), rows).p_yes,
                               predict(scorer, rows).p_yes, atol=1e-6)


def test_shard_models_can_be_lora_adapters_on_one_backbone(one_user_forgotten, tmp_path):
    record, out = run_shards("sisa", one_user_forgotten, tmp_path / "out", use_lora=True)
    assert record["shard_models"] == "lora"
    initial_members = read_meta(out / "initial")["members"]
    bases = {read_meta(out / "initial" / m)["base"] for m in initial_members}
    assert len(bases) == 1 and record["trainable_params"] < record["total_params"]


@pytest.fixture(scope="module")
def lora_original(tmp_path_factory, prepared_dir):
    """An Original that is itself a LoRA adapter, as in the SmolLM2 configs."""
    from e2urec.training.finetune import train_split
    from tests.helpers import quick_train, tiny_backbone

    out = tmp_path_factory.mktemp("lora-original") / "model"
    train_split(prepared_dir, "train", tiny_backbone(), quick_train(epochs=2, use_lora=True), out)
    return out


@pytest.mark.parametrize("method,options", [
    ("e2urec", {"schedule": {"epochs": 1}, "augment_epochs": 1, "augment_lora": True,
                "stop": {"kind": "none"}, "calibrate_alpha": False}),
    ("neggrad", {"schedule": {"epochs": 1}, "stop": {"kind": "none"}}),
    ("bad-teacher", {"schedule": {"epochs": 1}, "stop": {"kind": "none"}}),
])
def test_methods_run_on_a_lora_original(method, options, lora_original, prepared_dir, tmp_path):
    from e2urec.methods import run_method
    from tests.helpers import quick_train, tiny_backbone

    assert read_meta(lora_original)["kind"] == "adapter"
    out = tmp_path / method
    record = run_method(method, prepared_dir, lora_original, tiny_backbone(),
                        quick_train(use_lora=True), options, out)
    rows = read_split(prepared_dir, "test")[:16]
    after = predict(load_scorer(out), rows).p_yes
    assert np.isfinite(after).all()
    if method == "e2urec":  # an adapter on the (merged) LoRA Original, the Original untouched
        assert read_meta(out)["kind"] == "adapter"
        assert record["trainable_params"] < 0.2 * record["total_params"]
        scorer = load_scorer(out)
        with scorer.backbone.model.disable_adapter():
            disabled = predict(scorer, rows).p_yes
        np.testing.assert_allclose(disabled, predict(load_scorer(lora_original), rows).p_yes,
                                   atol=1e-5)


def test_a_fractional_epoch_budget_ends_mid_epoch(unlearn, prepared_dir):
    record, _ = unlearn("neggrad", {"preset": "paper", "schedule": {"batch_size": 8}})
    per_epoch = -(-len(read_split(prepared_dir, "forget")) // 8)
    assert record["history"]["total_steps"] == round(3000 / 812 * per_epoch)
    assert record["options"]["schedule"]["max_grad_norm"] is None


def test_an_unlearning_lr_is_a_multiple_of_the_originals_unless_given_absolutely(
        unlearn, original_dir):
    from e2urec.checkpoints.folders import read_meta

    trained_at = read_meta(original_dir)["train_record"]["train"]["lr"]
    record, _ = unlearn("neggrad", {"schedule": {"lr_scale": 0.5, "epochs": 1},
                                    "stop": {"kind": "none"}})
    assert record["options"]["schedule"]["lr"] == pytest.approx(0.5 * trained_at)
    assert record["lr_base"] == {"lr": trained_at, "from": "the Original's training record"}
    record, _ = unlearn("neggrad", {"preset": "paper", "schedule": {"epochs": 1}})
    assert record["options"]["schedule"]["lr"] == 5e-5  # the reference's T5-base value


@pytest.fixture(scope="module")
def receraser_initial(tmp_path_factory, one_user_forgotten):
    """A user-sharded ensemble trained before any request (RecEraser's initial/)."""
    _, out = run_shards("receraser", one_user_forgotten,
                        tmp_path_factory.mktemp("receraser") / "out",
                        {"aggregator_hidden": 4, "aggregator_epochs": 1})
    return out / "initial"


def test_the_shards_teacher_never_asks_the_shard_that_held_the_rows_user(
        receraser_initial, one_user_forgotten):
    from e2urec.checkpoints.folders import load_model
    from e2urec.training.shards import shard_assignment
    from e2urec.training.teachers import held_out_shards

    members = [load_model(receraser_initial / m)
               for m in read_meta(receraser_initial)["members"]]
    rows = read_split(one_user_forgotten, "forget")[:4]
    _, assign = shard_assignment(one_user_forgotten, "user_balanced")
    holder = assign(rows[0])
    encoder = members[0].encoder()
    batch = encoder.collate(encoder.encode(rows))
    teacher = held_out_shards([m.model.eval() for m in members],
                              torch.tensor([assign(r) for r in rows]))
    before = teacher(batch)
    with torch.no_grad():  # the holder's answer must not matter ...
        for param in members[holder].model.parameters():
            param.add_(1.0)
    torch.testing.assert_close(teacher(batch), before)
    with torch.no_grad():  # ... any other member's does
        for param in members[(holder + 1) % len(members)].model.parameters():
            param.add_(1.0)
    assert not torch.allclose(teacher(batch), before)


def test_e2urec_distils_from_the_shards_and_refuses_a_folder_that_is_not_user_sharded(
        receraser_initial, one_user_forgotten, tmp_path):
    from e2urec.config import ConfigError
    from e2urec.methods import run_method
    from e2urec.training.finetune import train_split
    from tests.helpers import quick_train, tiny_backbone

    original = tmp_path / "original"
    train_split(one_user_forgotten, "train", tiny_backbone(), quick_train(), original)
    options = {"forget_teacher": "shards", "shards": str(receraser_initial),
               "schedule": {"epochs": 1, "lr": 3e-3}, "stop": {"kind": "none"},
               "lora": {"r": 4, "alpha": 8}}
    record = run_method("e2urec", one_user_forgotten, original, tiny_backbone(),
                        quick_train(), options, tmp_path / "out")
    assert record["teacher"]["kind"] == "shards" and record["teacher"]["members"] == 8
    assert record["augment"] == {"source": "not needed"}
    assert record["teacher_forwards"]["forget"] == len(read_split(one_user_forgotten, "forget"))
    sisa_like = tmp_path / "not-user-sharded"
    sisa_like.mkdir()
    with pytest.raises(ConfigError, match="is not a user-sharded ensemble"):
        run_method("e2urec", one_user_forgotten, original, tiny_backbone(), quick_train(),
                   {**options, "shards": str(sisa_like)}, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_e2urec_under_the_plateau_rule_measures_its_distance_to_the_teacher_and_names_a_ceiling(
        receraser_initial, one_user_forgotten, tmp_path):
    from e2urec.methods import run_method
    from e2urec.training.finetune import train_split
    from tests.helpers import quick_train, tiny_backbone

    original = tmp_path / "original"
    train_split(one_user_forgotten, "train", tiny_backbone(), quick_train(), original)
    options = {"forget_teacher": "shards", "shards": str(receraser_initial), "student": "full",
               "schedule": {"epochs": 2, "lr": 3e-3},
               # one check, at the last step: the rule cannot see a plateau, the budget ends it
               "stop": {"kind": "plateau", "check_every": 10_000, "probe_size": 16}}
    record = run_method("e2urec", one_user_forgotten, original, tiny_backbone(),
                        quick_train(), options, tmp_path / "out")
    history = record["history"]
    checks = history["evaluations"]
    assert [c["step"] for c in checks] == [0, history["total_steps"]]
    assert all(c["distance"] >= 0 and "rows" not in c for c in checks)
    assert record["stopped_by"] == "ceiling" and history["stopped"].startswith("ceiling")


def test_the_plateau_rule_is_refused_to_a_method_without_a_teacher(unlearn, tmp_path):
    from e2urec.config import ConfigError

    with pytest.raises(ConfigError, match="plateau is for distillation"):
        unlearn("graddiff", {"stop": {"kind": "plateau"}}, out=tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_the_shard_gain_is_what_the_users_own_shard_learnt_over_the_others(
        receraser_initial, one_user_forgotten):
    from e2urec.checkpoints.folders import load_model
    from e2urec.training.shards import shard_assignment
    from e2urec.training.teachers import member_gain

    members = [load_model(receraser_initial / m).model.eval()
               for m in read_meta(receraser_initial)["members"]]
    rows = read_split(one_user_forgotten, "forget")[:4]
    _, assign = shard_assignment(one_user_forgotten, "user_balanced")
    encoder = load_model(receraser_initial / read_meta(receraser_initial)["members"][0]).encoder()
    tokens, batch = encoder.tokens, encoder.collate(encoder.encode(rows))
    gain = member_gain(members, torch.tensor([assign(r) for r in rows]), tokens)(batch)

    def log_odds(model):
        with torch.no_grad():
            z = answer_logits(model, batch)[:, 0]
        return z[:, tokens.yes_id] - z[:, tokens.no_id]

    each = torch.stack([log_odds(m) for m in members])
    for i, row in enumerate(rows):
        own = assign(row)
        others = [k for k in range(len(members)) if k != own]
        assert gain[i] == pytest.approx(float(each[own, i] - each[others, i].mean()), abs=1e-4)


def test_e2urec_with_the_shard_gain_teacher_pushes_away_from_labels_to_the_probe_users_loss(
        receraser_initial, one_user_forgotten, tmp_path):
    from e2urec.methods import run_method
    from e2urec.training.finetune import train_split
    from tests.helpers import quick_train, tiny_backbone

    original = tmp_path / "original"
    train_split(one_user_forgotten, "train", tiny_backbone(), quick_train(), original)
    options = {"forget_teacher": "shard-gain", "shards": str(receraser_initial),
               "student": "full", "beta": 1.0, "schedule": {"epochs": 1, "lr": 3e-3},
               "stop": {"kind": "plateau", "probe_size": 16}}
    record = run_method("e2urec", one_user_forgotten, original, tiny_backbone(),
                        quick_train(), options, tmp_path / "out")
    teacher = record["teacher"]
    assert teacher["kind"] == "shard-gain" and teacher["members"] == 8
    assert teacher["samples_pushed"]["toward_label"] == 0.0  # only ever away from the label
    assert 0 <= teacher["alpha"] <= 32 and teacher["calibrated"]
    # Calibrated: the smallest alpha at which the teacher is as unsure of the forget rows as
    # the Original is of probe users (0 where the Original already is), never surer.
    assert teacher["teacher_loss"] >= teacher["original_loss"]
    if teacher["original_loss"] >= teacher["target_loss"]:
        assert teacher["alpha"] == 0 and teacher["teacher_loss"] == teacher["original_loss"]
    else:
        assert teacher["teacher_loss"] == pytest.approx(teacher["target_loss"], abs=0.02)
    assert "first check" in record["phases"] and record["history"]["evaluations"]
