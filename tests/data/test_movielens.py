from pathlib import Path

import pytest

from e2urec.data.movielens import DataFormatError, read_movielens
from tests.helpers import CAFE


def test_grouplens_100k_reads_ids_demographics_and_latin1_titles(synthetic_raw):
    data = read_movielens(synthetic_raw)
    assert len(data.ratings) == 16 * 18
    assert list(data.ratings.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert data.users.set_index("user_id").loc["5"].to_dict() == {
        "gender": "M", "age": 25, "occupation": "writer"}
    assert data.items.set_index("item_id").loc["3", "title"].startswith(CAFE)


def test_grouplens_1m_maps_occupation_codes(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::5::978300760\n2::10::2::978300761\n")
    (tmp_path / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (tmp_path / "movies.dat").write_bytes("10::Am\u00e9lie (2001)::Comedy\n".encode("latin-1"))
    data = read_movielens(tmp_path)
    users = data.users.set_index("user_id")
    assert users.loc["1", "occupation"] == "K-12 student"
    assert users.loc["2", "occupation"] == "self-employed"
    assert data.items.title.tolist() == ["Am\u00e9lie (2001)"]


def test_recbole_atomic_files_with_prefixed_ids(tmp_path):
    (tmp_path / "ml-1m.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1m_1\tToy Story (1995)\t5\t978300760\n")
    (tmp_path / "ml-1m.user").write_text(
        "user_id:token\tage:float\tgender:token\toccupation:float\tzip_code:token\n"
        "1m_1\t25\tF\t12\t48067\n")
    (tmp_path / "ml-1m.item").write_text(
        "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"
        "Toy Story (1995)\tToy Story\t1995\tAnimation\n")
    data = read_movielens(tmp_path)
    assert data.ratings.user_id.tolist() == ["1m_1"]
    assert data.users.occupation.tolist() == ["programmer"]
    assert data.items.title.tolist() == ["Toy Story (1995)"]


def test_malformed_rating_line_names_file_and_line(synthetic_raw, tmp_path):
    bad = tmp_path / "ml-100k"
    bad.mkdir()
    for name in ("u.user", "u.item"):
        (bad / name).write_bytes((synthetic_raw / name).read_bytes())
    (bad / "u.data").write_text("1\t2\t5\t100\n1\t3\tfive\t101\n")
    with pytest.raises(DataFormatError, match=r"u\.data:2: rating 'five'"):
        read_movielens(bad)
    (bad / "u.data").write_text("1\t2\t5\n")
    with pytest.raises(DataFormatError, match=r"u\.data:1: expected 4 fields"):
        read_movielens(bad)


def test_ratings_of_unknown_users_are_rejected(synthetic_raw, tmp_path):
    bad = tmp_path / "ml-100k"
    bad.mkdir()
    for name in ("u.user", "u.item"):
        (bad / name).write_bytes((synthetic_raw / name).read_bytes())
    (bad / "u.data").write_text("999\t2\t5\t100\n")
    with pytest.raises(DataFormatError, match="unknown users"):
        read_movielens(bad)


def test_empty_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="holds no MovieLens files"):
        read_movielens(tmp_path)


def test_real_ml100k_has_the_published_counts(real_ml100k):
    data = read_movielens(real_ml100k)
    assert (len(data.ratings), len(data.users), len(data.items)) == (100_000, 943, 1682)
    assert data.items.set_index("item_id").loc["1", "title"] == "Toy Story (1995)"
