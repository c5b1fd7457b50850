"""What an operator does in the Dagster UI that the jobs do not: materialize one asset or a
subset of them by hand (the UI's ad-hoc asset run, every asset's default config), in an order
no job takes, and start runs while the sensor runs too."""

import dagster as dg

from catalog_assets.sensors import onec_change_sensor

from .conftest import materializations


def materialize_from_ui(platform, *assets: str, raise_on_error: bool = True):
    """What "Materialize selected" in the asset graph launches: the implicit asset job with
    that selection and every asset's default config."""
    job = platform.defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=platform.instance,
        asset_selection=[dg.AssetKey(a) for a in assets],
        raise_on_error=raise_on_error,
    )


def test_categories_pushed_by_hand_without_the_tree_send_no_cycle(platform):
    """1C moves a category under its own grandchild. The operator re-fetches the categories
    and re-pushes them from the UI, without `category_tree` in between: the tree the push
    reads still shows the category where it was, but its staged parent closes a cycle. It
    must be held back (as the next tree flags it), not sent to be refused."""
    assert platform.run("full_resync").success
    parents = dict(platform.query("SELECT id, parent FROM category_tree"))
    top, child, grandchild = next(
        (a, b, c)
        for c, b in sorted(parents.items())
        for a in [parents.get(b)]
        if a and a != "0" and parents.get(a) == "0"
    )
    record = platform.catalog.get(top)
    platform.catalog.upsert_category(top, grandchild, record["name"])
    before = len(platform.tec.requests)

    pushed = materialize_from_ui(platform, "onec_categories", "tec_delivery_categories")

    sent = [i for r in platform.tec.requests[before:] for i in r["external_ids"]]
    assert top not in sent, "a category whose staged parent closes a cycle was sent"
    assert materializations(pushed, "tec_delivery_categories")["failed"] == 0
    tree = platform.run("incremental_sync")
    assert dict(platform.query("SELECT id, status FROM category_tree WHERE status = 'cycle'"))
    assert materializations(tree, "tec_delivery_categories")["failed"] == 0


SYNC_ASSETS = [
    "onec_categories",
    "category_tree",
    "onec_products",
    "tec_delivery_categories",
    "tec_delivery_products",
    "outlet_feed_snapshot",
]


def test_the_sensor_waits_for_a_resync_started_from_the_ui(platform):
    """README: re-materializing from the UI is the resync ("does what the button says"), and
    the sensor skips while a sync is queued or running. A run of the asset graph carries no
    job tag, so the sensor must recognise it by what it materializes."""
    assert platform.run("full_resync").success
    keys = {dg.AssetKey(a) for a in SYNC_ASSETS}
    job = platform.defs.resolve_implicit_global_asset_job_def()
    resync = platform.instance.create_run_for_job(
        job.get_subset(asset_selection=keys),
        asset_selection=frozenset(keys),
        status=dg.DagsterRunStatus.STARTED,
    )
    product = platform.catalog.products()[0]
    platform.catalog.upsert_product({"id": product["id"], "price": 4321})  # a genuine change

    with dg.build_sensor_context(
        instance=platform.instance, resources=platform.resources
    ) as context:
        outcome = onec_change_sensor(context)
    assert isinstance(outcome, dg.SkipReason), outcome
    assert resync.run_id in outcome.skip_message


def test_an_unrelated_materialization_does_not_close_a_failed_push_incident(platform):
    """Tec.Delivery is down when the operator re-pushes the products from the UI: the run fails
    and `catalog_alerts` opens an incident (a push stopped by transport fails no check, so the
    run's incident is the only one). Then the operator refreshes the outlet snapshot from the
    UI. Nothing was pushed, yet that success must not be announced as the recovery."""
    import json

    from catalog_assets.alerts import catalog_alerts
    from catalog_assets.notifier import Notifier

    def alerts(cursor):
        with dg.build_sensor_context(
            instance=platform.instance,
            cursor=cursor,
            definitions=platform.defs,
            resources={"notifier": Notifier()},  # unset URL: an `ALERT …` log line
        ) as context:
            result = catalog_alerts(context)
        return result.cursor, json.loads(result.cursor)["open"]

    assert platform.run("full_resync").success
    platform.tec.inject(status=503, times=1000)
    pushed = materialize_from_ui(platform, "tec_delivery_products", raise_on_error=False)
    assert not pushed.success
    cursor, open_incidents = alerts(None)
    [(incident, text)] = open_incidents.items()
    assert "tec_delivery_products" in text

    assert materialize_from_ui(platform, "outlet_feed_snapshot").success
    cursor, open_incidents = alerts(cursor)
    assert incident in open_incidents, "the failed push was announced as recovered"


def test_a_job_run_of_a_subset_does_not_close_a_failed_push_incident(platform):
    """As above, but the snapshot is refreshed from the job's own page ("Materialize selected"
    in `incremental_sync`'s graph): the run carries the job's name and only that asset. Its
    success vouches for what it materialized, not for every asset the job could have."""
    import json

    from catalog_assets.alerts import catalog_alerts
    from catalog_assets.notifier import Notifier

    def alerts(cursor):
        with dg.build_sensor_context(
            instance=platform.instance,
            cursor=cursor,
            definitions=platform.defs,
            resources={"notifier": Notifier()},
        ) as context:
            result = catalog_alerts(context)
        return result.cursor, json.loads(result.cursor)["open"]

    assert platform.run("full_resync").success
    platform.tec.inject(status=503, times=1000)
    pushed = materialize_from_ui(platform, "tec_delivery_products", raise_on_error=False)
    assert not pushed.success
    cursor, open_incidents = alerts(None)
    [(incident, text)] = open_incidents.items()
    assert "tec_delivery_products" in text

    refreshed = platform.defs.resolve_job_def("incremental_sync").execute_in_process(
        instance=platform.instance, asset_selection=[dg.AssetKey("outlet_feed_snapshot")]
    )
    assert refreshed.success and refreshed.dagster_run.job_name == "incremental_sync"
    cursor, open_incidents = alerts(cursor)
    assert incident in open_incidents, "the failed push was announced as recovered"


def test_the_push_that_finished_last_decides_not_the_run_started_last(platform):
    """A resync from the asset graph is started, then the sensor's `incremental_sync` queues
    behind it; the two runs' steps take turns in the `catalog_store` pool, so the job's push
    can succeed before the UI run's push fails. The products' incident is what the last push
    said: open, not opened and recovered on one tick because the job was started later."""
    import json

    from catalog_assets.alerts import catalog_alerts
    from catalog_assets.notifier import Notifier

    def alerts(cursor):
        with dg.build_sensor_context(
            instance=platform.instance,
            cursor=cursor,
            definitions=platform.defs,
            resources={"notifier": Notifier()},
        ) as context:
            result = catalog_alerts(context)
        return result.cursor, json.loads(result.cursor)["open"]

    assert platform.run("full_resync").success
    cursor, _ = alerts(None)
    keys = {dg.AssetKey(a) for a in SYNC_ASSETS}
    job = platform.defs.resolve_implicit_global_asset_job_def()
    resync = platform.instance.create_run_for_job(
        job.get_subset(asset_selection=keys),
        asset_selection=frozenset(keys),
        status=dg.DagsterRunStatus.STARTED,
    )
    assert platform.run("incremental_sync").success  # started after it, finished before it
    platform.instance.report_run_failed(resync)
    cursor, open_incidents = alerts(cursor)
    assert "materialize:tec_delivery_products" in open_incidents, open_incidents
