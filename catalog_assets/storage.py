"""The DuckDB staging schema and every statement that writes it.

One table per asset (`onec_categories`, `category_tree`, `onec_products`,
`tec_delivery_categories`, `tec_delivery_products`) plus the bookkeeping that makes a sync
resumable: `sync_cursors`, `push_batches` (every request to Tec.Delivery; a delivered batch's
item hashes until `apply_delivered` folds them into `tec_delivery_*`), `quarantine`,
`removal_guard`. Pages are staged with one set-based `INSERT … SELECT … ON CONFLICT` from a
chunk's columns, never row by row, and every change to a record's content takes a number from
`catalog_change_seq`, which is what the outlet feeds page by.

DuckDB allows one writing process per file. Opening waits for a lock held by another process
(bounded by `lock_timeout_seconds`) and then fails with a message that says so.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from catalog_assets.mapping import Rejection, StagedRecord

STAGING_TABLE = {"categories": "onec_categories", "products": "onec_products"}
PUSH_TABLE = {"categories": "tec_delivery_categories", "products": "tec_delivery_products"}

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS catalog_change_seq START 1;
-- The outlet snapshot this store published last (one row): the only one the next snapshot may
-- be built on, since its rows are numbered by this store's own history (outlets/snapshot.py).
CREATE TABLE IF NOT EXISTS outlet_snapshot_published (
    last BOOLEAN PRIMARY KEY CHECK (last), snapshot VARCHAR NOT NULL,
    published_at TIMESTAMP NOT NULL, run_id VARCHAR
);
-- The outlet snapshots this store published lately, by the id their cursors carry: an outlet
-- position minted by a snapshot not in this history was served by a store this one does not
-- continue (restored from a backup, with or without its snapshots), so it starts again.
CREATE TABLE IF NOT EXISTS outlet_publications (
    publication VARCHAR NOT NULL, snapshot VARCHAR NOT NULL, published_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS onec_categories (
    id VARCHAR PRIMARY KEY, parent VARCHAR NOT NULL, name VARCHAR NOT NULL,
    modified_at TIMESTAMP, record VARCHAR NOT NULL, content_hash VARCHAR NOT NULL,
    staged_at TIMESTAMP NOT NULL, seen_at TIMESTAMP NOT NULL, removed_at TIMESTAMP,
    change_seq BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS onec_products (
    id VARCHAR PRIMARY KEY, parent VARCHAR NOT NULL, name VARCHAR NOT NULL,
    price DOUBLE, stock DOUBLE,
    modified_at TIMESTAMP, record VARCHAR NOT NULL, content_hash VARCHAR NOT NULL,
    staged_at TIMESTAMP NOT NULL, seen_at TIMESTAMP NOT NULL, removed_at TIMESTAMP,
    change_seq BIGINT NOT NULL, price_seq BIGINT NOT NULL, stock_seq BIGINT NOT NULL
);
-- The categories whose subtree an item has left (a product's former parents, a category's
-- former ancestors): outlets filter feeds by subtree, and this is how an outlet whose subtree
-- an item left still gets it once more, as a removal (outlets/snapshot.py).
ALTER TABLE onec_categories ADD COLUMN IF NOT EXISTS left_subtrees VARCHAR[];
ALTER TABLE onec_products ADD COLUMN IF NOT EXISTS left_subtrees VARCHAR[];
CREATE TABLE IF NOT EXISTS category_tree (
    id VARCHAR PRIMARY KEY, parent VARCHAR NOT NULL, depth INTEGER, path VARCHAR NOT NULL,
    status VARCHAR NOT NULL, problem VARCHAR, computed_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS tec_delivery_categories (
    external_id VARCHAR PRIMARY KEY, pushed_hash VARCHAR, pushed_at TIMESTAMP,
    enabled BOOLEAN, attempts INTEGER NOT NULL DEFAULT 0, last_error VARCHAR,
    last_attempt_at TIMESTAMP, dead_lettered_at TIMESTAMP, last_batch_id VARCHAR
);
CREATE TABLE IF NOT EXISTS tec_delivery_products (
    external_id VARCHAR PRIMARY KEY, pushed_hash VARCHAR, pushed_at TIMESTAMP,
    enabled BOOLEAN, attempts INTEGER NOT NULL DEFAULT 0, last_error VARCHAR,
    last_attempt_at TIMESTAMP, dead_lettered_at TIMESTAMP, last_batch_id VARCHAR
);
-- An append-only log, one row per request, written once per request while pushing: no
-- primary key, since keeping an index on the random batch_id (uuid4, unique by construction)
-- cost ~0.8 ms a request on the writer thread, and nothing looks a batch up by it alone.
CREATE TABLE IF NOT EXISTS push_batches (
    batch_id VARCHAR NOT NULL, run_id VARCHAR, entity VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL, duration_ms INTEGER, item_count INTEGER NOT NULL,
    external_ids VARCHAR[], http_status INTEGER, ok BOOLEAN NOT NULL, error VARCHAR,
    response_body VARCHAR, item_hashes VARCHAR[], applied BOOLEAN NOT NULL DEFAULT true
);
ALTER TABLE push_batches ADD COLUMN IF NOT EXISTS item_hashes VARCHAR[];
ALTER TABLE push_batches ADD COLUMN IF NOT EXISTS applied BOOLEAN DEFAULT true;
CREATE TABLE IF NOT EXISTS sync_cursors (
    entity VARCHAR PRIMARY KEY, modified_since VARCHAR NOT NULL,
    updated_at TIMESTAMP NOT NULL, run_id VARCHAR
);
CREATE TABLE IF NOT EXISTS quarantine (
    entity VARCHAR NOT NULL, record_key VARCHAR NOT NULL, record_id VARCHAR,
    reason VARCHAR NOT NULL, raw VARCHAR NOT NULL, first_seen_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL, run_id VARCHAR, resolved_at TIMESTAMP,
    PRIMARY KEY (entity, record_key)
);
CREATE TABLE IF NOT EXISTS removal_guard (
    entity VARCHAR PRIMARY KEY, run_id VARCHAR, would_remove BIGINT NOT NULL,
    live_total BIGINT NOT NULL, max_share DOUBLE NOT NULL, blocked BOOLEAN NOT NULL,
    decided_at TIMESTAMP NOT NULL
);
""" + "".join(
    # What Tec.Delivery's webhook said about the batch that carried an item's current content
    # (written by `tec_delivery_processing`). Declared here, not by that asset, because pruning
    # the push journal keeps the batches whose notification is still awaited.
    f"""ALTER TABLE {table} ADD COLUMN IF NOT EXISTS processed_at TIMESTAMP;
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS processed_batch_id VARCHAR;
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS processing_status VARCHAR;
"""
    for table in PUSH_TABLE.values()
)


def schema_behind(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The tables (and columns of the tables it has) of `SCHEMA` this store lacks: one written
    by an older version of this code. Only a writing open (a run) brings it up to date; a
    read-only reader (the sensor) must not query what is not there yet, or it fails on every
    tick and starts no run."""
    have = set(
        con.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_catalog = current_database()"
        ).fetchall()
    )
    tables = {table for table, _ in have}
    return sorted(
        {
            table if table not in tables else f"{table}.{column}"
            for table, column in _schema_columns() - have
        }
    )


@functools.cache
def _schema_columns() -> frozenset[tuple[str, str]]:
    with duckdb.connect(":memory:") as con:
        con.execute(SCHEMA)
        return frozenset(
            con.execute("SELECT table_name, column_name FROM information_schema.columns").fetchall()
        )


# A row's new numbers in every feed it is in, by staging table: how a change, a move, a
# removal or a renumbering reaches the outlets again (a product is in three feeds).
NEW_NUMBERS = {
    "onec_categories": "change_seq = nextval('catalog_change_seq')",
    "onec_products": "change_seq = nextval('catalog_change_seq'), "
    "price_seq = nextval('catalog_change_seq'), stock_seq = nextval('catalog_change_seq')",
}


class StoreBusyError(RuntimeError):
    """Another process holds the DuckDB file; raised after waiting, never a raw IOException."""


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# When a writer in this process last gave up on a locked file, by path. A run's independent
# steps each open the store: after the first has waited the whole timeout, the others only
# look (RECHECK_SECONDS) instead of waiting it again (a run against a held file failed after
# 93 s instead of 30).
_gave_up_at: dict[str, float] = {}
RECHECK_SECONDS = 1.0


class CatalogStore(dg.ConfigurableResource):
    """The staging database. `path` comes from CATALOG_DUCKDB_PATH."""

    path: str = "data/catalog.duckdb"
    lock_timeout_seconds: float = 30.0
    # DuckDB's buffer pool otherwise grows to 80% of RAM, caching every block a sync touched;
    # a sync streams, so a bounded cache keeps memory flat whatever the catalog's size. Sorts,
    # aggregates and most joins spill to `<path>.tmp`. Not lower: at 48 MB the 100,000-product
    # sync peaks under 250 MB, but at 300,000 products the first sync's staging and then the
    # resync's push run out of memory; at 128 MB a first sync and a resync of 300,000 products
    # ran, and a first sync of 1,000,000 (README, Performance).
    memory_limit: str = "128MB"

    @contextmanager
    def connect(
        self, read_only: bool = False, lock_timeout: float | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        timeout = self.lock_timeout_seconds if lock_timeout is None else lock_timeout
        gave_up = _gave_up_at.get(self.path)
        recently = gave_up is not None and time.monotonic() - gave_up < timeout
        if recently:
            timeout = min(timeout, RECHECK_SECONDS)
        if not read_only:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        elif not os.path.exists(self.path):
            raise FileNotFoundError(f"no catalog store at {self.path}: run full_resync first")
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(
                    self.path, read_only=read_only, config={"memory_limit": self.memory_limit}
                )
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise
                if time.monotonic() >= deadline:
                    if recently:
                        raise StoreBusyError(
                            f"DuckDB file {self.path} is still locked by another process "
                            f"(found locked {time.monotonic() - gave_up:.0f}s ago; not waiting "
                            "the whole timeout again)"
                        ) from None
                    if lock_timeout is None:
                        _gave_up_at[self.path] = time.monotonic()
                    raise StoreBusyError(
                        f"DuckDB file {self.path} is locked by another process for more than "
                        f"{timeout:.0f}s (a sync run, or a tool holding it open)"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        _gave_up_at.pop(self.path, None)
        try:
            if not read_only:
                con.execute(SCHEMA)
            yield con
        finally:
            con.close()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """A ROLLBACK that fails too (the connection is gone, the database invalidated) is noted
    on the body's error instead of replacing it: the run log must name the cause."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException as exc:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error as failed:
            exc.add_note(f"ROLLBACK failed too: {type(failed).__name__}: {failed}")
        raise
    con.execute("COMMIT")


@dataclass
class StageCounts:
    fetched: int = 0
    changed: int = 0
    quarantined: int = 0

    def add(self, other: StageCounts) -> None:
        self.fetched += other.fetched
        self.changed += other.changed
        self.quarantined += other.quarantined


def rows_select(columns: dict[str, tuple[str, list]]) -> tuple[str, dict[str, list]]:
    """Python columns as one set-based SELECT: each column goes in as a typed list parameter
    and is `unnest`ed (lists of equal length zip row-wise). Returns the SQL and its parameters
    (named `col_<column>`). No pyarrow or pandas: on a sync's path they would cost ~60 MB of
    memory for nothing."""
    selects = ", ".join(
        f"unnest($col_{column}::{sql_type}[]) AS {column}"
        for column, (sql_type, _) in columns.items()
    )
    params = {f"col_{column}": values for column, (_, values) in columns.items()}
    return f"SELECT {selects}", params


def load_rows(
    con: duckdb.DuckDBPyConnection, name: str, columns: dict[str, tuple[str, list]]
) -> None:
    """`rows_select` into a temporary table `name`, for data that several statements use."""
    select, params = rows_select(columns)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {select}", params)


def _page_rows(records: list[StagedRecord], with_numbers: bool) -> tuple[str, dict[str, list]]:
    # A later copy of the same id within one page wins: DuckDB refuses to upsert a key twice
    # in one statement, and the later copy is the one 1C served last.
    unique = list({r.id: r for r in records}.values())
    columns = {
        "id": ("VARCHAR", [r.id for r in unique]),
        "parent": ("VARCHAR", [r.parent for r in unique]),
        "name": ("VARCHAR", [r.name for r in unique]),
        "modified_at": ("TIMESTAMP", [r.modified_at for r in unique]),
        "record": ("VARCHAR", [r.record_json for r in unique]),
        "content_hash": ("VARCHAR", [r.content_hash for r in unique]),
    }
    if with_numbers:
        columns["price"] = ("DOUBLE", [r.price for r in unique])
        columns["stock"] = ("DOUBLE", [r.stock for r in unique])
    return rows_select(columns)


def stage_page(
    con: duckdb.DuckDBPyConnection,
    entity: str,
    records: list[StagedRecord],
    rejections: list[Rejection],
    *,
    seen_at: datetime,
    run_id: str | None,
) -> StageCounts:
    """Upsert one chunk (`STAGE_CHUNK` records, pages regrouped) in one transaction;
    quarantine its bad records in the same one.

    A row's `change_seq` (and for products `price_seq` / `stock_seq`) moves only when its
    content (or that one value) changed, or when it comes back after being removed, so the
    outlet feeds carry genuine changes only. `seen_at` marks the row as present in this pass,
    which is how a full resync finds removals.
    """
    counts = StageCounts(fetched=len(records) + len(rejections), quarantined=len(rejections))
    table = STAGING_TABLE[entity]
    products = entity == "products"
    with transaction(con):
        if records:
            rows, params = _page_rows(records, products)
            ids = params["col_id"]
            extra_cols = ", price, stock, price_seq, stock_seq" if products else ""
            extra_vals = (
                ", price, stock, nextval('catalog_change_seq'), nextval('catalog_change_seq')"
                if products
                else ""
            )
            # A product that moved reaches outlets again in every feed: its narrow rows are
            # filtered by its parent too. (A category's move is `category_tree`'s to judge:
            # it moves everything under it.)
            moved = "t.parent <> excluded.parent"
            extra_updates = (
                f""", price = excluded.price, stock = excluded.stock,
                price_seq = CASE WHEN t.price IS DISTINCT FROM excluded.price OR t.removed_at IS NOT NULL
                                      OR {moved} THEN excluded.change_seq ELSE t.price_seq END,
                stock_seq = CASE WHEN t.stock IS DISTINCT FROM excluded.stock OR t.removed_at IS NOT NULL
                                      OR {moved} THEN excluded.change_seq ELSE t.stock_seq END,
                left_subtrees = CASE WHEN {moved}
                    THEN list_distinct(list_append(coalesce(t.left_subtrees, []), t.parent))
                    ELSE t.left_subtrees END"""
                if products
                else ""
            )
            # Only a new row, or one whose content changed or that comes back after being
            # removed, is written and returned: the hash covers the whole record, so the rest
            # would be rewritten with what they hold, and DuckDB rewrites a row's every SET
            # column: restaging 100,000 unchanged products took 9.3 s this way, 3.0 s now
            # (a full resync of a synced store: `onec_products` 9.1-10.6 s, now 3.3-3.8 s).
            # The unchanged rows are only marked seen, below. The hash is the record's, not
            # of what is derived from it: a row an older release derived otherwise (a parent
            # of 1C's empty reference, once an orphan, now the root) is written again too.
            derived_differs = " OR ".join(
                f"t.{column} IS DISTINCT FROM excluded.{column}"
                for column in ("parent", "name", "modified_at")
                + (("price", "stock") if products else ())
            )
            changed = con.execute(
                f"""INSERT INTO {table} AS t (id, parent, name, modified_at, record, content_hash,
                        staged_at, seen_at, removed_at, change_seq{extra_cols})
                    SELECT id, parent, name, modified_at, record, content_hash,
                        $now, $now, NULL, nextval('catalog_change_seq'){extra_vals}
                    FROM ({rows})
                    ON CONFLICT (id) DO UPDATE SET
                        parent = excluded.parent, name = excluded.name,
                        modified_at = excluded.modified_at, record = excluded.record,
                        staged_at = excluded.staged_at, change_seq = excluded.change_seq,
                        content_hash = excluded.content_hash,
                        seen_at = excluded.seen_at, removed_at = NULL{extra_updates}
                    WHERE t.content_hash <> excluded.content_hash OR t.removed_at IS NOT NULL
                        OR {derived_differs}
                    RETURNING id""",
                {**params, "now": seen_at},
            ).fetchall()
            counts.changed = len(changed)
            if len(changed) < len(ids):
                written = {row[0] for row in changed}
                con.execute(
                    f"""UPDATE {table} SET seen_at = $now
                        WHERE id IN (SELECT unnest($ids::VARCHAR[]))""",
                    {"now": seen_at, "ids": [i for i in ids if i not in written]},
                )
            # Looked for first: binding a chunk's ids costs more than asking (~2.5 ms a chunk
            # against 0.2), and a store usually holds no open quarantine.
            if con.execute(
                "SELECT 1 FROM quarantine WHERE entity = $entity AND resolved_at IS NULL LIMIT 1",
                {"entity": entity},
            ).fetchone():
                con.execute(
                    """UPDATE quarantine SET resolved_at = $now
                       WHERE entity = $entity AND resolved_at IS NULL
                         AND record_id IN (SELECT unnest($ids::VARCHAR[]))""",
                    {"now": seen_at, "entity": entity, "ids": ids},
                )
        for rejection in rejections:
            con.execute(
                """INSERT INTO quarantine AS q VALUES
                       ($entity, $key, $id, $reason, $raw, $now, $now, $run, NULL)
                   ON CONFLICT (entity, record_key) DO UPDATE SET
                       reason = excluded.reason, raw = excluded.raw,
                       last_seen_at = excluded.last_seen_at, run_id = excluded.run_id,
                       resolved_at = NULL""",
                {
                    "entity": entity,
                    "key": quarantine_key(rejection),
                    "id": rejection.record_id,
                    "reason": rejection.reason,
                    "raw": rejection.raw,
                    "now": seen_at,
                    "run": run_id,
                },
            )
        if named := [r.record_id for r in rejections if r.record_id]:
            # 1C still serves these, only badly: their last good version stays live. Unseen,
            # a full resync would judge them removed and disable them at Tec.Delivery.
            con.execute(
                f"""UPDATE {table} SET seen_at = $now
                    WHERE removed_at IS NULL AND id IN (SELECT unnest($ids::VARCHAR[]))""",
                {"now": seen_at, "ids": named},
            )
    return counts


def resequence_moved(
    con: duckdb.DuckDBPyConnection, moved: dict[str, frozenset[str]], *, now: datetime
) -> tuple[int, int]:
    """Give moved categories (`tree.moved_categories`) and the products directly under them
    new sequence numbers in every feed, recording the subtrees they left. This changes no
    content, so it re-pushes nothing to Tec.Delivery; only the outlet feeds move. Returns
    (categories, products) resequenced.

    An item that had already left a moved category (it names it in `left_subtrees`) inherits
    what the category left too: an outlet that still holds a product from under the category
    no longer finds the category in its subtree, and must still be told to delist the product.
    """
    if not moved:
        return 0, 0
    load_rows(
        con,
        "moved_categories",
        {
            "id": ("VARCHAR", list(moved)),
            "left_subtrees": ("VARCHAR[]", [sorted(left) for left in moved.values()]),
        },
    )
    # NULL, not [], when nothing was left (a move within a subtree): outlets' page queries
    # take the cheaper path while no row past their cursor has left a subtree.
    merged = """CASE WHEN len(coalesce(t.left_subtrees, []) || m.left_subtrees) = 0 THEN NULL
                ELSE list_distinct(coalesce(t.left_subtrees, []) || m.left_subtrees) END"""
    categories = con.execute(
        f"""UPDATE onec_categories AS t SET {NEW_NUMBERS["onec_categories"]},
                staged_at = $now, left_subtrees = {merged}
            FROM moved_categories m WHERE t.id = m.id""",
        {"now": now},
    ).fetchone()[0]
    products = con.execute(
        f"""UPDATE onec_products AS t SET {NEW_NUMBERS["onec_products"]},
                staged_at = $now, left_subtrees = {merged}
            FROM moved_categories m WHERE t.parent = m.id""",
        {"now": now},
    ).fetchone()[0]
    for table in STAGING_TABLE.values():
        con.execute(
            f"""UPDATE {table} AS t SET {NEW_NUMBERS[table]},
                    staged_at = $now,
                    left_subtrees = list_distinct(t.left_subtrees || inherited.left_subtrees)
                FROM (SELECT i.id, flatten(list(m.left_subtrees)) AS left_subtrees
                      FROM {table} i JOIN moved_categories m ON list_contains(i.left_subtrees, m.id)
                      WHERE i.left_subtrees IS NOT NULL GROUP BY i.id) AS inherited
                WHERE t.id = inherited.id""",
            {"now": now},
        )
    con.execute("DROP TABLE moved_categories")
    return categories, products


def resequence_appeared(
    con: duckdb.DuckDBPyConnection,
    appeared: list[str],
    *,
    published_before: datetime | None,
    now: datetime,
) -> int:
    """Give new sequence numbers in every feed to the products that waited under a category
    new to the tree (its parent unknown until now: created late in 1C, or its record
    quarantined until fixed). Such a product belonged to no subtree when the outlets were
    served it, so an outlet filtering on the subtree the category appears in never got it,
    and the product itself may never change again. Only rows staged before the previous tree,
    or before a snapshot published since (`published_before`), can have been served that way;
    a first tree with no snapshot before it has none. Returns the
    number of products resequenced."""
    if not appeared or published_before is None:
        return 0
    return con.execute(
        f"""UPDATE onec_products SET {NEW_NUMBERS["onec_products"]}, staged_at = $now
           WHERE parent IN (SELECT unnest($appeared::VARCHAR[])) AND staged_at < $before""",
        {"appeared": appeared, "before": published_before, "now": now},
    ).fetchall()[0][0]


def renumber_feeds(con: duckdb.DuckDBPyConnection, above: int) -> int:
    """Restart `catalog_change_seq` above `above` and give every staged row new numbers in
    every feed, in one transaction: the outlets' way to see the whole catalog again when the
    numbers they were served came from another history (outlets/snapshot.py,
    `_continue_numbering`). Returns the rows renumbered."""
    with transaction(con):
        con.execute(f"CREATE OR REPLACE SEQUENCE catalog_change_seq START {int(above) + 1}")
        renumbered = sum(
            con.execute(f"UPDATE {table} SET {NEW_NUMBERS[table]}").fetchall()[0][0]
            for table in STAGING_TABLE.values()
        )
    return renumbered


def quarantine_key(rejection: Rejection) -> str:
    """A quarantine row's key: the record's id, or its raw text's hash when it has none."""
    return rejection.record_id or f"raw:{hash_text(rejection.raw)}"


def hash_text(text: str) -> str:
    import hashlib

    return hashlib.sha1(text.encode()).hexdigest()[:16]


def get_cursor(con: duckdb.DuckDBPyConnection, entity: str) -> str | None:
    row = con.execute(
        "SELECT modified_since FROM sync_cursors WHERE entity = ?", [entity]
    ).fetchone()
    return row[0] if row else None


def set_cursor(con: duckdb.DuckDBPyConnection, entity: str, value: str, run_id: str | None) -> None:
    con.execute(
        """INSERT INTO sync_cursors VALUES (?, ?, ?, ?)
           ON CONFLICT (entity) DO UPDATE SET modified_since = excluded.modified_since,
               updated_at = excluded.updated_at, run_id = excluded.run_id""",
        [entity, value, utcnow(), run_id],
    )


# How far ahead of our clock (UTC) a `modified_at` may be and still move the cursor: 1C stamps
# its local time (up to UTC+14) and its clock may drift. A record dated beyond is staged, but
# a cursor moved onto, say, a mistyped 2062 would hide every later edit until 2062.
FUTURE_TOLERANCE = timedelta(days=1)


def max_modified_at(
    con: duckdb.DuckDBPyConnection, entity: str, since: datetime
) -> tuple[str | None, list[str]]:
    """The newest `modified_at` among rows seen since `since` that is not in the future
    (`FUTURE_TOLERANCE`): where the cursor may move to; and the ids of those that are."""
    table = STAGING_TABLE[entity]
    ceiling = utcnow() + FUTURE_TOLERANCE
    newest = con.execute(
        f"SELECT strftime(max(modified_at), '%Y-%m-%dT%H:%M:%S') FROM {table}"
        " WHERE seen_at >= ? AND modified_at <= ?",
        [since, ceiling],
    ).fetchone()[0]
    future = con.execute(
        f"SELECT id FROM {table} WHERE seen_at >= ? AND modified_at > ? ORDER BY id",
        [since, ceiling],
    ).fetchall()
    return newest, [row[0] for row in future]


@dataclass
class RemovalDecision:
    would_remove: int
    live_total: int
    max_share: float
    blocked: bool
    applied: int
    quarantine_resolved: int = 0


def apply_removals(
    con: duckdb.DuckDBPyConnection,
    entity: str,
    *,
    pass_started: datetime,
    max_share: float,
    confirmed: bool,
    run_id: str | None,
) -> RemovalDecision:
    """After a complete, consistent pass: rows not seen since it started are gone from 1C.

    A guard refuses to remove more than `max_share` of the live rows at once — a half-empty
    answer from 1C must not empty the shop — unless an operator confirmed this run. The same
    judgement resolves quarantined records the pass did not meet again: 1C no longer serves
    them, and a record without an id could not be resolved any other way.
    """
    table = STAGING_TABLE[entity]
    would_remove, live_total = con.execute(
        f"""SELECT count(*) FILTER (WHERE seen_at < $start), count(*)
            FROM {table} WHERE removed_at IS NULL""",
        {"start": pass_started},
    ).fetchone()
    share = would_remove / live_total if live_total else 0.0
    blocked = would_remove > 0 and share > max_share and not confirmed
    applied = 0
    with transaction(con):
        if would_remove and not blocked:
            con.execute(
                f"""UPDATE {table} SET removed_at = $now, {NEW_NUMBERS[table]}
                    WHERE removed_at IS NULL AND seen_at < $start""",
                {"now": utcnow(), "start": pass_started},
            )
            applied = would_remove
        resolved = 0
        if not blocked:
            resolved = con.execute(
                """UPDATE quarantine SET resolved_at = $now
                   WHERE entity = $entity AND resolved_at IS NULL AND last_seen_at < $start
                     AND record_key NOT LIKE 'page@%'""",
                {"now": utcnow(), "entity": entity, "start": pass_started},
            ).fetchone()[0]
        con.execute(
            """INSERT INTO removal_guard VALUES (?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (entity) DO UPDATE SET run_id = excluded.run_id,
                   would_remove = excluded.would_remove, live_total = excluded.live_total,
                   max_share = excluded.max_share, blocked = excluded.blocked,
                   decided_at = excluded.decided_at""",
            [entity, run_id, would_remove, live_total, max_share, blocked, utcnow()],
        )
    return RemovalDecision(would_remove, live_total, max_share, blocked, applied, resolved)


def preview(
    con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None, limit: int = 10
) -> str:
    """A small Markdown table for asset metadata (plain rows: no pandas on the sync's path)."""
    cursor = con.execute(f"{sql} LIMIT {int(limit)}", params or [])
    names = [column[0] for column in cursor.description]
    found = cursor.fetchall()
    if not found:
        return "(no rows)"
    header = "| " + " | ".join(names) + " |"
    rule = "| " + " | ".join("---" for _ in names) + " |"
    rows = ["| " + " | ".join(str(v).replace("|", "\\|")[:60] for v in row) + " |" for row in found]
    return "\n".join([header, rule, *rows])
