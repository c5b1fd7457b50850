"""`catalog_alerts`: one message when something breaks, one when it recovers, nothing between.

The case study's complaint was outlets holding stale data because a transfer failed unnoticed,
so every way this project reports trouble ends up here:

- a job's latest finished run failed (`run:<job>`); it recovers when a later run succeeds.
  Runs started from the UI's asset graph are judged per asset instead (`materialize:<asset>`,
  see `run_outcomes`). A run that failed and was followed by a success before the next tick is
  still an incident: it opens and recovers on that tick (the cursor keeps, per incident key, up
  to when its runs were heard, and up to when the runs were read: see `finished_runs`);
- a sensor's or schedule's latest finished tick failed (`tick:<name>`); it recovers when one
  succeeds or skips. A sensor that raises starts no run, so no run fails: `onec_change_sensor`
  refused by 1C (a rotated password) would keep every change from syncing, unheard. This
  sensor's own ticks are not watched: it cannot report itself;
- an asset check's latest evaluation failed (`check:<asset>/<check>[@partition]`); it recovers
  when the check passes again. Every check in the code location is watched, including ones
  added later, so a new check alerts without touching this file. A check that sends its own
  alerts opts out with `metadata={"catalog/alerts": "self"}` on its spec. A check, job or asset
  renamed or removed is never observed again, so its open incident is closed, saying so.

The open incidents live in the sensor cursor; `notifier.incident_transitions` decides what
opened and what recovered. A check incident opened as a WARN that turns ERROR (a rejected item
dead-lettered: no more retries, an operator must act) sends one more message, `escalated`. A
transition is stored only after its message was delivered, so a webhook that is down makes
the sensor try again next tick instead of forgetting the incident.
"""

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.events import DagsterEvent
from dagster._core.scheduler.instigation import InstigatorStatus, TickStatus
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from catalog_assets.jobs import UI_JOB
from catalog_assets.notifier import Notifier, incident_transitions

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
RECENT_RUNS = 200
# A run's update time is when its worker wrote the last event, by the worker's clock, and the
# write lands a moment later: a tick reads again the runs that finished this long before the
# last one it read, so one stored late (or on a clock a little behind) is not skipped.
READ_AGAIN_SECONDS = 300.0
OPT_OUT = ("catalog/alerts", "self")
TEXT_LIMIT = 300


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


@dataclass(frozen=True)
class Outcome:
    """What one finished run says of one incident: it failed it, or it vouches it is fine."""

    record: dg.RunRecord
    failed: bool


@dataclass(frozen=True)
class FailedRun:
    """What a failed run's event log says: why it failed, and what it materialized first."""

    reason: str
    materialized: frozenset[dg.AssetKey]


# A finished run's event log never changes, but each tick judges the last RECENT_RUNS runs
# (and those of the last READ_AGAIN_SECONDS) again, every 30 s: one read per failed run (run
# ids are unique), bounded, oldest dropped.
_FAILED_RUNS: dict[str, FailedRun] = {}
_FAILED_RUNS_LIMIT = 4 * RECENT_RUNS
_READ = {
    dg.DagsterEventType.STEP_FAILURE,
    dg.DagsterEventType.RUN_FAILURE,
    dg.DagsterEventType.ASSET_MATERIALIZATION,
}


def failed_run(instance: dg.DagsterInstance, run_id: str) -> FailedRun:
    if run_id not in _FAILED_RUNS:
        if len(_FAILED_RUNS) >= _FAILED_RUNS_LIMIT:
            del _FAILED_RUNS[next(iter(_FAILED_RUNS))]
        events = [e.dagster_event for e in instance.all_logs(run_id, of_type=_READ)]
        events = [e for e in events if e is not None]
        made = frozenset(e.asset_key for e in events if e.is_step_materialization and e.asset_key)
        _FAILED_RUNS[run_id] = FailedRun(_failure_reason(events), made)
    return _FAILED_RUNS[run_id]


def _failure_reason(events: list[DagsterEvent]) -> str:
    """The first step failure's message (our errors name the request, never a credential).

    An exception raised in a step reaches the event log wrapped ("Error occurred while executing
    op ..."), with ours as its cause: the alert quotes the cause, which says what went wrong."""
    for event in events:
        data = event.step_failure_data if event.is_step_failure else None
        if data and data.error:
            error = data.error
            while error.cls_name == "DagsterExecutionStepExecutionError" and error.cause:
                error = error.cause
            return f"{event.step_key}: {error.message.strip()}"
    for event in events:
        if event.event_type == dg.DagsterEventType.RUN_FAILURE:
            return event.message or "run failed"
    return "run failed"


def _defined(key: str, repository: dg.RepositoryDefinition | None) -> bool:
    """Whether a run incident's job or asset is still in the code location (unknown: yes)."""
    if repository is None:
        return True
    if key.startswith("tick:"):
        name = key.removeprefix("tick:")
        return repository.has_sensor_def(name) or repository.has_schedule_def(name)
    if key.startswith("materialize:"):
        return repository.asset_graph.has(dg.AssetKey.from_user_string(key[len("materialize:") :]))
    job = key.removeprefix("run:")
    return job.startswith(UI_JOB) or repository.has_job(job)


def executed(
    run: dg.DagsterRun,
    keys: Collection[dg.AssetKey],
    repository: dg.RepositoryDefinition | None,
) -> frozenset[dg.AssetKey]:
    """`keys` but those whose step the run did not execute. A re-execution ("from failure", or
    of selected steps) carries its parent's asset selection (none for a job's whole run) and
    runs only some of its steps: its success says nothing of an asset it did not run, whose
    own failure from the UI meanwhile is still open."""
    steps = run.step_keys_to_execute
    if steps is None or repository is None or not repository.has_job(run.job_name):
        return frozenset(keys)
    layer = repository.get_job(run.job_name).asset_layer
    return frozenset(
        key
        for key in keys
        if layer.has(key) and str(layer.get_op_output_handle(key).node_handle) in steps
    )


def run_outcomes(
    instance: dg.DagsterInstance,
    record: dg.RunRecord,
    repository: dg.RepositoryDefinition | None,
    asked: frozenset[str] = frozenset(),
) -> dict[str, bool]:
    """Incident key -> whether this run failed it; none for a job or asset no longer defined,
    whose old failures would otherwise reopen the incident `retired_incidents` closed.

    A job's run is its `run:<job>` incident. Every run started from the UI shares Dagster's
    implicit job, so under one key a snapshot refreshed by hand would "recover" a re-push that
    failed: those runs are judged per asset (`materialize:<asset>`), failed for each selected
    asset they did not materialize. A job's success vouches for every asset it materialized:
    those its run selected (a subset chosen on the job's page, a re-execution), else the job's;
    its failure, for those its event log says it materialized before failing, read only when
    one of them is `asked` (an open incident, or one a run from the asset graph spoke of).
    Either way only assets whose steps the run executed (`executed`).
    """
    run = record.dagster_run
    failed = run.status == dg.DagsterRunStatus.FAILURE
    if run.job_name.startswith(UI_JOB) and run.asset_selection:
        made = failed_run(instance, run.run_id).materialized if failed else frozenset()
        outcomes = {
            f"materialize:{key.to_user_string()}": failed and key not in made
            for key in executed(run, run.asset_selection, repository)
        }
    else:
        outcomes = {f"run:{run.job_name}": failed}
        # A run from the asset graph with no asset selected ran checks only ("Execute" on a
        # check): it vouches for nothing. A job's run of a subset records it; its whole run
        # records none (or an empty one), and materialized the job's assets. A failed one
        # vouches for what its event log says it materialized (a sync whose snapshot step
        # failed still pushed the products), as a failed run from the asset graph does.
        if (
            not run.job_name.startswith(UI_JOB)
            and repository is not None
            and repository.has_job(run.job_name)
        ):
            made = executed(
                run,
                run.asset_selection
                or repository.get_job(run.job_name).asset_layer.selected_asset_keys,
                repository,
            )
            if failed:
                names = {f"materialize:{key.to_user_string()}" for key in made}
                made = failed_run(instance, run.run_id).materialized if names & asked else ()
            for key in made:
                outcomes[f"materialize:{key.to_user_string()}"] = False
    return {key: failed for key, failed in outcomes.items() if _defined(key, repository)}


def finished_runs(
    instance: dg.DagsterInstance,
    open_keys: Collection[str],
    repository: dg.RepositoryDefinition | None = None,
    read_to: float | None = None,
) -> dict[str, list[Outcome]]:
    """Incident key -> what the recently finished runs said of it, the last to finish first.

    Not the last started: runs of one job queue behind each other, but a key shared by a job
    and runs from the asset graph (`materialize:<asset>`) hears from runs whose steps took
    turns in the store's pool, and one started earlier can fail after a later one succeeded.
    So the last RECENT_RUNS to finish, and every run that finished since `read_to` (the last
    update the previous tick read; None on the first tick): an outage makes 200+ outlets each
    start an `outlet_health_job` run between two ticks, which would push a long resync that
    failed meanwhile out of any fixed window, and its failure would never be heard. Both read
    the runs by when they finished, so a key hears of its latest run, not an earlier one."""
    records = instance.get_run_records(
        dg.RunsFilter(statuses=FINISHED), limit=RECENT_RUNS, order_by="update_timestamp"
    )
    if read_to is not None:
        since = datetime.fromtimestamp(max(read_to - READ_AGAIN_SECONDS, 0.0), tz=UTC)
        records = [
            *records,
            *instance.get_run_records(dg.RunsFilter(statuses=FINISHED, updated_after=since)),
        ]
    unique = {r.dagster_run.run_id: r for r in records}.values()
    # A failed job's run costs an event-log read to learn what it materialized: only for an
    # asset whose incident is open or that a run from the asset graph spoke of.
    asked = frozenset(
        [
            *(k for k in open_keys if k.startswith("materialize:")),
            *(
                f"materialize:{key.to_user_string()}"
                for r in unique
                if r.dagster_run.job_name.startswith(UI_JOB)
                for key in r.dagster_run.asset_selection or ()
            ),
        ]
    )
    runs: dict[str, list[Outcome]] = {}
    for record in unique:
        for key, failed in run_outcomes(instance, record, repository, asked).items():
            runs.setdefault(key, []).append(Outcome(record, failed))
    for outcomes in runs.values():
        outcomes.sort(key=lambda o: finished_at(o.record), reverse=True)
    for key in open_keys:  # an incident older than the window still needs its recovery
        if key.startswith("run:") and key not in runs:
            records = instance.get_run_records(
                dg.RunsFilter(job_name=key.removeprefix("run:"), statuses=FINISHED), limit=1
            )
            if records:
                failed = records[0].dagster_run.status == dg.DagsterRunStatus.FAILURE
                runs[key] = [Outcome(records[0], failed)]
    return runs


def finished_at(record: dg.RunRecord) -> float:
    """A run storage from before Dagster kept end times has only the last update."""
    return record.end_time or record.update_timestamp.timestamp()


def _run_problem(instance: dg.DagsterInstance, key: str, record: dg.RunRecord) -> str:
    run = record.dagster_run
    reason = failed_run(instance, run.run_id).reason
    if key.startswith("materialize:"):
        what = f"materializing {key.removeprefix('materialize:')} from the UI"
    else:
        what = f"job {run.job_name}"
    return _short(f"{what} failed (run {run.run_id}): {reason}")


def run_incidents(
    instance: dg.DagsterInstance, runs: dict[str, list[Outcome]]
) -> dict[str, str | None]:
    """Incident key -> problem text when the latest run that spoke of it failed it, else None."""
    return {
        key: _run_problem(instance, key, outcomes[0].record) if outcomes[0].failed else None
        for key, outcomes in runs.items()
    }


def failures_between_ticks(
    instance: dg.DagsterInstance,
    runs: dict[str, list[Outcome]],
    open_incidents: dict[str, str],
    heard_until: dict[str, float] | None,
) -> dict[str, str]:
    """Incident key -> the failed run that opened an incident recovered from before this tick:
    the latest run is fine, so `run_incidents` sees nothing, but an operator must hear of it.
    A failure while the incident is open is that incident, not a new one.

    `heard_until` is None on the first tick (no run before it is new); a key missing from it
    had no finished run by the last tick, so all of its runs are new.
    """
    if heard_until is None:
        return {}
    hidden = {}
    for key, outcomes in runs.items():
        if outcomes[0].failed:
            continue
        failing = key in open_incidents
        opened: Outcome | None = None
        for outcome in sorted(outcomes, key=lambda o: finished_at(o.record)):
            if finished_at(outcome.record) <= heard_until.get(key, 0.0):
                continue
            if outcome.failed and not failing:
                opened = outcome
            failing = outcome.failed
        # Only the last one's text (an event-log read): a job that flapped while the alert
        # channel was down would cost one per flap on every tick until it is back, each a miss
        # once the flaps outnumber the failed-run cache.
        if opened is not None:
            hidden[key] = _run_problem(instance, key, opened.record)
    return hidden


_RUNNING = {InstigatorStatus.RUNNING, InstigatorStatus.DECLARED_IN_CODE}


def tick_incidents(
    instance: dg.DagsterInstance,
    repository: dg.RepositoryDefinition,
    own: str | None,
    location: str | None,
) -> dict[str, str | None]:
    """`tick:<sensor or schedule>` -> problem text when its latest finished tick failed, else
    None (a stopped one too: nothing of it fails any more). Only this code location's (when
    known): a location renamed leaves its old states behind, last ticks and all."""
    names = {d.name for d in [*repository.sensor_defs, *repository.schedule_defs]} - {own}
    current: dict[str, str | None] = {}
    for kind in (InstigatorType.SENSOR, InstigatorType.SCHEDULE):
        for state in instance.all_instigator_state(instigator_type=kind):
            origin = state.origin.repository_origin
            if (
                state.instigator_name not in names
                or origin.repository_name != repository.name
                or (location and origin.code_location_origin.location_name != location)
            ):
                continue
            key = f"tick:{state.instigator_name}"
            ticks = instance.get_ticks(
                state.instigator_origin_id,
                state.selector_id,
                limit=1,
                statuses=[TickStatus.SUCCESS, TickStatus.SKIPPED, TickStatus.FAILURE],
            )
            if state.status not in _RUNNING or not ticks or not ticks[0].is_failure:
                current[key] = None
                continue
            # Dagster wraps what the evaluation raised; the alert quotes the cause.
            error = ticks[0].error
            while error and error.cause and error.cls_name.endswith("ExecutionError"):
                error = error.cause
            reason = error.message.strip() if error else "failed"
            current[key] = _short(f"{kind.value.lower()} {state.instigator_name} fails: {reason}")
    return current


def watched_checks(repository: dg.RepositoryDefinition) -> list[dg.AssetCheckKey]:
    graph = repository.asset_graph
    return [
        key
        for key in graph.asset_check_keys
        if (graph.get_check_spec(key).metadata or {}).get(OPT_OUT[0]) != OPT_OUT[1]
    ]


def _incident_name(key: dg.AssetCheckKey) -> str:
    return f"check:{key.asset_key.to_user_string()}/{key.name}"


def check_incidents(
    instance: dg.DagsterInstance, repository: dg.RepositoryDefinition
) -> dict[str, str | None]:
    """`check:<asset>/<check>` -> problem text when its latest evaluation failed, else None.

    A check still in progress (or planned in a run that died) is not observed: the run's own
    incident covers a crash, and not hearing from a check is no recovery.
    """
    keys = watched_checks(repository)
    if not keys:
        return {}
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    completed = {
        AssetCheckExecutionRecordStatus.SUCCEEDED,
        AssetCheckExecutionRecordStatus.FAILED,
    }
    current: dict[str, str | None] = {}
    for key, record in latest.items():
        if record.status not in completed:
            continue
        name = f"{key.asset_key.to_user_string()}/{key.name}"
        incident = _incident_name(key) + (f"@{record.partition}" if record.partition else "")
        if record.status == AssetCheckExecutionRecordStatus.SUCCEEDED:
            current[incident] = None
            continue
        evaluation = record.event.asset_check_evaluation if record.event else None
        severity = evaluation.severity.value if evaluation else "ERROR"
        detail = (evaluation.description if evaluation else None) or "failed"
        current[incident] = _short(f"asset check {name} failed ({severity}): {detail}")
    return current


def retired_incidents(
    open_incidents: dict[str, str], repository: dg.RepositoryDefinition
) -> dict[str, str]:
    """Open incidents of a check no longer watched (renamed, removed, or alerting by itself
    now), a job or an asset no longer defined: nothing observes them here again, so they would
    stay open for ever, and swallow the alert of one that comes back under the name."""
    watched = {_incident_name(key) for key in watched_checks(repository)}

    def retired(key: str) -> bool:
        if key.startswith("check:"):
            return key not in watched and not any(key.startswith(f"{n}@") for n in watched)
        return not _defined(key, repository)

    return {key: text for key, text in open_incidents.items() if retired(key)}


_SEVERITY = re.compile(r"^asset check \S+ failed \((WARN|ERROR)\)")


def escalations(open_incidents: dict[str, str], current: dict[str, str | None]) -> dict[str, str]:
    """Open check incidents that opened as a WARN and are an ERROR now: a key already open is
    no transition, but this change needs someone."""

    def severity(text: str) -> str | None:
        found = _SEVERITY.match(text)
        return found.group(1) if found else None

    return {
        key: text
        for key, text in current.items()
        if text is not None
        and key in open_incidents
        and severity(open_incidents[key]) == "WARN"
        and severity(text) == "ERROR"
    }


def _load(cursor: str | None) -> tuple[dict[str, str], dict[str, float] | None, float | None]:
    """The open incidents, per incident key up to when its finished runs were heard (None
    before the first tick that kept it), and up to when the runs were read (a cursor from
    before that was kept: up to its latest run heard)."""
    if not cursor:
        return {}, None, None
    try:
        state = json.loads(cursor)
    except ValueError:
        return {}, None, None
    if not isinstance(state, dict):
        return {}, None, None
    heard = state.get("runs_heard_until")
    heard = dict(heard) if isinstance(heard, dict) else None
    read_to = state.get("runs_read_to")
    if not isinstance(read_to, int | float):
        read_to = None if heard is None else max(heard.values(), default=0.0)
    return dict(state.get("open", {})), heard, read_to


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts once when a job's latest run fails, an asset check starts failing or a "
    "sensor's or schedule's ticks fail, and once when it recovers (ALERT_WEBHOOK_URL, or a log "
    "line).",
)
def catalog_alerts(context: dg.SensorEvaluationContext, notifier: Notifier) -> dg.SensorResult:
    open_incidents, heard_until, read_to = _load(context.cursor)
    runs = finished_runs(context.instance, open_incidents, context.repository_def, read_to)
    current = run_incidents(context.instance, runs)
    retired: dict[str, str] = {}
    if context.repository_def is not None:
        current.update(check_incidents(context.instance, context.repository_def))
        origin = context.code_location_origin
        current.update(
            tick_incidents(
                context.instance,
                context.repository_def,
                catalog_alerts.name,  # it cannot report itself
                origin.location_name if origin else None,
            )
        )
        retired = retired_incidents(open_incidents, context.repository_def)
    stored = dict(open_incidents)
    sent = []
    unheard = set()
    # Opened here, these recover below on this same tick: their latest run succeeded.
    hidden = failures_between_ticks(context.instance, runs, open_incidents, heard_until)
    for key, text in sorted(hidden.items()):
        if notifier.send(f":red_circle: [catalog] {text}"):
            stored[key] = text
            sent.append(f"opened {key}")
        else:
            unheard.add(key)
    transitions = incident_transitions(stored, current)
    for key, text in sorted(transitions.opened.items()):
        if notifier.send(f":red_circle: [catalog] {text}"):
            stored[key] = text
            sent.append(f"opened {key}")
        else:
            # Not heard either: should a success follow before the next tick, the failure
            # behind it is found again by `failures_between_ticks` instead of forgotten.
            unheard.add(key)
    heard_now = dict(heard_until or {})
    for key, outcomes in runs.items():
        if key not in unheard:
            latest = max(finished_at(o.record) for o in outcomes)
            heard_now[key] = max(heard_now.get(key, 0.0), latest)
    for key, text in sorted(escalations(open_incidents, current).items()):
        if notifier.send(f":red_circle: [catalog] escalated: {text}"):
            stored[key] = text
            sent.append(f"escalated {key}")
    for key, text in sorted(transitions.resolved.items()):
        if notifier.send(f":white_check_mark: [catalog] recovered: {key} (was: {text})"):
            stored.pop(key, None)
            sent.append(f"recovered {key}")
    for key, text in sorted(retired.items()):
        if notifier.send(
            f":white_check_mark: [catalog] closed: {key}, no longer defined (renamed or "
            f"removed) or alerting by itself now (was: {text})"
        ):
            stored.pop(key, None)
            sent.append(f"closed {key}")
    # A run incident whose message did not go out must hear its runs again, however many
    # finish before the next tick: that tick reads from where this one did.
    resent = unheard or any(k in stored for k in transitions.resolved if not k.startswith("check:"))
    read = [o.record.update_timestamp.timestamp() for heard in runs.values() for o in heard]
    if not resent:
        read_to = max([read_to or 0.0, *read])
    elif read_to is None:
        # The first tick read only the window, from its oldest run: so does the next (from a
        # microsecond before it, `updated_after` being strict), or the runs finishing meanwhile
        # push the one behind the undelivered message out of its window, unheard for ever.
        read_to = min(read) - 1e-6 if read else 0.0
    summary = "; ".join(sent) or f"no change ({len(stored)} open incidents)"
    cursor = json.dumps({"open": stored, "runs_heard_until": heard_now, "runs_read_to": read_to})
    return dg.SensorResult(skip_reason=summary, cursor=cursor)
