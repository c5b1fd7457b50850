"""dagster.yaml is a valid instance that queues syncs one at a time and frees what a dead run held."""

import json
import logging
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import dagster as dg

from catalog_assets.sensors import onec_change_sensor


def test_instance_config_limits_syncs_to_one(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    shutil.copy(Path(__file__).parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.get()
    try:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": "catalog/sync", "limit": 1} in limits
        assert str(tmp_path) in instance.root_directory
    finally:
        instance.dispose()


def test_a_dead_runs_pool_slot_is_freed_a_minute_after_it_ended(tmp_path, monkeypatch):
    """A run worker killed mid-step never frees its `catalog_store` slot itself, and every later
    sync would wait for it. The daemon's run monitoring (its own iteration, called here as the
    daemon does; a private module, like the queue test's dequeue) frees it, per dagster.yaml."""
    from dagster._daemon.monitoring import concurrency as monitoring

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    shutil.copy(Path(__file__).parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.get()
    try:

        @dg.asset
        def killed():
            raise RuntimeError("the run worker died here")

        run = dg.materialize([killed], instance=instance, raise_on_error=False)
        slots = instance.event_log_storage
        slots.initialize_concurrency_limit_to_default("catalog_store")
        # What the dead worker left behind: a claimed slot for a run that has ended.
        slots.claim_concurrency_slot("catalog_store", run.run_id, "tec_delivery_products")

        def claimed() -> list[str]:
            return [c.run_id for c in slots.get_concurrency_info("catalog_store").claimed_slots]

        daemon, log = SimpleNamespace(instance=instance), logging.getLogger("run_monitoring")
        list(monitoring.execute_concurrency_slots_iteration(daemon, log))
        assert claimed() == [run.run_id]  # not yet: the run ended under a minute ago
        a_minute_on = monitoring.get_current_datetime() + timedelta(seconds=61)
        monkeypatch.setattr(monitoring, "get_current_datetime", lambda: a_minute_on)
        list(monitoring.execute_concurrency_slots_iteration(daemon, log))
        assert claimed() == []
    finally:
        instance.dispose()


def test_the_dagster_cli_works_in_the_repo_without_dagster_home(tmp_path, monkeypatch):
    """Without DAGSTER_HOME, Dagster's CLI (`dagster job execute`, `dagster dev`, `dagster job
    list`) makes a temporary instance configured by the dagster.yaml in the current directory,
    the repo root for a user following the README: that file must not need DAGSTER_HOME."""
    from dagster._cli.utils import get_possibly_temporary_instance_for_cli

    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    shutil.copy(Path(__file__).parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.chdir(tmp_path)
    with get_possibly_temporary_instance_for_cli("dagster job execute") as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": "catalog/sync", "limit": 1} in limits


def test_a_sync_left_started_by_a_dead_worker_does_not_stop_syncing_for_ever(
    tmp_path, monkeypatch, platform
):
    """The host reboots mid-sync (or `dagster job execute` is killed out of memory): the run
    worker dies with the code server that would have marked its run failed, so the instance
    says STARTED with no process behind it. Dagster's default run launcher cannot check a
    worker's health; only run monitoring's runtime limit ends such a run. Without one, the
    sensor skips "a sync run is already in flight" for ever, the queue holds every later sync
    (tag `catalog/sync`), the `catalog_store` slot stays claimed, and nothing alerts."""
    from dagster._core.events import DagsterEvent, DagsterEventType
    from dagster._daemon.monitoring import concurrency, run_monitoring

    from catalog_assets import sensors
    from catalog_assets.alerts import catalog_alerts
    from catalog_assets.notifier import Notifier

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    shutil.copy(Path(__file__).parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.get()
    try:
        job = platform.defs.resolve_job_def("incremental_sync")
        dead = instance.create_run_for_job(
            job, status=dg.DagsterRunStatus.STARTING, tags=dict(job.run_tags)
        )
        instance.report_dagster_event(
            DagsterEvent(DagsterEventType.RUN_START.value, job_name=job.name), run_id=dead.run_id
        )
        slots = instance.event_log_storage
        slots.initialize_concurrency_limit_to_default("catalog_store")
        slots.claim_concurrency_slot("catalog_store", dead.run_id, "tec_delivery_products")
        product = platform.catalog.products()[0]
        platform.catalog.upsert_product({"id": product["id"], "price": 4321})  # a genuine change

        # Two hours on, the daemon's run monitoring and slot release iterations run.
        later = time.time() + 2 * 3600
        monkeypatch.setattr(run_monitoring, "get_current_timestamp", lambda: later)
        monkeypatch.setattr(
            concurrency, "get_current_datetime", lambda: datetime.fromtimestamp(later, tz=UTC)
        )
        daemon = SimpleNamespace(instance=instance, create_request_context=lambda: None)
        log = logging.getLogger("run_monitoring")
        list(run_monitoring.execute_run_monitoring_iteration(daemon, log))
        list(concurrency.execute_concurrency_slots_iteration(daemon, log))

        monkeypatch.setattr(
            sensors, "time", SimpleNamespace(time=lambda: later, time_ns=time.time_ns)
        )
        with dg.build_sensor_context(instance=instance, resources=platform.resources) as context:
            outcome = onec_change_sensor(context)
        assert isinstance(outcome, dg.SensorResult) and outcome.run_requests, outcome
        assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
        claimed = slots.get_concurrency_info("catalog_store").claimed_slots
        assert [c.run_id for c in claimed] == []
        with dg.build_sensor_context(
            instance=instance, definitions=platform.defs, resources={"notifier": Notifier()}
        ) as context:
            alerted = json.loads(catalog_alerts(context).cursor)["open"]
        assert "run:incremental_sync" in alerted, alerted
    finally:
        instance.dispose()
