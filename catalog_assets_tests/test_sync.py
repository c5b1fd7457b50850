"""The whole path through Dagster: 1C emulator -> DuckDB -> Tec.Delivery emulator."""

from contextlib import closing

import dagster as dg
import duckdb

from catalog_assets.checks import HELD_BACK_PRODUCTS
from catalog_assets.mapping import product_item
from catalog_assets.sensors import held_retry_wait, load_sweep, onec_change_sensor

from .conftest import materializations


def live_ids(catalog, kind):
    records = catalog.categories() if kind == "category" else catalog.products()
    return {r["id"] for r in records if r.get("id")}


def pushed_ids(tec, since: int = 0) -> list[str]:
    return [i for r in tec.requests[since:] if r["status"] == 200 for i in r["external_ids"]]


def test_full_resync_delivers_the_whole_catalog(platform):
    result = platform.run("full_resync")
    assert result.success
    tec, catalog = platform.tec, platform.catalog
    assert set(tec.categories) == live_ids(catalog, "category")
    assert set(tec.products) == live_ids(catalog, "product")
    # The emulator stores exactly what we sent: compare with the seed mapping of the source.
    for record in catalog.products()[:50]:
        stored = dict(tec.products[record["id"]])
        assert stored.pop("enable") is True  # the emulator's own availability state
        assert stored == product_item(record)
    products = materializations(result, "onec_products")
    assert products["fetched"] == products["changed"] == len(catalog.products())
    assert products["cursor_before"] == "(none)"
    assert products["cursor_after"] == max(r["modified_at"] for r in catalog.products())
    pushed = materializations(result, "tec_delivery_products")
    assert pushed["pushed"] == len(catalog.products()) and pushed["failed"] == 0
    tree = materializations(result, "category_tree")
    assert tree["flagged"] == 0 and tree["max_depth"] >= 5
    # Every batch is logged with its outcome; categories went parents first.
    batches = platform.query("SELECT entity, item_count, http_status, ok FROM push_batches")
    assert all(ok and status == 200 and 1 <= n <= 100 for _, n, status, ok in batches)
    assert platform.query(
        "SELECT count(*) FROM tec_delivery_products WHERE pushed_hash IS NOT NULL"
    )[0][0] == len(catalog.products())
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 8 and all(check.passed for check in checks)


def test_incremental_pushes_exactly_what_changed(platform):
    platform.run("full_resync")
    catalog, tec = platform.catalog, platform.tec
    before = len(tec.requests)
    products = sorted(catalog.products(), key=lambda r: r["id"])
    for record in products[:3]:
        catalog.upsert_product({"id": record["id"], "price": (record.get("price") or 0) + 10})
    deepest = max(platform.query("SELECT id, depth FROM category_tree"), key=lambda r: r[1])[0]
    catalog.upsert_category(
        deepest, catalog.get(deepest)["parent"], "Переименованная глубокая категория"
    )
    new_id = "11111111-2222-3333-4444-555555555555"
    catalog.upsert_product(
        {
            "id": new_id,
            "parent": deepest,
            "type": "product",
            "name": "Новинка",
            "price": 99,
            "stock": 5,
        }
    )

    result = platform.run("incremental_sync")
    assert result.success
    expected = {r["id"] for r in products[:3]} | {deepest, new_id}
    assert sorted(pushed_ids(tec, before)) == sorted(expected)
    assert tec.products[products[0]["id"]]["price"] == (products[0].get("price") or 0) + 10
    assert tec.categories[deepest]["name"] == "Переименованная глубокая категория"
    meta = materializations(result, "onec_products")
    assert (
        meta["changed"] == 4
    )  # three edits and one new product; items at the cursor are re-read but unchanged


def test_a_run_without_genuine_change_pushes_nothing(platform):
    platform.run("full_resync")
    before = len(platform.tec.requests)
    result = platform.run("incremental_sync")
    assert result.success
    assert platform.tec.requests[before:] == []
    assert materializations(result, "onec_products")["changed"] == 0
    assert materializations(result, "tec_delivery_products")["pushed"] == 0


def tick(platform, cursor=None):
    with dg.build_sensor_context(
        instance=platform.instance, cursor=cursor, resources=platform.resources
    ) as context:
        return onec_change_sensor(context)


def test_sensor_skips_a_quiet_catalog_in_two_requests(platform):
    platform.run("full_resync")
    platform.onec.reset_log()
    outcome = tick(platform)
    assert isinstance(outcome, dg.SkipReason)
    assert (
        "no genuine change" in outcome.skip_message
        and "products: 0 changed" in outcome.skip_message
    )
    assert platform.onec.request_count == 2


def test_sensor_requests_a_run_for_a_deep_category_change(platform):
    platform.run("full_resync")
    deepest = max(platform.query("SELECT id, depth FROM category_tree"), key=lambda r: r[1])[0]
    platform.catalog.upsert_category(deepest, platform.catalog.get(deepest)["parent"], "Новое имя")
    outcome = tick(platform)
    assert isinstance(outcome, dg.SensorResult)
    assert len(outcome.run_requests) == 1
    assert "categories: 1 changed" in outcome.cursor


def test_sensor_starts_no_runs_for_a_record_it_already_quarantined(platform):
    """The cursor cannot pass a record that was never staged, so 1C serves it every tick."""
    platform.run("full_resync")
    platform.catalog.add_raw(
        {
            "id": "bad-price-newest",
            "parent": "0",
            "type": "product",
            "name": "Цена",
            "price": "сто",
            "modified_at": "2026-09-01T00:00:00",
        }
    )
    assert isinstance(tick(platform), dg.SensorResult)  # new in 1C: a genuine change
    assert platform.run("incremental_sync").success  # quarantined
    outcome = tick(platform)
    assert isinstance(outcome, dg.SkipReason), outcome
    platform.catalog.upsert_product({"id": "bad-price-newest", "price": "двести"})
    assert isinstance(tick(platform), dg.SensorResult)  # served otherwise: a change again


def bulk_edit_at_cursor(platform) -> list[dict]:
    """600 products edited within one second (a price-list import) and synced: they sit at the
    cursor and come back every tick, more than a tick reads. The products, oldest first."""
    platform.run("full_resync")
    products = sorted(platform.catalog.products(), key=lambda r: (r["modified_at"], r["id"]))
    for record in products[:600]:
        platform.catalog.upsert_product({"id": record["id"], "price": 99}, "2026-08-01T10:00:00")
    assert platform.run("incremental_sync").success
    return products


def test_sensor_finds_a_change_behind_a_bulk_edit_at_the_cursor(platform):
    """600 products edited within one second (a price-list import) sit at the cursor and come
    back every tick, more than a tick reads: the next tick reads on where the last stopped."""
    catalog = platform.catalog
    products = bulk_edit_at_cursor(platform)

    def ticks(cursor=None):
        with dg.build_sensor_context(
            instance=platform.instance, cursor=cursor, resources=platform.resources
        ) as context:
            return onec_change_sensor(context), context.cursor

    outcome, cursor = ticks()
    assert isinstance(outcome, dg.SkipReason) and "reads on from 500" in outcome.skip_message
    outcome, cursor = ticks(cursor)  # the sixth page: the end, nothing changed
    assert isinstance(outcome, dg.SkipReason) and cursor is None
    # An item of the bulk edited again: `count` at the cursor stays 600, the item moves last.
    catalog.upsert_product({"id": products[0]["id"], "price": 12345}, "2026-08-01T10:05:00")
    outcome, cursor = ticks(cursor)
    assert isinstance(outcome, dg.SkipReason)
    outcome, cursor = ticks(cursor)
    assert isinstance(outcome, dg.SensorResult) and "products: 1 changed" in outcome.cursor
    # An item from before the cursor edited: 1C counts one more at the cursor than swept.
    assert platform.run("incremental_sync").success
    for record in products[:600]:
        catalog.upsert_product({"id": record["id"], "price": 98}, "2026-08-01T11:00:00")
    assert platform.run("incremental_sync").success
    outcome, cursor = ticks()
    catalog.upsert_product({"id": products[-1]["id"], "price": 54321}, "2026-08-01T11:05:00")
    outcome, cursor = ticks(cursor)
    assert isinstance(outcome, dg.SensorResult) and "products: 1 changed" in outcome.cursor


def test_sensor_sweep_survives_1c_deleting_the_items_it_had_passed(platform):
    """A sweep stopped at offset 500 of 600 records at the cursor; 1C then deletes 200 of them.
    The next tick's page at offset 500 lies past 1C's new `count` (400): the sensor must start
    the sweep again, not fail every tick on a page it calls untrustworthy."""
    catalog = platform.catalog
    products = bulk_edit_at_cursor(platform)
    with dg.build_sensor_context(
        instance=platform.instance, resources=platform.resources
    ) as context:
        outcome = onec_change_sensor(context)
        cursor = context.cursor
    assert isinstance(outcome, dg.SkipReason) and "reads on from 500" in outcome.skip_message
    for record in products[:200]:
        catalog.remove(record["id"])
    outcome = tick(platform, cursor)
    assert isinstance(outcome, dg.SkipReason), outcome


def test_categories_shaped_as_the_seeds_sync_and_then_stay_quiet(platform):
    """The seed's categories carry no `modified_at` (README, Decisions: the cursor): they are
    delivered, and unchanged they are no change to the next run or the sensor."""
    wine_parent = "9b2a2ade-c1f1-11e6-9cd7-10bf484d6226"
    for record in (
        {"id": wine_parent, "parent": "0", "name": "Алкогольная продукция", "type": "category"},
        {"id": "ae1441c0-c37c-11e6-9cd7-10bf484d6226", "parent": wine_parent, "name": "Вино",
         "type": "category"},
    ):  # fmt: skip
        platform.catalog.add_raw(record)
    assert platform.run("full_resync").success
    tec = platform.tec
    assert wine_parent in tec.categories
    assert tec.categories["ae1441c0-c37c-11e6-9cd7-10bf484d6226"]["external_parent_id"] == (
        wine_parent
    )
    before = len(tec.requests)
    assert platform.run("incremental_sync").success
    assert tec.requests[before:] == []
    assert isinstance(tick(platform), dg.SkipReason)


def test_a_sensor_cursor_it_cannot_read_starts_the_sweep_afresh():
    assert load_sweep('{"sweep": {"products": ["2026-08-01T10:00:00", 600, 500]}}') == {
        "products": ["2026-08-01T10:00:00", 600, 500]
    }
    for raw in (None, "categories: 1 changed", "[1]", '{"sweep": {"products": ["x", -1, 5]}}'):
        assert load_sweep(raw) == {}


def test_sensor_requests_a_first_sync_on_an_empty_store(platform):
    outcome = tick(platform)
    assert isinstance(outcome, dg.SensorResult) and outcome.run_requests


def test_sensor_does_not_rerun_for_a_product_held_back_by_its_parent(platform):
    """Until 1C fixes the parent, a run could not deliver it: the tick must stay quiet."""
    catalog = platform.catalog
    catalog.upsert_category("orphan", "no-such-parent", "Сирота")
    catalog.upsert_product(
        {"id": "held", "parent": "orphan", "type": "product", "name": "Ждёт", "price": 1}
    )
    first = platform.run("full_resync")
    assert materializations(first, "tec_delivery_products")["held_back"] == 1
    quiet = tick(platform)
    assert isinstance(quiet, dg.SkipReason), quiet
    assert "nothing pending" in quiet.skip_message

    catalog.upsert_category("orphan", "0", "Нашла родителя")
    outcome = tick(platform)
    assert isinstance(outcome, dg.SensorResult) and "categories: 1 changed" in outcome.cursor
    assert platform.run("incremental_sync").success
    assert platform.tec.products["held"]["external_parent_id"] == "orphan"
    assert isinstance(tick(platform), dg.SkipReason)


def test_failed_push_stays_pending_and_the_next_run_delivers_it(platform, monkeypatch):
    platform.tec.inject(
        status=503, times=1000, match=lambda body: not body["payload"][0].get("is_category")
    )
    failed = platform.run("full_resync", raise_on_error=False)
    assert not failed.success
    assert platform.tec.products == {}
    pending = platform.query(
        "SELECT count(*) FROM onec_products p LEFT JOIN tec_delivery_products d "
        "ON d.external_id = p.id WHERE d.pushed_hash IS NULL"
    )[0][0]
    assert pending == len(platform.catalog.products())
    # The cursor moved (everything is staged), yet nothing is lost: pending is a staging fact.
    platform.tec.clear_faults()
    backing_off = tick(platform)
    assert (
        isinstance(backing_off, dg.SkipReason)
        and "failed; next attempt in" in backing_off.skip_message
    )
    monkeypatch.setattr("catalog_assets.sensors.RETRY_AFTER_FAILURE_SECONDS", 0)
    outcome = tick(platform)  # the sensor sees the pending items, even with 1C quiet
    assert isinstance(outcome, dg.SensorResult) and "pending delivery" in outcome.cursor
    assert platform.run("incremental_sync").success
    assert set(platform.tec.products) == live_ids(platform.catalog, "product")


def test_one_bad_item_does_not_hold_back_its_batch(platform):
    victim = sorted(r["id"] for r in platform.catalog.products())[5]
    platform.tec.reject_ids.add(victim)
    result = platform.run("full_resync")
    assert result.success  # 1 of several hundred is under the reject threshold
    assert set(platform.tec.products) == live_ids(platform.catalog, "product") - {victim}
    row = platform.query(
        "SELECT attempts, last_error FROM tec_delivery_products WHERE external_id = ?", [victim]
    )[0]
    assert row[0] == 1 and victim in row[1]
    check = {
        c.check_name: c
        for c in result.get_asset_check_evaluations()
        if c.asset_key == dg.AssetKey("tec_delivery_products")
    }
    assert not check["no_rejected_items"].passed
    # Fixed on the Tec.Delivery side: the next run delivers it.
    platform.tec.reject_ids.clear()
    assert platform.run("incremental_sync").success
    assert victim in platform.tec.products


def test_removed_items_are_disabled_and_revived(platform):
    platform.run("full_resync")
    gone = sorted(r["id"] for r in platform.catalog.products())[:3]
    saved = {i: platform.catalog.get(i) for i in gone}
    for item_id in gone:
        platform.catalog.remove(item_id)
    result = platform.run("full_resync")
    assert materializations(result, "onec_products")["removed"] == 3
    assert all(platform.tec.products[i]["enable"] is False for i in gone)
    platform.catalog.upsert_product(saved[gone[0]])
    platform.run("incremental_sync")
    assert platform.tec.products[gone[0]]["enable"] is True


def test_removal_guard_holds_a_half_empty_answer(platform):
    platform.run("full_resync")
    products = sorted(r["id"] for r in platform.catalog.products())
    for item_id in products[: len(products) // 2]:
        platform.catalog.remove(item_id)
    result = platform.run("full_resync")
    assert materializations(result, "onec_products")["removals_blocked"] == len(products) // 2
    assert all(platform.tec.products[i].get("enable", True) for i in products)
    guard = {
        c.check_name: c
        for c in result.get_asset_check_evaluations()
        if c.asset_key == dg.AssetKey("onec_products")
    }
    assert not guard["removals_within_guard"].passed
    confirmed = platform.run(
        "full_resync",
        run_config={
            "ops": {
                "onec_products": {"config": {"full": True, "confirm_removals": True}},
                "onec_categories": {"config": {"full": True}},
                "tec_delivery_categories": {"config": {"repush_all": True}},
                "tec_delivery_products": {"config": {"repush_all": True}},
            }
        },
    )
    assert materializations(confirmed, "onec_products")["removed"] == len(products) // 2
    assert platform.tec.products[products[0]]["enable"] is False


def test_orphans_and_cycles_are_flagged_not_pushed(platform):
    catalog = platform.catalog
    catalog.upsert_category("orphan-1", "no-such-parent", "Сирота")
    catalog.upsert_category("cyc-a", "cyc-b", "Цикл А")
    catalog.upsert_category("cyc-b", "cyc-a", "Цикл Б")
    result = platform.run("full_resync")
    assert result.success
    statuses = dict(platform.query("SELECT id, status FROM category_tree WHERE status <> 'ok'"))
    assert statuses == {"orphan-1": "orphan", "cyc-a": "cycle", "cyc-b": "cycle"}
    assert not {"orphan-1", "cyc-a", "cyc-b"} & set(platform.tec.categories)
    check = next(
        c for c in result.get_asset_check_evaluations() if c.check_name == "category_tree_is_whole"
    )
    assert not check.passed and check.metadata["flagged"].value == 3


def test_a_category_whose_parent_1c_deleted_is_an_orphan(platform):
    """1C deletes a category but not a child that still names it. The full resync disables
    the parent at Tec.Delivery; judged with the removed parent as if it were live, the child
    looked whole, so its edits (and a new category under the deleted one, with its products)
    waited for a parent that never comes back, with every check passing."""
    assert platform.run("full_resync").success
    catalog = platform.catalog
    parents = {c["id"]: c["parent"] for c in catalog.categories()}
    child = next(
        c
        for c in sorted(parents)
        if c not in parents.values() and parents.get(parents[c], "0") != "0"
    )
    gone, grandparent = parents[child], parents[parents[child]]
    name = catalog.get(child)["name"]
    catalog.remove(gone)
    catalog.upsert_category(child, gone, name + " (новое имя)")
    catalog.upsert_category("new-under-gone", gone, "Новая под удалённой")
    catalog.upsert_product(
        {"id": "waits", "parent": "new-under-gone", "type": "product", "name": "Ждёт", "price": 1}
    )

    result = platform.run("full_resync")
    assert result.success
    assert platform.tec.categories[gone]["enable"] is False
    tree = {
        i: (s, p) for i, s, p in platform.query("SELECT id, status, problem FROM category_tree")
    }
    for flagged in (child, "new-under-gone"):
        assert tree[flagged] == ("orphan", f"parent {gone} was removed in 1C")
    assert platform.tec.categories[child]["name"] == name  # held back, not sent
    assert "new-under-gone" not in platform.tec.categories
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["category_tree_is_whole"].passed
    assert not checks["no_held_back_items"].passed
    assert platform.query(f"SELECT reason FROM ({HELD_BACK_PRODUCTS}) WHERE id = 'waits'") == [
        ("parent category flagged: orphan",)
    ]

    # Fixed in 1C: everything that hung under the deleted category moves up one level.
    for category in catalog.categories():
        if category["parent"] == gone:
            catalog.upsert_category(category["id"], grandparent, category["name"])
    healed = platform.run("incremental_sync")
    assert healed.success
    assert platform.tec.categories[child]["name"] == name + " (новое имя)"
    assert platform.tec.categories["new-under-gone"]["external_parent_id"] == grandparent
    assert platform.tec.products["waits"]["external_parent_id"] == "new-under-gone"
    assert all(c.passed for c in healed.get_asset_check_evaluations())


def test_an_unusable_page_is_quarantined_and_the_rest_syncs(platform):
    html = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    # The second product page answers 200 with a proxy's HTML, every time it is asked.
    platform.onec.inject(
        status=200,
        body=html,
        content_type="text/html",
        times=3,
        match=lambda q: q.get("type") == "product" and q.get("offset") == "99",
    )
    result = platform.run("full_resync")
    assert result.success
    products = sorted(platform.catalog.products(), key=lambda r: (r["modified_at"], r["id"]))
    hidden = {r["id"] for r in products[100:199]}  # asked for from 99, which page 1 read
    assert set(platform.tec.products) == {r["id"] for r in products} - hidden
    meta = materializations(result, "onec_products")
    assert meta["cursor_after"] == "(none)" and "not JSON" in meta["paging_anomalies"]
    quarantined = platform.query(
        "SELECT record_key, reason FROM quarantine WHERE resolved_at IS NULL"
    )
    assert quarantined and quarantined[0][0] == "page@99" and "text/html" in quarantined[0][1]
    check = {
        c.check_name: c
        for c in result.get_asset_check_evaluations()
        if c.asset_key == dg.AssetKey("onec_products")
    }
    assert not check["no_quarantined_records"].passed
    # 1C recovers: the held cursor makes the next incremental run read the hidden page again.
    assert platform.run("incremental_sync").success
    assert hidden <= set(platform.tec.products)
    assert platform.query("SELECT count(*) FROM quarantine WHERE resolved_at IS NULL")[0][0] == 0


def test_bad_records_are_quarantined_and_released_when_fixed(platform):
    catalog = platform.catalog
    catalog.add_raw(
        {
            "id": "bad-price",
            "parent": "0",
            "type": "product",
            "name": "Цена?",
            "price": "сто",
            "modified_at": "2026-03-01T00:00:00",
        }
    )
    catalog.add_raw(
        {
            "parent": "0",
            "type": "product",
            "name": "Без id",
            "price": 1,
            "modified_at": "2026-03-01T00:00:00",
        }
    )
    catalog.add_raw(
        {
            "id": "bad-time",
            "parent": "0",
            "type": "product",
            "name": "Время",
            "price": 1,
            "modified_at": "вчера",
        }
    )
    result = platform.run("full_resync")
    assert result.success
    reasons = dict(
        platform.query(
            "SELECT record_key, reason FROM quarantine WHERE resolved_at IS NULL AND record_id IS NOT NULL"
        )
    )
    assert (
        "price must be a number" in reasons["bad-price"]
        and "is not in the form" in reasons["bad-time"]
    )
    assert platform.query("SELECT count(*) FROM quarantine WHERE record_id IS NULL")[0][0] == 1
    assert set(platform.tec.products) == live_ids(catalog, "product") - {
        "bad-price",
        "bad-time",
    } - {None}
    catalog.upsert_product({"id": "bad-price", "price": 100})  # fixed in 1C: a new modified_at
    assert platform.run("incremental_sync").success
    assert platform.tec.products["bad-price"]["price"] == 100
    assert platform.query(
        "SELECT resolved_at IS NOT NULL FROM quarantine WHERE record_key = 'bad-price'"
    )[0][0]


def test_a_push_prunes_journal_rows_past_retention_and_keeps_the_rest(platform):
    platform.run("full_resync")
    total = platform.query("SELECT count(*) FROM push_batches WHERE entity = 'products'")[0][0]
    # Two batches age past the 14-day retention. One is left unapplied, as if a run had died
    # between recording and folding it in: the push folds it in first, then prunes it.
    platform.query(
        "UPDATE push_batches SET started_at = started_at - INTERVAL 15 DAY WHERE batch_id IN ("
        " SELECT batch_id FROM push_batches WHERE entity = 'products' ORDER BY started_at LIMIT 2)"
    )
    platform.query(
        "UPDATE push_batches SET applied = false, item_hashes = ["
        " 'stale' FOR _ IN item_hashes] WHERE batch_id = ("
        " SELECT batch_id FROM push_batches WHERE entity = 'products' ORDER BY started_at LIMIT 1)"
    )
    # Tec.Delivery has reported on every delivery so far (a batch whose notification is still
    # awaited is kept whatever its age; test_push_journal.py).
    platform.query(
        "UPDATE tec_delivery_products SET processed_batch_id = last_batch_id,"
        " processing_status = 'done'"
    )
    before = len(platform.tec.requests)
    result = platform.run("incremental_sync")
    assert materializations(result, "tec_delivery_products")["journal_rows_pruned"] == 2
    left = platform.query("SELECT count(*) FROM push_batches WHERE entity = 'products'")[0][0]
    assert left == total - 2 + 1  # this run's one re-push batch is recent
    # Folded in before it was deleted: its items took the 'stale' hash, so they went out again.
    assert len(platform.tec.requests) > before
    assert platform.query(
        "SELECT count(*) FROM tec_delivery_products WHERE pushed_hash = 'stale'"
    ) == [(0,)]


def test_sensor_finishes_a_run_that_stopped_between_its_steps(platform, monkeypatch):
    """A run stages a new category (and moves the cursor past it), then dies before
    `category_tree`: the category is in no push and no change in 1C any more, so only the
    tree being older than staging shows the work left; likewise a snapshot older than it."""
    import catalog_assets.assets.onec as onec_assets
    import catalog_assets.sensors as sensors

    platform.run("full_resync")
    catalog = platform.catalog
    catalog.upsert_category("cafe-cat", "0", "Новая категория")
    catalog.upsert_product(
        {"id": "cafe-prod", "parent": "cafe-cat", "type": "product", "name": "Новый", "price": 1}
    )

    def died(*args, **kwargs):
        raise RuntimeError("the run's process died in category_tree")

    with monkeypatch.context() as patched:
        patched.setattr(onec_assets, "build_category_tree", died)
        assert not platform.run("incremental_sync", raise_on_error=False).success
    monkeypatch.setattr(sensors, "RETRY_AFTER_FAILURE_SECONDS", 0)
    outcome = tick(platform)
    assert isinstance(outcome, dg.SensorResult), outcome
    assert "newer than the last category_tree and outlet_feed_snapshot" in outcome.cursor
    assert "categories: 0 changed" in outcome.cursor and "0 items pending" in outcome.cursor
    assert platform.run("incremental_sync").success
    assert "cafe-cat" in platform.tec.categories and "cafe-prod" in platform.tec.products
    assert isinstance(tick(platform), dg.SkipReason)


def test_sensor_backs_off_while_1c_keeps_serving_an_unusable_page(platform):
    """A held pass is re-read at once; when the re-read holds again (the same page is bad every
    time), the next waits, twice as long each time, instead of re-reading every tick."""
    platform.onec.inject(
        status=200,
        body="<html><body><h1>502 Bad Gateway</h1></body></html>",
        content_type="text/html",
        times=10_000,
        match=lambda q: q.get("type") == "product" and q.get("offset") == "99",
    )
    assert platform.run("full_resync").success
    first = tick(platform)
    assert isinstance(first, dg.SensorResult) and "held its cursor" in first.cursor
    assert platform.run("incremental_sync").success  # holds again
    second = tick(platform)
    assert isinstance(second, dg.SkipReason)
    assert "products: 2 held passes in a row; next re-read in" in second.skip_message
    assert held_retry_wait(2) == 30 and held_retry_wait(3) == 60 and held_retry_wait(30) == 900


# A writing step as a sync run opens the store; it runs while 1C answers the tick.
WRITER = """
import sys
from catalog_assets.storage import CatalogStore, StoreBusyError
try:
    with CatalogStore(path=sys.argv[1], lock_timeout_seconds=3).connect():
        print("opened")
except StoreBusyError as exc:
    print(f"StoreBusyError: {exc}")
"""


def test_sensor_does_not_hold_the_store_while_1c_answers(platform):
    """DuckDB's read-only open locks out writing processes: a run starting while 1C is slow to
    answer a tick must not wait for 1C (and fail with StoreBusyError after 30 s)."""
    import subprocess
    import sys
    from pathlib import Path

    assert platform.run("full_resync").success
    outcomes: list[str] = []

    def writer_opens_the_store(query):
        if query.get("type") == "product":
            done = subprocess.run(
                [sys.executable, "-c", WRITER, platform.store.path],
                capture_output=True,
                text=True,
                timeout=60,
                cwd=Path(__file__).resolve().parents[1],
            )
            outcomes.append(done.stdout.strip() or done.stderr.strip()[-200:])

    platform.onec.on_request(writer_opens_the_store)
    try:
        tick(platform)
    finally:
        platform.onec.on_request(None)
    assert outcomes == ["opened"]


def test_a_record_dated_in_the_future_does_not_carry_the_cursor_past_later_edits(platform):
    """A mistyped year in 1C (2062) must not move the cursor there, or every edit dated
    before it (all of them, for decades) would go unseen by the sensor and incremental runs."""
    platform.run("full_resync")
    catalog = platform.catalog
    first, second = (p["id"] for p in catalog.products()[:2])
    catalog.upsert_product({"id": first, "price": 11}, "2062-01-01T00:00:00")
    result = platform.run("incremental_sync")
    assert materializations(result, "onec_products")["future_dated"] == first
    assert platform.tec.products[first]["price"] == 11  # staged and delivered all the same
    [(cursor,)] = platform.query(
        "SELECT modified_since FROM sync_cursors WHERE entity = 'products'"
    )
    assert cursor < "2062"
    catalog.upsert_product({"id": second, "price": 22})
    assert isinstance(tick(platform), dg.SensorResult)
    assert platform.run("incremental_sync").success
    assert platform.tec.products[second]["price"] == 22


def test_a_removal_share_given_as_a_percentage_is_refused():
    """20 meaning 20% would switch the removal guard off without a word."""
    import pydantic
    import pytest

    from catalog_assets.assets.config import FetchConfig

    assert FetchConfig(max_removal_share=0.2).max_removal_share == 0.2
    for wrong in (20, -0.1):
        with pytest.raises(pydantic.ValidationError):
            FetchConfig(max_removal_share=wrong)


# What the store's first release (c571c1e) did not have: tables and columns added since, which
# only a writing open (`CatalogStore.connect`) adds to an existing store.
ADDED_SINCE_THE_FIRST_RELEASE = """
DROP TABLE outlet_snapshot_published; DROP TABLE outlet_publications;
ALTER TABLE onec_categories DROP COLUMN left_subtrees;
ALTER TABLE onec_products DROP COLUMN left_subtrees;
ALTER TABLE push_batches DROP COLUMN item_hashes; ALTER TABLE push_batches DROP COLUMN applied;
""" + "".join(
    f"ALTER TABLE {table} DROP COLUMN {column};\n"
    for table in ("tec_delivery_categories", "tec_delivery_products")
    for column in ("processed_at", "processed_batch_id", "processing_status")
)


def test_the_sensor_starts_the_run_that_upgrades_a_store_from_an_older_release(platform):
    """After an upgrade, nothing but a run adds what the new code expects to the old store,
    and the sensor is what starts runs: reading the old store as if it were current, it failed
    on every tick (no such table) and no sync ran until someone started one by hand."""
    assert platform.run("full_resync").success
    with closing(duckdb.connect(platform.store.path)) as con:
        con.execute(ADDED_SINCE_THE_FIRST_RELEASE)
    product = platform.catalog.products()[0]
    platform.catalog.upsert_product({**product, "price": 4321})

    outcome = tick(platform)
    assert isinstance(outcome, dg.SensorResult) and outcome.run_requests, outcome
    assert "predates this code's schema" in outcome.cursor
    assert "outlet_snapshot_published" in outcome.cursor
    assert platform.run("incremental_sync").success
    assert platform.tec.products[product["id"]]["price"] == 4321
    assert isinstance(tick(platform), dg.SkipReason)


def test_a_full_resync_restages_what_an_older_release_derived_from_the_same_record(platform):
    """What staging derives from a record (its parent above all) is not covered by the hash,
    which is the record's own: a release before 1C's empty reference was the root staged an
    item under it with that GUID as its parent, an orphan. 1C serves the same record after
    the upgrade, and the full resync must still derive its place again, or it stays held
    back until someone edits it in 1C."""
    empty = "00000000-0000-0000-0000-000000000000"
    when = "2026-09-01T00:00:00"
    platform.catalog.upsert_category("top-by-empty-ref", empty, "Верх", when)
    platform.catalog.upsert_product({"id": "at-root", "parent": empty, "name": "Корень"}, when)
    assert platform.run("full_resync").success
    with closing(duckdb.connect(platform.store.path)) as con:  # as the older release staged them
        for table, item in (("onec_categories", "top-by-empty-ref"), ("onec_products", "at-root")):
            con.execute(f"UPDATE {table} SET parent = ? WHERE id = ?", [empty, item])

    assert platform.run("full_resync").success
    assert platform.query(
        "SELECT id, parent FROM onec_categories WHERE id = 'top-by-empty-ref'"
        " UNION ALL SELECT id, parent FROM onec_products WHERE id = 'at-root' ORDER BY id"
    ) == [("at-root", "0"), ("top-by-empty-ref", "0")]
    assert platform.query("SELECT status FROM category_tree WHERE id = 'top-by-empty-ref'") == [
        ("ok",)
    ]
