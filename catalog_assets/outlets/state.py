"""What the API remembers about each outlet: acknowledged cursor per feed and last contact.

It cannot live in the catalog DuckDB (a sync run holds that file's only write lock for
minutes), so it is a small SQLite file in WAL mode: the API writes one short transaction per
request, and the Dagster monitor reads it concurrently without blocking the writer.

Sending a cursor acknowledges everything up to it; the server stores what was sent (even an
older position: an outlet restored from a backup needs those items again). Delivery is
at-least-once: the server never assumes a page arrived until the outlet says so by sending
the cursor after it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS acks (
    outlet TEXT NOT NULL, entity TEXT NOT NULL, seq INTEGER NOT NULL, acked_at TEXT NOT NULL,
    PRIMARY KEY (outlet, entity)
);
CREATE TABLE IF NOT EXISTS contacts (
    outlet TEXT PRIMARY KEY, last_contact_at TEXT NOT NULL, requests INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_problems (
    outlet TEXT PRIMARY KEY, problem TEXT NOT NULL, reported_at TEXT NOT NULL
);
"""


class StateUnavailable(RuntimeError):
    """The state file cannot be read or written (locked past the timeout, disk trouble)."""


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class OutletRecord:
    last_contact_at: datetime | None
    requests: int
    acks: dict[str, int]  # entity -> acknowledged sequence


class OutletState:
    """One SQLite connection per thread (sqlite3 connections are not shared across threads)."""

    def __init__(self, path: str, timeout_seconds: float = 5.0) -> None:
        self.path = path
        self._timeout = timeout_seconds
        self._local = threading.local()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as con:
            con.executescript(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            try:
                con = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise StateUnavailable(f"outlet state {self.path}: {exc}") from None
            self._local.con = con
        return con

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; any SQLite failure becomes StateUnavailable (a 503)."""
        con = self._connection()
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StateUnavailable(f"outlet state {self.path}: {exc}") from None

    def begin_request(self, outlet: str, entity: str, sent_seq: int | None, now: datetime) -> int:
        """Record the contact (and the acknowledgement, when a cursor was sent) and return the
        sequence to continue after: the sent one, else the last acknowledged, else 0."""
        stamp = now.isoformat(timespec="seconds")
        with self._write() as con:
            con.execute(
                """INSERT INTO contacts VALUES (?, ?, 1) ON CONFLICT (outlet) DO UPDATE SET
                   last_contact_at = excluded.last_contact_at, requests = requests + 1""",
                (outlet, stamp),
            )
            if sent_seq is None:
                row = con.execute(
                    "SELECT seq FROM acks WHERE outlet = ? AND entity = ?", (outlet, entity)
                ).fetchone()
                start = row[0] if row else 0
            else:
                con.execute(
                    """INSERT INTO acks VALUES (?, ?, ?, ?) ON CONFLICT (outlet, entity)
                       DO UPDATE SET seq = excluded.seq, acked_at = excluded.acked_at""",
                    (outlet, entity, sent_seq, stamp),
                )
                start = sent_seq
        return start

    def outlets(self) -> dict[str, OutletRecord]:
        con = self._connection()
        try:
            contacts = con.execute(
                "SELECT outlet, last_contact_at, requests FROM contacts"
            ).fetchall()
            acks = con.execute("SELECT outlet, entity, seq FROM acks").fetchall()
        except sqlite3.Error as exc:
            raise StateUnavailable(f"outlet state {self.path}: {exc}") from None
        by_outlet: dict[str, dict[str, int]] = {}
        for outlet, entity, seq in acks:
            by_outlet.setdefault(outlet, {})[entity] = seq
        records = {
            outlet: OutletRecord(datetime.fromisoformat(at), n, by_outlet.get(outlet, {}))
            for outlet, at, n in contacts
        }
        for outlet, seqs in by_outlet.items():
            records.setdefault(outlet, OutletRecord(None, 0, seqs))
        return records

    def report_problems(self, problems: dict[str, str], now: datetime) -> None:
        """The API's view of invalid registry entries (it is the only process that must hold
        the tokens, so only it can say a token variable is missing), for the monitor."""
        with self._write() as con:
            con.execute("DELETE FROM registry_problems")
            con.executemany(
                "INSERT INTO registry_problems VALUES (?, ?, ?)",
                [(k, v, now.isoformat(timespec="seconds")) for k, v in problems.items()],
            )

    def problems(self) -> dict[str, str]:
        try:
            return dict(self._connection().execute("SELECT outlet, problem FROM registry_problems"))
        except sqlite3.Error as exc:
            raise StateUnavailable(f"outlet state {self.path}: {exc}") from None

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
