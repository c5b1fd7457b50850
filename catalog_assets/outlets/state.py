"""What the API remembers about each outlet: acknowledged cursor per feed and last contact.

It cannot live in the catalog DuckDB (a sync run holds that file's only write lock for
minutes), so it is a small SQLite file in WAL mode: the API writes one short transaction per
request, and the Dagster monitor reads it concurrently without blocking the writer.

Sending a cursor acknowledges everything up to it; the server stores what was sent (even an
older position: an outlet restored from a backup needs those items again). Delivery is
at-least-once: the server never assumes a page arrived until the outlet says so by sending
the cursor after it.

A position is only meaningful under the category filter it was taken with (`scope_key`): when
an outlet's `categories` change, its next call in each feed starts again from the beginning
under the new filter (a widened filter brings the older items of the new categories), and
the roots it had are remembered (`held`) so that it is told to delist what it may still hold
from categories it no longer has. A cursor carries its scope, so an outlet that sends a
cursor from before the change (its answer to the first call got lost) starts again too.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from catalog_assets.outlets.feeds import merge_held, scope_key

logger = logging.getLogger("catalog_assets.outlets")

SCHEMA = """
CREATE TABLE IF NOT EXISTS acks (
    outlet TEXT NOT NULL, entity TEXT NOT NULL, seq INTEGER NOT NULL, acked_at TEXT NOT NULL,
    PRIMARY KEY (outlet, entity)
);
CREATE TABLE IF NOT EXISTS contacts (
    outlet TEXT PRIMARY KEY, last_contact_at TEXT NOT NULL, requests INTEGER NOT NULL
);
-- Every category filter an outlet has had (by `scope_key`), so a position taken under an
-- earlier one can be judged: what the outlet may hold from it.
CREATE TABLE IF NOT EXISTS filters (
    outlet TEXT NOT NULL, scope TEXT NOT NULL, roots TEXT, PRIMARY KEY (outlet, scope)
);
-- When each outlet in outlets.yaml was first seen there: a never-called outlet's silence
-- counts from it. Here, not in one process's memory, so the monitor sensor and the check runs
-- it starts judge the same outlet alike.
CREATE TABLE IF NOT EXISTS registrations (
    outlet TEXT PRIMARY KEY, first_seen_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_problems (
    outlet TEXT PRIMARY KEY, problem TEXT NOT NULL, reported_at TEXT NOT NULL
);
"""
# Added to `acks` after the first release: the filter a position was taken under (`scope`),
# what the outlet may hold from earlier filters (`held`, JSON), and the position from which
# on it no longer can (`held_until`: it had caught up there; NULL while it has not), and the
# publication whose numbering the position is in (`minted_in`, from the cursor).
ACK_COLUMNS = {"scope": "TEXT", "held": "TEXT", "held_until": "INTEGER", "minted_in": "TEXT"}


@dataclass(frozen=True)
class Position:
    """Where a read continues, and the roots (or `EVERYTHING`) of categories the outlet had
    before its filter changed, whose items it must be told to delist (None: nothing)."""

    after: int
    held: tuple[str, ...] | str | None = None
    # The position was taken in a numbering the served snapshot does not continue: replayed.
    restarted: bool = False


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
    """One SQLite connection per thread (sqlite3 connections are not shared across threads).

    A file that cannot be opened is not an error until it is used, and every use tries it
    again: the API starts anyway, answers 503 meanwhile, and serves again once the file is
    fixed, without a restart."""

    def __init__(self, path: str, timeout_seconds: float = 5.0) -> None:
        self.path = path
        self._timeout = timeout_seconds
        self._local = threading.local()
        self._lock = threading.Lock()
        self._prepared = False
        try:
            self._connection()  # creates or upgrades the file now, when it can be
        except StateUnavailable as exc:
            logger.error("%s (tried again on every use)", exc)

    def _prepare(self, con: sqlite3.Connection) -> None:
        """Tables created or upgraded once per process, by the first connection that can."""
        with self._lock:
            if self._prepared:
                return
            con.executescript(SCHEMA)
            present = {row[1] for row in con.execute("PRAGMA table_info(acks)")}
            for column, sql_type in ACK_COLUMNS.items():
                if column not in present:
                    try:
                        con.execute(f"ALTER TABLE acks ADD COLUMN {column} {sql_type}")
                    except sqlite3.OperationalError as exc:  # another process added it first
                        if "duplicate column" not in str(exc):
                            raise
            self._prepared = True

    def _connection(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                con = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
                try:
                    con.execute("PRAGMA journal_mode=WAL")
                    con.execute("PRAGMA synchronous=NORMAL")
                    self._prepare(con)
                except sqlite3.Error:
                    con.close()
                    raise
            except (OSError, sqlite3.Error) as exc:
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

    def begin_request(
        self,
        outlet: str,
        entity: str,
        sent_seq: int | None,
        now: datetime,
        *,
        sent_scope: str | None = None,
        sent_publication: str | None = None,
        known: Callable[[str], bool] | None = None,
        roots: tuple[str, ...] | None = None,
        latest_seq: int | None = None,
    ) -> Position:
        """Record the contact (and the acknowledgement, when a cursor was sent) and return
        where to continue: after the sent position, else the last acknowledged, else 0; from
        0 when the outlet's filter (`roots`, None for the whole catalog) is not the one that
        position was taken under.

        What it held under earlier filters is served as removals to any read that starts
        before the position where it caught up under the current filter (acknowledged
        `latest_seq`, the feed's newest row): by then every row it could hold has been sent
        to it, and a change takes a number above every existing one. Reads from an older
        position (an outlet restored from a backup) get those removals again.

        A position (sent, or stored) minted by a publication `known` does not vouch for was
        numbered by a history the catalog store no longer continues (it was restored from a
        backup): its numbers may since mean other changes, so the outlet starts from 0."""
        stamp = now.isoformat(timespec="seconds")
        current = scope_key(roots)
        with self._write() as con:
            con.execute(
                """INSERT INTO contacts VALUES (?, ?, 1) ON CONFLICT (outlet) DO UPDATE SET
                   last_contact_at = excluded.last_contact_at, requests = requests + 1""",
                (outlet, stamp),
            )
            con.execute(
                "INSERT OR IGNORE INTO filters VALUES (?, ?, ?)",
                (outlet, current, json.dumps(None if roots is None else sorted(set(roots)))),
            )
            row = con.execute(
                "SELECT seq, scope, held, held_until, minted_in FROM acks"
                " WHERE outlet = ? AND entity = ?",
                (outlet, entity),
            ).fetchone()
            stored_seq, stored_scope, stored_held, stored_until, stored_minted = row or (
                (0, None, None, None, None)
            )
            restarted = False
            if known is not None:
                if sent_seq is not None and sent_publication and not known(sent_publication):
                    sent_seq, sent_publication, restarted = 0, None, True
                elif sent_seq is None and stored_minted and not known(stored_minted):
                    stored_seq, stored_minted, restarted = 0, None, True
            minted_in = sent_publication if sent_seq is not None else stored_minted
            held_before = json.loads(stored_held) if stored_held else None
            held, until = held_before, stored_until
            # A cursor names its filter; one from before filters were recorded, and a call
            # without a cursor, continue the stored position, under the stored filter (a
            # position stored before filters were recorded is taken as it is).
            taken_under = sent_scope if sent_scope is not None else stored_scope
            if taken_under is not None and taken_under != current:
                recorded = con.execute(
                    "SELECT roots FROM filters WHERE outlet = ? AND scope = ?",
                    (outlet, taken_under),
                ).fetchone()
                # A filter never recorded: the outlet may hold anything.
                before = json.loads(recorded[0]) if recorded else None
                held = merge_held(held, tuple(before) if isinstance(before, list) else None)
                until = None
                start = 0
            else:
                start = sent_seq if sent_seq is not None else stored_seq
                if held and until is None and latest_seq is not None and start >= latest_seq:
                    until = start
            if roots is None:
                held, until = None, None  # the whole catalog is in scope: nothing to delist
            # A feed's first call writes its row too (at 0): an outlet whose connector never
            # gets past its first page calls, and the monitor must still count its backlog.
            unchanged = (
                row is not None
                and not restarted
                and sent_seq is None
                and start == stored_seq
                and stored_scope == current
                and held == held_before
                and until == stored_until
            )
            if not unchanged:
                con.execute(
                    """INSERT INTO acks (outlet, entity, seq, acked_at, scope, held, held_until,
                           minted_in)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (outlet, entity) DO UPDATE SET
                       seq = excluded.seq, acked_at = excluded.acked_at, scope = excluded.scope,
                       held = excluded.held, held_until = excluded.held_until,
                       minted_in = excluded.minted_in""",
                    (
                        outlet,
                        entity,
                        start,
                        stamp,
                        current,
                        json.dumps(held) if held else None,
                        until,
                        minted_in,
                    ),
                )
        if not held or (until is not None and start >= until):
            return Position(start, None, restarted)
        return Position(start, tuple(held) if isinstance(held, list) else held, restarted)

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

    def registered(
        self,
        outlets: Iterable[str],
        now: datetime,
        *,
        seed: Mapping[str, datetime] | None = None,
        forget_others: bool = True,
    ) -> dict[str, datetime]:
        """When each of `outlets` was first seen (now for one new here, or its `seed` time:
        what an older monitor kept in its cursor). `forget_others` drops outlets no longer
        listed, with their last contact, so one removed and added again is onboarded afresh:
        a call from its earlier entry neither makes it silent nor live. Not while the file is
        unreadable. Its acknowledgements stay, so it continues where it was."""
        ids = sorted(set(outlets))
        seed = seed or {}
        with self._write() as con:
            con.executemany(
                "INSERT OR IGNORE INTO registrations VALUES (?, ?)",
                [(o, seed.get(o, now).isoformat(timespec="seconds")) for o in ids],
            )
            if forget_others:
                unlisted = f"outlet NOT IN ({', '.join('?' * len(ids))})"
                con.execute(f"DELETE FROM registrations WHERE {unlisted}", ids)
                con.execute(f"DELETE FROM contacts WHERE {unlisted}", ids)
            rows = con.execute("SELECT outlet, first_seen_at FROM registrations").fetchall()
        wanted = set(ids)
        return {o: datetime.fromisoformat(at) for o, at in rows if o in wanted}

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
