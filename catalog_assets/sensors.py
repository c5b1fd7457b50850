"""`onec_change_sensor`: ask 1C cheaply whether anything changed, and only then start a sync.

A tick costs one request per entity: the first page at the stored cursor. Because
`modified_since` is inclusive, that page always holds the items sitting exactly at the cursor;
they are compared by content hash with what is staged, so re-delivered items are not mistaken
for changes. A category changed deep in the tree is seen because the category query is flat
(no `parent`), not a walk.

"Pending" is what the next push would send (`PENDING_COUNT`, the push's own queries): an item
held back by its parent waits for 1C to fix the parent, which the tick sees as a change, so it
does not start a run every tick meanwhile (the `no_held_back_items` check shows it).

Errors from 1C fail the tick (visible in the UI) rather than hide as a skip.
"""

import time
from dataclasses import dataclass

import dagster as dg

from catalog_assets.assets.tec_delivery import PENDING_COUNT
from catalog_assets.jobs import SYNC_TAG, incremental_sync
from catalog_assets.mapping import EPOCH, content_hash
from catalog_assets.onec.client import OneCCatalogClient
from catalog_assets.storage import STAGING_TABLE, CatalogStore, StoreBusyError

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
RETRY_AFTER_FAILURE_SECONDS = 300
MAX_PAGES_PER_TICK = 5


@dataclass
class EntityObservation:
    entity: str
    cursor: str
    changed: int
    requests: int

    def describe(self) -> str:
        return f"{self.entity}: {self.changed} changed at or after {self.cursor}"


def observe_entity(onec: OneCCatalogClient, con, entity: str) -> EntityObservation:
    """Count genuine changes at or after the cursor, reading as few pages as proves it."""
    table = STAGING_TABLE[entity]
    row = (
        con.execute("SELECT modified_since FROM sync_cursors WHERE entity = ?", [entity]).fetchone()
        if con
        else None
    )
    cursor = row[0] if row else EPOCH
    type_ = "category" if entity == "categories" else "product"
    changed = 0
    requests = 0
    offset = 0
    while requests < MAX_PAGES_PER_TICK:
        page = onec.fetch_page(type=type_, modified_since=cursor, offset=offset)
        requests += 1
        if con is None:
            return EntityObservation(entity, cursor, page.count, requests)
        ids = [r.get("id") for r in page.records if isinstance(r, dict)]
        staged = (
            dict(
                con.execute(
                    f"SELECT id, content_hash FROM {table} WHERE removed_at IS NULL AND id IN (SELECT unnest($ids))",
                    {"ids": ids},
                ).fetchall()
            )
            if ids
            else {}
        )
        changed += sum(
            1
            for r in page.records
            if not isinstance(r, dict) or staged.get(r.get("id")) != content_hash(r)
        )
        if changed or not page.records or offset + len(page.records) >= page.count:
            break
        offset += len(page.records)
    return EntityObservation(entity, cursor, changed, requests)


def held_cursors(instance: dg.DagsterInstance) -> list[str]:
    """Entities whose latest pass saw 1C move (cursor held): the next run must re-read them.

    A tick only reads a few pages from the cursor, and after a held pass the item that slid
    past us can be anywhere behind it, so "no change in the first pages" proves nothing then.
    """
    held = []
    for entity, table in STAGING_TABLE.items():
        event = instance.get_latest_materialization_event(dg.AssetKey(table))
        materialization = event.asset_materialization if event else None
        consistent = materialization.metadata.get("pass_consistent") if materialization else None
        if consistent is not None and getattr(consistent, "value", consistent) is False:
            held.append(entity)
    return held


def _latest_sync(instance: dg.DagsterInstance):
    records = instance.get_run_records(
        dg.RunsFilter(tags={SYNC_TAG: ["full", "incremental"]}), limit=1
    )
    return records[0] if records else None


@dg.sensor(
    job=incremental_sync,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts incremental_sync when 1C has genuine changes or items are still pending.",
)
def onec_change_sensor(
    context: dg.SensorEvaluationContext, onec: OneCCatalogClient, store: CatalogStore
) -> dg.SensorResult | dg.SkipReason:
    in_flight = context.instance.get_run_records(
        dg.RunsFilter(statuses=IN_FLIGHT, tags={SYNC_TAG: ["full", "incremental"]}), limit=1
    )
    if in_flight:
        return dg.SkipReason(f"a sync run is already in flight ({in_flight[0].dagster_run.run_id})")
    latest = _latest_sync(context.instance)
    if latest and latest.dagster_run.status == dg.DagsterRunStatus.FAILURE and latest.end_time:
        wait = latest.end_time + RETRY_AFTER_FAILURE_SECONDS - time.time()
        if wait > 0:
            return dg.SkipReason(
                f"the last sync ({latest.dagster_run.run_id}) failed; next attempt in {wait:.0f}s"
            )
    try:
        with store.connect(read_only=True, lock_timeout=2) as con:
            observations = [observe_entity(onec, con, e) for e in ("categories", "products")]
            pending = con.execute(PENDING_COUNT, {"all": False, "depth": None}).fetchone()[0]
    except FileNotFoundError:
        observations = [observe_entity(onec, None, e) for e in ("categories", "products")]
        pending = 0
    except StoreBusyError as exc:
        return dg.SkipReason(f"catalog store busy, will look again next tick: {exc}")
    seen = "; ".join(o.describe() for o in observations)
    requests = sum(o.requests for o in observations)
    changed = sum(o.changed for o in observations)
    held = held_cursors(context.instance)
    if not changed and not pending and not held:
        return dg.SkipReason(
            f"no genuine change in 1C ({seen}; {requests} requests) and nothing pending"
        )
    reason = f"{seen}; {pending} items pending delivery"
    if held:
        reason += (
            f"; 1C moved during the last pass of {', '.join(held)}: re-reading from the held cursor"
        )
    context.log.info(f"requesting incremental_sync: {reason}")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"onec-change-{time.time_ns()}",
                tags={"catalog/trigger": "onec_change_sensor"},
            )
        ],
        cursor=reason[:1000],
    )
