"""Every outlet on the graph: partitions follow outlets.yaml, each outlet's materialization
comes from the sensor, its `outlet_is_live` check from a run the sensor requests on a verdict
change, and the notifier hears once per incident and once on recovery. The sensor runs through
Dagster's own `build_sensor_context`; its result is applied to the instance the way the daemon
does (`report_runless_asset_event`, dynamic-partition requests, then the run requests, executed
in process)."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import httpx
import pytest

import catalog_assets.assets.outlets as outlets_assets
from catalog_assets.alerts import catalog_alerts
from catalog_assets.assets.outlets import outlet_deliveries, outlet_health_job, outlet_is_live
from catalog_assets.notifier import Notifier
from catalog_assets.outlets.monitor import outlet_monitor_sensor
from catalog_assets.outlets.resource import OutletHub
from catalog_assets.outlets.state import OutletState, utc_now
from catalog_assets_tests.outlets.conftest import TOKENS, free_port, serve

CHECK_KEY = dg.AssetCheckKey(outlet_deliveries.key, "outlet_is_live")


@pytest.fixture
def alerts():
    received: list[str] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(
                json.loads(self.rfile.read(int(self.headers["Content-Length"])))["text"]
            )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


class Monitor:
    def __init__(self, platform, hub, webhook_url):
        self.platform = platform
        self.instance = platform.instance
        self.resources = {"outlet_hub": hub.resource, "notifier": Notifier(webhook_url=webhook_url)}
        self.cursor = None

    def tick(self) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.resources
        )
        result = outlet_monitor_sensor(context)
        for request in result.dynamic_partitions_requests or []:
            if isinstance(request, dg.AddDynamicPartitionsRequest):
                self.instance.add_dynamic_partitions(
                    request.partitions_def_name, request.partition_keys
                )
            else:
                for key in request.partition_keys:
                    self.instance.delete_dynamic_partition(request.partitions_def_name, key)
        for event in result.asset_events:
            self.instance.report_runless_asset_event(event)
        job = self.platform.defs.resolve_job_def(outlet_health_job.name)
        self.verdicts = {}
        for request in result.run_requests or []:
            run = job.execute_in_process(
                instance=self.instance,
                partition_key=request.partition_key,
                resources={"outlet_hub": self.resources["outlet_hub"]},
            )
            [evaluation] = run.get_asset_check_evaluations()
            self.verdicts[evaluation.partition] = evaluation.passed
        self.cursor = result.cursor
        return result

    def partitions(self) -> set[str]:
        return set(self.instance.get_dynamic_partitions("outlets"))

    def latest(self, outlet: str) -> dict:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=outlet_deliveries.key, asset_partitions=[outlet]),
            limit=1,
        ).records
        metadata = records[0].asset_materialization.metadata
        return {k: getattr(v, "value", v) for k, v in metadata.items()}

    def reported(self, result: dg.SensorResult) -> set[str]:
        return {e.partition for e in result.asset_events}


def test_silent_outlet_fails_alerts_once_and_recovers(platform, hub, api, alerts):
    webhook, received = alerts
    hub.write_registry([hub.entry("msk-001"), hub.entry("spb-002", silent_after_minutes=10)])
    platform.run("full_resync")
    monitor = Monitor(platform, hub, webhook)

    first = monitor.tick()
    assert monitor.partitions() == {"msk-001", "spb-002"}
    assert monitor.reported(first) == {"msk-001", "spb-002"}
    assert monitor.verdicts == {}  # the partitions are new: their checks run next tick
    monitor.tick()
    assert monitor.verdicts == {"msk-001": True, "spb-002": True}  # grace period
    assert received == []

    api.client("msk-001").changes("products", limit=10)
    # spb-002 last called half an hour ago (recorded through the state file's own API)
    OutletState(hub.resource.state_path).begin_request(
        "spb-002", "products", 0, utc_now() - timedelta(minutes=30)
    )
    second = monitor.tick()
    assert monitor.reported(second) == {"msk-001", "spb-002"}
    assert monitor.verdicts == {"spb-002": False}  # a run only where the verdict changed
    msk = monitor.latest("msk-001")
    assert msk["acked_cursor"] == {"products": 0} and msk["last_contact_at"] != "never"
    spb = monitor.latest("spb-002")
    assert spb["acked_cursor"] == {"products": 0}
    assert spb["lag_items"] == len(platform.catalog.products()) and spb["silent_minutes"] >= 30
    assert "silent for 30 min" in spb["problem"]
    assert len(received) == 1 and "spb-002" in received[0] and "silent" in received[0]
    with dg.build_sensor_context(
        instance=monitor.instance, definitions=platform.defs, resources=monitor.resources
    ) as context:
        catalog_alerts(context)
    assert len(received) == 1  # the monitor's message only: catalog_alerts leaves this check be

    third = monitor.tick()  # still silent: no second message, no duplicate events, no run
    assert len(received) == 1 and third.asset_events == [] and monitor.verdicts == {}

    for page in api.client("spb-002").drain("products", None, limit=1000):
        cursor = page.cursor
    api.client("spb-002").changes("products", cursor=cursor)  # acknowledges everything
    monitor.tick()
    assert monitor.verdicts == {"spb-002": True}
    assert monitor.latest("spb-002")["lag_items"] == 0
    assert len(received) == 2 and "spb-002" in received[1] and "recovered" in received[1]

    history = monitor.instance.event_log_storage.get_asset_check_execution_history(CHECK_KEY, 10)
    assert [r.status.value for r in history if r.partition == "spb-002"] == [
        "SUCCEEDED",
        "FAILED",
        "SUCCEEDED",
    ]
    for text in received:
        assert all(token not in text for token in TOKENS.values())


def test_partitions_follow_the_file_and_invalid_entries_show_failing(platform, hub, alerts):
    webhook, received = alerts
    platform.run("full_resync")
    hub.write_registry(
        [hub.entry("msk-001"), hub.entry("bad-004", categories=["no-such-category"])]
    )
    monitor = Monitor(platform, hub, webhook)
    monitor.tick()
    assert monitor.partitions() == {"msk-001", "bad-004"}
    monitor.tick()
    assert monitor.verdicts == {"msk-001": True, "bad-004": False}
    assert "unknown categories" in monitor.latest("bad-004")["problem"]
    assert len(received) == 1 and "bad-004" in received[0]

    hub.write_registry([hub.entry("msk-001")])
    monitor.tick()
    assert monitor.partitions() == {"msk-001"}
    assert len(received) == 2 and "bad-004" in received[1] and "removed" in received[1]

    # Materializing a partition from the UI runs the same assessment, with its check.
    result = dg.materialize(
        [outlet_deliveries, outlet_is_live],
        partition_key="msk-001",
        instance=platform.instance,
        resources={"outlet_hub": hub.resource},
        selection=[outlet_deliveries],
    )
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.partition == "msk-001"


def test_a_broken_outlets_yaml_keeps_every_outlet_monitored(platform, hub, alerts, monkeypatch):
    """One typo must not delete every outlet's partition, announce its open incidents as
    recovered, or stop silence detection: the last readable version stays monitored, even in
    a process that never read it (a restarted code server), and the file is an incident."""
    webhook, received = alerts
    hub.write_registry([hub.entry("msk-001"), hub.entry("spb-002", silent_after_minutes=10)])
    platform.run("full_resync")
    OutletState(hub.resource.state_path).begin_request(
        "spb-002", "products", 0, utc_now() - timedelta(minutes=30)
    )
    monitor = Monitor(platform, hub, webhook)
    monitor.tick()
    monitor.tick()
    assert monitor.partitions() == {"msk-001", "spb-002"}
    assert len(received) == 1 and "spb-002" in received[0] and "silent" in received[0]

    hub.config.write_text("outlets:\n  - {id: msk-001, name: [unclosed\n", encoding="utf-8")
    monitor.tick()
    assert monitor.partitions() == {"msk-001", "spb-002"}
    assert len(received) == 2 and "outlets.yaml cannot be read" in received[1]
    assert "2 now" in received[1]

    monkeypatch.setattr(outlets_assets, "_loaders", {})  # a fresh process: no readable version
    monitor.tick()
    assert monitor.partitions() == {"msk-001", "spb-002"}
    assert len(received) == 2 and monitor.verdicts == {}

    hub.write_registry([hub.entry("msk-001"), hub.entry("spb-002", silent_after_minutes=10)])
    monitor.tick()
    assert "outlets.yaml is readable again" in received[2]
    assert len(received) == 3 and monitor.verdicts == {}  # spb-002 still silent, still open


def test_outlet_is_live_fails_for_an_outlet_that_never_called(platform, hub, alerts):
    """The check run the sensor starts must judge silence from the same registration time as
    the sensor (kept in the state file), not from the run's own start."""
    webhook, received = alerts
    hub.write_registry([hub.entry("spb-002", silent_after_minutes=10)])
    platform.run("full_resync")
    OutletState(hub.resource.state_path).registered(["spb-002"], utc_now() - timedelta(minutes=30))
    monitor = Monitor(platform, hub, webhook)
    monitor.tick()  # the partition appears
    monitor.tick()
    assert len(received) == 1 and "never contacted" in received[0]
    assert monitor.verdicts == {"spb-002": False}


def test_a_silence_alert_is_sent_once_the_alert_channel_is_back(platform, hub, alerts):
    """An incident counts as announced only once its message was delivered."""
    webhook, received = alerts
    hub.write_registry([hub.entry("spb-002", silent_after_minutes=10)])
    platform.run("full_resync")
    OutletState(hub.resource.state_path).begin_request(
        "spb-002", "products", 0, utc_now() - timedelta(minutes=30)
    )
    monitor = Monitor(platform, hub, f"http://127.0.0.1:{free_port()}/down")
    monitor.tick()
    monitor.resources["notifier"] = Notifier(webhook_url=webhook)
    monitor.tick()
    monitor.tick()
    assert len(received) == 1 and "spb-002" in received[0] and "silent" in received[0]


def test_no_check_run_is_started_while_outlets_yaml_cannot_be_read(
    platform, hub, alerts, monkeypatch
):
    """A check run is a process of its own, which cannot read the broken file either: the
    sensor starts none meanwhile, and the verdict that changed gets its run once it can."""
    webhook, _ = alerts
    hub.write_registry([hub.entry("msk-001", silent_after_minutes=10)])
    platform.run("full_resync")
    state = OutletState(hub.resource.state_path)
    state.begin_request("msk-001", "products", 0, utc_now() - timedelta(minutes=30))
    monitor = Monitor(platform, hub, webhook)
    monitor.tick()
    monitor.tick()
    assert monitor.verdicts == {"msk-001": False}

    hub.config.write_text("outlets:\n  - {id: msk-001, name: [unclosed\n", encoding="utf-8")
    monitor.tick()
    state.begin_request("msk-001", "products", 0, utc_now())  # it calls again: live
    code_server = dict(outlets_assets._loaders)
    monkeypatch.setattr(outlets_assets, "_loaders", {})  # where a run would execute
    failed = dg.materialize(
        [outlet_deliveries],
        instance=platform.instance,
        resources={"outlet_hub": hub.resource},
        partition_key="msk-001",
        raise_on_error=False,
    )
    assert "cannot be read" in str(failed.get_step_failure_events()[0].step_failure_data.error)
    monkeypatch.setattr(outlets_assets, "_loaders", code_server)
    monitor.tick()
    assert monitor.verdicts == {}  # none started while the file is broken

    hub.write_registry([hub.entry("msk-001", silent_after_minutes=10)])
    monitor.tick()
    assert monitor.verdicts == {"msk-001": True}


def test_a_root_category_1c_removed_shows_the_outlet_failing_until_it_returns(
    platform, hub, alerts
):
    """The outlet's feeds keep answering (its removals must reach it), so no call of its own
    would show that its entry now names a category 1C no longer has: the monitor does."""
    webhook, received = alerts
    platform.run("full_resync")
    catalog = platform.catalog
    root = next(c for c in catalog.categories() if c["name"] == "Бытовая химия")
    hub.write_registry([hub.entry("msk-001", categories=[root["id"]])])
    monitor = Monitor(platform, hub, webhook)
    monitor.tick()
    monitor.tick()
    assert monitor.verdicts == {"msk-001": True} and received == []

    catalog.remove(root["id"])
    assert platform.run("full_resync").success
    monitor.tick()
    assert monitor.verdicts == {"msk-001": False}
    assert "were removed in 1C" in monitor.latest("msk-001")["problem"]
    assert len(received) == 1 and "msk-001" in received[0] and root["id"] in received[0]

    catalog.upsert_category(root["id"], root["parent"], root["name"])  # 1C restores it
    assert platform.run("incremental_sync").success
    monitor.tick()
    assert monitor.verdicts == {"msk-001": True}
    assert len(received) == 2 and "recovered" in received[1]


def test_an_outlet_added_again_gets_its_grace_period(platform, hub, alerts):
    """An outlet removed from outlets.yaml (its last call long before) and added back is
    onboarded afresh: silence counts from its return, not from a call in its earlier life."""
    webhook, received = alerts
    hub.write_registry([hub.entry("msk-001")])
    platform.run("full_resync")
    state = OutletState(hub.resource.state_path)
    state.registered(["spb-002"], utc_now() - timedelta(days=30))
    state.begin_request("spb-002", "products", 0, utc_now() - timedelta(days=3))
    monitor = Monitor(platform, hub, webhook)
    monitor.tick()  # spb-002 is no longer listed

    hub.write_registry([hub.entry("msk-001"), hub.entry("spb-002", silent_after_minutes=10)])
    monitor.tick()  # its partition comes back
    monitor.tick()
    assert monitor.verdicts == {"spb-002": True} and received == []


def test_the_apis_registry_problems_reach_the_monitor_once_its_state_file_is_fixed(
    platform, hub, alerts
):
    """Only the API holds the tokens, so only its state file tells the monitor that an
    outlet's token variable is unset. An API that loaded outlets.yaml while that file was
    unreadable records the problem once it can, not at the next edit of outlets.yaml."""
    webhook, received = alerts
    platform.run("full_resync")
    hub.write_registry([hub.entry("msk-001"), hub.entry("new-005")])  # no OUTLET_NEW_005_TOKEN
    state = Path(hub.resource.state_path)
    state.write_bytes(b"not a database" * 100)
    api, stop = serve(hub.settings())
    try:
        assert httpx.get(f"{api.url}/healthz").status_code == 200  # loads outlets.yaml
        state.unlink()  # the operator moves the broken file away
        api.client("msk-001").changes("products", limit=10)
        monitor = Monitor(platform, hub, webhook)
        monitor.tick()
        monitor.tick()
        assert monitor.verdicts == {"msk-001": True, "new-005": False}
        assert "token variable" in monitor.latest("new-005")["problem"]
        assert len(received) == 1 and "new-005" in received[0]
    finally:
        stop()


def test_an_outlet_stuck_on_its_first_page_shows_behind(platform, hub, api):
    """A new outlet whose connector cannot apply its first page (an item its 1C refuses, a
    timeout) asks again without a cursor every minute: it calls, but receives nothing past
    that page. The monitor must show its backlog, as it does for one stuck on a later page."""
    hub.write_registry([hub.entry("msk-001"), hub.entry("spb-002")])
    platform.run("full_resync")
    products = len(platform.catalog.products())
    for _ in range(3):
        api.client("msk-001").changes("products", limit=5)
    # Stuck on its second page: the cursor of its first page comes back each time.
    stuck = api.client("spb-002").changes("products", limit=5)
    for _ in range(2):
        api.client("spb-002").changes("products", cursor=stuck.cursor, limit=5)
    health = outlets_assets.assess_outlets(
        OutletHub.beside(platform.store.path, max_lag_items=3)
    ).health
    assert health["spb-002"].lag_items == products - 5 and not health["spb-002"].healthy
    assert health["msk-001"].lag_items == products and not health["msk-001"].healthy
    assert health["msk-001"].metadata()["acked_cursor"] == {"products": 0}


def test_many_outlets_going_silent_at_once_are_one_message_each_way(platform, hub, alerts):
    """An outage on our side (the API down, a network cut) silences every outlet in the same
    minute. One message per outlet would be 200 posts in one tick, each allowed the notifier's
    timeout: a slow alert channel would push the tick past Dagster's 60 s limit, its cursor
    would be lost, and every message would go again each minute. So a tick with more than
    `GROUP_ALERTS_ABOVE` outlet transitions sends one message naming them, each way."""
    webhook, received = alerts
    ids = [f"out-{n:03d}" for n in range(12)]
    hub.write_registry([hub.entry(i, silent_after_minutes=10) for i in ids])
    platform.run("full_resync")
    monitor = Monitor(platform, hub, webhook)
    state = OutletState(hub.resource.state_path)
    for outlet_id in ids:
        state.begin_request(outlet_id, "products", 0, utc_now() - timedelta(minutes=30))
    monitor.tick()
    monitor.tick()
    assert len(received) == 1, received
    assert received[0].startswith("12 outlets need attention")
    assert all(outlet_id in received[0] for outlet_id in ids[:10])
    assert "and 2 more" in received[0]
    monitor.tick()
    assert len(received) == 1  # still silent: nothing new

    # Silence tolerated for longer (an edit of outlets.yaml): every one of them recovers.
    hub.write_registry([hub.entry(i, silent_after_minutes=120) for i in ids])
    monitor.tick()
    assert len(received) == 2 and received[1].startswith("12 outlets recovered"), received
