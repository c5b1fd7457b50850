"""Immutable feed snapshots: how the API keeps answering while a sync holds DuckDB's lock.

DuckDB allows one writing process per file, and a Dagster run holds the catalog file for its
whole duration. So each sync's `outlet_feed_snapshot` copies the feed columns into a *new*
DuckDB file (ATTACH + CREATE TABLE AS, set-based, each table sorted by sequence so keyset
pages are mostly range scans), then publishes it by replacing the `CURRENT` pointer file with
`os.replace` (atomic on POSIX; each file synced before its rename and the directory after, so
a host crash cannot leave the pointer empty or naming a file the disk never got). The API opens
the file `CURRENT` names read-only, and swaps to a new one when the pointer changes; a reader
never sees a half-written snapshot because the pointer only ever names finished files. Old
files are deleted after a grace period (and never the current or the previous one), so a reader
still holding one is not broken mid-request.

A run that changed little does not copy the catalog again: it copies the current snapshot's
file and replaces only the rows whose sequence moved since it was built (every change to a
record's content takes a new number from `catalog_change_seq`, so those rows are exactly
the changes). The result is the same rows a full copy would hold; `test_snapshot.py` holds the
two to that. The base must be the snapshot this very catalog store published last (the store
records its name, `outlet_snapshot_published`): a snapshot from another store, or one published
after the backup a store was restored from, numbers rows by a history this store does not
have. A full copy is also made for another feed format, when the changes are large (more than
`MAX_REPLACED_ROWS` in a feed, or more than `COMPACT_SHARE` of the rows replaced since the last
full copy, which bounds the file's dead rows and the rows appended out of sequence order: a
price row whose product was renamed keeps its number), and when building on the base fails.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from catalog_assets.outlets.feeds import EVERYTHING, FEEDS, expand_subtrees
from catalog_assets.storage import renumber_feeds

logger = logging.getLogger("catalog_assets.outlets")

POINTER = "CURRENT"
SUFFIX = ".duckdb"
# How long a publication stays in the history cursors are judged by (and always the newest
# `HISTORY_KEEP_NEWEST`, for a catalog quiet for longer): an outlet silent for longer replays
# its feeds once, which is safe.
HISTORY_DAYS = 30
HISTORY_KEEP_NEWEST = 100


class SnapshotUnavailable(RuntimeError):
    """No snapshot is published yet, or the current one cannot be read: the API answers 503."""


def _feed_select(entity: str, where: str = "") -> str:
    """The SELECT that builds one feed from the attached catalog (its default database, unqualified).

    An item is the record in the 1C shape (`record`, as 1C served it) or, for the narrow
    feeds, `{id, price}` / `{id, stock}`; a removed item carries `"removed": true` so an outlet
    can delist it. `changed_at` is when the change was staged (or the removal decided), for
    lag in time. `left_scopes` are the categories whose subtree the item has left: an outlet
    filtering on one of those gets the item as a removal (`Snapshot.page`).
    """
    feed = FEEDS[entity]
    if entity in ("categories", "products"):
        item = "record"
    else:
        value = "price" if entity == "prices" else "stock"
        item = f"json_object('id', id, '{value}', {value})::VARCHAR"
    return f"""
        SELECT {feed.seq_column} AS seq, id, {feed.scope_column} AS scope,
               greatest(staged_at, coalesce(removed_at, staged_at)) AS changed_at,
               CASE WHEN removed_at IS NULL THEN {item}
                    ELSE json_merge_patch({item}, '{{"removed": true}}')::VARCHAR END AS item,
               left_subtrees AS left_scopes
        FROM {feed.table} {where}"""


SLICE_ROWS = 20_000
# More changed rows than this in one feed are copied whole rather than replaced: the replacement
# is sorted in one piece, so this keeps it within one slice's memory.
MAX_REPLACED_ROWS = SLICE_ROWS
# Attachment names no catalog file can take (DuckDB names the catalog after its file's stem).
BASE_ALIAS, BUILD_ALIAS = "__outlet_snapshot_base", "__outlet_snapshot_building"
# Rows replaced in place since the last full copy, as a share of the snapshot's rows, beyond
# which the next snapshot is a full copy again (deleted rows stay in the file until then).
COMPACT_SHARE = 0.1

CATEGORIES_SELECT = """
    SELECT t.id, t.parent, t.status, c.removed_at IS NOT NULL AS removed
    FROM category_tree t LEFT JOIN onec_categories c USING (id)"""


def snapshot_format(catalog: duckdb.DuckDBPyConnection) -> str:
    """What a snapshot's rows are made of: the SQL that renders them, the catalog columns it
    reads and the DuckDB that renders them (JSON and number text). Rows kept from a base of
    another format would differ from a full copy's, so such a base is not used."""
    columns = catalog.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns"
        " WHERE table_catalog = current_database() AND table_name IN ('onec_categories',"
        " 'onec_products', 'category_tree') ORDER BY ALL"
    ).fetchall()
    text = "\n".join(
        [duckdb.__version__, *(_feed_select(e) for e in FEEDS), CATEGORIES_SELECT, repr(columns)]
    )
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _moved(entity: str, max_seq: dict[str, int]) -> tuple[str, dict[str, int]]:
    """The WHERE clause (and its parameters) picking a feed's rows that moved since a snapshot
    with these maximum sequences. A price or stock row also follows its product's other
    changes: its scope (the parent category) and `changed_at` come from the product."""
    condition, params = f"{FEEDS[entity].seq_column} > $seq", {"seq": max_seq[entity]}
    if FEEDS[entity].seq_column != "change_seq":
        condition += " OR change_seq > $product_seq"
        params["product_seq"] = max_seq["products"]
    return f"WHERE ({condition})", params


def _copy_feed(catalog: duckdb.DuckDBPyConnection, alias: str, entity: str) -> None:
    """One feed into the snapshot, sorted by sequence, a slice of ~`SLICE_ROWS` at a time.

    One `CREATE TABLE AS … ORDER BY` would sort every record of the catalog at once (~100 MB
    at 100,000 products), which is what set the floor under `CatalogStore.memory_limit`;
    slices cut at sequence quantiles keep the sort, and the memory, to one slice.
    """
    feed = FEEDS[entity]
    rows = catalog.execute(f"SELECT count(*) FROM {feed.table}").fetchone()[0]
    slices = max(1, -(-rows // SLICE_ROWS))
    cuts: list[int] = []
    if slices > 1:
        fractions = ", ".join(str(i / slices) for i in range(1, slices))
        cuts = catalog.execute(
            f"SELECT quantile_disc({feed.seq_column}, [{fractions}]) FROM {feed.table}"
        ).fetchone()[0]
    select = _feed_select(entity)
    catalog.execute(f"CREATE TABLE {alias}.feed_{entity} AS SELECT * FROM ({select}) LIMIT 0")
    edges = [None, *sorted(set(cuts)), None]
    for low, high in zip(edges, edges[1:], strict=False):
        catalog.execute(
            f"INSERT INTO {alias}.feed_{entity} SELECT * FROM ({select}) "
            "WHERE ($low IS NULL OR seq > $low) AND ($high IS NULL OR seq <= $high) ORDER BY seq",
            {"low": low, "high": high},
        )


@dataclass(frozen=True)
class PublishedSnapshot:
    path: str
    max_seq: dict[str, int]
    items: dict[str, int]
    categories: int
    deleted_old: int
    built: str  # "full" or "incremental"
    why_full: str  # why a full copy was made ("" when incremental)
    replaced: int  # rows replaced or added in the base's copy (incremental)
    renumbered: int = 0  # rows renumbered past the previous snapshot (`_continue_numbering`)


@dataclass(frozen=True)
class _Base:
    """The snapshot the next one can be built on, and what is needed to judge the changes
    since: its highest sequence per feed, its size and its rows replaced since a full copy."""

    path: Path
    max_seq: dict[str, int]
    rows: int
    replaced_since_full: int


def _feed_stats(catalog: duckdb.DuckDBPyConnection, alias: str) -> dict[str, tuple[int, int]]:
    """(highest sequence, rows) of every feed in the snapshot attached as `alias`."""
    return {
        entity: catalog.execute(
            f"SELECT coalesce(max(seq), 0), count(*) FROM {alias}.feed_{entity}"
        ).fetchone()
        for entity in FEEDS
    }


def _current_and_ours(
    catalog: duckdb.DuckDBPyConnection, directory: Path
) -> tuple[str | None, str | None]:
    """The snapshot `CURRENT` names (None before the first) and the last one this catalog
    store published (None if it never did). When they differ, the store's numbering is not
    the one outlets were served."""
    try:
        current = (directory / POINTER).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        current = None
    last = catalog.execute("SELECT snapshot FROM outlet_snapshot_published").fetchall()
    return current, last[0][0] if last else None


def _usable_base(
    catalog: duckdb.DuckDBPyConnection, directory: Path, format_now: str
) -> tuple[_Base | None, str]:
    """The current snapshot as the base of the next one, or None and why not."""
    current, ours = _current_and_ours(catalog, directory)
    if current is None:
        return None, "no previous snapshot"
    if ours != current:
        return None, (
            f"the current snapshot {current} is not the last one this catalog store published "
            f"({ours or 'none'}): another store, a restored or recreated one, or "
            "a snapshot published elsewhere since"
        )
    path = directory / current
    try:
        catalog.execute(f"ATTACH '{path}' AS {BASE_ALIAS} (READ_ONLY)")
    except duckdb.Error as exc:
        return None, f"the current snapshot {current} cannot be opened ({_one_line(exc)})"
    try:
        meta = dict(catalog.execute(f"SELECT key, value FROM {BASE_ALIAS}.meta").fetchall())
        held = _feed_stats(catalog, BASE_ALIAS)
    except duckdb.Error as exc:
        return None, f"the current snapshot {current} is unreadable ({_one_line(exc)})"
    finally:
        catalog.execute(f"DETACH {BASE_ALIAS}")
    if meta.get("format") != format_now:
        return None, f"the current snapshot {current} has another feed format"
    return _Base(
        path,
        {entity: int(seq) for entity, (seq, _) in held.items()},
        sum(int(count) for _, count in held.values()),
        int(meta.get("replaced_since_full", 0)),
    ), ""


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _count_changes(catalog: duckdb.DuckDBPyConnection, base: _Base) -> tuple[dict[str, int], str]:
    """Rows of each feed that moved since `base`, or why that is too many to replace in place:
    a large replacement would sort like a full copy without its slices, and dead rows would
    pile up in the file."""
    counts = {}
    for entity, feed in FEEDS.items():
        where, params = _moved(entity, base.max_seq)
        counts[entity] = catalog.execute(
            f"SELECT count(*) FROM {feed.table} {where}", params
        ).fetchone()[0]
    if max(counts.values()) > MAX_REPLACED_ROWS:
        most = max(counts.values())
        return {}, f"{most} rows of one feed changed (more than {MAX_REPLACED_ROWS})"
    since_full = base.replaced_since_full + sum(counts.values())
    if since_full > COMPACT_SHARE * base.rows:
        return {}, (
            f"{since_full} rows replaced since the last full copy "
            f"(more than {COMPACT_SHARE:.0%} of {base.rows})"
        )
    return counts, ""


def _replace_moved(
    catalog: duckdb.DuckDBPyConnection, alias: str, base: _Base, counts: dict[str, int]
) -> None:
    """Delete the moved rows from the copied base and insert their current version (new rows
    are simply inserted)."""
    for entity, count in counts.items():
        if not count:
            continue
        where, params = _moved(entity, base.max_seq)
        catalog.execute(
            f"DELETE FROM {alias}.feed_{entity} "
            f"WHERE id IN (SELECT id FROM {FEEDS[entity].table} {where})",
            params,
        )
        catalog.execute(
            f"INSERT INTO {alias}.feed_{entity} SELECT * FROM ({_feed_select(entity, where)}) "
            "ORDER BY seq",
            params,
        )


def _write(
    catalog: duckdb.DuckDBPyConnection,
    building: Path,
    fill_feeds: Callable[[str], None],
    meta: dict[str, str],
) -> tuple[dict[str, tuple[int, int]], int]:
    """Attach `building`, let `fill_feeds` write the feeds, add the categories and `meta`, and
    detach (which checkpoints). Returns (max sequence, rows) per feed and the categories."""
    alias = BUILD_ALIAS
    catalog.execute(f"ATTACH '{building}' AS {alias}")
    try:
        fill_feeds(alias)
        catalog.execute(f"CREATE OR REPLACE TABLE {alias}.categories AS {CATEGORIES_SELECT}")
        catalog.execute(
            f"CREATE OR REPLACE TABLE {alias}.publications AS "
            "SELECT DISTINCT publication FROM outlet_publications"
        )
        stats = _feed_stats(catalog, alias)
        categories = catalog.execute(f"SELECT count(*) FROM {alias}.categories").fetchone()[0]
        catalog.execute(
            f"CREATE OR REPLACE TABLE {alias}.meta (key VARCHAR, value VARCHAR);"
            f"INSERT INTO {alias}.meta SELECT unnest($keys), unnest($values)",
            {"keys": list(meta), "values": list(meta.values())},
        )
    except BaseException:
        with suppress(duckdb.Error):  # the error that got us here is the one to report
            catalog.execute(f"DETACH {alias}")
        raise
    catalog.execute(f"DETACH {alias}")
    if Path(f"{building}.wal").exists():  # published without it, the file would lack rows
        raise RuntimeError(f"snapshot {building.name} was not checkpointed when detached")
    return stats, categories


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_durably(source: Path, target: Path) -> None:
    """`os.replace` is atomic but not durable: after a host crash the rename may be lost, or
    kept while the renamed file's content is not (an empty `CURRENT`: the API answers 503
    until the next sync, and the store renumbers every feed). So the file is synced before it
    is renamed, and the directory after, before anything relies on the new name."""
    _fsync(source)
    os.replace(source, target)
    _fsync(target.parent)


def _discard(building: Path) -> None:
    building.unlink(missing_ok=True)
    Path(f"{building}.wal").unlink(missing_ok=True)


def _continue_numbering(catalog: duckdb.DuckDBPyConnection, directory: Path, log: Any) -> int:
    """Keep the feeds' numbering ahead of every snapshot already served. Returns the rows
    renumbered (0 when this store published the current snapshot, or there is none).

    Outlets remember positions in the published numbering, not in any one store. A catalog
    store restored from a backup, or deleted and rebuilt by `full_resync`, numbers from an
    earlier point, so its changes since take numbers outlets may have passed already, and the
    API would answer them "nothing changed". So when the current snapshot is not the last one
    this store published, the sequence restarts above every number either has used and every
    staged row takes a new number, in one transaction: every outlet replays its feeds once and
    ends with what 1C holds, whatever the store lost. (An item created and deleted in the lost
    stretch is unknown to the store and is never sent to outlets as a removal. A crash between
    publishing and recording the publication also lands here: one needless replay.)
    """
    current, ours = _current_and_ours(catalog, directory)
    if current is None or current == ours:
        return 0
    try:
        catalog.execute(f"ATTACH '{directory / current}' AS {BASE_ALIAS} (READ_ONLY)")
    except duckdb.Error as exc:
        log.warning(f"outlet snapshot: cannot open {current} to check numbering ({_one_line(exc)})")
        return 0
    try:
        served = max(seq for seq, _ in _feed_stats(catalog, BASE_ALIAS).values())
    except duckdb.Error as exc:
        log.warning(f"outlet snapshot: cannot read {current} to check numbering ({_one_line(exc)})")
        return 0
    finally:
        catalog.execute(f"DETACH {BASE_ALIAS}")
    numbering = catalog.execute("SELECT nextval('catalog_change_seq')").fetchall()[0][0]
    above = max(int(served), int(numbering))
    renumbered = renumber_feeds(catalog, above)
    log.warning(
        f"outlet snapshot: the served snapshot {current} (numbered up to {served}) is not the "
        f"last one this catalog store published (a restored or rebuilt store, numbering at "
        f"{numbering}): renumbered {renumbered} rows above {above}; every outlet replays its "
        "feeds once"
    )
    return renumbered


def _record_publication(
    catalog: duckdb.DuckDBPyConnection, publication: str, snapshot: str, at: datetime
) -> None:
    """Add the snapshot about to be built to this store's history (before it is built: it
    carries the history, itself included) and forget the old ones. A publish that fails
    after this leaves an id no cursor will ever carry."""
    catalog.execute(
        "INSERT INTO outlet_publications VALUES ($id, $snapshot, $at)",
        {"id": publication, "snapshot": snapshot, "at": at},
    )
    catalog.execute(
        f"""DELETE FROM outlet_publications
            WHERE published_at < $at - INTERVAL {HISTORY_DAYS} DAY
              AND publication NOT IN (SELECT publication FROM outlet_publications
                                      ORDER BY published_at DESC LIMIT {HISTORY_KEEP_NEWEST})""",
        {"at": at},
    )


def publish_snapshot(
    catalog: duckdb.DuckDBPyConnection,
    snapshot_dir: str,
    *,
    published_at: datetime,
    run_id: str | None,
    keep_minutes: float,
    log: Any = logger,  # a logging.Logger, or the run's log
) -> PublishedSnapshot:
    """Write a new snapshot from the open catalog connection, publish it, prune old ones.

    `catalog` is the run's own (writing) connection, so the copy is consistent with what the
    run staged: nothing else can write while the run holds the file. `log` gets the reason
    when building on the previous snapshot failed (the asset passes its run log).
    """
    directory = Path(snapshot_dir)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"feeds-{published_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    building = directory / f"{name}.building"
    final = directory / f"{name}{SUFFIX}"
    meta = {
        "published_at": published_at.isoformat(),
        "run_id": run_id or "",
        "format": snapshot_format(catalog),
        "publication": uuid.uuid4().hex[:16],
    }
    _record_publication(catalog, meta["publication"], final.name, published_at)
    base, why_full = _usable_base(catalog, directory, meta["format"])
    renumbered = 0 if base is not None else _continue_numbering(catalog, directory, log)
    counts: dict[str, int] = {}
    if base is not None:
        counts, why_full = _count_changes(catalog, base)
    written = None
    if base is not None and not why_full:
        try:
            shutil.copyfile(base.path, building)  # a published snapshot is never written again
            written = _write(
                catalog,
                building,
                lambda alias: _replace_moved(catalog, alias, base, counts),
                {
                    **meta,
                    "replaced_since_full": str(base.replaced_since_full + sum(counts.values())),
                },
            )
        except (duckdb.Error, OSError, RuntimeError) as exc:
            _discard(building)
            why_full = f"building on {base.path.name} failed ({_one_line(exc)})"
            log.warning(f"outlet snapshot: {why_full}; making a full copy")
        except BaseException:  # interrupted: leave no copy of the base behind
            _discard(building)
            raise
    if written is None:

        def copy_all(alias: str) -> None:
            for entity in FEEDS:
                _copy_feed(catalog, alias, entity)

        try:
            written = _write(catalog, building, copy_all, {**meta, "replaced_since_full": "0"})
        except BaseException:
            _discard(building)
            raise
    stats, categories = written
    _replace_durably(building, final)
    pointer_tmp = directory / f".{POINTER}.{uuid.uuid4().hex[:8]}"
    pointer_tmp.write_text(final.name, encoding="utf-8")
    _replace_durably(pointer_tmp, directory / POINTER)
    # After the swap: a crash in between leaves the store naming an older snapshot, and the
    # next run makes a full copy rather than trusting a base it cannot vouch for.
    catalog.execute(
        """INSERT INTO outlet_snapshot_published VALUES (true, $name, $at, $run)
           ON CONFLICT (last) DO UPDATE SET snapshot = excluded.snapshot,
               published_at = excluded.published_at, run_id = excluded.run_id""",
        {"name": final.name, "at": published_at, "run": run_id},
    )
    deleted = prune_snapshots(directory, keep_minutes=keep_minutes, now=time.time())
    return PublishedSnapshot(
        str(final),
        {e: int(s[0]) for e, s in stats.items()},
        {e: int(s[1]) for e, s in stats.items()},
        int(categories),
        deleted,
        "full" if why_full else "incremental",
        why_full,
        0 if why_full else sum(counts.values()),
        renumbered,
    )


def prune_snapshots(directory: Path, *, keep_minutes: float, now: float) -> int:
    """Delete snapshots older than the grace period, never the current or the newest other one
    (a reader may have opened it just before the swap)."""
    try:
        current = (directory / POINTER).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        current = ""
    files = sorted(directory.glob(f"feeds-*{SUFFIX}"), key=lambda p: p.stat().st_mtime)
    keep = {current, *(p.name for p in files[-2:])}
    deleted = 0
    for path in files:
        if path.name in keep or now - path.stat().st_mtime < keep_minutes * 60:
            continue
        path.unlink(missing_ok=True)
        Path(f"{path}.wal").unlink(missing_ok=True)
        deleted += 1
    for stale in [*directory.glob("*.building"), *directory.glob("*.building.wal")]:
        if now - stale.stat().st_mtime > keep_minutes * 60:  # a crashed publish
            stale.unlink(missing_ok=True)
    return deleted


IN_SCOPE = "scope IN (SELECT unnest($scope))"
# Why a row outside `$scope` still reaches the outlet, as a removal: it has left a subtree in
# `$scope`, or it is in (or has left) a category the outlet had before its filter changed.
LEFT_SCOPE = "list_has_any(left_scopes, $scope::VARCHAR[])"
HELD_SCOPE = "scope IN (SELECT unnest($held)) OR list_has_any(left_scopes, $held::VARCHAR[])"


class Snapshot:
    """One open, read-only snapshot file, plus what every request needs from it in memory:
    the category hierarchy (for subtree filters and registry validation) and max sequences."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self._con = duckdb.connect(path, read_only=True)
        rows = self._con.execute("SELECT id, parent, status, removed FROM categories").fetchall()
        self.parents = {r[0]: r[1] for r in rows}
        self.valid_categories = frozenset(r[0] for r in rows if r[2] == "ok" and not r[3])
        # In the snapshot but not placed in 1C's tree: id -> "removed", or the tree's flag.
        self.unplaced_categories = {
            r[0]: "removed" if r[3] else r[2] for r in rows if r[3] or r[2] != "ok"
        }
        self.max_seq = {
            entity: self._con.execute(
                f"SELECT coalesce(max(seq), 0) FROM feed_{entity}"
            ).fetchone()[0]
            for entity in FEEDS
        }
        # The newest row that has left some subtree: a filtered outlet past it (most of the
        # time, every outlet) reads with the plain scope filter, ~1 ms a page cheaper.
        self.last_departure = {
            entity: self._con.execute(
                f"SELECT coalesce(max(seq), 0) FROM feed_{entity} WHERE left_scopes IS NOT NULL"
            ).fetchone()[0]
            for entity in FEEDS
        }
        meta = dict(self._con.execute("SELECT key, value FROM meta").fetchall())
        self.published_at = meta.get("published_at", "")
        # Cursors minted from this snapshot carry it (None: a snapshot from before histories).
        self.publication: str | None = meta.get("publication")
        self._known: dict[str, bool] = {}
        self._subtrees: dict[tuple[str, ...], list[str]] = {}
        self._lock = threading.Lock()
        self.users = 0
        self.retired = False

    def knows(self, publication: str) -> bool:
        """Whether a position minted by `publication` is in this snapshot's numbering: it is
        not when the store was restored from a backup taken before that publication, and its
        numbers may since mean other changes."""
        known = self._known.get(publication)
        if known is None:
            if self.publication is None:
                return True  # a snapshot from before histories cannot judge
            with self.cursor() as cur:
                known = bool(
                    cur.execute(
                        "SELECT count(*) FROM publications WHERE publication = $p",
                        {"p": publication},
                    ).fetchone()[0]
                )
            if len(self._known) < 10_000:  # outlets carry the last few publications
                self._known[publication] = known
        return known

    def scope(self, roots: tuple[str, ...]) -> list[str]:
        """The category ids an outlet with these roots may see (cached per snapshot)."""
        cached = self._subtrees.get(roots)
        if cached is None:
            cached = sorted(expand_subtrees(self.parents, roots))
            self._subtrees[roots] = cached
        return cached

    def cursor(self) -> duckdb.DuckDBPyConnection:
        # DuckDB connections are not shared across threads; a cursor is a cheap per-thread
        # handle on the same database.
        return self._con.cursor()

    def page(
        self,
        entity: str,
        after: int,
        limit: int,
        scope: list[str] | None,
        held: list[str] | str | None = None,
    ) -> list[tuple[int, str]]:
        """(seq, item JSON) for up to `limit` items after `after`, in sequence order.

        With a scope, an item that has left it (it, or a category above it, moved out) comes
        as a removal: the outlet got it while it was in scope and must delist it. An outlet
        that never had it gets a removal it can ignore. A move always takes a new sequence
        number, so the item's latest row is the one an outlet ends with.

        `held` (category ids, or `EVERYTHING`) is what the outlet had before its own filter
        changed: those items outside the new filter come as removals too.
        """
        params: dict = {"after": after, "n": limit}
        sql = f"SELECT seq, item FROM feed_{entity} WHERE seq > $after"
        if scope is not None:
            params["scope"] = scope
            sql += f" AND {IN_SCOPE}"
            removals = []
            if after < self.last_departure[entity]:
                removals.append(LEFT_SCOPE)
            if held == EVERYTHING:
                removals.append("true")
            elif held:
                removals.append(HELD_SCOPE)
                params["held"] = list(held)
            if removals:
                sql += f"""
                    UNION ALL
                    SELECT seq, json_merge_patch(item, '{{"removed": true}}')::VARCHAR
                    FROM feed_{entity} WHERE seq > $after AND NOT ({IN_SCOPE})
                      AND ({" OR ".join(f"({r})" for r in removals)})"""
        sql += " ORDER BY seq LIMIT $n"
        with self.cursor() as cur:
            return cur.execute(sql, params).fetchall()

    def backlog(
        self, entity: str, after: int, scope: list[str] | None
    ) -> tuple[int, datetime | None]:
        """How many items after `after` the outlet has not acknowledged, and the oldest one's
        `changed_at`: lag in items and the basis for lag in time."""
        sql = f"SELECT count(*), min(changed_at) FROM feed_{entity} WHERE seq > $after"
        params: dict = {"after": after}
        if scope is not None:
            params["scope"] = scope
            departed = f" OR ({LEFT_SCOPE})" if after < self.last_departure[entity] else ""
            sql += f" AND ({IN_SCOPE}{departed})"
        with self.cursor() as cur:
            count, oldest = cur.execute(sql, params).fetchone()
        return int(count), oldest

    def close(self) -> None:
        self._con.close()


class SnapshotReader:
    """Follows the `CURRENT` pointer: one `stat` per request, a reopen only when it changes.

    A replaced snapshot is closed once the last request using it has finished, so a swap in
    the middle of a request never pulls the file out from under it.
    """

    def __init__(self, snapshot_dir: str) -> None:
        self.directory = Path(snapshot_dir)
        self._lock = threading.Lock()
        self._current: Snapshot | None = None
        self._pointer_key: tuple | None = None

    def _refresh(self) -> Snapshot:
        pointer = self.directory / POINTER
        try:
            stat = pointer.stat()
        except FileNotFoundError:
            raise SnapshotUnavailable(
                "no outlet feed snapshot has been published yet (run full_resync)"
            ) from None
        except OSError as exc:  # not a directory, not ours to enter, a stale NFS handle
            raise SnapshotUnavailable(
                f"the {POINTER} pointer cannot be reached ({type(exc).__name__})"
            ) from None
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if key == self._pointer_key and self._current is not None:
            return self._current
        with self._lock:
            if key == self._pointer_key and self._current is not None:
                return self._current
            try:
                name = pointer.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:  # replaced or damaged meanwhile
                raise SnapshotUnavailable(
                    f"the {POINTER} pointer cannot be read ({type(exc).__name__})"
                ) from None
            if self._current is not None and self._current.name == name:
                self._pointer_key = key
                return self._current
            try:
                fresh = Snapshot(str(self.directory / name))
            except (duckdb.Error, OSError) as exc:
                raise SnapshotUnavailable(
                    f"feed snapshot {name} cannot be opened ({type(exc).__name__})"
                ) from None
            old, self._current, self._pointer_key = self._current, fresh, key
            if old is not None:
                old.retired = True
                if old.users == 0:
                    old.close()
            logger.info("serving outlet feeds from %s", name)
            return fresh

    @contextmanager
    def acquire(self) -> Iterator[Snapshot]:
        while True:
            snapshot = self._refresh()
            with self._lock:
                # A swap may have retired (and closed) it between the two lines: take the new one.
                if not snapshot.retired:
                    snapshot.users += 1
                    break
        try:
            yield snapshot
        except duckdb.Error as exc:
            raise SnapshotUnavailable(
                f"feed snapshot {snapshot.name} cannot be read ({type(exc).__name__})"
            ) from None
        finally:
            with self._lock:
                snapshot.users -= 1
                if snapshot.retired and snapshot.users == 0:
                    snapshot.close()

    def close(self) -> None:
        with self._lock:
            if self._current is not None:
                self._current.retired = True
                if self._current.users == 0:
                    self._current.close()
                self._current = None
                self._pointer_key = None
