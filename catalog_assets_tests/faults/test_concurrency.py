"""(5) Two writers: another process holding the DuckDB file, and two sync runs at once.

DuckDB allows one writing process per file. Opening the store waits (bounded) for a lock
another process holds, then fails with `StoreBusyError` naming the file, never a raw
IOException. Sync runs never interleave at all: `dagster.yaml` limits the `catalog/sync` run tag
to one run, and the queued-run coordinator keeps the second one queued.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import (
    RegisteredCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)

from catalog_assets.assets.onec import onec_categories, onec_products
from catalog_assets.jobs import SYNC_TAG
from catalog_assets.sensors import onec_change_sensor
from catalog_assets.storage import CatalogStore, StoreBusyError

from .conftest import delivered, live_valid_ids

HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
sys.stdin.readline()
time.sleep(0.5)  # let go shortly after being told, while the parent is already waiting
con.close()
"""


def hold_lock(path: str) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_store_held_by_another_process_is_waited_for_then_refused_clearly(
    platform, ledger, leak_guard
):
    assert platform.run("full_resync").success
    holder = hold_lock(platform.store.path)
    ledger.fault("DuckDB file locked by another process", 3)
    try:
        # A run that meets the lock fails with a clear message, not a stack of IOError. Its
        # first writing step waits the whole timeout; the next one (independent of it, so
        # Dagster runs it too) only looks again instead of waiting as long.
        patient = CatalogStore(path=platform.store.path, lock_timeout_seconds=2)
        run = dg.materialize(
            [onec_categories, onec_products],
            instance=platform.instance,
            resources={**platform.resources, "store": patient},
            run_config={
                "ops": {
                    name: {"config": {"full": False}}
                    for name in ("onec_categories", "onec_products")
                }
            },
            raise_on_error=False,
        )
        assert not run.success
        failures = [e.step_failure_data.error for e in run.get_step_failure_events()]
        causes = [f.cause for f in failures]  # Dagster wraps what the step raised
        assert all(c.cls_name == "StoreBusyError" for c in causes)
        assert all("locked by another process" in c.message for c in causes)
        assert sorted("still locked" in c.message for c in causes) == [False, True]
        assert all("IOException" not in f.to_string() for f in failures)

        quick = CatalogStore(path=platform.store.path, lock_timeout_seconds=0.3)
        with pytest.raises(StoreBusyError) as refused:
            with quick.connect():
                pass
        leak_guard.exception(refused.value)
        message = str(refused.value)
        assert platform.store.path in message and "locked by another process" in message
        assert "IO Error" not in message and refused.value.__cause__ is None

        # The sensor does not fail its tick over it: it looks again next time.
        with dg.build_sensor_context(
            instance=platform.instance, resources=platform.resources
        ) as ctx:
            outcome = onec_change_sensor(ctx)
        assert isinstance(outcome, dg.SkipReason) and "catalog store busy" in outcome.skip_message

        # Let go within the timeout: the waiting writer gets in.
        holder.stdin.write("release\n")
        holder.stdin.flush()
        with CatalogStore(path=platform.store.path, lock_timeout_seconds=60).connect() as con:
            assert con.execute("SELECT count(*) FROM onec_products").fetchone()[0] > 0
    finally:
        holder.kill()
        holder.wait()
    assert platform.run("incremental_sync").success
    assert ledger.settle(live_valid_ids(platform), delivered(platform)) == set()


def test_the_run_queue_never_starts_a_second_sync_while_one_runs(tmp_path, monkeypatch, platform):
    """Dagster's own dequeue logic (what the daemon runs each iteration) over an instance built
    from the project's dagster.yaml. A full daemon would also launch run processes; the decision
    under test is which queued runs it may start, and that is this call."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    shutil.copy(Path(__file__).parents[2] / "dagster.yaml", tmp_path / "dagster.yaml")
    defs = platform.defs
    jobs = {
        name: defs.resolve_job_def(name)
        for name in ("full_resync", "incremental_sync", "tec_delivery_processing_job")
    }
    assert {job.run_tags.get(SYNC_TAG) for job in jobs.values()} == {
        "full",
        "incremental",
        "webhooks",
    }

    @dg.op
    def noop():
        """A run that has nothing to do with the catalog store."""

    @dg.job
    def unrelated():
        noop()

    instance = dg.DagsterInstance.get()
    try:
        location = RemoteRepositoryOrigin(
            RegisteredCodeLocationOrigin("catalog_assets"), "__repository__"
        )

        def create(job, status):
            # What the UI or a sensor submits: the job's own tags and where its code lives.
            return instance.create_run_for_job(
                job,
                status=status,
                tags=dict(job.run_tags),
                remote_job_origin=RemoteJobOrigin(location, job.name),
            )

        manual = create(jobs["full_resync"], dg.DagsterRunStatus.STARTED)
        sensor_run = create(jobs["incremental_sync"], dg.DagsterRunStatus.QUEUED)
        ingest = create(jobs["tec_delivery_processing_job"], dg.DagsterRunStatus.QUEUED)
        other = create(unrelated, dg.DagsterRunStatus.QUEUED)
        daemon = QueuedRunCoordinatorDaemon(interval_seconds=5)

        def dequeued() -> set[str]:
            runs = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)
            return {run.run_id for run in runs}

        assert dequeued() == {other.run_id}  # both sync-tagged runs wait for the manual resync
        instance.report_run_failed(manual)
        # The resync ended: exactly one sync-tagged run may start, the oldest.
        assert dequeued() == {sensor_run.run_id, other.run_id}
        assert ingest.run_id not in dequeued()
    finally:
        instance.dispose()
