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
