"""`outlet_monitor_sensor`: every outlet on the graph without 200 runs a minute.

One tick (every 60 s) reads outlets.yaml, the API's state file and the current snapshot, and
returns them as a `SensorResult`:

- `dynamic_partitions_requests` add a partition of `outlet_deliveries` for each outlet that
  appeared in outlets.yaml and delete the ones removed from it;
- `asset_events` carry, per outlet, a runless `AssetMaterialization` of its partition (last
  contact, acknowledged cursor per feed, lag), reported when the outlet's observed state changes
  and at least every `REPORT_EVERY_SECONDS`, so 200 quiet outlets do not write 200 events a
  minute;
- `run_requests` evaluate `outlet_is_live` for an outlet's partition only when its verdict
  changes (or it is new): a small run of `outlet_health_job` (the partition's materialization
  plus its check). Why not a runless `AssetCheckEvaluation` in `asset_events`, which
  SensorResult does accept in 1.13: the event log stores runless evaluations with run_id ""
  and its unique index is (asset, check, run_id, partition), so the second runless evaluation of
  the same outlet's partition fails the insert (dagster/_core/storage/event_log/
  sql_event_log.py, `_store_runless_asset_check_evaluation`). A run per verdict change is the
  closest supported mechanism and stays rare;
- alerts go through the project's `Notifier` on transitions only (`incident_transitions`), the
  open incidents kept in the sensor cursor: one message when an outlet goes silent or falls
  behind, one when it recovers. An incident is stored as open (or closed) only once its
  message was delivered, so an alert channel that is down on that tick is tried again on the
  next, as `catalog_alerts` does. More than `GROUP_ALERTS_ABOVE` outlets changing at once (an
  outage on our side) is one message each way, not one per outlet.

When outlets.yaml cannot be read, the outlets of its last readable version stay monitored
(the loader lives as long as the process; in a fresh one there are none to monitor): no
partition is deleted, no incident is closed as "removed", no check run is started (its own
process could not read the file either), and the unreadable file is an incident of its own.

When each outlet was first seen, from which a never-called outlet's silence counts, is kept
in the API's state file (`OutletState.registered`), where the check runs this sensor starts
read it too.
"""

import hashlib
import json
from datetime import datetime

import dagster as dg

from catalog_assets.assets.outlets import (
    OUTLET_PARTITIONS,
    assess_outlets,
    outlet_deliveries,
    outlet_health_job,
)
from catalog_assets.notifier import Notifier, incident_transitions
from catalog_assets.outlets.health import OutletHealth
from catalog_assets.outlets.resource import OutletHub
from catalog_assets.outlets.state import utc_now

REPORT_EVERY_SECONDS = 600
# More outlet transitions than this in one tick (an outage on our side silences every outlet
# in the same minute) go out as one message each way: 200 posts, each allowed the notifier's
# timeout, could push a tick past Dagster's 60 s limit, losing its cursor so that every
# message went again the next minute. The message lists the first `GROUP_LISTED`.
GROUP_ALERTS_ABOVE = 5
GROUP_LISTED = 10
INCIDENT_PREFIX = "outlet:"
REGISTRY_INCIDENT = "registry:outlets.yaml"


def load_cursor(raw: str | None) -> dict:
    """The sensor's memory; an unreadable cursor starts afresh rather than failing every tick."""
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    return {
        "open": dict(data.get("open") or {}),
        "seen": dict(data.get("seen") or {}),
        "reported": dict(data.get("reported") or {}),
        "verdicts": dict(data.get("verdicts") or {}),
    }


def fingerprint(health: OutletHealth) -> str:
    """What changes an outlet's report: contact, acknowledgements, verdict, problem."""
    material = json.dumps(
        [
            health.last_contact_at.isoformat() if health.last_contact_at else None,
            {e: f.acked_seq for e, f in sorted(health.feeds.items())},
            health.healthy,
            health.problem,
        ],
        sort_keys=True,
    )
    return hashlib.sha1(material.encode()).hexdigest()[:12]


def alert_text(outlet_id: str, name: str, problem: str, recovered: bool) -> str:
    if recovered:
        return f"Outlet {outlet_id} ({name}) recovered; it was: {problem}"
    return f"Outlet {outlet_id} ({name}) needs attention: {problem}"


def incident_text(key: str, problem: str, health: dict[str, OutletHealth], recovered: bool) -> str:
    if key == REGISTRY_INCIDENT:
        if recovered:
            return f"outlets.yaml is readable again; it was: {problem}"
        return (
            f"outlets.yaml cannot be read: {problem}. Outlets of its last readable version "
            f"stay monitored ({len(health)} now); none is added or removed until it is fixed"
        )
    outlet_id = key[len(INCIDENT_PREFIX) :]
    name = health[outlet_id].name if outlet_id in health else "removed from outlets.yaml"
    return alert_text(outlet_id, name, problem, recovered)


def send_transitions(
    notifier: Notifier, changed: dict[str, str], health: dict[str, OutletHealth], recovered: bool
) -> list[str]:
    """The incident keys whose message was delivered: one message each, or one for all the
    outlets when more than `GROUP_ALERTS_ABOVE` changed at once (the registry's incident
    always goes on its own)."""
    outlets = [k for k in changed if k.startswith(INCIDENT_PREFIX)]
    grouped = outlets if len(outlets) > GROUP_ALERTS_ABOVE else []
    delivered = [
        k
        for k in changed
        if k not in grouped and notifier.send(incident_text(k, changed[k], health, recovered))
    ]
    if grouped:
        lines = [f"- {incident_text(k, changed[k], health, recovered)}" for k in grouped]
        if len(lines) > GROUP_LISTED:
            more = len(lines) - GROUP_LISTED
            lines[GROUP_LISTED:] = [
                f"- … and {more} more (each is a partition of outlet_deliveries)"
            ]
        head = "recovered" if recovered else "need attention"
        if notifier.send(f"{len(grouped)} outlets {head}:\n" + "\n".join(lines)):
            delivered += grouped
    return delivered


@dg.sensor(
    job=outlet_health_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps one outlet_deliveries partition per outlet in outlets.yaml, reports each "
    "outlet's contact and lag, and alerts once when an outlet goes silent and once on recovery.",
)
def outlet_monitor_sensor(
    context: dg.SensorEvaluationContext, outlet_hub: OutletHub, notifier: Notifier
) -> dg.SensorResult:
    memory = load_cursor(context.cursor)
    now = utc_now()
    # First-seen times an older version of this sensor kept in its cursor.
    seed = {k: datetime.fromisoformat(v) for k, v in memory["seen"].items()}
    assessed = assess_outlets(outlet_hub, seed)
    health, general, unreadable = assessed.health, assessed.general, assessed.unreadable
    known = set(context.instance.get_dynamic_partitions(OUTLET_PARTITIONS.name))
    wanted = set(health)
    requests = []
    if wanted - known:
        requests.append(OUTLET_PARTITIONS.build_add_request(sorted(wanted - known)))
    if known - wanted and unreadable is None:
        requests.append(OUTLET_PARTITIONS.build_delete_request(sorted(known - wanted)))

    events: list = []
    # Outlets the file no longer shows keep their memory while it cannot be read: when it can
    # again, they are not new (no report, no check run, no alert for each).
    reported: dict[str, list] = {} if unreadable is None else dict(memory["reported"])
    for outlet_id, outlet in health.items():
        stamp = fingerprint(outlet)
        previous = memory["reported"].get(outlet_id)
        due = (
            previous is None
            or previous[0] != stamp
            or now.timestamp() - previous[1] >= REPORT_EVERY_SECONDS
        )
        if not due:
            reported[outlet_id] = previous
            continue
        events.append(
            dg.AssetMaterialization(
                asset_key=outlet_deliveries.key, partition=outlet_id, metadata=outlet.metadata()
            )
        )
        reported[outlet_id] = [stamp, now.timestamp()]

    runs = []
    verdicts: dict[str, str] = {} if unreadable is None else dict(memory["verdicts"])
    # While the file cannot be read, a check run (a process that never read it) could not
    # find the outlet: verdicts stay as they were, and one that changed meanwhile gets its
    # run on the first tick the file is readable again.
    for outlet_id, outlet in health.items() if unreadable is None else ():
        if outlet_id not in known:
            # A partition added by this tick gets its first check run on the next tick, once
            # the instance holds it, so a check run never races its partition's creation.
            continue
        verdict = "live" if outlet.healthy else "failing"
        verdicts[outlet_id] = verdict
        if memory["verdicts"].get(outlet_id) != verdict:
            runs.append(
                dg.RunRequest(
                    run_key=f"outlet-check-{outlet_id}-{verdict}-{int(now.timestamp())}",
                    partition_key=outlet_id,
                    tags={"catalog/trigger": "outlet_monitor_sensor"},
                )
            )

    # Outlets removed from outlets.yaml are not "observed healthy": their incidents close
    # explicitly, with a recovery message that says why.
    current: dict[str, str | None] = {
        INCIDENT_PREFIX + k: (None if h.healthy else h.problem) for k, h in health.items()
    }
    if unreadable is None:
        for key in memory["open"]:
            if key.startswith(INCIDENT_PREFIX) and key[len(INCIDENT_PREFIX) :] not in health:
                current[key] = None
    current[REGISTRY_INCIDENT] = unreadable
    transitions = incident_transitions(memory["open"], current)
    still_open = dict(memory["open"])
    for key in send_transitions(notifier, transitions.opened, health, recovered=False):
        still_open[key] = transitions.opened[key]
    for key in send_transitions(notifier, transitions.resolved, health, recovered=True):
        still_open.pop(key, None)

    for problem in general:
        context.log.warning(f"outlet registry: {problem}")
    cursor = json.dumps(
        {"open": still_open, "reported": reported, "verdicts": verdicts},
        ensure_ascii=False,
    )
    return dg.SensorResult(
        run_requests=runs, dynamic_partitions_requests=requests, asset_events=events, cursor=cursor
    )
