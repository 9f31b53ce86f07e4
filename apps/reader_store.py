"""Reader-study ratings in SQLite: one row per rating, written in its own transaction, so several
readers (browser sessions) can rate at once and a crash loses at most the rating in flight."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ORIGINS = ("real", "synthetic")
MAX_READER_ID = 64
SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reader TEXT NOT NULL CHECK (length(reader) > 0),
    session TEXT NOT NULL,
    item TEXT NOT NULL,
    origin TEXT NOT NULL CHECK (origin IN ('real', 'synthetic')),
    call TEXT NOT NULL CHECK (call IN ('real', 'synthetic')),
    realism INTEGER NOT NULL CHECK (realism BETWEEN 1 AND 5),
    condition TEXT NOT NULL,
    dataset TEXT NOT NULL,
    synthetic_set TEXT NOT NULL,
    rated_at TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Rating:
    reader: str
    session: str
    item: str  # opaque to the reader: origin-prefixed id of the image
    origin: str  # the truth
    call: str  # what the reader said
    realism: int  # 1 (obviously fake) .. 5 (indistinguishable)
    condition: str
    dataset: str
    synthetic_set: str


@dataclass(frozen=True)
class Accuracy:
    condition: str
    ratings: int
    correct: int
    real_as_real: int
    real_total: int
    synthetic_as_synthetic: int
    synthetic_total: int
    mean_realism_real: float | None
    mean_realism_synthetic: float | None

    @property
    def accuracy(self) -> float:
        return self.correct / self.ratings if self.ratings else float("nan")


class ReaderStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        except sqlite3.Error as exc:
            raise ValueError(
                f"{self.path}: cannot open the reader-study database ({exc})"
            ) from None
        return conn

    def record(self, rating: Rating, when: datetime | None = None) -> int:
        """Store one rating (UTC time stamp) in a transaction; returns its row id."""
        if rating.origin not in ORIGINS or rating.call not in ORIGINS:
            raise ValueError(f"origin and call must be one of {', '.join(ORIGINS)}")
        if not 1 <= int(rating.realism) <= 5:
            raise ValueError(f"realism must be 1..5, got {rating.realism}")
        check_reader_id(rating.reader)
        stamp = (when or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            cursor = conn.execute(
                "INSERT INTO ratings (reader, session, item, origin, call, realism, condition, "
                "dataset, synthetic_set, rated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rating.reader.strip(),
                    rating.session,
                    rating.item,
                    rating.origin,
                    rating.call,
                    int(rating.realism),
                    rating.condition,
                    rating.dataset,
                    rating.synthetic_set,
                    stamp,
                ),
            )
            conn.execute("COMMIT")
            return int(cursor.lastrowid)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def rows(self, reader: str | None = None) -> list[dict]:
        conn = self._connect()
        conn.row_factory = sqlite3.Row
        try:
            query, args = "SELECT * FROM ratings", ()
            if reader:
                query, args = query + " WHERE reader = ?", (reader,)
            return [dict(r) for r in conn.execute(query + " ORDER BY id", args)]
        finally:
            conn.close()

    def csv_bytes(self, reader: str | None = None) -> bytes:
        """Every rating (of one reader, or all) as CSV, for analysis elsewhere."""
        import csv
        import io

        rows = self.rows(reader)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        columns = [
            "id",
            "reader",
            "session",
            "item",
            "origin",
            "call",
            "realism",
            "condition",
            "dataset",
            "synthetic_set",
            "rated_at",
        ]
        writer.writerow(columns)
        writer.writerows([spreadsheet_safe(row[c]) for c in columns] for row in rows)
        return buffer.getvalue().encode("utf-8")

    def readers(self) -> list[str]:
        return sorted({r["reader"] for r in self.rows()})

    def accuracy(self, reader: str | None = None) -> list[Accuracy]:
        """Per condition (and 'all'): how often the reader's call was right. 50% = chance."""
        groups: dict[str, list[dict]] = defaultdict(list)
        for row in self.rows(reader):
            groups[row["condition"]].append(row)
            groups["all"].append(row)
        return [_accuracy(c, groups[c]) for c in sorted(groups, key=lambda c: (c == "all", c))]


def check_reader_id(reader: str) -> None:
    """A reader id is short printable text (initials or a study code)."""
    text = reader.strip()
    if not text:
        raise ValueError("a reader id is required")
    if len(text) > MAX_READER_ID or not text.isprintable():
        raise ValueError(f"a reader id is at most {MAX_READER_ID} printable characters")


def spreadsheet_safe(value):
    """A text cell that a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets
    a leading apostrophe, the usual CSV-injection defence; numbers are left alone."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def _accuracy(condition: str, rows: list[dict]) -> Accuracy:
    real = [r for r in rows if r["origin"] == "real"]
    synthetic = [r for r in rows if r["origin"] == "synthetic"]
    return Accuracy(
        condition=condition,
        ratings=len(rows),
        correct=sum(r["call"] == r["origin"] for r in rows),
        real_as_real=sum(r["call"] == "real" for r in real),
        real_total=len(real),
        synthetic_as_synthetic=sum(r["call"] == "synthetic" for r in synthetic),
        synthetic_total=len(synthetic),
        mean_realism_real=_mean([r["realism"] for r in real]),
        mean_realism_synthetic=_mean([r["realism"] for r in synthetic]),
    )
