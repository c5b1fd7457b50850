"""(7) One alert per incident and one on recovery, through the one notifier resource.

The incidents come from real runs on a real instance: a sync that failed because Tec.Delivery
was down, and a quarantine check that failed because 1C served a bad record. The alerts go to a
Slack-compatible receiver on loopback.
"""

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.utils import make_new_run_id
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.sensor import execute_sensor_iteration

from catalog_assets import alerts
from catalog_assets.alerts import catalog_alerts
from catalog_assets.assets.tec_delivery import MAX_ATTEMPTS
from catalog_assets.notifier import Notifier
from catalog_assets.outlets.resource import OutletHub


class SlackHook:
    """An incoming-webhook stand-in: records `{"text": ...}` posts; can be switched off."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.up = True
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 200 if hook.up else 503
                if hook.up:
                    hook.messages.append(body["text"])
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self) -> list[str]:
        taken, self.messages = self.messages, []
        return taken


@pytest.fixture
def slack(leak_guard):
    hook = SlackHook()
    yield hook
    hook.server.shutdown()
    leak_guard.text("\n".join(hook.messages))


def tick(platform, slack, cursor):
    with dg.build_sensor_context(
        instance=platform.instance,
        cursor=cursor,
        definitions=platform.defs,
        resources={"notifier": Notifier(webhook_url=slack.url, timeout_seconds=5)},
    ) as context:
        result = catalog_alerts(context)
    return result.cursor, slack.take()


BAD = {
    "id": "bad-stock",
    "parent": "0",
    "type": "product",
    "name": "Остаток?",
    "price": 10,
    "stock": "много",
    "modified_at": "2026-09-01T00:00:00",
}


def test_one_alert_per_incident_and_one_per_recovery(platform, slack, ledger):
    assert platform.run("full_resync").success
    cursor, sent = tick(platform, slack, None)
    assert sent == [] and json.loads(cursor)["open"] == {}

    # Two incidents in one run: 1C serves a bad record, Tec.Delivery is down.
    platform.catalog.add_raw(BAD)
    platform.catalog.upsert_product({"id": platform.catalog.products()[0]["id"], "price": 1})
    platform.tec.inject(status=503, times=10_000)
    ledger.fault("Tec.Delivery down (503)")
    ledger.bad_input("non-numeric stock")
    assert not platform.run("incremental_sync", raise_on_error=False).success
    cursor, sent = tick(platform, slack, cursor)
    assert len(sent) == 2, sent
    run_alert = next(m for m in sent if "job incremental_sync failed" in m)
    assert "HTTP 503" in run_alert and "tec_delivery_products" in run_alert
    check_alert = next(m for m in sent if "onec_products/no_quarantined_records" in m)
    assert "(ERROR)" in check_alert and "1 products from 1C are quarantined" in check_alert

    # Still broken, another failed run, more ticks: silence.
    assert not platform.run("incremental_sync", raise_on_error=False).success
    for _ in range(2):
        cursor, sent = tick(platform, slack, cursor)
        assert sent == []
    assert len(json.loads(cursor)["open"]) == 2

    # The alert channel itself is down while things recover: nothing is forgotten.
    platform.tec.clear_faults()
    platform.catalog.upsert_product({"id": "bad-stock", "stock": 3})
    assert platform.run("incremental_sync").success
    slack.up = False
    ledger.fault("alert webhook down (503)")
    cursor, sent = tick(platform, slack, cursor)
    assert sent == [] and len(json.loads(cursor)["open"]) == 2
    slack.up = True
    cursor, sent = tick(platform, slack, cursor)
    assert len(sent) == 2 and all("recovered" in m for m in sent), sent
    assert {"run:incremental_sync", "check:onec_products/no_quarantined_records"} == {
        m.split("recovered: ")[1].split(" (was")[0] for m in sent
    }
    cursor, sent = tick(platform, slack, cursor)
    assert sent == [] and json.loads(cursor)["open"] == {}


def test_every_check_is_watched_including_ones_added_later(platform, slack):
    """A check defined outside `catalog_assets.checks` (the outlet team's, or tomorrow's) alerts too."""

    @dg.asset_check(asset="tec_delivery_products", name="added_later")
    def added_later():
        return dg.AssetCheckResult(passed=False, description="something new is wrong")

    @dg.asset_check(
        asset="tec_delivery_products",
        name="alerts_itself",
        metadata={"catalog/alerts": "self"},
    )
    def alerts_itself():
        return dg.AssetCheckResult(passed=False, description="sends its own alert")

    new_checks = dg.define_asset_job(
        "new_checks", selection=dg.AssetSelection.checks(added_later, alerts_itself)
    )
    defs = dg.Definitions.merge(
        platform.defs,
        dg.Definitions(asset_checks=[added_later, alerts_itself], jobs=[new_checks]),
    )
    result = defs.resolve_job_def("new_checks").execute_in_process(
        instance=platform.instance, raise_on_error=False
    )
    assert [e.passed for e in result.get_asset_check_evaluations()] == [False, False]
    with dg.build_sensor_context(
        instance=platform.instance,
        definitions=defs,
        resources={"notifier": Notifier(webhook_url=slack.url)},
    ) as context:
        catalog_alerts(context)
    sent = slack.take()
    assert sent == [
        ":red_circle: [catalog] asset check tec_delivery_products/added_later failed (ERROR): "
        "something new is wrong"
    ]


def test_a_run_alert_quotes_what_went_wrong_not_dagsters_wrapper(platform, slack, ledger):
    assert platform.run("full_resync").success
    cursor, _ = tick(platform, slack, None)
    platform.onec.inject(status=500, times=100)
    ledger.fault("1C down (500)")
    assert not platform.run("incremental_sync", raise_on_error=False).success
    _, sent = tick(platform, slack, cursor)
    [alert] = sent
    assert "job incremental_sync failed" in alert and "onec_categories: " in alert
    assert "1C answered HTTP 500 to GET" in alert and "Error occurred while executing" not in alert


def test_a_dead_letter_escalates_its_open_rejection_alert(platform, slack, ledger):
    """The first refusal opens `no_rejected_items` as a WARN; the fifth dead-letters the item
    (no more retries: an operator must act), which must say so even though the incident is
    already open. Then 1C deletes the product: owed nothing, it no longer fails the check."""
    poison = sorted(r["id"] for r in platform.catalog.products())[7]
    platform.tec.fail_always_ids.add(poison)
    ledger.fault("an item refused until dead-lettered", 1)
    assert platform.run("full_resync").success
    cursor, sent = tick(platform, slack, None)
    assert [m for m in sent if "no_rejected_items failed (WARN)" in m], sent
    later: list[str] = []
    for _ in range(2, MAX_ATTEMPTS + 1):
        platform.run("incremental_sync", raise_on_error=False)
        cursor, sent = tick(platform, slack, cursor)
        later += sent
    [escalated] = [m for m in later if "escalated" in m]
    assert "no_rejected_items failed (ERROR): 1 products dead-lettered" in escalated

    platform.catalog.remove(poison)
    result = platform.run("full_resync")
    assert result.success
    [check] = [
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "no_rejected_items"
        and c.asset_key == dg.AssetKey("tec_delivery_products")
    ]
    assert check.passed, check.description
    cursor, sent = tick(platform, slack, cursor)
    assert any("recovered: check:tec_delivery_products/no_rejected_items" in m for m in sent)
    assert "no_rejected_items" not in cursor


def test_a_failed_run_hidden_behind_a_quick_success_is_still_alerted(platform, slack, ledger):
    """A failed sync and the run that succeeds after it, both between two ticks: the job's
    latest run is fine, but the operator must still hear that a run failed (and that it
    recovered), once, even when the alert channel is down at first."""
    assert platform.run("full_resync").success
    cursor, _ = tick(platform, slack, None)
    platform.onec.inject(status=500, times=100)
    ledger.fault("1C down (500), then back within one alert tick")
    assert not platform.run("incremental_sync", raise_on_error=False).success
    platform.onec.clear_faults()
    assert platform.run("incremental_sync").success
    slack.up = False
    cursor, sent = tick(platform, slack, cursor)
    assert sent == []
    slack.up = True
    cursor, sent = tick(platform, slack, cursor)
    assert len(sent) == 2, sent
    assert "job incremental_sync failed" in sent[0] and "1C answered HTTP 500" in sent[0]
    assert "recovered: run:incremental_sync" in sent[1]
    cursor, sent = tick(platform, slack, cursor)
    assert sent == [] and json.loads(cursor)["open"] == {}

    # A failure while the incident is open is that incident: one message when it recovers.
    platform.onec.inject(status=500, times=100)
    assert not platform.run("incremental_sync", raise_on_error=False).success
    cursor, [opened] = tick(platform, slack, cursor)
    assert not platform.run("incremental_sync", raise_on_error=False).success
    platform.onec.clear_faults()
    assert platform.run("incremental_sync").success
    cursor, sent = tick(platform, slack, cursor)
    [recovered] = sent
    assert "recovered: run:incremental_sync" in recovered and opened.split("] ")[1] in recovered


def test_incidents_of_a_check_or_job_no_longer_defined_close(platform, slack):
    """A check or job renamed or removed is never observed again: its open incident closes,
    saying why, instead of staying open for ever (and swallowing the alert of one that comes
    back under that name)."""

    @dg.asset_check(asset="tec_delivery_products", name="renamed_later")
    def renamed_later():
        return dg.AssetCheckResult(passed=False, description="something is wrong")

    @dg.asset
    def removed_later():
        raise ValueError("the old job broke")

    old_checks = dg.define_asset_job(
        "old_checks", selection=dg.AssetSelection.checks(renamed_later)
    )
    old_job = dg.define_asset_job("old_job", selection=[removed_later])
    old_defs = dg.Definitions.merge(
        platform.defs,
        dg.Definitions(
            assets=[removed_later], asset_checks=[renamed_later], jobs=[old_checks, old_job]
        ),
    )
    for job in ("old_checks", "old_job"):
        old_defs.resolve_job_def(job).execute_in_process(
            instance=platform.instance, raise_on_error=False
        )
    with dg.build_sensor_context(
        instance=platform.instance,
        definitions=old_defs,
        resources={"notifier": Notifier(webhook_url=slack.url)},
    ) as context:
        cursor = catalog_alerts(context).cursor
    opened = slack.take()
    assert len(opened) == 2, opened
    assert "tec_delivery_products/renamed_later failed" in opened[0]
    assert "job old_job failed" in opened[1] and "the old job broke" in opened[1]

    cursor, sent = tick(platform, slack, cursor)  # the definitions without them
    assert len(sent) == 2, sent
    assert "check:tec_delivery_products/renamed_later" in sent[0]
    assert "no longer defined" in sent[0] and "something is wrong" in sent[0]
    assert "closed: run:old_job, no longer defined" in sent[1]
    assert json.loads(cursor)["open"] == {}
    cursor, sent = tick(platform, slack, cursor)
    assert sent == []


def test_a_failure_the_alert_channel_missed_is_alerted_after_a_quick_success(
    platform, slack, ledger
):
    """The tick that sees a failed sync cannot deliver its alert (the channel is down); the
    next run succeeds before the next tick. The failure must still be announced: a transition
    is stored only once delivered, so the runs behind an undelivered one are not yet heard."""
    assert platform.run("full_resync").success
    cursor, _ = tick(platform, slack, None)
    platform.onec.inject(status=500, times=100)
    ledger.fault("1C down (500) while the alert webhook is down too")
    assert not platform.run("incremental_sync", raise_on_error=False).success
    slack.up = False
    cursor, sent = tick(platform, slack, cursor)
    assert sent == [] and json.loads(cursor)["open"] == {}
    platform.onec.clear_faults()
    assert platform.run("incremental_sync").success
    slack.up = True
    cursor, sent = tick(platform, slack, cursor)
    assert len(sent) == 2, sent
    assert "job incremental_sync failed" in sent[0] and "1C answered HTTP 500" in sent[0]
    assert "recovered: run:incremental_sync" in sent[1]


def test_a_tick_does_not_reread_the_event_logs_of_runs_it_already_judged(platform, slack):
    """Every tick judges the last `RECENT_RUNS` finished runs, and a failed run from the asset
    graph is judged by what its event log says it materialized. Those runs are finished: what
    they say does not change, so a tick with nothing new reads no run's event log again, however
    many failed runs the window holds (the sensor runs every 30 s, on the instance's database)."""
    job = platform.defs.resolve_implicit_global_asset_job_def()
    keys = {dg.AssetKey("tec_delivery_products"), dg.AssetKey("outlet_feed_snapshot")}
    for _ in range(40):
        platform.instance.create_run_for_job(
            job.get_subset(asset_selection=keys),
            asset_selection=frozenset(keys),
            status=dg.DagsterRunStatus.FAILURE,
        )
    cursor, sent = tick(platform, slack, None)
    assert len(sent) == 2, sent  # one per asset, both failed by the latest run

    reads = []
    all_logs = platform.instance.all_logs
    platform.instance.all_logs = lambda run_id, *a, **k: (
        reads.append(run_id) or all_logs(run_id, *a, **k)
    )
    try:
        cursor, sent = tick(platform, slack, cursor)
    finally:
        platform.instance.all_logs = all_logs
    assert sent == []
    assert len(reads) <= 2, f"{len(reads)} event-log reads on a tick with nothing new"


def started(platform, job_name: str = "", assets: tuple[str, ...] = ()) -> dg.DagsterRun:
    """A run created and started now, and finished later by `finish`: a long full resync, or
    one from the asset graph when `assets` are given."""
    keys = frozenset(dg.AssetKey(a) for a in assets) or None
    if keys:
        job = platform.defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=keys)
    else:
        job = platform.defs.resolve_job_def(job_name)
    return platform.instance.create_run_for_job(
        job, asset_selection=keys, status=dg.DagsterRunStatus.STARTED
    )


def finish(platform, run: dg.DagsterRun, failure: str | None = None) -> None:
    """The last event the run's worker writes (Dagster's run monitoring, for a killed one)."""
    if failure:
        platform.instance.report_run_failed(run, message=failure)
    else:
        event = DagsterEvent(DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name)
        platform.instance.report_dagster_event(event, run_id=run.run_id)


@pytest.fixture
def window(monkeypatch) -> int:
    """The last 20 runs to finish instead of `RECENT_RUNS`, so 20 runs push one out of them,
    not 200 (each run's event log is a SQLite file of its own on this instance, 0.1 s for the
    leak guard to read back); and no slack for runs stored late: what is found is found by
    design, not by timing."""
    monkeypatch.setattr(alerts, "RECENT_RUNS", 20)
    monkeypatch.setattr(alerts, "READ_AGAIN_SECONDS", 0.0, raising=False)
    return 20


def outlet_health_runs(platform, n: int) -> list[dg.DagsterRun]:
    """An outage at every outlet at once (or its end): each outlet's verdict changes, and
    `outlet_monitor_sensor` starts one small `outlet_health_job` run per outlet, while a long
    run goes on; `succeed` finishes them. Only their run records matter here: written
    directly, they cost no event log (a SQLite file of its own per run on this instance)."""
    return [
        platform.instance.add_run(
            dg.DagsterRun(
                job_name="outlet_health_job",
                run_id=make_new_run_id(),
                status=dg.DagsterRunStatus.STARTED,
                tags={"dagster/partition": f"outlet-{i:03}"},
            )
        )
        for i in range(n)
    ]


def succeed(platform, runs: list[dg.DagsterRun]) -> None:
    for run in runs:
        success = DagsterEvent(DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name)
        platform.instance.handle_run_event(run.run_id, success)


@pytest.mark.parametrize(
    "assets, alert",
    [
        ((), "job full_resync failed"),
        (("tec_delivery_products",), "materializing tec_delivery_products from the UI failed"),
    ],
    ids=["job", "asset-graph"],
)
def test_a_long_run_that_fails_amid_many_short_ones_is_alerted(
    platform, slack, ledger, window, assets, alert
):
    """A full resync (or a re-push from the UI) takes its time; meanwhile 200+ outlets change
    verdict together and a health run starts for each. The resync fails, then they finish,
    all between two ticks: it is neither among the last `RECENT_RUNS` runs started nor among
    the last to finish, but it is its job's (asset's) latest run, and failed: one alert."""
    assert platform.run("full_resync").success
    cursor, _ = tick(platform, slack, None)
    long = started(platform, "full_resync", assets)
    health = outlet_health_runs(platform, window)
    ledger.fault("a long run failing amid more outlet health runs than the window holds")
    finish(platform, long, failure="run worker killed mid-push (OOM)")
    succeed(platform, health)
    cursor, sent = tick(platform, slack, cursor)
    assert len(sent) == 1, sent
    assert alert in sent[0] and long.run_id in sent[0] and "killed mid-push (OOM)" in sent[0]
    cursor, sent = tick(platform, slack, cursor)
    assert sent == [] and len(json.loads(cursor)["open"]) == 1


def open_failed_repush_incident(platform, slack) -> str:
    """After a full resync, a re-push from the UI fails: `materialize:tec_delivery_products`
    is open (alerted). Returns the alerts sensor's cursor."""
    assert platform.run("full_resync").success
    cursor, _ = tick(platform, slack, None)
    repush = started(platform, assets=("tec_delivery_products",))
    finish(platform, repush, failure="Push of products stopped: Tec.Delivery answered 503")
    cursor, [opened] = tick(platform, slack, cursor)
    assert "materializing tec_delivery_products from the UI failed" in opened
    return cursor


def test_an_asset_incident_recovers_by_a_long_run_after_many_short_ones(
    platform, slack, ledger, window
):
    """A re-push from the UI failed, so `materialize:tec_delivery_products` is open. The full
    resync that fixes it succeeds after an outage's outlet health runs, on a tick the alert
    channel is down; as many more (the outlets are back) finish before the next tick. The
    recovery must still be announced, once."""
    cursor = open_failed_repush_incident(platform, slack)

    long = started(platform, "full_resync")
    succeed(platform, outlet_health_runs(platform, window))
    finish(platform, long)
    slack.up = False
    ledger.fault("alert webhook down (503) when a long run recovers an asset")
    cursor, sent = tick(platform, slack, cursor)
    assert sent == []
    succeed(platform, outlet_health_runs(platform, window))
    slack.up = True
    cursor, sent = tick(platform, slack, cursor)
    assert len(sent) == 1 and "recovered: materialize:tec_delivery_products" in sent[0], sent
    cursor, sent = tick(platform, slack, cursor)
    assert sent == [] and json.loads(cursor)["open"] == {}


def test_a_success_heard_is_not_overruled_by_a_run_that_finished_before_it(platform, slack, window):
    """Runs of one asset from a job and from the asset graph take turns in the store's pool:
    a re-push from the UI, started after the full resync (and after an outage's outlet health
    runs), fails before the resync succeeds. Once heard, the resync's success stands: a later tick
    must not judge the asset by the re-push alone and open its incident again."""
    assert platform.run("full_resync").success
    cursor, _ = tick(platform, slack, None)
    long = started(platform, "full_resync")
    succeed(platform, outlet_health_runs(platform, window))
    repush = started(platform, assets=("tec_delivery_products",))
    finish(platform, repush, failure="Push of products stopped: Tec.Delivery answered 503")
    cursor, [opened] = tick(platform, slack, cursor)
    assert "materializing tec_delivery_products from the UI failed" in opened
    finish(platform, long)
    cursor, sent = tick(platform, slack, cursor)
    assert len(sent) == 1 and "recovered: materialize:tec_delivery_products" in sent[0], sent
    succeed(platform, outlet_health_runs(platform, 1))
    for _ in range(2):
        cursor, sent = tick(platform, slack, cursor)
        assert sent == [] and json.loads(cursor)["open"] == {}


def test_a_cursor_kept_before_runs_were_read_by_time_still_hears_a_long_run(
    platform, slack, window
):
    """A cursor from before `runs_read_to` was kept: the first tick after the upgrade reads
    every run that finished after the latest one its incident keys heard."""
    assert platform.run("full_resync").success
    cursor, _ = tick(platform, slack, None)
    state = json.loads(cursor)
    del state["runs_read_to"]
    long = started(platform, "full_resync")
    health = outlet_health_runs(platform, window)
    finish(platform, long, failure="run worker killed mid-push (OOM)")
    succeed(platform, health)
    cursor, sent = tick(platform, slack, json.dumps(state))
    assert len(sent) == 1 and "job full_resync failed" in sent[0], sent
    assert "runs_read_to" in json.loads(cursor)


def test_a_failure_the_first_tick_could_not_deliver_is_heard_after_many_runs(
    platform, slack, ledger, window
):
    """The sensor's first tick (no cursor yet: a new deployment, or a reset) finds a job's
    latest run failed (the night's resync, long before the runs that finished since), and the
    alert channel is down. Before the next tick an outage's outlet health runs finish, more
    than the window holds. The failure must still go out, once: the next tick reads again
    what this one read."""
    resync = started(platform, "full_resync")
    finish(platform, resync, failure="run worker killed mid-push (OOM)")
    slack.up = False
    ledger.fault("alert webhook down (503) on the sensor's first tick")
    cursor, sent = tick(platform, slack, None)
    assert sent == [] and json.loads(cursor)["open"] == {}
    succeed(platform, outlet_health_runs(platform, window))
    slack.up = True
    cursor, sent = tick(platform, slack, cursor)
    assert len(sent) == 1 and "job full_resync failed" in sent[0], sent
    assert resync.run_id in sent[0] and "killed mid-push (OOM)" in sent[0]
    cursor, sent = tick(platform, slack, cursor)
    assert sent == [] and list(json.loads(cursor)["open"]) == ["run:full_resync"]


def test_a_job_that_flapped_while_the_channel_was_down_costs_one_event_log_read(
    platform, slack, ledger, monkeypatch
):
    """1C comes and goes while the alert channel is down for days: `incremental_sync` fails and
    succeeds in turn, more often than the failed-run cache holds (4 here, for 4 * RECENT_RUNS).
    Every tick of the outage judges all those runs again (the failure is not heard yet), but
    one message goes out, quoting the last failure: a tick reads that run's event log, not one
    per flap, and the next tick none (one per flap, past the cache, would be every run's, every
    30 s, for as long as the outage lasts)."""
    monkeypatch.setattr(alerts, "_FAILED_RUNS", {})
    monkeypatch.setattr(alerts, "_FAILED_RUNS_LIMIT", 4)
    cursor, _ = tick(platform, slack, None)
    slack.up = False
    ledger.fault("alert webhook down (503) while 1C comes and goes", 6)
    for i in range(6):
        failed, succeeded = (
            platform.instance.add_run(
                dg.DagsterRun(
                    job_name="incremental_sync",
                    run_id=make_new_run_id(),
                    status=dg.DagsterRunStatus.STARTED,
                )
            )
            for _ in range(2)
        )
        finish(platform, failed, failure=f"1C answered HTTP 500 (flap {i})")
        succeed(platform, [succeeded])

    reads: list[str] = []
    all_logs = platform.instance.all_logs
    monkeypatch.setattr(
        platform.instance,
        "all_logs",
        lambda run_id, *a, **k: reads.append(run_id) or all_logs(run_id, *a, **k),
    )
    for expected in (1, 0):
        reads.clear()
        cursor, sent = tick(platform, slack, cursor)
        assert sent == [] and len(reads) <= expected, f"{len(reads)} event-log reads"
    slack.up = True
    cursor, sent = tick(platform, slack, cursor)
    assert len(sent) == 2 and "(flap 5)" in sent[0], sent
    assert "recovered: run:incremental_sync" in sent[1]


def test_a_failed_job_run_vouches_for_the_assets_it_materialized(platform, slack, ledger, tmp_path):
    """A re-push from the UI failed, so `materialize:tec_delivery_products` is open. Then
    `incremental_sync` pushes the products but its `outlet_feed_snapshot` step fails: the job's
    run is an incident of its own, and the products asset, materialized by that run, recovered
    (README: a later run, job or not, that materializes the asset closes it), as a failed run
    from the asset graph vouches for what it did materialize."""
    cursor = open_failed_repush_incident(platform, slack)

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the snapshot directory should be")
    hub = OutletHub.beside(str(platform.store.path))
    platform.resources["outlet_hub"] = OutletHub(
        config_path=hub.config_path, state_path=hub.state_path, snapshot_dir=str(blocked)
    )
    ledger.fault("outlet_feed_snapshot cannot write its directory")
    product = platform.catalog.products()[0]
    platform.catalog.upsert_product({"id": product["id"], "price": (product["price"] or 0) + 1})
    result = platform.run("incremental_sync", raise_on_error=False)
    assert not result.success
    assert dg.AssetKey("tec_delivery_products") in {
        e.asset_key for e in result.get_asset_materialization_events()
    }
    cursor, sent = tick(platform, slack, cursor)
    assert any("job incremental_sync failed" in m for m in sent), sent
    assert any("recovered: materialize:tec_delivery_products" in m for m in sent), sent
    assert list(json.loads(cursor)["open"]) == ["run:incremental_sync"]


def daemon_ticks(platform, slack, monkeypatch, at: float) -> None:
    """Two iterations of Dagster's sensor daemon, 31 s apart (every sensor ticks in each, in
    an order of the daemon's choosing), over the deployed code location served by a real code
    server, configured by the environment as in production, on the test's instance."""
    hub = OutletHub.beside(platform.store.path)
    for name, value in {
        "OUTLETS_CONFIG": hub.config_path,
        "OUTLET_SNAPSHOT_DIR": hub.snapshot_dir,
        "OUTLET_STATE_PATH": hub.state_path,
        "WEBHOOK_SPOOL_PATH": f"{hub.state_path}.webhooks",
        "ONEC_BASE_URL": platform.onec.url,
        "ONEC_USERNAME": "integration",
        "TEC_DELIVERY_URL": platform.tec.url,
        "CATALOG_DUCKDB_PATH": platform.store.path,
        "ALERT_WEBHOOK_URL": slack.url,
    }.items():
        monkeypatch.setenv(name, value)
    target = ModuleTarget(
        module_name="catalog_assets.definitions",
        attribute="defs",
        working_directory=None,
        location_name="catalog",
    )
    with create_test_daemon_workspace_context(target, platform.instance) as workspace:
        for now in (at, at + 31):
            with freeze_time(now):
                list(execute_sensor_iteration(workspace, logging.getLogger("sensors"), None, None))


def test_a_sensor_that_fails_every_tick_is_an_incident(platform, slack, ledger, monkeypatch):
    """1C refuses our password (rotated there, not here) while nothing needs syncing:
    `onec_change_sensor` raises on every tick, so no sync run starts and none fails, and every
    later change in 1C waits, unheard. Its failing ticks are an incident: one alert, quoting
    1C's answer, and one recovery once its ticks succeed again."""
    assert platform.run("full_resync").success
    Path(OutletHub.beside(platform.store.path).config_path).write_text("outlets: []\n")
    platform.onec.inject(status=401, times=10_000)
    ledger.fault("1C answers 401 to the change sensor, every tick")
    at = time.time()
    daemon_ticks(platform, slack, monkeypatch, at)
    sent = slack.take()
    assert len(sent) == 1, sent
    assert "onec_change_sensor" in sent[0] and "1C answered HTTP 401" in sent[0], sent
    platform.onec.clear_faults()
    daemon_ticks(platform, slack, monkeypatch, at + 62)
    sent = slack.take()
    assert len(sent) == 1 and "recovered: tick:onec_change_sensor" in sent[0], sent
