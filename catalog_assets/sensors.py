"""`onec_change_sensor`: ask 1C cheaply whether anything changed, and only then start a sync.

A tick costs one request per entity: the first page at the stored cursor. Because
`modified_since` is inclusive, that page always holds the items sitting exactly at the cursor;
they are compared by content hash with what is staged, so re-delivered items are not mistaken
for changes. A category changed deep in the tree is seen because the category query is flat
(no `parent`), not a walk.

"Pending" is what the next push would send (`PENDING_COUNT`, the push's own queries): an item
held back by its parent waits for 1C to fix the parent, which the tick sees as a change, so it
does not start a run every tick meanwhile (the `no_held_back_items` check shows it).

A record 1C serves exactly as it sits in `quarantine` is no change either: the cursor cannot
pass a record that was never staged, so it comes back every tick until 1C fixes it, and
counting it would start a run every tick that only quarantines it again.

A tick reads at most `MAX_PAGES_PER_TICK` pages of an entity. When they all hold unchanged
items and 1C has more at the cursor (a bulk edit within one second leaves hundreds of items
at it, served again every tick), the tick remembers where it stopped in the sensor's cursor
and the next one reads on from there, so a change behind such a run of items is found within
a sweep (pages / 5 ticks) instead of never.

Errors from 1C fail the tick (visible in the UI) rather than hide as a skip.
"""

import json
import time
from dataclasses import dataclass

import dagster as dg

from catalog_assets.assets.tec_delivery import PENDING_COUNT
from catalog_assets.jobs import SYNC_TAG, incremental_sync
from catalog_assets.mapping import EPOCH, Rejection, validate_record
from catalog_assets.onec.client import OneCCatalogClient
from catalog_assets.storage import (
    STAGING_TABLE,
    CatalogStore,
    StoreBusyError,
    quarantine_key,
)

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
    resume: list | None = None  # [cursor, count, offset] where the next tick reads on
    started_at: int = 0

    def describe(self) -> str:
        where = f" from offset {self.started_at}" if self.started_at else ""
        more = (
            f" (more at the cursor: the next tick reads on from {self.resume[2]})"
            if self.resume
            else ""
        )
        return f"{self.entity}: {self.changed} changed at or after {self.cursor}{where}{more}"


def count_changed(con, entity: str, records: list) -> int:
    """Records that differ from both their staged version and their open quarantine row."""
    judged = [
        validate_record(r, "category" if entity == "categories" else "product") for r in records
    ]
    ids = [j.id for j in judged if not isinstance(j, Rejection)]
    staged = (
        dict(
            con.execute(
                f"SELECT id, content_hash FROM {STAGING_TABLE[entity]} "
                "WHERE removed_at IS NULL AND id IN (SELECT unnest($ids))",
                {"ids": ids},
            ).fetchall()
        )
        if ids
        else {}
    )
    keys = [quarantine_key(j) for j in judged if isinstance(j, Rejection)]
    quarantined = (
        dict(
            con.execute(
                "SELECT record_key, raw FROM quarantine WHERE entity = $entity "
                "AND resolved_at IS NULL AND record_key IN (SELECT unnest($keys))",
                {"entity": entity, "keys": keys},
            ).fetchall()
        )
        if keys
        else {}
    )
    return sum(
        1
        for j in judged
        if (
            quarantined.get(quarantine_key(j)) != j.raw
            if isinstance(j, Rejection)
            else staged.get(j.id) != j.content_hash
        )
    )


def observe_entity(
    onec: OneCCatalogClient, con, entity: str, resume: list | None = None
) -> EntityObservation:
    """Count genuine changes at or after the cursor, reading as few pages as proves it, from
    where the previous tick stopped (`resume`) if it stopped short at the same cursor."""
    row = (
        con.execute("SELECT modified_since FROM sync_cursors WHERE entity = ?", [entity]).fetchall()
        if con
        else []
    )
    cursor = row[0][0] if row else EPOCH
    type_ = "category" if entity == "categories" else "product"
    changed = 0
    requests = 0
    offset = start = resume[2] if resume and resume[0] == cursor else 0
    swept = resume[1] if start else None  # 1C's count at the cursor when the sweep began
    while requests < MAX_PAGES_PER_TICK:
        page = onec.fetch_page(type=type_, modified_since=cursor, offset=offset)
        requests += 1
        if con is None:
            return EntityObservation(entity, cursor, page.count, requests)
        if swept is not None and page.count != swept:
            if page.count > swept:  # records new at the cursor: created, or edited from before
                return EntityObservation(entity, cursor, page.count - swept, requests, None, start)
            offset = start = 0  # fewer (deleted in 1C): the pages swept have moved, start again
            swept = None
            continue
        swept = None
        changed += count_changed(con, entity, page.records)
        end = not page.records or offset + len(page.records) >= page.count
        if changed or end:
            return EntityObservation(entity, cursor, changed, requests, None, start)
        offset += len(page.records)
        resume = [cursor, page.count, offset]
    return EntityObservation(entity, cursor, changed, requests, resume, start)


def load_sweep(raw: str | None) -> dict:
    """Where each entity's sweep stopped, from the sensor's cursor (also its last reason)."""
    try:
        sweep = json.loads(raw).get("sweep") if raw else None
    except (ValueError, AttributeError):
        return {}
    if not isinstance(sweep, dict):
        return {}
    # Anything else than [cursor, count, offset] (an older or edited cursor) starts afresh.
    return {
        entity: where
        for entity, where in sweep.items()
        if isinstance(where, list)
        and len(where) == 3
        and isinstance(where[0], str)
        and all(isinstance(n, int) and n >= 0 for n in where[1:])
    }


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
    sweep = load_sweep(context.cursor)
    try:
        with store.connect(read_only=True, lock_timeout=2) as con:
            observations = [
                observe_entity(onec, con, e, sweep.get(e)) for e in ("categories", "products")
            ]
            pending = con.execute(PENDING_COUNT, {"all": False, "depth": None}).fetchall()[0][0]
    except FileNotFoundError:
        observations = [observe_entity(onec, None, e) for e in ("categories", "products")]
        pending = 0
    except StoreBusyError as exc:
        return dg.SkipReason(f"catalog store busy, will look again next tick: {exc}")
    seen = "; ".join(o.describe() for o in observations)
    requests = sum(o.requests for o in observations)
    changed = sum(o.changed for o in observations)
    held = held_cursors(context.instance)
    sweep = {o.entity: o.resume for o in observations if o.resume}
    if not changed and not pending and not held:
        context.update_cursor(json.dumps({"sweep": sweep}) if sweep else None)
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
        cursor=json.dumps({"reason": reason[:1000]}, ensure_ascii=False),
    )
