"""`catalog_alerts`: one message when something breaks, one when it recovers, nothing between.

The case study's complaint was outlets holding stale data because a transfer failed unnoticed,
so every way this project reports trouble ends up here:

- a job's latest finished run failed (`run:<job>`); it recovers when a later run succeeds;
- an asset check's latest evaluation failed (`check:<asset>/<check>[@partition]`); it recovers
  when the check passes again. Every check in the code location is watched, including ones
  added later, so a new check alerts without touching this file. A check that sends its own
  alerts opts out with `metadata={"catalog/alerts": "self"}` on its spec.

The open incidents live in the sensor cursor; `notifier.incident_transitions` decides what
opened and what recovered. A check incident opened as a WARN that turns ERROR (a rejected item
dead-lettered: no more retries, an operator must act) sends one more message, `escalated`. A
transition is stored only after its message was delivered, so a webhook that is down makes
the sensor try again next tick instead of forgetting the incident.
"""

import json
import re
from collections.abc import Iterable

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from catalog_assets.notifier import Notifier, incident_transitions

FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
RECENT_RUNS = 200
OPT_OUT = ("catalog/alerts", "self")
TEXT_LIMIT = 300


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


def _failure_reason(instance: dg.DagsterInstance, run_id: str) -> str:
    """The first step failure's message (our errors name the request, never a credential).

    An exception raised in a step reaches the event log wrapped ("Error occurred while executing
    op ..."), with ours as its cause: the alert quotes the cause, which says what went wrong."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        data = entry.dagster_event.step_failure_data if entry.dagster_event else None
        if data and data.error:
            error = data.error
            while error.cls_name == "DagsterExecutionStepExecutionError" and error.cause:
                error = error.cause
            return f"{entry.step_key}: {error.message.strip()}"
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE):
        return entry.dagster_event.message or "run failed" if entry.dagster_event else "run failed"
    return "run failed"


def run_incidents(instance: dg.DagsterInstance, open_keys: Iterable[str]) -> dict[str, str | None]:
    """`run:<job>` -> problem text when the job's latest finished run failed, else None."""
    latest: dict[str, dg.RunRecord] = {}
    for record in instance.get_run_records(dg.RunsFilter(statuses=FINISHED), limit=RECENT_RUNS):
        latest.setdefault(record.dagster_run.job_name, record)
    for key in open_keys:  # an incident older than the window still needs its recovery
        job = key.removeprefix("run:")
        if key.startswith("run:") and job not in latest:
            records = instance.get_run_records(
                dg.RunsFilter(job_name=job, statuses=FINISHED), limit=1
            )
            if records:
                latest[job] = records[0]
    current: dict[str, str | None] = {}
    for job, record in latest.items():
        run = record.dagster_run
        if run.status == dg.DagsterRunStatus.SUCCESS:
            current[f"run:{job}"] = None
        else:
            reason = _failure_reason(instance, run.run_id)
            current[f"run:{job}"] = _short(f"job {job} failed (run {run.run_id}): {reason}")
    return current


def check_incidents(
    instance: dg.DagsterInstance, repository: dg.RepositoryDefinition
) -> dict[str, str | None]:
    """`check:<asset>/<check>` -> problem text when its latest evaluation failed, else None.

    A check still in progress (or planned in a run that died) is not observed: the run's own
    incident covers a crash, and not hearing from a check is no recovery.
    """
    graph = repository.asset_graph
    keys = [
        key
        for key in graph.asset_check_keys
        if (graph.get_check_spec(key).metadata or {}).get(OPT_OUT[0]) != OPT_OUT[1]
    ]
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
        incident = f"check:{name}" + (f"@{record.partition}" if record.partition else "")
        if record.status == AssetCheckExecutionRecordStatus.SUCCEEDED:
            current[incident] = None
            continue
        evaluation = record.event.asset_check_evaluation if record.event else None
        severity = evaluation.severity.value if evaluation else "ERROR"
        detail = (evaluation.description if evaluation else None) or "failed"
        current[incident] = _short(f"asset check {name} failed ({severity}): {detail}")
    return current


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


def _load(cursor: str | None) -> dict[str, str]:
    if not cursor:
        return {}
    try:
        state = json.loads(cursor)
    except ValueError:
        return {}
    return dict(state.get("open", {})) if isinstance(state, dict) else {}


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts once when a job's latest run fails or an asset check starts failing, "
    "and once when it recovers (ALERT_WEBHOOK_URL, or a log line).",
)
def catalog_alerts(context: dg.SensorEvaluationContext, notifier: Notifier) -> dg.SensorResult:
    open_incidents = _load(context.cursor)
    current = run_incidents(context.instance, open_incidents)
    if context.repository_def is not None:
        current.update(check_incidents(context.instance, context.repository_def))
    transitions = incident_transitions(open_incidents, current)
    stored = dict(open_incidents)
    sent = []
    for key, text in sorted(transitions.opened.items()):
        if notifier.send(f":red_circle: [catalog] {text}"):
            stored[key] = text
            sent.append(f"opened {key}")
    for key, text in sorted(escalations(open_incidents, current).items()):
        if notifier.send(f":red_circle: [catalog] escalated: {text}"):
            stored[key] = text
            sent.append(f"escalated {key}")
    for key, text in sorted(transitions.resolved.items()):
        if notifier.send(f":white_check_mark: [catalog] recovered: {key} (was: {text})"):
            stored.pop(key, None)
            sent.append(f"recovered {key}")
    summary = "; ".join(sent) or f"no change ({len(stored)} open incidents)"
    return dg.SensorResult(skip_reason=summary, cursor=json.dumps({"open": stored}))
