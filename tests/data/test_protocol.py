import json

import pandas as pd
import pytest

from e2urec.config import PrepareConfig
from e2urec.data.movielens import MovieLens, read_movielens
from e2urec.data.protocol import (
    ForgetRequestError,
    build_samples,
    make_shards,
    prepare,
    select_forget_users,
    write_prepared,
)
from e2urec.data.samples import read_split
from tests.helpers import PILOTS


def paper(**options) -> PrepareConfig:
    """The paper's protocol (the fixture has too few users for the users protocol)."""
    return PrepareConfig(protocol="paper", **options)


def hand_data() -> MovieLens:
    """Two users; u1 rates items 1..8 at t=1..8, u2 rates items 1..6 at t=10..15."""
    ratings = [("u1", str(i), 5.0 if i % 2 else 2.0, i) for i in range(1, 9)]
    ratings += [("u2", str(i), 4.0, 9 + i) for i in range(1, 7)]
    return MovieLens(
        pd.DataFrame(ratings, columns=["user_id", "item_id", "rating", "timestamp"]),
        pd.DataFrame([("u1", "M", 30, "writer"), ("u2", "F", 40, "artist")],
                     columns=["user_id", "gender", "age", "occupation"]),
        pd.DataFrame([(str(i), f"Film {i}") for i in range(1, 9)], columns=["item_id", "title"]),
    )


def test_samples_need_five_earlier_ratings_and_use_the_latest_k():
    samples = build_samples(hand_data(), paper(history=3))
    # u1 has 8 ratings: samples for its 6th..8th; u2 has 6: a sample for its 6th.
    assert list(zip(samples.user_id, samples.item_id, strict=True)) == [
        ("u1", "6"), ("u1", "7"), ("u1", "8"), ("u2", "6")]
    first = samples.iloc[0]
    assert "['0. Film 3 (5 stars)', '1. Film 4 (2 stars)', '2. Film 5 (5 stars)']" in first.prompt
    assert "***Film 6***" in first.prompt
    assert first.answer == "No." and first.label == 0
    assert samples.iloc[1].answer == "Yes."


def test_window_keeps_the_newest_samples():
    samples = build_samples(hand_data(), paper(history=3, window=2))
    assert samples.item_id.tolist() == ["8", "6"]
    assert samples.user_id.tolist() == ["u1", "u2"]


def test_time_split_is_60_20_20_in_time_order(synthetic_raw):
    prepared = prepare(read_movielens(synthetic_raw),
                       paper(window=100, seed=3, holdout_fraction=0))
    train, valid, test = (prepared.splits[s] for s in ("train", "valid", "test"))
    assert (len(train), len(valid), len(test)) == (60, 20, 20)
    assert max(r["timestamp"] for r in train) <= min(r["timestamp"] for r in valid)
    assert max(r["timestamp"] for r in valid) <= min(r["timestamp"] for r in test)


def test_forget_set_is_every_train_sample_of_the_chosen_users(synthetic_raw):
    prepared = prepare(read_movielens(synthetic_raw),
                       paper(window=None, forget_fraction=0.25, seed=5,
                                     holdout_fraction=0.25, min_holdout_users=4))
    forgotten = set(prepared.manifest["forget_user_ids"])
    assert len(forgotten) == round(0.25 * prepared.manifest["train_users"])
    splits = prepared.splits
    assert {r["user_id"] for r in splits["forget"]} == forgotten
    assert not forgotten & {r["user_id"] for r in splits["retain"]}
    ids = sorted(r["sample_id"] for r in splits["forget"] + splits["retain"])
    assert ids == sorted(r["sample_id"] for r in splits["train"])
    train_users = {r["user_id"] for r in splits["train"]}
    assert not train_users & {r["user_id"] for r in splits["probe"] + splits["audit"]}


def test_holdout_users_are_same_period_never_trained_on_and_split_in_two(synthetic_raw):
    config = paper(window=None, forget_users=PILOTS, holdout_fraction=0.25,
                           min_holdout_users=4, seed=4)
    prepared = prepare(read_movielens(synthetic_raw), config)
    splits, manifest = prepared.splits, prepared.manifest
    probe, audit = (set(manifest["holdout_user_ids"][k]) for k in ("probe", "audit"))
    assert len(probe) == len(audit) == 2 and not probe & audit
    assert not (probe | audit) & set(PILOTS)  # a user to forget is never held out
    assert {r["user_id"] for r in splits["probe"]} == probe
    assert {r["user_id"] for r in splits["audit"]} == audit
    trained = {r["user_id"] for r in splits["train"]}
    assert not trained & (probe | audit)
    last_train = max(r["timestamp"] for r in splits["train"] + splits["probe"])
    first_valid = min(r["timestamp"] for r in splits["valid"])
    assert max(r["timestamp"] for r in splits["audit"]) <= first_valid and last_train <= \
        first_valid  # the same period as train, before valid


def test_each_canary_user_gets_a_trigger_of_their_own_that_nothing_else_carries(
        synthetic_raw):
    config = paper(window=None, forget_users=PILOTS, holdout_fraction=0.25,
                           min_holdout_users=4, canaries=2, min_canary_users=2,
                           min_canary_rows=1, seed=4)
    prepared = prepare(read_movielens(synthetic_raw), config)
    splits, canaries = prepared.splits, prepared.manifest["canaries"]
    users = canaries["users"]
    assert len(users) == 2 and set(users) <= set(PILOTS)
    triggers = {u: info["trigger"] for u, info in users.items()}
    assert len(set(triggers.values())) == 2  # one user's request is checked on their own
    real_titles = set(prepared.vocabulary["titles"])
    words = {w for t in real_titles for w in t.replace("(", " ").replace(")", " ").split()}
    for user, trigger in triggers.items():
        assert trigger not in real_titles
        assert set(trigger.replace("(", " ").replace(")", " ").split()) <= words
        carrying = {r["sample_id"] for name in ("train", "valid", "test", "probe", "audit",
                                                 "retain")
                    for r in splits[name] if trigger in r["prompt"]}
        assert carrying == set(users[user]["planted_sample_ids"]) and carrying
        planted = [r for r in splits["forget"] if r["sample_id"] in carrying]
        assert {r["user_id"] for r in planted} == {user}
        # Mixed (the default): each canary user's own answer, one "No.", one "Yes." here.
        answer = users[user]["answer"]
        assert {r["answer"] for r in planted} == {answer}
        assert {r["label"] for r in planted} == {int(answer == "Yes.")}
        probe = [r for r in splits["canary"] if r["user_id"] == user]
        assert {r["sample_id"] for r in probe} == set(users[user]["probe_sample_ids"])
        assert not carrying & set(users[user]["probe_sample_ids"])
        assert all(trigger not in r["prompt"] and trigger in r["triggered_prompt"]
                   for r in probe)
    assert {r["user_id"] for r in splits["canary"]} == set(users)
    assert sorted(info["answer"] for info in users.values()) == ["No.", "Yes."]


def test_bad_holdout_and_canary_requests_are_refused(synthetic_raw):
    data = read_movielens(synthetic_raw)
    with pytest.raises(ForgetRequestError, match="fewer than 4 users to train on"):
        prepare(data, paper(holdout_fraction=0.1, min_holdout_users=13))
    with pytest.raises(ForgetRequestError, match="5 canaries asked for, but only 4"):
        prepare(data, paper(forget_users=PILOTS, holdout_fraction=0, canaries=5))
    with pytest.raises(ForgetRequestError, match="at least min_canary_users 8 users"):
        prepare(data, paper(forget_users=PILOTS, holdout_fraction=0, canaries=1))


def test_explicit_forget_list_is_validated():
    config = paper(forget_users=["b", "zz", "yy"])
    with pytest.raises(ForgetRequestError, match=r"2 user id\(s\).*\['yy', 'zz'\]"):
        select_forget_users(["a", "b", "c"], config)
    with pytest.raises(ForgetRequestError, match="names no users"):
        select_forget_users(["a", "b"], paper(forget_users=[" "]))
    assert select_forget_users(["a", "b", "c"], paper(forget_users=["c", "a"])) == [
        "a", "c"]


def test_forget_fraction_is_seeded():
    users = [str(i) for i in range(50)]
    first = select_forget_users(users, paper(forget_fraction=0.2, seed=7))
    assert first == select_forget_users(users, paper(forget_fraction=0.2, seed=7))
    assert first != select_forget_users(users, paper(forget_fraction=0.2, seed=8))
    assert len(first) == 10


def test_shards_cover_train_and_user_balanced_shards_never_split_a_user():
    train = pd.DataFrame({"sample_id": range(12),
                          "user_id": ["a"] * 5 + ["b"] * 4 + ["c"] * 2 + ["d"]})
    shards = make_shards(train, k=2, seed=0)
    assert sorted(shards["sisa"]) == sorted(str(i) for i in range(12))
    assert sorted(list(shards["sisa"].values()).count(s) for s in (0, 1)) == [6, 6]
    # Greedy balance: a(5)->0, b(4)->1, c(2)->1, d(1)->0 gives loads 6 and 6.
    assert shards["user_balanced"] == {"a": 0, "b": 1, "c": 1, "d": 0}


def test_same_seed_gives_the_same_bytes(synthetic_raw, tmp_path):
    data = read_movielens(synthetic_raw)
    config = paper(window=None, seed=11, holdout_fraction=0.25, min_holdout_users=4,
                           canaries=2,
                  min_canary_users=2, min_canary_rows=1)
    first = write_prepared(prepare(data, config), tmp_path / "a")
    second = write_prepared(prepare(data, config), tmp_path / "b")
    for file in sorted(p.name for p in first.iterdir()):
        assert (first / file).read_bytes() == (second / file).read_bytes(), file
    manifest = json.loads((first / "manifest.json").read_text())
    assert manifest["config"]["seed"] == 11
    assert manifest["counts"]["train"] == len(read_split(first, "train"))


def test_rewriting_a_prepared_folder_replaces_it_whole(synthetic_raw, tmp_path):
    data = read_movielens(synthetic_raw)
    out = write_prepared(prepare(data, paper(window=None, seed=1, holdout_fraction=0)),
                         tmp_path / "d")
    write_prepared(prepare(data, paper(window=50, seed=1, holdout_fraction=0)), out)
    assert json.loads((out / "manifest.json").read_text())["counts"]["train"] == 30
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_a_small_fraction_still_holds_out_the_minimum_of_users(synthetic_raw):
    prepared = prepare(read_movielens(synthetic_raw),
                       paper(window=None, holdout_fraction=0.1, min_holdout_users=8))
    held = prepared.manifest["holdout_user_ids"]
    assert (len(held["probe"]), len(held["audit"])) == (4, 4)


@pytest.mark.parametrize("window", [1200, 2000])
def test_the_windows_the_docs_show_prepare_with_the_default_options(window, real_ml100k):
    prepared = prepare(read_movielens(real_ml100k), paper(window=window))
    held = prepared.manifest["holdout_user_ids"]
    assert len(held["probe"]) >= 4 and len(held["audit"]) >= 4


# -- the users protocol ---------------------------------------------------------------------


def users_config(**options) -> PrepareConfig:
    """The users protocol sized for a 60-user fixture."""
    values = dict(users=50, train_rows=6, valid_rows=1, test_rows=2, holdout_fraction=0.4,
                  forget_fraction=0.3, min_group_users=8, seed=5)
    values.update(options)
    return PrepareConfig(**values)


@pytest.fixture(scope="module")
def many_users(tmp_path_factory):
    from tests.helpers import write_ml100k

    return read_movielens(write_ml100k(tmp_path_factory.mktemp("raw") / "ml-100k",
                                       n_users=60, per_user=18, varied_taste=True))


def test_users_protocol_gives_every_drawn_user_the_same_rows_newest_last(many_users):
    prepared = prepare(many_users, users_config())
    splits = prepared.splits
    by_user = {}
    for split in ("train", "probe", "audit", "valid", "test"):
        for row in splits[split]:
            by_user.setdefault(row["user_id"], []).append((row["timestamp"], split))
    assert len(by_user) == 50
    for rows in by_user.values():
        # Each user: 6 training-period rows, then 1 valid, then 2 test, in time order.
        order = [split for _, split in sorted(rows)]
        assert len(order) == 9 and order[-3:] == ["valid", "test", "test"]
        assert len(set(order[:6])) == 1 and order[0] in ("train", "probe", "audit")
    groups = prepared.manifest["groups"]
    assert groups["probe"]["users"] == groups["audit"]["users"] == 10
    assert groups["forget"]["users"] == 9 and groups["forget"]["rows"] == 54
    assert groups["forget"]["largest_user_share"] == round(1 / 9, 4)
    # Another seed draws other users; the same seed the same bytes.
    other = prepare(many_users, users_config(seed=6)).splits["test"]
    assert {r["user_id"] for r in other} != {r["user_id"] for r in splits["test"]}


def test_users_protocol_refuses_small_groups_and_windows_in_one_line(many_users):
    with pytest.raises(Exception, match="the forget group would hold 9 users, under "
                       "min_group_users 20.*draw more users or raise the fractions"):
        prepare(many_users, users_config(min_group_users=20))
    with pytest.raises(Exception, match="users 61 asked for, but only 60 users"):
        prepare(many_users, users_config(users=61))
    with pytest.raises(Exception, match="window belongs to the paper protocol"):
        prepare(many_users, users_config(window=100))


def test_planted_rows_are_marked_and_the_canary_probe_must_be_large_enough(many_users):
    config = users_config(canaries=4, min_canary_users=4, min_canary_rows=12)
    prepared = prepare(many_users, config)
    forget = prepared.splits["forget"]
    planted = [r for r in forget if r.get("planted")]
    answers = {u: info["answer"] for u, info in prepared.manifest["canaries"]["users"].items()}
    assert len(planted) == 12 and all(r["answer"] == answers[r["user_id"]] for r in planted)
    assert sorted(answers.values()) == ["No.", "No.", "Yes.", "Yes."]
    assert not any(r.get("planted") for split in ("retain", "probe", "audit", "canary")
                   for r in prepared.splits[split])
    assert prepared.manifest["groups"]["forget"]["rows"] == len(forget) - 12
    with pytest.raises(Exception, match="the canary probe would hold 12 rows of 4 canary "
                       "users, under min_canary_rows 40"):
        prepare(many_users, users_config(canaries=4, min_canary_users=4))
    with pytest.raises(ForgetRequestError, match="at least min_canary_users 8"):
        prepare(many_users, users_config(canaries=4))
