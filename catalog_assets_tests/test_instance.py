"""dagster.yaml is a valid instance that queues syncs one at a time."""

import shutil
from pathlib import Path

import dagster as dg


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
