"""Push staged categories and products to Tec.Delivery and record every outcome in DuckDB.

What goes out is decided by DuckDB, not by what this run happened to fetch: an item is pending
while its staged content (or removal) differs from what Tec.Delivery last accepted. So a push
that failed, a run that crashed mid-way and an item staged by an earlier run all go out with
the next push, and an item is never marked delivered before Tec.Delivery said 2xx.

A batch the server rejects is bisected until the offending items stand alone, so one bad item
does not hold back 99 good ones; an item rejected `max_attempts` times is dead-lettered and
waits for an operator (re-materializing with `repush_all` re-drives it).
"""

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pyarrow as pa

from catalog_assets.assets.config import PushConfig
from catalog_assets.assets.onec import SYNC_POOL, category_tree, onec_products
from catalog_assets.mapping import MappingOptions, category_item, product_item
from catalog_assets.storage import PUSH_TABLE, CatalogStore, preview, transaction, utcnow
from catalog_assets.tec_delivery.client import BatchOutcome, TecDeliveryClient

MAX_ATTEMPTS = 5
MAX_REJECT_SHARE = 0.10

# Rows: (key, id, record json, desired hash, removed, previously_enabled, depth)
PENDING_CATEGORIES = """
SELECT t.depth, c.id, c.record,
       CASE WHEN c.removed_at IS NULL THEN c.content_hash ELSE 'removed:' || c.content_hash END AS desired,
       c.removed_at IS NOT NULL AS removed, d.enabled
FROM onec_categories c
JOIN category_tree t ON t.id = c.id AND t.status = 'ok'
LEFT JOIN tec_delivery_categories d ON d.external_id = c.id
LEFT JOIN tec_delivery_categories dp ON dp.external_id = c.parent
WHERE t.depth = $depth AND c.id > $after
  AND ($all OR desired IS DISTINCT FROM d.pushed_hash)
  AND ($all OR d.dead_lettered_at IS NULL)
  AND NOT (c.removed_at IS NOT NULL AND d.pushed_hash IS NULL)
  AND (c.removed_at IS NOT NULL OR c.parent = '0' OR (dp.pushed_hash IS NOT NULL AND dp.enabled))
ORDER BY c.id
LIMIT $limit
"""

PENDING_PRODUCTS = """
SELECT 0 AS depth, p.id, p.record,
       CASE WHEN p.removed_at IS NULL THEN p.content_hash ELSE 'removed:' || p.content_hash END AS desired,
       p.removed_at IS NOT NULL AS removed, d.enabled
FROM onec_products p
LEFT JOIN tec_delivery_products d ON d.external_id = p.id
LEFT JOIN tec_delivery_categories dc ON dc.external_id = p.parent
WHERE p.id > $after
  AND ($all OR desired IS DISTINCT FROM d.pushed_hash)
  AND ($all OR d.dead_lettered_at IS NULL)
  AND NOT (p.removed_at IS NOT NULL AND d.pushed_hash IS NULL)
  AND (p.removed_at IS NOT NULL OR p.parent = '0' OR (dc.pushed_hash IS NOT NULL AND dc.enabled))
ORDER BY p.id
LIMIT $limit
"""

HELD_CATEGORIES = """
SELECT count(*) FROM onec_categories c
JOIN category_tree t ON t.id = c.id
LEFT JOIN tec_delivery_categories d ON d.external_id = c.id
LEFT JOIN tec_delivery_categories dp ON dp.external_id = c.parent
WHERE c.removed_at IS NULL AND c.content_hash IS DISTINCT FROM d.pushed_hash
  AND (t.status <> 'ok' OR (c.parent <> '0' AND NOT (dp.pushed_hash IS NOT NULL AND dp.enabled)))
"""

HELD_PRODUCTS = """
SELECT count(*) FROM onec_products p
LEFT JOIN tec_delivery_products d ON d.external_id = p.id
LEFT JOIN tec_delivery_categories dc ON dc.external_id = p.parent
WHERE p.removed_at IS NULL AND p.parent <> '0'
  AND p.content_hash IS DISTINCT FROM d.pushed_hash
  AND NOT (dc.pushed_hash IS NOT NULL AND dc.enabled)
"""


@dataclass
class PushTally:
    attempted: int = 0
    delivered: int = 0
    rejected: int = 0
    dead_lettered: int = 0
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


def pending_batch(
    con,
    entity: str,
    *,
    repush_all: bool,
    depth: int,
    after: str,
    options: MappingOptions,
    size: int = 100,
) -> list[Pending]:
    sql = PENDING_CATEGORIES if entity == "categories" else PENDING_PRODUCTS
    params: dict[str, Any] = {"all": repush_all, "after": after, "limit": size}
    if entity == "categories":
        params["depth"] = depth
    rows = con.execute(sql, params).fetchall()
    batch = []
    for _, item_id, record_json, desired, removed, enabled in rows:
        record = json.loads(record_json)
        # Send `enable` only with news: false for a removal, true for a comeback.
        enable = False if removed else (True if enabled is False else None)
        item = (
            category_item(record, enable)
            if entity == "categories"
            else product_item(record, options, enable)
        )
        batch.append(Pending(item_id, item, desired, removed))
    return batch


def record_outcome(
    con,
    entity: str,
    items: list[Pending],
    outcome: BatchOutcome,
    *,
    run_id: str,
    started_at,
    single_rejection: bool,
    max_attempts: int,
) -> None:
    """One transaction per HTTP request: the batch log row and every item's state together."""
    batch_id = str(uuid.uuid4())
    table = PUSH_TABLE[entity]
    now = utcnow()
    with transaction(con):
        con.execute(
            "INSERT INTO push_batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                batch_id,
                run_id,
                entity,
                started_at,
                outcome.duration_ms,
                len(items),
                [p.id for p in items],
                outcome.http_status,
                outcome.ok,
                outcome.error,
                outcome.body,
            ],
        )
        state = pa.table(
            {
                "external_id": [p.id for p in items],
                "desired": [p.desired for p in items],
                "enabled": [not p.removed for p in items],
            }
        )
        con.register("state", state)
        if outcome.ok:
            con.execute(
                f"""INSERT INTO {table} AS d (external_id, pushed_hash, pushed_at, enabled, attempts,
                        last_error, last_attempt_at, dead_lettered_at, last_batch_id)
                    SELECT external_id, desired, $now, enabled, 0, NULL, $now, NULL, $batch FROM state
                    ON CONFLICT (external_id) DO UPDATE SET pushed_hash = excluded.pushed_hash,
                        pushed_at = excluded.pushed_at, enabled = excluded.enabled, attempts = 0,
                        last_error = NULL, last_attempt_at = excluded.last_attempt_at,
                        dead_lettered_at = NULL, last_batch_id = excluded.last_batch_id""",
                {"now": now, "batch": batch_id},
            )
        elif single_rejection:
            con.execute(
                f"""INSERT INTO {table} AS d (external_id, attempts, last_error, last_attempt_at,
                        dead_lettered_at, last_batch_id)
                    SELECT external_id, 1, $error, $now, CASE WHEN 1 >= $max THEN $now END, $batch FROM state
                    ON CONFLICT (external_id) DO UPDATE SET attempts = d.attempts + 1,
                        last_error = excluded.last_error, last_attempt_at = excluded.last_attempt_at,
                        dead_lettered_at = CASE WHEN d.attempts + 1 >= $max THEN excluded.last_attempt_at
                                                ELSE d.dead_lettered_at END,
                        last_batch_id = excluded.last_batch_id""",
                {"now": now, "batch": batch_id, "error": outcome.error, "max": max_attempts},
            )


def deliver(
    con,
    client: TecDeliveryClient,
    entity: str,
    items: list[Pending],
    tally: PushTally,
    *,
    run_id: str,
    log,
    max_attempts: int,
) -> None:
    """Send one batch; on rejection split it in halves until each offender stands alone."""
    started_at = utcnow()
    outcome = client.put_products([p.item for p in items])
    tally.http_requests += 1
    single = outcome.rejected and len(items) == 1
    record_outcome(
        con,
        entity,
        items,
        outcome,
        run_id=run_id,
        started_at=started_at,
        single_rejection=single,
        max_attempts=max_attempts,
    )
    if outcome.ok:
        tally.delivered += len(items)
        return
    if outcome.fatal:
        raise PushAborted(outcome.error)
    if not outcome.rejected:
        raise PushAborted(outcome.error)
    if len(items) > 1:
        middle = len(items) // 2
        deliver(
            con,
            client,
            entity,
            items[:middle],
            tally,
            run_id=run_id,
            log=log,
            max_attempts=max_attempts,
        )
        deliver(
            con,
            client,
            entity,
            items[middle:],
            tally,
            run_id=run_id,
            log=log,
            max_attempts=max_attempts,
        )
        return
    tally.rejected += 1
    tally.failed_ids.append(items[0].id)
    log.warning(f"{entity}: Tec.Delivery rejected {items[0].id}: {outcome.error}")


def push_entity(
    context: dg.AssetExecutionContext,
    store: CatalogStore,
    client: TecDeliveryClient,
    entity: str,
    config: PushConfig,
) -> dg.MaterializeResult:
    """Categories go one depth level at a time, so when a level is sent every parent's fate is
    already in DuckDB: children of a category that was not delivered are held back rather
    than sent to be refused. Products go after all categories."""
    options = MappingOptions()
    tally = PushTally()
    with store.connect() as con:
        if entity == "categories":
            max_depth = con.execute(
                "SELECT coalesce(max(depth), -1) FROM category_tree"
            ).fetchone()[0]
            levels = range(max_depth + 1)
        else:
            levels = range(1)
        try:
            for depth in levels:
                after = ""
                while items := pending_batch(
                    con,
                    entity,
                    repush_all=config.repush_all,
                    depth=depth,
                    after=after,
                    options=options,
                ):
                    after = items[-1].id
                    tally.attempted += len(items)
                    tally.batches += 1
                    deliver(
                        con,
                        client,
                        entity,
                        items,
                        tally,
                        run_id=context.run_id,
                        log=context.log,
                        max_attempts=MAX_ATTEMPTS,
                    )
        except PushAborted as exc:
            tally.transport_error = str(exc)
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
            "last_batches": dg.MetadataValue.md(
                preview(
                    con,
                    "SELECT started_at, item_count, http_status, ok, duration_ms, error FROM push_batches "
                    "WHERE entity = ? AND run_id = ? ORDER BY started_at DESC",
                    [entity, context.run_id],
                )
            ),
        }
    if tally.failed_ids:
        metadata["failed_preview"] = dg.MetadataValue.text(", ".join(tally.failed_ids[:20]))
    if tally.transport_error:
        raise dg.Failure(
            description=f"Push of {entity} stopped; every undelivered item stays pending for the "
            f"next run. {tally.transport_error}",
            metadata=metadata,
        )
    if tally.attempted and tally.rejected / tally.attempted > MAX_REJECT_SHARE:
        raise dg.Failure(
            description=f"Tec.Delivery rejected {tally.rejected} of {tally.attempted} {entity} "
            f"(> {MAX_REJECT_SHARE:.0%}); see push_batches and {PUSH_TABLE[entity]}.last_error",
            metadata=metadata,
        )
    context.log.info(
        f"{entity}: pushed {tally.delivered} of {tally.attempted} in {tally.http_requests} requests"
    )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="tec_delivery",
    kinds={"duckdb"},
    pool=SYNC_POOL,
    deps=[category_tree],
    description="Categories pushed to Tec.Delivery (parents before children) and the outcome of each.",
)
def tec_delivery_categories(
    context: dg.AssetExecutionContext,
    config: PushConfig,
    store: CatalogStore,
    tec_delivery: TecDeliveryClient,
) -> dg.MaterializeResult:
    return push_entity(context, store, tec_delivery, "categories", config)


@dg.asset(
    group_name="tec_delivery",
    kinds={"duckdb"},
    pool=SYNC_POOL,
    deps=[onec_products, tec_delivery_categories],
    description="Products pushed to Tec.Delivery after all categories, and the outcome of each.",
)
def tec_delivery_products(
    context: dg.AssetExecutionContext,
    config: PushConfig,
    store: CatalogStore,
    tec_delivery: TecDeliveryClient,
) -> dg.MaterializeResult:
    return push_entity(context, store, tec_delivery, "products", config)
