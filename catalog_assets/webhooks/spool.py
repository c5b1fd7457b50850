"""The durable hand-off between the webhook receiver and Dagster: a SQLite file in WAL mode.

Why not write the catalog's DuckDB directly: DuckDB allows one writing process per file, and
that process is a sync run. A receiver that took the lock would stall runs (or be refused and
lose notifications). SQLite in WAL mode takes concurrent readers and one short writer per insert,
and `synchronous=FULL` means a notification we answered 2xx for survives a power cut. Dagster's
`tec_delivery_processing` asset copies new rows (by `seq`) into DuckDB; the spool is never
rewritten, so ingestion can always resume from the last `seq` it committed, and a new spool
numbers above any spool before it (`append`).
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

SPOOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS notifications (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    event TEXT NOT NULL,
    request_id TEXT NOT NULL,
    status TEXT NOT NULL,
    external_ids TEXT NOT NULL,
    UNIQUE (event, request_id, status)
);
"""


@dataclass(frozen=True)
class Notification:
    seq: int
    received_at: str
    event: str
    request_id: str
    status: str
    external_ids: list[str]


def _open(path: str) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=10, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.executescript(SPOOL_SCHEMA)
    return con


def append(path: str, event: str, request_id: str, status: str, external_ids: list[str]) -> bool:
    """Record one verified notification; False when it is a repeat (senders retry on timeouts,
    so the same (event, request_id, status) arriving twice is one notification, not two)."""
    now = datetime.now(UTC)
    received_at = now.replace(tzinfo=None).isoformat(timespec="microseconds")
    with closing(_open(path)) as con:
        con.execute("BEGIN IMMEDIATE")  # one writer seeds the numbering, and only once
        # A new spool numbers from the microseconds since the epoch, not from 1: DuckDB ingests
        # by `seq`, so a spool lost and recreated (a volume not kept, a changed path) would
        # number its notifications below what was ingested from the old one, and they would
        # be skipped as ingested. A spool that ever took a row keeps its numbering.
        con.execute(
            "INSERT INTO sqlite_sequence (name, seq) SELECT 'notifications', ?"
            " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'notifications')",
            (int(now.timestamp() * 1_000_000),),
        )
        cursor = con.execute(
            "INSERT OR IGNORE INTO notifications (received_at, event, request_id, status, external_ids)"
            " VALUES (?, ?, ?, ?, ?)",
            (received_at, event, request_id, status, json.dumps(external_ids)),
        )
        con.execute("COMMIT")
        return cursor.rowcount == 1


def read_after(path: str, after_seq: int, limit: int = 10_000) -> list[Notification]:
    if not Path(path).exists():
        return []
    with closing(_open(path)) as con:
        rows = con.execute(
            "SELECT seq, received_at, event, request_id, status, external_ids FROM notifications"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        ).fetchall()
    return [Notification(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])) for r in rows]


def max_seq(path: str) -> int:
    if not Path(path).exists():
        return 0
    with closing(_open(path)) as con:
        return con.execute("SELECT coalesce(max(seq), 0) FROM notifications").fetchone()[0]


class WebhookSpool(dg.ConfigurableResource):
    """Where the receiver appends and Dagster reads: `WEBHOOK_SPOOL_PATH`."""

    path: str = "data/webhooks.sqlite"

    def read_after(self, after_seq: int, limit: int = 10_000) -> list[Notification]:
        return read_after(self.path, after_seq, limit)

    def max_seq(self) -> int:
        return max_seq(self.path)
