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

A run that died between its steps (killed, out of memory, the store busy) can leave staged
changes that nothing downstream has taken in: a category staged (or removed) after the last
`category_tree` is in no push (the push reads the tree), a change staged after the last
outlet snapshot is at no outlet, and neither is "pending" or a change in 1C any more. So can
assets materialized one by one from the UI: a tree computed before the products were staged
took a category under a product for an orphan. The tick compares those timestamps and starts
a run for them (`DOWNSTREAM_BEHIND`).

After a pass that held its cursor (1C moved, or served a page that could not be used), the
next run re-reads from the held cursor. One such run is started at once; when passes keep
being held (a page 1C serves unusable every time), each further one waits twice as long, up to
15 minutes, so a bad page does not re-read the catalog every 30 seconds. Meanwhile that
entity's changes seen by the tick start no run either: the records behind the bad page are
unstaged and look changed on every tick, and the re-read takes any real change with it.

The tick never holds the store while it waits for 1C: DuckDB's read-only open locks out every
writing process, so it opens the store for each short read and closes it before the next
request (a run starting meanwhile waits milliseconds, not a 1C timeout).

Errors from 1C fail the tick (visible in the UI) rather than hide as a skip.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from catalog_assets.assets.tec_delivery import PENDING_COUNT
from catalog_assets.jobs import SYNC_ASSETS, SYNC_TAG, UI_JOB, incremental_sync
from catalog_assets.mapping import EPOCH, Rejection, validate_record
from catalog_assets.onec.client import OneCCatalogClient
from catalog_assets.storage import (
    STAGING_TABLE,
    CatalogStore,
    StoreBusyError,
    quarantine_key,
    schema_behind,
)

IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
RETRY_AFTER_FAILURE_SECONDS = 300
MAX_PAGES_PER_TICK = 5
HELD_RETRY_FIRST_SECONDS = 30  # after the second held pass in a row; doubled per further one
HELD_RETRY_MAX_SECONDS = 900
HELD_LOOKBACK = 16  # materializations read to count held passes in a row (enough for the cap)

# What staging changed after the steps downstream of it last ran (see the module docstring).
# A category's removal counts for the tree too: a live child of a removed parent is an orphan;
# so does a product staged after it that a category names as its parent (the tree tells a
# parent that is a product from an unknown one by the products staged).
DOWNSTREAM_BEHIND = """
SELECT
  greatest((SELECT max(greatest(staged_at, removed_at)) FROM onec_categories),
           (SELECT max(p.staged_at) FROM onec_products p
            WHERE p.id IN (SELECT parent FROM onec_categories)))
      > coalesce((SELECT max(computed_at) FROM category_tree), '-infinity'::TIMESTAMP),
  greatest((SELECT max(greatest(staged_at, removed_at)) FROM onec_categories),
           (SELECT max(greatest(staged_at, removed_at)) FROM onec_products),
           (SELECT max(computed_at) FROM category_tree))
      > coalesce((SELECT max(published_at) FROM outlet_snapshot_published), '-infinity'::TIMESTAMP)
"""


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
    onec: OneCCatalogClient,
    judge: Callable[[str, list], int] | None,
    entity: str,
    cursor: str,
    resume: list | None = None,
) -> EntityObservation:
    """Count genuine changes at or after the cursor, reading as few pages as proves it, from
    where the previous tick stopped (`resume`) if it stopped short at the same cursor.
    `judge` counts a page's changed records (`count_changed` on a briefly opened store); None
    when there is no store yet, so everything 1C has is a change."""
    type_ = "category" if entity == "categories" else "product"
    changed = 0
    requests = 0
    offset = start = resume[2] if resume and resume[0] == cursor else 0
    swept = resume[1] if start else None  # 1C's count at the cursor when the sweep began
    while requests < MAX_PAGES_PER_TICK:
        page = onec.fetch_page(type=type_, modified_since=cursor, offset=offset)
        requests += 1
        if judge is None:
            return EntityObservation(entity, cursor, page.count, requests)
        if swept is not None and page.count != swept:
            if page.count > swept:  # records new at the cursor: created, or edited from before
                return EntityObservation(entity, cursor, page.count - swept, requests, None, start)
            offset = start = 0  # fewer (deleted in 1C): the pages swept have moved, start again
            swept = None
            continue
        swept = None
        changed += judge(entity, page.records)
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


def _held(record) -> bool:
    consistent = record.asset_materialization.metadata.get("pass_consistent")
    return consistent is not None and getattr(consistent, "value", consistent) is False


def held_retry_wait(held_in_a_row: int) -> float:
    """Seconds to wait after the latest of `held_in_a_row` held passes before the next re-read:
    none after the first (1C moving under a pass is usually over by then), then doubling."""
    if held_in_a_row <= 1:
        return 0.0
    return min(HELD_RETRY_MAX_SECONDS, HELD_RETRY_FIRST_SECONDS * 2 ** (held_in_a_row - 2))


def held_cursors(instance: dg.DagsterInstance, now: float) -> tuple[list[str], dict[str, str]]:
    """Entities whose latest pass held its cursor (1C moved, or a page was unusable) and are
    due for a re-read now, and those that wait (with how long), per `held_retry_wait`.

    A tick only reads a few pages from the cursor, and after a held pass the item that slid
    past us can be anywhere behind it, so "no change in the first pages" proves nothing then.
    """
    due: list[str] = []
    waiting: dict[str, str] = {}
    for entity, table in STAGING_TABLE.items():
        records = instance.fetch_materializations(dg.AssetKey(table), limit=HELD_LOOKBACK).records
        in_a_row = next((i for i, r in enumerate(records) if not _held(r)), len(records))
        if not in_a_row:
            continue
        left = records[0].timestamp + held_retry_wait(in_a_row) - now
        if left <= 0:
            due.append(entity)
        else:
            waiting[entity] = f"{in_a_row} held passes in a row; next re-read in {left:.0f}s"
    return due, waiting


# A run of the asset graph started from the UI (a resync, README) carries no job tag: it is a
# sync in flight if it materializes any of the sync's assets.
SYNC_ASSET_KEYS = frozenset(key for asset in SYNC_ASSETS for key in asset.keys)


def _sync_in_flight(instance: dg.DagsterInstance) -> dg.DagsterRun | None:
    """Two narrow queries, not every run in flight: a monitor tick may queue one health run per
    outlet, and this runs every 30 s."""
    tagged = instance.get_run_records(
        dg.RunsFilter(statuses=IN_FLIGHT, tags={SYNC_TAG: ["full", "incremental"]}), limit=1
    )
    if tagged:
        return tagged[0].dagster_run
    for record in instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT, job_name=UI_JOB)):
        if SYNC_ASSET_KEYS & (record.dagster_run.asset_selection or frozenset()):
            return record.dagster_run
    return None


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
    in_flight = _sync_in_flight(context.instance)
    if in_flight:
        return dg.SkipReason(f"a sync run is already in flight ({in_flight.run_id})")
    latest = _latest_sync(context.instance)
    if latest and latest.dagster_run.status == dg.DagsterRunStatus.FAILURE and latest.end_time:
        wait = latest.end_time + RETRY_AFTER_FAILURE_SECONDS - time.time()
        if wait > 0:
            return dg.SkipReason(
                f"the last sync ({latest.dagster_run.run_id}) failed; next attempt in {wait:.0f}s"
            )
    sweep = load_sweep(context.cursor)
    entities = ("categories", "products")

    def judge(entity: str, records: list) -> int:
        with store.connect(read_only=True, lock_timeout=2) as con:
            return count_changed(con, entity, records)

    try:
        try:
            with store.connect(read_only=True, lock_timeout=2) as con:
                cursors = dict(
                    con.execute("SELECT entity, modified_since FROM sync_cursors").fetchall()
                )
                outdated = schema_behind(con)
                pending, tree_behind, snapshot_behind = 0, False, False
                if not outdated:  # its queries need what the store lacks: a run adds it
                    (pending,) = con.execute(
                        PENDING_COUNT, {"all": False, "depth": None}
                    ).fetchone()
                    tree_behind, snapshot_behind = con.execute(DOWNSTREAM_BEHIND).fetchone()
            judging: Callable[[str, list], int] | None = judge
        except FileNotFoundError:  # no store yet: everything 1C has is a change
            cursors, pending, tree_behind, snapshot_behind, judging = {}, 0, False, False, None
            outdated = []
        observations = [
            observe_entity(onec, judging, e, cursors.get(e, EPOCH), sweep.get(e)) for e in entities
        ]
    except StoreBusyError as exc:
        return dg.SkipReason(f"catalog store busy, will look again next tick: {exc}")
    seen = "; ".join(o.describe() for o in observations)
    requests = sum(o.requests for o in observations)
    held, waiting = held_cursors(context.instance, time.time())
    changed = sum(o.changed for o in observations if o.entity not in waiting)
    sweep = {o.entity: o.resume for o in observations if o.resume}
    behind = [
        what
        for what, is_behind in (
            ("category_tree", tree_behind),
            ("outlet_feed_snapshot", snapshot_behind),
        )
        if is_behind
    ]
    if not changed and not pending and not held and not behind and not outdated:
        context.update_cursor(json.dumps({"sweep": sweep}) if sweep else None)
        also = "".join(f"; {entity}: {why}" for entity, why in waiting.items())
        return dg.SkipReason(
            f"no genuine change in 1C ({seen}; {requests} requests) and nothing pending{also}"
        )
    reason = f"{seen}; {pending} items pending delivery"
    if held:
        reason += (
            f"; the last pass of {', '.join(held)} held its cursor (1C moved, or a page was "
            "unusable): re-reading from the held cursor"
        )
    if behind:
        reason += (
            f"; staged changes newer than the last {' and '.join(behind)} (a run that stopped "
            "between its steps)"
        )
    if outdated:
        reason += (
            f"; the catalog store predates this code's schema (it lacks {', '.join(outdated[:5])}"
            f"{', …' if len(outdated) > 5 else ''}): the run brings it up to date"
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
