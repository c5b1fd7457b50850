"""What an operator does in the Dagster UI that the jobs do not: materialize one asset or a
subset of them by hand (the UI's ad-hoc asset run, every asset's default config), in an order
no job takes, and start runs while the sensor runs too."""

import json
import os
from types import SimpleNamespace

import dagster as dg
from dagster._core.events import DagsterEvent, DagsterEventType

from catalog_assets.alerts import catalog_alerts
from catalog_assets.definitions import build_definitions
from catalog_assets.notifier import Notifier
from catalog_assets.sensors import onec_change_sensor

from .conftest import make_resources, materializations


def materialize_from_ui(platform, *assets: str, raise_on_error: bool = True):
    """What "Materialize selected" in the asset graph launches: the implicit asset job with
    that selection and every asset's default config."""
    job = platform.defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=platform.instance,
        asset_selection=[dg.AssetKey(a) for a in assets],
        raise_on_error=raise_on_error,
    )


def alerts(platform, cursor):
    """One `catalog_alerts` tick (no webhook: an `ALERT …` log line); its cursor and the
    incidents it keeps open."""
    with dg.build_sensor_context(
        instance=platform.instance,
        cursor=cursor,
        definitions=platform.defs,
        resources={"notifier": Notifier()},
    ) as context:
        result = catalog_alerts(context)
    return result.cursor, json.loads(result.cursor)["open"]


def failed_push_incident(platform):
    """Tec.Delivery is down when the operator re-pushes the products from the UI: the run
    fails and `catalog_alerts` opens an incident for the asset (a push stopped by transport
    fails no check, so it is the only one)."""
    assert platform.run("full_resync").success
    platform.tec.inject(status=503, times=1000)
    pushed = materialize_from_ui(platform, "tec_delivery_products", raise_on_error=False)
    assert not pushed.success
    cursor, open_incidents = alerts(platform, None)
    [(incident, text)] = open_incidents.items()
    assert incident == "materialize:tec_delivery_products" and "Push of products stopped" in text
    return cursor, incident


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


def resync_started_from_the_ui(platform) -> dg.DagsterRun:
    """A run of the asset graph over every sync asset, as the UI starts it, left running."""
    keys = {dg.AssetKey(a) for a in SYNC_ASSETS}
    job = platform.defs.resolve_implicit_global_asset_job_def()
    return platform.instance.create_run_for_job(
        job.get_subset(asset_selection=keys),
        asset_selection=frozenset(keys),
        status=dg.DagsterRunStatus.STARTED,
    )


def test_the_sensor_waits_for_a_resync_started_from_the_ui(platform):
    """README: re-materializing from the UI is the resync ("does what the button says"), and
    the sensor skips while a sync is queued or running. A run of the asset graph carries no
    job tag, so the sensor must recognise it by what it materializes."""
    assert platform.run("full_resync").success
    resync = resync_started_from_the_ui(platform)
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
    cursor, incident = failed_push_incident(platform)

    assert materialize_from_ui(platform, "outlet_feed_snapshot").success
    cursor, open_incidents = alerts(platform, cursor)
    assert incident in open_incidents, "the failed push was announced as recovered"


def test_a_job_run_of_a_subset_does_not_close_a_failed_push_incident(platform):
    """As above, but the snapshot is refreshed from the job's own page ("Materialize selected"
    in `incremental_sync`'s graph): the run carries the job's name and only that asset. Its
    success vouches for what it materialized, not for every asset the job could have."""
    cursor, incident = failed_push_incident(platform)

    refreshed = platform.defs.resolve_job_def("incremental_sync").execute_in_process(
        instance=platform.instance, asset_selection=[dg.AssetKey("outlet_feed_snapshot")]
    )
    assert refreshed.success and refreshed.dagster_run.job_name == "incremental_sync"
    cursor, open_incidents = alerts(platform, cursor)
    assert incident in open_incidents, "the failed push was announced as recovered"


def test_the_push_that_finished_last_decides_not_the_run_started_last(platform):
    """A resync from the asset graph is started, then the sensor's `incremental_sync` queues
    behind it; the two runs' steps take turns in the `catalog_store` pool, so the job's push
    can succeed before the UI run's push fails. The products' incident is what the last push
    said: open, not opened and recovered on one tick because the job was started later."""
    assert platform.run("full_resync").success
    cursor, _ = alerts(platform, None)
    resync = resync_started_from_the_ui(platform)
    assert platform.run("incremental_sync").success  # started after it, finished before it
    platform.instance.report_run_failed(resync)
    cursor, open_incidents = alerts(platform, cursor)
    assert "materialize:tec_delivery_products" in open_incidents, open_incidents


def assert_sensor_requests_a_run(platform) -> None:
    with dg.build_sensor_context(
        instance=platform.instance, resources=platform.resources
    ) as context:
        outcome = onec_change_sensor(context)
    assert isinstance(outcome, dg.SensorResult) and outcome.run_requests, outcome


def test_a_removal_staged_without_the_tree_starts_a_run_that_recomputes_it(platform):
    """The operator runs a full pass of the categories from the UI (`full: true`, which judges
    removals), then pushes and refreshes the snapshot, without `category_tree`: 1C deleted a
    parent and kept its children. Their place now depends on that removal (an orphan under a
    disabled parent), so the tree is behind: the sensor must start the run that recomputes it,
    or the children stay 'ok', unflagged, with every check passing, until 1C edits a category."""
    assert platform.run("full_resync").success
    parents = dict(platform.query("SELECT id, parent FROM category_tree"))
    child = next(c for c, p in sorted(parents.items()) if p != "0" and parents.get(p, "0") != "0")
    gone = parents[child]
    for removed in [c for c, p in parents.items() if p == gone and c != child]:
        platform.catalog.upsert_category(
            removed, parents[gone], platform.catalog.get(removed)["name"]
        )
    for product in platform.catalog.products():
        if product["parent"] == gone:
            platform.catalog.upsert_product({"id": product["id"], "parent": parents[gone]})
    platform.catalog.remove(gone)
    assert platform.run("incremental_sync").success  # the moves, before the deletion is judged

    job = platform.defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(
        instance=platform.instance,
        asset_selection=[dg.AssetKey(a) for a in ("onec_categories", "tec_delivery_categories")],
        run_config={"ops": {"onec_categories": {"config": {"full": True}}}},
    ).success
    assert materialize_from_ui(platform, "outlet_feed_snapshot").success
    assert platform.tec.categories[gone]["enable"] is False

    assert_sensor_requests_a_run(platform)
    assert platform.run("incremental_sync").success
    assert platform.query(f"SELECT status FROM category_tree WHERE id = '{child}'") == [("orphan",)]


def test_a_parent_product_staged_after_the_tree_starts_a_run_that_recomputes_it(platform):
    """A category under a product is flagged `parent_is_product` only if the tree sees the
    product staged. The operator materializes the graph from the left, one asset at a time:
    the tree before the products, then the pushes and the snapshot. The tree calls the parent
    "not a known category" (an operator then looks in 1C for a category that never existed),
    and nothing downstream is behind, so the sensor must see the tree is: else it stays wrong,
    every check consistent with it, until 1C edits a category."""
    product = platform.catalog.products()[0]["id"]
    platform.catalog.upsert_category("under-product", product, "Под товаром")
    for asset in SYNC_ASSETS:  # left to right, as the graph shows them
        assert materialize_from_ui(platform, asset).success
    flagged = "SELECT status FROM category_tree WHERE id = 'under-product'"
    assert platform.query(flagged) == [("orphan",)]

    assert_sensor_requests_a_run(platform)
    assert platform.run("incremental_sync").success
    assert platform.query(flagged) == [("parent_is_product",)]


def test_a_check_run_from_the_ui_does_not_close_a_failed_push_incident(platform):
    """As above, but the operator then executes a check from the UI ("Execute" on
    `outlet_is_live`): a run of the implicit asset job that selects no asset at all. It
    materialized nothing, so it vouches for no asset, let alone the failed push."""
    cursor, incident = failed_push_incident(platform)

    check = dg.AssetCheckKey(dg.AssetKey("outlet_deliveries"), "outlet_is_live")
    job = platform.defs.resolve_implicit_global_asset_job_def()
    checked = platform.instance.create_run_for_job(
        job.get_subset(asset_selection=set(), asset_check_selection={check}),
        asset_selection=frozenset(),
        status=dg.DagsterRunStatus.STARTED,
    )
    assert checked.job_name == "__ASSET_JOB" and not checked.asset_selection
    platform.instance.report_dagster_event(
        DagsterEvent(DagsterEventType.RUN_SUCCESS.value, job_name=checked.job_name),
        run_id=checked.run_id,
    )
    cursor, open_incidents = alerts(platform, cursor)
    assert incident in open_incidents, "the failed push was announced as recovered"


def test_a_job_that_materializes_the_asset_again_closes_its_incident(platform):
    """The other side of the rule: once Tec.Delivery is back, the sensor's next
    `incremental_sync` (its whole graph) pushes the products, and that is the recovery."""
    cursor, incident = failed_push_incident(platform)
    platform.tec.clear_faults()
    assert platform.run("incremental_sync").success
    cursor, open_incidents = alerts(platform, cursor)
    assert open_incidents == {}


def incremental_sync_for_reexecution() -> dg.JobDefinition:
    """The job as a code server loads it for a re-execution (`dg.reconstructable`), wired to
    the test's emulators and store, whose addresses the test puts in the environment."""
    resources = make_resources(
        SimpleNamespace(url=os.environ["REEXEC_ONEC_URL"]),
        SimpleNamespace(url=os.environ["REEXEC_TEC_URL"]),
        os.environ["REEXEC_DB"],
    )
    return build_definitions(resources).resolve_job_def("incremental_sync")


def test_a_reexecution_from_failure_vouches_only_for_the_steps_it_ran(platform, monkeypatch):
    """`incremental_sync` fails pushing the products (Tec.Delivery down). Meanwhile the
    operator re-fetches the products from the UI while 1C refuses them: a second incident.
    Tec.Delivery comes back and the operator clicks "Re-execute from failure": the new run
    carries its parent's selection (the whole job) but runs only the push. It delivers the
    pending product and closes the job's incident; 1C still refuses the products, and nothing
    re-fetched them, so that incident stays open."""
    for name, value in (
        ("REEXEC_ONEC_URL", platform.onec.url),
        ("REEXEC_TEC_URL", platform.tec.url),
        ("REEXEC_DB", platform.store.path),
    ):
        monkeypatch.setenv(name, value)
    job = dg.reconstructable(incremental_sync_for_reexecution)
    assert platform.run("full_resync").success
    cursor, _ = alerts(platform, None)
    product = platform.catalog.products()[0]
    platform.catalog.upsert_product({"id": product["id"], "price": 4321})
    platform.tec.inject(status=503, times=1000)
    failed = dg.execute_job(job, instance=platform.instance, raise_on_error=False)
    assert not failed.success
    platform.onec.inject(status=500, times=1000, match=lambda query: query["type"] == "product")
    assert not materialize_from_ui(platform, "onec_products", raise_on_error=False).success
    cursor, open_incidents = alerts(platform, cursor)
    assert set(open_incidents) == {"run:incremental_sync", "materialize:onec_products"}

    platform.tec.clear_faults()
    again = dg.execute_job(
        job,
        instance=platform.instance,
        reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, platform.instance),
    )
    assert again.success and again.dagster_run.step_keys_to_execute == ["tec_delivery_products"]
    assert platform.tec.products[product["id"]]["price"] == 4321
    cursor, open_incidents = alerts(platform, cursor)
    assert set(open_incidents) == {"materialize:onec_products"}, open_incidents
