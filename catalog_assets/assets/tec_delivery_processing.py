"""`tec_delivery_processing`: what Tec.Delivery has finished processing (images, translation).

The webhook receiver (`catalog_assets.webhooks`) only appends verified notifications to its
SQLite spool; this asset copies new ones (by `seq`) into DuckDB's `tec_delivery_notifications`
and marks the items they name as processed, all in one transaction. The `seq` of the newest
ingested row is the cursor, so a crashed ingestion re-reads exactly what it did not commit.

A notification counts for an item only if it is about the request that delivered the item's
current content: Tec.Delivery's `request_id` is found in `push_batches.response_body`, and the
item's `last_batch_id` must be that batch. An item re-pushed since then waits for the newer
notification, so "processed" never describes content Tec.Delivery has not seen yet.
"""

from datetime import datetime

import dagster as dg
import duckdb

from catalog_assets.assets.onec import SYNC_POOL
from catalog_assets.assets.tec_delivery import apply_delivered, tec_delivery_products
from catalog_assets.jobs import SYNC_TAG
from catalog_assets.storage import (
    PUSH_TABLE,
    CatalogStore,
    StoreBusyError,
    preview,
    transaction,
    utcnow,
)
from catalog_assets.webhooks.spool import WebhookSpool

PROCESSING_SCHEMA = """
CREATE TABLE IF NOT EXISTS tec_delivery_notifications (
    seq BIGINT PRIMARY KEY, received_at TIMESTAMP NOT NULL, event VARCHAR NOT NULL,
    request_id VARCHAR NOT NULL, status VARCHAR NOT NULL, external_ids VARCHAR[] NOT NULL,
    batch_id VARCHAR, entity VARCHAR, ingested_at TIMESTAMP NOT NULL, run_id VARCHAR
);
"""

# An item is fully processed when Tec.Delivery said "done" about the request that carried
# its current content.
PROCESSED = "processing_status = 'done' AND processed_batch_id = last_batch_id"


def ingested_seq(con: duckdb.DuckDBPyConnection) -> int:
    try:
        return con.execute(
            "SELECT coalesce(max(seq), 0) FROM tec_delivery_notifications"
        ).fetchone()[0]
    except duckdb.CatalogException:  # read-only connection to a store never ingested into
        return 0


@dg.asset(
    group_name="tec_delivery",
    kinds={"duckdb"},
    pool=SYNC_POOL,
    deps=[tec_delivery_products],
    description="Tec.Delivery's 'processing finished' webhooks, ingested from the receiver's "
    "spool; marks delivered items as fully processed.",
)
def tec_delivery_processing(
    context: dg.AssetExecutionContext, store: CatalogStore, webhook_spool: WebhookSpool
) -> dg.MaterializeResult:
    with store.connect() as con:
        con.execute(PROCESSING_SCHEMA)
        # A sync killed between recording a batch and applying it leaves the items pointing at
        # their previous batch; matching a notification to them needs the batch applied.
        for entity in PUSH_TABLE:
            apply_delivered(con, entity)
        after = ingested_seq(con)
        incoming = webhook_spool.read_after(after)
        now = utcnow()
        with transaction(con):
            if incoming:
                # Imported here, not at the top: every run process loads this module, and
                # pyarrow (with numpy) is ~40 MB a sync never needs.
                import pyarrow as pa

                con.register(
                    "incoming",
                    pa.table(
                        {
                            "seq": pa.array([n.seq for n in incoming], pa.int64()),
                            "received_at": pa.array(
                                [datetime.fromisoformat(n.received_at) for n in incoming],
                                pa.timestamp("us"),
                            ),
                            "event": [n.event for n in incoming],
                            "request_id": [n.request_id for n in incoming],
                            "status": [n.status for n in incoming],
                            "external_ids": pa.array(
                                [n.external_ids for n in incoming], pa.list_(pa.string())
                            ),
                        }
                    ),
                )
                con.execute(
                    """INSERT INTO tec_delivery_notifications
                       SELECT i.seq, i.received_at, i.event, i.request_id, i.status, i.external_ids,
                              b.batch_id, b.entity, $now, $run
                       FROM incoming i LEFT JOIN (
                           SELECT regexp_extract(response_body, '"request_id"\\s*:\\s*"([^"]+)"', 1) AS rid,
                                  any_value(batch_id) AS batch_id, any_value(entity) AS entity
                           FROM push_batches WHERE ok GROUP BY rid
                       ) b ON b.rid = i.request_id""",
                    {"now": now, "run": context.run_id},
                )
                con.unregister("incoming")
                for entity, table in PUSH_TABLE.items():
                    # Only notifications about the batch that carried an item's current
                    # content count, and the latest of those wins: Tec.Delivery finishes out
                    # of order, so an older batch's notification may arrive after the
                    # current one's, and picking the latest first would drop the current.
                    con.execute(
                        f"""UPDATE {table} AS d SET processed_at = n.received_at,
                               processed_batch_id = n.batch_id, processing_status = n.status
                           FROM (
                               SELECT u.external_id, u.batch_id, u.received_at, u.status
                               FROM (
                                   SELECT unnest(external_ids) AS external_id, batch_id,
                                          received_at, status, seq
                                   FROM tec_delivery_notifications
                                   WHERE seq > $after AND entity = $entity) u
                               JOIN {table} c
                                 ON c.external_id = u.external_id AND c.last_batch_id = u.batch_id
                               QUALIFY row_number() OVER (PARTITION BY u.external_id ORDER BY u.seq DESC) = 1
                           ) n
                           WHERE d.external_id = n.external_id""",
                        {"after": after, "entity": entity},
                    )
        unmatched = con.execute(
            "SELECT count(*) FROM tec_delivery_notifications WHERE batch_id IS NULL"
        ).fetchone()[0]
        metadata: dict = {
            "new_notifications": len(incoming),
            "ingested_through_seq": ingested_seq(con),
            "unmatched_notifications": unmatched,
        }
        for entity, table in PUSH_TABLE.items():
            processed, awaiting = con.execute(
                f"""SELECT count(*) FILTER (WHERE {PROCESSED}),
                           count(*) FILTER (WHERE pushed_hash IS NOT NULL AND NOT coalesce({PROCESSED}, false))
                    FROM {table}"""
            ).fetchone()
            metadata[f"{entity}_processed"] = processed
            metadata[f"{entity}_awaiting_processing"] = awaiting
        metadata["latest"] = dg.MetadataValue.md(
            preview(
                con,
                "SELECT seq, received_at, status, request_id, len(external_ids) AS items, "
                "batch_id IS NOT NULL AS matched FROM tec_delivery_notifications ORDER BY seq DESC",
            )
        )
    if unmatched:
        context.log.warning(
            f"{unmatched} notifications name a request_id no recorded batch has (a batch in "
            "flight when a run crashed, or a call not meant for us); they are kept, not applied"
        )
    return dg.MaterializeResult(metadata=metadata)


tec_delivery_processing_job = dg.define_asset_job(
    "tec_delivery_processing_job",
    selection=dg.AssetSelection.assets(tec_delivery_processing),
    # The same run-queue tag as the syncs: DuckDB has one writer, so ingestion queues behind a
    # sync instead of waiting on its file lock.
    tags={SYNC_TAG: "webhooks"},
    description="Ingest Tec.Delivery's processing webhooks from the spool into DuckDB.",
)

_IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(
    job=tec_delivery_processing_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests an ingestion run when the webhook spool holds notifications DuckDB "
    "has not ingested yet.",
)
def tec_delivery_webhook_sensor(
    context: dg.SensorEvaluationContext, store: CatalogStore, webhook_spool: WebhookSpool
) -> dg.SensorResult | dg.SkipReason:
    spooled = webhook_spool.max_seq()
    if not spooled:
        return dg.SkipReason("no webhook notifications received yet")
    in_flight = context.instance.get_run_records(
        dg.RunsFilter(job_name=tec_delivery_processing_job.name, statuses=_IN_FLIGHT), limit=1
    )
    if in_flight:
        return dg.SkipReason(f"an ingestion run is in flight ({in_flight[0].dagster_run.run_id})")
    try:
        with store.connect(read_only=True, lock_timeout=2) as con:
            ingested = ingested_seq(con)
    except FileNotFoundError:
        return dg.SkipReason("no catalog store yet: run full_resync first")
    except StoreBusyError as exc:
        return dg.SkipReason(f"catalog store busy, will look again next tick: {exc}")
    if spooled <= ingested:
        return dg.SkipReason(f"all {ingested} notifications ingested")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(tags={"catalog/trigger": "tec_delivery_webhook_sensor"})],
        cursor=str(spooled),
    )
