"""The code location loads, with the names the README and the UI promise."""

import dagster as dg

from catalog_assets.definitions import build_definitions


def test_definitions_load_from_environment(monkeypatch):
    monkeypatch.setenv("ONEC_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("TEC_DELIVERY_TOKEN", "x")
    monkeypatch.delenv("TEC_DELIVERY_URL", raising=False)
    defs = build_definitions()
    defs.resolve_job_def("full_resync")
    defs.resolve_job_def("incremental_sync")
    assert defs.resolve_sensor_def("onec_change_sensor")
    assert defs.resolve_sensor_def("catalog_alerts")
    assert defs.resolve_sensor_def("tec_delivery_webhook_sensor")
    assert defs.resolve_sensor_def("outlet_monitor_sensor")
    nightly = defs.resolve_schedule_def("nightly_full_resync")
    assert (nightly.job_name, nightly.cron_schedule) == ("full_resync", "0 3 * * *")
    assert nightly.default_status == dg.DefaultScheduleStatus.STOPPED
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {
        "onec_categories",
        "category_tree",
        "onec_products",
        "tec_delivery_categories",
        "tec_delivery_products",
        "tec_delivery_processing",
        "outlet_feed_snapshot",
        "outlet_deliveries",
    }
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("tec_delivery_products")).parent_keys == {
        dg.AssetKey("onec_products"),
        dg.AssetKey("tec_delivery_categories"),
    }


def test_module_exposes_defs():
    from catalog_assets.definitions import defs

    assert isinstance(defs, dg.Definitions)


def deployed_full_resync() -> dg.JobDefinition:
    """The job as a deployment loads it: from the environment, by reference."""
    return build_definitions().resolve_job_def("full_resync")


def test_a_deployed_run_runs_every_step_in_the_run_process(platform, monkeypatch, tmp_path):
    """Dagster's default executor starts a process per step (~2 s each: imports, resources,
    a DuckDB open); `dagster job execute`, the daemon and the UI all use the job's executor,
    which `execute_in_process` ignores. So this runs the job the way a deployment does."""
    monkeypatch.setenv("ONEC_BASE_URL", platform.onec.url)
    monkeypatch.setenv("ONEC_USERNAME", "integration")
    monkeypatch.setenv("TEC_DELIVERY_URL", platform.tec.url)
    monkeypatch.setenv("CATALOG_DUCKDB_PATH", str(tmp_path / "deployed.duckdb"))
    monkeypatch.setenv("OUTLET_SNAPSHOT_DIR", str(tmp_path / "snapshots"))
    monkeypatch.setenv("OUTLET_STATE_PATH", str(tmp_path / "outlet_state.sqlite"))
    monkeypatch.setenv("WEBHOOK_SPOOL_PATH", str(tmp_path / "webhooks.sqlite"))
    with dg.execute_job(dg.reconstructable(deployed_full_resync), platform.instance) as result:
        assert result.success
        events = platform.instance.all_logs(result.run_id)
    kinds = {e.dagster_event.event_type_value for e in events if e.dagster_event}
    assert "STEP_WORKER_STARTING" not in kinds
    assert {
        e.dagster_event.step_key for e in events if e.dagster_event and e.dagster_event.step_key
    } == {
        "onec_categories",
        "category_tree",
        "onec_products",
        "outlet_feed_snapshot",
        "tec_delivery_categories",
        "tec_delivery_products",
    }
    assert set(platform.tec.products) == {r["id"] for r in platform.catalog.products()}
