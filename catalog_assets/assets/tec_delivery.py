"""Push staged categories and products to Tec.Delivery and record every outcome in DuckDB.

What goes out is decided by DuckDB, not by what this run happened to fetch: an item is pending
while its staged content (or removal) differs from what Tec.Delivery last accepted. So a push
that failed, a run that crashed mid-way and an item staged by an earlier run all go out with
the next push, and an item is never marked delivered before Tec.Delivery said 2xx.

A batch the server rejects is bisected until the offending items stand alone, so one bad item
does not hold back 99 good ones; an item rejected `max_attempts` times is dead-lettered and
waits for an operator (re-materializing with `repush_all` re-drives it).
"""

import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import dagster as dg

from catalog_assets.assets.config import PushConfig
from catalog_assets.assets.onec import SYNC_POOL, category_tree, onec_products
from catalog_assets.checks import HELD_BACK_PRODUCTS, check_specs, evaluate_checks
from catalog_assets.http import decode_json
from catalog_assets.mapping import MappingOptions, category_item, disabled_item, product_item
from catalog_assets.storage import (
    PUSH_TABLE,
    CatalogStore,
    preview,
    rows_select,
    transaction,
    utcnow,
)
from catalog_assets.tec_delivery.client import BatchOutcome, TecDeliveryClient

MAX_ATTEMPTS = 5
MAX_REJECT_SHARE = 0.10
# Requests whose outcomes are recorded in one DuckDB transaction. 1, because a crash loses
# exactly the outcomes not yet committed: with 20, a SIGKILL re-pushed up to 20 accepted batches
# (faults/test_crash.py); with 1 it re-pushes only what was on the wire (push_concurrency) plus
# the one record the writer thread was committing. The writer still overlaps with sending.
RECORD_EVERY = 1
# Delivered batches folded into `tec_delivery_*` per transaction by `apply_delivered`.
APPLY_GROUP = 100

# Rows: (depth, id, record json, desired hash, removed, previously_enabled). Each is streamed
# once per push (per level for categories) in batches; products are left unordered, since
# sorting 100,000 records would hold them all in memory at once. A removed category is
# disabled whatever the tree now says of it (moved under an orphan, then deleted): a disable
# names no parent, so it goes with the roots when the tree gives it no depth. A category whose
# staged parent is not the one its tree was computed with (staged after the last tree: the
# categories fetched and pushed from the UI without `category_tree`) waits for the next tree,
# which judges its new place: it may close a cycle.
PENDING_CATEGORIES = """
SELECT t.depth, c.id, c.record,
       CASE WHEN c.removed_at IS NULL THEN c.content_hash ELSE 'removed:' || c.content_hash END AS desired,
       c.removed_at IS NOT NULL AS removed, d.enabled
FROM onec_categories c
JOIN category_tree t ON t.id = c.id
  AND ((t.status = 'ok' AND t.parent = c.parent) OR c.removed_at IS NOT NULL)
LEFT JOIN tec_delivery_categories d ON d.external_id = c.id
LEFT JOIN tec_delivery_categories dp ON dp.external_id = c.parent
WHERE ($depth IS NULL OR coalesce(t.depth, 0) = $depth)
  AND ($all OR desired IS DISTINCT FROM d.pushed_hash)
  AND ($all OR d.dead_lettered_at IS NULL)
  AND NOT (c.removed_at IS NOT NULL AND d.pushed_hash IS NULL)
  AND (c.removed_at IS NOT NULL OR c.parent = '0' OR (dp.pushed_hash IS NOT NULL AND dp.enabled))
"""

PENDING_PRODUCTS = """
SELECT 0 AS depth, p.id, p.record,
       CASE WHEN p.removed_at IS NULL THEN p.content_hash ELSE 'removed:' || p.content_hash END AS desired,
       p.removed_at IS NOT NULL AS removed, d.enabled
FROM onec_products p
LEFT JOIN tec_delivery_products d ON d.external_id = p.id
LEFT JOIN tec_delivery_categories dc ON dc.external_id = p.parent
WHERE ($all OR desired IS DISTINCT FROM d.pushed_hash)
  AND ($all OR d.dead_lettered_at IS NULL)
  AND NOT (p.removed_at IS NOT NULL AND d.pushed_hash IS NULL)
  AND (p.removed_at IS NOT NULL OR p.parent = '0' OR (dc.pushed_hash IS NOT NULL AND dc.enabled))
"""

# What the next push would send, counted: the sensor starts a run only for this, so an item
# held back by its parent (flagged, dead-lettered, disabled) does not start a run every tick.
PENDING_COUNT = f"""
SELECT (SELECT count(*) FROM ({PENDING_PRODUCTS}))
     + (SELECT count(*) FROM ({PENDING_CATEGORIES}))
"""

HELD_CATEGORIES = """
SELECT count(*) FROM onec_categories c
JOIN category_tree t ON t.id = c.id
LEFT JOIN tec_delivery_categories d ON d.external_id = c.id
LEFT JOIN tec_delivery_categories dp ON dp.external_id = c.parent
WHERE c.removed_at IS NULL AND c.content_hash IS DISTINCT FROM d.pushed_hash
  AND (t.status <> 'ok' OR t.parent <> c.parent
       OR (c.parent <> '0' AND NOT (dp.pushed_hash IS NOT NULL AND dp.enabled)))
"""

# The `no_held_back_items` check's rows (with their reasons), counted: one definition for both.
HELD_PRODUCTS = f"SELECT count(*) FROM ({HELD_BACK_PRODUCTS})"


@dataclass
class PushTally:
    attempted: int = 0
    delivered: int = 0
    rejected: int = 0
    batches: int = 0
    http_requests: int = 0
    failed_ids: list[str] = field(default_factory=list)
    transport_error: str | None = None


class PushAborted(Exception):
    """No batch can succeed now (bad token, Tec.Delivery unreachable): stop, keep all pending."""


@dataclass
class Pending:
    id: str
    item: dict[str, Any]
    desired: str
    removed: bool


def pending_batches(
    con,
    entity: str,
    *,
    repush_all: bool,
    depth: int,
    options: MappingOptions,
    size: int = 100,
) -> Iterator[list[Pending]]:
    """What is pending, mapped to `put-products` items, `size` at a time, from one query.

    The query streams on a cursor of its own while outcomes are written through `con`:
    DuckDB's MVCC keeps those writes out of the snapshot being read, and memory holds one
    batch, not the pending set.
    """
    sql = (PENDING_CATEGORIES + "ORDER BY c.id") if entity == "categories" else PENDING_PRODUCTS
    params: dict[str, Any] = {"all": repush_all}
    if entity == "categories":
        params["depth"] = depth
    reader = con.cursor()
    try:
        reader.execute(sql, params)
        while rows := reader.fetchmany(size):
            batch = []
            for _, item_id, record_json, desired, removed, enabled in rows:
                record = decode_json(record_json)
                if removed:
                    item = disabled_item(record, is_category=entity == "categories")
                else:
                    # `enable` only with news: true for an item that comes back.
                    enable = True if enabled is False else None
                    item = (
                        category_item(record, enable)
                        if entity == "categories"
                        else product_item(record, options, enable)
                    )
                batch.append(Pending(item_id, item, desired, removed))
            yield batch
    finally:
        reader.close()


@dataclass
class Sent:
    """One HTTP request to Tec.Delivery and what came of it, waiting to be recorded."""

    items: list[Pending]
    outcome: BatchOutcome
    started_at: Any
    single_rejection: bool = False


def record_outcomes(con, entity: str, sent: list[Sent], *, run_id: str, max_attempts: int) -> None:
    """Requests' log rows in one transaction: a crash before the commit leaves their items
    pending (re-sent next run, which `put-products`, an upsert, absorbs).

    A delivered batch's row carries its items' content hashes and `applied = false`; it is
    folded into the item table by `apply_delivered`, once per level, not here. Upserting 100
    rows into the keyed `tec_delivery_*` table per request cost ~5 ms, more than the request
    itself; one plain row costs a commit. Single-item rejections (rare) update their item's
    attempts right away, since dead-lettering depends on them.
    """
    if not sent:
        return
    table = PUSH_TABLE[entity]
    now = utcnow()
    batch_ids = [str(uuid.uuid4()) for _ in sent]
    rejected = [s for s in sent if s.single_rejection]
    # One request and no rejection (the usual case) is one statement in autocommit: every
    # call into DuckDB gives up the GIL and waits to get it back from the busy threads.
    single = len(sent) == 1 and not rejected
    with nullcontext() if single else transaction(con):
        for s, batch_id in zip(sent, batch_ids, strict=True):
            con.execute(
                """INSERT INTO push_batches (batch_id, run_id, entity, started_at, duration_ms,
                       item_count, external_ids, item_hashes, applied, http_status, ok, error,
                       response_body)
                   VALUES ($batch, $run, $entity, $started, $duration, $count, $ids, $hashes,
                       NOT $ok, $status, $ok, $error, $body)""",
                {
                    "batch": batch_id,
                    "run": run_id,
                    "entity": entity,
                    "started": s.started_at,
                    "duration": s.outcome.duration_ms,
                    "count": len(s.items),
                    "ids": [p.id for p in s.items],
                    "hashes": [p.desired for p in s.items],
                    "status": s.outcome.http_status,
                    "ok": s.outcome.ok,
                    "error": s.outcome.error,
                    "body": s.outcome.body,
                },
            )
        if rejected:
            rows, params = rows_select(
                {
                    "external_id": ("VARCHAR", [s.items[0].id for s in rejected]),
                    "error": ("VARCHAR", [s.outcome.error for s in rejected]),
                }
            )
            # `last_batch_id` stays the batch that delivered what Tec.Delivery holds: its
            # processing notification may still come, and must still count.
            con.execute(
                f"""INSERT INTO {table} AS d (external_id, attempts, last_error, last_attempt_at,
                        dead_lettered_at)
                    SELECT external_id, 1, error, $now, CASE WHEN 1 >= $max THEN $now END
                    FROM ({rows})
                    ON CONFLICT (external_id) DO UPDATE SET attempts = d.attempts + 1,
                        last_error = excluded.last_error, last_attempt_at = excluded.last_attempt_at,
                        dead_lettered_at = CASE WHEN d.attempts + 1 >= $max THEN excluded.last_attempt_at
                                                ELSE d.dead_lettered_at END""",
                {**params, "now": now, "max": max_attempts},
            )


def apply_delivered(con, entity: str, *, group: int = APPLY_GROUP) -> int:
    """Fold delivered batches not yet applied into `tec_delivery_*`, `group` batches per
    transaction, oldest first.

    Runs before a push (a crashed run's deliveries count, so they are not sent again), after
    each category level (the next level's eligibility reads its parents' state) and after the
    push. An item in several unapplied batches takes the latest one's hash: within a group by
    `arg_max` over (started_at, batch_id), across groups because later groups (in that same
    order) are applied later. Grouping bounds the aggregate to `group` × 100 items: one
    statement over a full push's 100,000 items needed ~60 MB above DuckDB's working set and
    failed outright under a 40 MB `memory_limit`. Each group commits with its batches'
    `applied` flags, so a crash between groups leaves the rest to the next call. Returns the
    number of items applied.
    """
    table = PUSH_TABLE[entity]
    applied = 0
    while True:
        with transaction(con):
            batch_ids = [
                row[0]
                for row in con.execute(
                    "SELECT batch_id FROM push_batches WHERE entity = $entity AND NOT applied"
                    " ORDER BY started_at, batch_id LIMIT $group",
                    {"entity": entity, "group": group},
                ).fetchall()
            ]
            if not batch_ids:
                return applied
            applied += con.execute(
                f"""INSERT INTO {table} AS d (external_id, pushed_hash, pushed_at, enabled,
                        attempts, last_error, last_attempt_at, dead_lettered_at, last_batch_id)
                    SELECT external_id, arg_max(desired, (started_at, batch_id)),
                           max(started_at),
                           NOT starts_with(arg_max(desired, (started_at, batch_id)), 'removed:'),
                           0, NULL, max(started_at), NULL,
                           arg_max(batch_id, (started_at, batch_id))
                    FROM (SELECT unnest(external_ids) AS external_id,
                                 unnest(item_hashes) AS desired, batch_id, started_at
                          FROM push_batches
                          WHERE entity = $entity AND NOT applied
                            AND batch_id IN (SELECT unnest($batches::VARCHAR[])))
                    GROUP BY external_id
                    ON CONFLICT (external_id) DO UPDATE SET pushed_hash = excluded.pushed_hash,
                        pushed_at = excluded.pushed_at, enabled = excluded.enabled, attempts = 0,
                        last_error = NULL, last_attempt_at = excluded.last_attempt_at,
                        dead_lettered_at = NULL, last_batch_id = excluded.last_batch_id""",
                {"entity": entity, "batches": batch_ids},
            ).fetchone()[0]
            con.execute(
                "UPDATE push_batches SET applied = true WHERE entity = $entity AND NOT applied"
                " AND batch_id IN (SELECT unnest($batches::VARCHAR[]))",
                {"entity": entity, "batches": batch_ids},
            )


def prune_push_journal(con, entity: str, *, started_before) -> int:
    """Delete `entity`'s `push_batches` rows started before `started_before`, except those
    still needed.

    A full resync of 100,000 products adds ~1,000 rows carrying their items' ids and hashes,
    and webhook ingestion scans the delivered rows' response bodies for request ids, so an
    unbounded journal would grow the file and slow ingestion for ever. Kept whatever their
    age: a row not yet applied (the only record of a delivery not folded in), and the batch
    that carried an item's current content while Tec.Delivery's notification about it is
    still awaited (ingestion matches the notification through that row's request id). So the
    journal is bounded by the catalog, not by its history.

    The items still awaiting a notification are looked up among the old rows' batches only,
    and only when there are old rows: asked over the whole item table, the query built its
    anti-join from every awaiting item (every item, after a push whose notifications have not
    come), and at 1,000,000 products it ran out of DuckDB's memory at the end of a full sync's
    push, on the step's connection (the same query on the file reopened passed).
    """
    table = PUSH_TABLE[entity]
    params = {"entity": entity, "before": started_before}
    old = "SELECT batch_id FROM push_batches WHERE entity = $entity AND applied AND started_at < $before"
    if not con.execute(old + " LIMIT 1", params).fetchone():
        return 0
    return con.execute(
        f"""DELETE FROM push_batches
            WHERE entity = $entity AND applied AND started_at < $before
              AND batch_id NOT IN (
                  SELECT last_batch_id FROM {table}
                  WHERE last_batch_id IN ({old})
                    AND processed_batch_id IS DISTINCT FROM last_batch_id)""",
        params,
    ).fetchone()[0]


class Pusher:
    """Sends one entity's batches with up to `push_concurrency` requests in flight, settles each
    outcome in order, and records them in groups (`RECORD_EVERY` requests per transaction) on
    a writer thread with its own DuckDB cursor, so reading, sending and recording overlap.

    The first batch goes alone: a bad token or a Tec.Delivery that is down costs one request,
    not one per worker. A rejected batch is bisected right away (those requests go one at a
    time); a fatal or transport failure stops the push after the requests already on the wire
    have been recorded too, so `push_batches` holds every request that was sent.
    """

    def __init__(
        self,
        con,
        client: TecDeliveryClient,
        entity: str,
        tally: PushTally,
        *,
        run_id: str,
        log,
        max_attempts: int,
    ) -> None:
        self.client, self.entity, self.tally = client, entity, tally
        self.run_id, self.log, self.max_attempts = run_id, log, max_attempts
        self.width = max(1, client.push_concurrency)
        self.confirmed = False  # Tec.Delivery accepted a batch of this push
        self.unrecorded: list[Sent] = []
        self.recordings: list[Future] = []
        self.writer = con.cursor()
        self.senders = ThreadPoolExecutor(self.width, thread_name_prefix="tec-push")
        self.recorder = ThreadPoolExecutor(1, thread_name_prefix="tec-record")

    def close(self) -> None:
        self.senders.shutdown(wait=True, cancel_futures=True)
        self.recorder.shutdown(wait=True)
        self.writer.close()

    def push(self, batches: Iterator[list[Pending]]) -> None:
        """Every batch, each settled and recorded, then returns (or raises PushAborted)."""
        in_flight: deque[tuple[list[Pending], Any, Future]] = deque()
        try:
            while True:
                while len(in_flight) < (self.width if self.confirmed else 1):
                    items = next(batches, None)
                    if items is None:
                        break
                    self.tally.attempted += len(items)
                    self.tally.batches += 1
                    request = [p.item for p in items]
                    in_flight.append((items, utcnow(), self.senders.submit(self._send, request)))
                if not in_flight:
                    break
                items, started_at, future = in_flight.popleft()
                self.settle(items, started_at, future.result())
        except PushAborted:
            for items, started_at, future in in_flight:  # already sent: record what came of it
                outcome = future.result()
                self.tally.http_requests += 1
                if outcome.ok:
                    self.tally.delivered += len(items)
                self.unrecorded.append(Sent(items, outcome, started_at, _single(items, outcome)))
            raise
        finally:
            self.record()
            self.wait_recorded()

    def _send(self, request: list[dict[str, Any]]) -> BatchOutcome:
        return self.client.put_products(request)

    def settle(self, items: list[Pending], started_at, outcome: BatchOutcome) -> None:
        """Count and queue one outcome; on rejection split the batch in halves until each
        offender stands alone."""
        self.tally.http_requests += 1
        self.unrecorded.append(Sent(items, outcome, started_at, _single(items, outcome)))
        if outcome.ok:
            self.confirmed = True
            self.tally.delivered += len(items)
            if len(self.unrecorded) >= RECORD_EVERY:
                self.record()
            return
        self.record()
        if outcome.fatal or not outcome.rejected:
            raise PushAborted(outcome.error)
        if len(items) > 1:
            middle = len(items) // 2
            for half in (items[:middle], items[middle:]):
                started = utcnow()
                self.settle(half, started, self._send([p.item for p in half]))
            return
        self.tally.rejected += 1
        self.tally.failed_ids.append(items[0].id)
        self.log.warning(f"{self.entity}: Tec.Delivery rejected {items[0].id}: {outcome.error}")

    def record(self) -> None:
        """Hand the outcomes so far to the writer thread (in order, one transaction)."""
        sent, self.unrecorded = self.unrecorded, []
        if sent:
            self.recordings.append(
                self.recorder.submit(
                    record_outcomes,
                    self.writer,
                    self.entity,
                    sent,
                    run_id=self.run_id,
                    max_attempts=self.max_attempts,
                )
            )
        # Backpressure: all but the newest recording must be committed before more is sent, so
        # a crash loses the records of at most one settled batch plus those on the wire (and a
        # failed recording surfaces here, not after the whole push).
        while len(self.recordings) > 1:
            self.recordings.pop(0).result()

    def wait_recorded(self) -> None:
        recordings, self.recordings = self.recordings, []
        for future in recordings:
            future.result()


def _single(items: list[Pending], outcome: BatchOutcome) -> bool:
    return outcome.rejected and len(items) == 1


PRODUCTS_KEY = dg.AssetKey("tec_delivery_products")
CATEGORIES_KEY = dg.AssetKey("tec_delivery_categories")


def rejected_share_exceeded(entity: str, attempted: int, rejected: int) -> str | None:
    """Why a push fails on Tec.Delivery's refusals, or None: more than MAX_REJECT_SHARE of what
    it sent looks like a mapping or contract problem, not a few bad records."""
    if attempted and rejected / attempted > MAX_REJECT_SHARE:
        return (
            f"Tec.Delivery rejected {rejected} of {attempted} {entity} (> {MAX_REJECT_SHARE:.0%});"
            f" see push_batches and {PUSH_TABLE[entity]}.last_error"
        )
    return None


def _categories_failure(context: dg.AssetExecutionContext, metadata: dict) -> dg.Failure | None:
    """The categories' refusals of this same run, which their step left for this one to fail
    on once the products are out."""
    event = context.instance.get_latest_materialization_event(CATEGORIES_KEY)
    if event is None or event.run_id != context.run_id:
        return None
    reported = event.asset_materialization.metadata
    share = rejected_share_exceeded(
        "categories", reported["attempted"].value, reported["failed"].value
    )
    return dg.Failure(description=share, metadata=metadata) if share else None


def push_entity(
    context: dg.AssetExecutionContext,
    store: CatalogStore,
    client: TecDeliveryClient,
    entity: str,
    config: PushConfig,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Categories go one depth level at a time, so when a level is sent every parent's fate is
    already in DuckDB: children of a category that was not delivered are held back rather
    than sent to be refused. Products go after all categories."""
    options = MappingOptions()
    tally = PushTally()
    with store.connect() as con:
        if entity == "categories":
            deepest = "SELECT coalesce(max(depth), 0) FROM category_tree"
            levels = range(con.execute(deepest).fetchone()[0] + 1)
        else:
            levels = range(1)
        pusher = Pusher(
            con,
            client,
            entity,
            tally,
            run_id=context.run_id,
            log=context.log,
            max_attempts=MAX_ATTEMPTS,
        )
        apply_delivered(con, entity)
        try:
            for depth in levels:
                # A level is wholly recorded and applied before the next is read: its
                # children's eligibility depends on what was delivered.
                pusher.push(
                    pending_batches(
                        con, entity, repush_all=config.repush_all, depth=depth, options=options
                    )
                )
                apply_delivered(con, entity)
        except PushAborted as exc:
            tally.transport_error = str(exc)
        finally:
            pusher.close()
        # Not in `finally`: an unexpected error must surface as itself; what it left unapplied
        # is applied before the next push (or the next webhook ingestion).
        apply_delivered(con, entity)
        pruned = prune_push_journal(
            con,
            entity,
            started_before=utcnow() - timedelta(days=config.journal_retention_days),
        )
        table = PUSH_TABLE[entity]
        dead = con.execute(
            f"SELECT count(*) FROM {table} WHERE dead_lettered_at IS NOT NULL"
        ).fetchone()[0]
        held = con.execute(HELD_PRODUCTS if entity == "products" else HELD_CATEGORIES).fetchone()[0]
        metadata = {
            "attempted": tally.attempted,
            "pushed": tally.delivered,
            "failed": tally.rejected,
            "batches": tally.batches,
            "http_requests": tally.http_requests,
            "dead_lettered_total": dead,
            "held_back": held,
            "mode": "repush_all" if config.repush_all else "pending_only",
            "journal_rows_pruned": pruned,
            "last_batches": dg.MetadataValue.md(
                preview(
                    con,
                    "SELECT started_at, item_count, http_status, ok, duration_ms, error FROM push_batches "
                    "WHERE entity = ? AND run_id = ? ORDER BY started_at DESC",
                    [entity, context.run_id],
                )
            ),
        }
        checks = evaluate_checks(con, PUSH_TABLE[entity])
    if tally.failed_ids:
        metadata["failed_preview"] = dg.MetadataValue.text(", ".join(tally.failed_ids[:20]))
    failure = None
    if tally.transport_error:
        failure = dg.Failure(
            description=f"Push of {entity} stopped; every undelivered item stays pending for the "
            f"next run. {tally.transport_error}",
            metadata=metadata,
        )
    elif share := rejected_share_exceeded(entity, tally.attempted, tally.rejected):
        if (
            entity == "categories"
            and PRODUCTS_KEY in context.job_def.asset_layer.selected_asset_keys
        ):
            # Failing here would skip the products step: one refused category in a small
            # incremental run would hold back every price and stock change until it is
            # dead-lettered. Products under a refused category are held back anyway.
            context.log.error(f"{share}; the products are pushed first, then the run fails")
        else:
            failure = dg.Failure(description=share, metadata=metadata)
    if failure is None and entity == "products":
        failure = _categories_failure(context, metadata)
    if failure is not None:
        # The checks judge DuckDB, which this push changed even though it failed: reported
        # now, a dead letter's ERROR alerts with this run, not after the next completed push.
        yield from checks
        raise failure
    context.log.info(
        f"{entity}: pushed {tally.delivered} of {tally.attempted} in {tally.http_requests} requests"
    )
    yield dg.MaterializeResult(metadata=metadata, check_results=checks)


@dg.asset(
    group_name="tec_delivery",
    kinds={"duckdb"},
    pool=SYNC_POOL,
    deps=[category_tree],
    check_specs=check_specs("tec_delivery_categories"),
    description="Categories pushed to Tec.Delivery (parents before children) and the outcome of each.",
)
def tec_delivery_categories(
    context: dg.AssetExecutionContext,
    config: PushConfig,
    store: CatalogStore,
    tec_delivery: TecDeliveryClient,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    yield from push_entity(context, store, tec_delivery, "categories", config)


@dg.asset(
    group_name="tec_delivery",
    kinds={"duckdb"},
    pool=SYNC_POOL,
    deps=[onec_products, tec_delivery_categories],
    check_specs=check_specs("tec_delivery_products"),
    description="Products pushed to Tec.Delivery after all categories, and the outcome of each.",
)
def tec_delivery_products(
    context: dg.AssetExecutionContext,
    config: PushConfig,
    store: CatalogStore,
    tec_delivery: TecDeliveryClient,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    yield from push_entity(context, store, tec_delivery, "products", config)
