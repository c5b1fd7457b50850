"""(3) Tec.Delivery rejects part of what we send.

The emulator rejects a whole batch when any item in it is invalid (and stores nothing of it),
which is what bisection has to cope with. `fail_always_ids` makes an item invalid for good, so
the retry cap and the dead letter are reached through real runs, not by editing DuckDB.
"""

import math

import dagster as dg

from catalog_assets.assets.tec_delivery import (
    MAX_ATTEMPTS,
    tec_delivery_categories,
    tec_delivery_products,
)

from ..conftest import materializations
from .conftest import delivered, live_valid_ids


def check_result(result, asset: str, name: str):
    return next(
        c
        for c in result.get_asset_check_evaluations()
        if c.asset_key == dg.AssetKey(asset) and c.check_name == name
    )


def requests_carrying(platform, item_id: str, since: int = 0) -> int:
    return sum(1 for r in platform.tec.requests[since:] if item_id in r["external_ids"])


def test_poison_items_are_isolated_capped_dead_lettered_and_redriven(platform, ledger):
    ids = sorted(r["id"] for r in platform.catalog.products())
    poison = {ids[7], ids[42]}  # two offenders in the first batch of 100
    platform.tec.fail_always_ids.update(poison)
    ledger.fault("Tec.Delivery rejects an item for good", len(poison))

    before = len(platform.tec.requests)
    first = platform.run("full_resync")
    assert first.success  # 2 of 656 is under the 10% reject threshold
    # Only the offenders are held back; the other 98 of their batch went out.
    assert delivered(platform) == live_valid_ids(platform) - poison
    product_requests = [
        r for r in platform.tec.requests[before:] if not r["payload"][0].get("is_category")
    ]
    batches = math.ceil(len(ids) / 100)
    # Bisecting 100 items with 2 offenders: at most 2 * 2 * log2(100) extra requests.
    assert len(product_requests) <= batches + 4 * math.ceil(math.log2(100))
    rows = platform.query(
        "SELECT external_id, attempts, last_error, dead_lettered_at FROM tec_delivery_products "
        "WHERE last_error IS NOT NULL ORDER BY external_id"
    )
    assert {r[0] for r in rows} == poison
    assert all(r[1] == 1 and "injected" in r[2] and r[3] is None for r in rows)
    check = check_result(first, "tec_delivery_products", "no_rejected_items")
    assert not check.passed and check.metadata["rejected_pending"].value == 2

    # Retried on later runs until the cap; every run carries each offender once, alone.
    for attempt in range(2, MAX_ATTEMPTS + 1):
        mark = len(platform.tec.requests)
        run = platform.run("incremental_sync", raise_on_error=False)
        ledger.fault("rejected retry", len(poison))
        assert not run.success  # 2 of 2 rejected: the run says so
        assert all(requests_carrying(platform, p, mark) >= 1 for p in poison)
        attempts = dict(
            platform.query(
                "SELECT external_id, attempts FROM tec_delivery_products WHERE last_error IS NOT NULL"
            )
        )
        assert attempts == dict.fromkeys(poison, attempt)
        # The failing step still reports its checks; the last attempt's dead letters are
        # an ERROR with this very run.
        check = check_result(run, "tec_delivery_products", "no_rejected_items")
        assert not check.passed
        dead_now = attempt == MAX_ATTEMPTS
        assert (check.severity == dg.AssetCheckSeverity.ERROR) is dead_now
        assert check.metadata["dead_lettered"].value == (2 if dead_now else 0)
    dead = platform.query(
        "SELECT external_id FROM tec_delivery_products WHERE dead_lettered_at IS NOT NULL"
    )
    assert {r[0] for r in dead} == poison

    # Dead letters are not retried by the sensor-driven path...
    mark = len(platform.tec.requests)
    quiet = platform.run("incremental_sync")
    assert quiet.success
    assert all(requests_carrying(platform, p, mark) == 0 for p in poison)
    assert materializations(quiet, "tec_delivery_products")["dead_lettered_total"] == 2
    check = check_result(quiet, "tec_delivery_products", "no_rejected_items")
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["dead_lettered"].value == 2
    # ...and they are still pending, visible in DuckDB with their error text.
    assert all(
        poison_id in text
        for poison_id, text in platform.query(
            "SELECT external_id, last_error FROM tec_delivery_products WHERE dead_lettered_at IS NOT NULL"
        )
    )

    # Fixed on the Tec.Delivery side; re-materializing the asset (UI default: repush_all)
    # re-drives the dead letters.
    platform.tec.fail_always_ids.clear()
    redrive = dg.materialize(
        [tec_delivery_products],
        instance=platform.instance,
        resources=platform.resources,
    )
    assert redrive.success
    assert check_result(redrive, "tec_delivery_products", "no_rejected_items").passed
    assert platform.query(
        "SELECT count(*) FROM tec_delivery_products WHERE last_error IS NOT NULL "
        "OR dead_lettered_at IS NOT NULL"
    ) == [(0,)]
    lost = ledger.settle(live_valid_ids(platform), delivered(platform))
    assert lost == set()


def test_a_batch_refused_whole_with_200_and_error_status_is_bisected(platform, ledger):
    """Some gateways answer 200 with {"status": "error"}: that is a rejection, not a success."""
    ids = sorted(r["id"] for r in platform.catalog.products())
    victim = ids[150]
    platform.tec.inject(
        status=200,
        body={"status": "error", "message": f"item {victim} refused"},
        times=1000,
        match=lambda body: victim in [i.get("external_id") for i in body["payload"]],
    )
    ledger.fault("200 with an error status", 1)
    result = platform.run("full_resync")
    assert result.success
    assert delivered(platform) == live_valid_ids(platform) - {victim}
    (error,) = platform.query(
        "SELECT last_error FROM tec_delivery_products WHERE external_id = ?", [victim]
    )[0]
    assert "status 'error'" in error and victim in error
    platform.tec.clear_faults()
    assert platform.run("incremental_sync").success
    lost = ledger.settle(live_valid_ids(platform), delivered(platform))
    assert lost == set()


def test_a_200_naming_refused_items_in_its_errors_is_not_a_delivery(platform, ledger):
    """A 2xx that lists per-item `errors` (the shape the emulator's 400 carries) says those
    items were not taken: recording the batch as delivered would never retry them."""
    ids = sorted(r["id"] for r in platform.catalog.products())
    victim = ids[150]
    platform.tec.inject(
        status=200,
        body={
            "status": "success",
            "errors": [{"external_id": victim, "error": "image url unreachable"}],
        },
        times=1000,
        match=lambda body: victim in [i.get("external_id") for i in body["payload"]],
    )
    ledger.fault("200 with per-item errors", 1)
    assert platform.run("full_resync").success
    assert delivered(platform) == live_valid_ids(platform) - {victim}
    (error,) = platform.query(
        "SELECT last_error FROM tec_delivery_products WHERE external_id = ?", [victim]
    )[0]
    assert error is not None and "image url unreachable" in error
    platform.tec.clear_faults()
    assert platform.run("incremental_sync").success
    assert ledger.settle(live_valid_ids(platform), delivered(platform)) == set()


def test_a_product_deleted_after_an_edit_tec_delivery_refused_is_still_disabled(platform):
    """A disable carries the id and `enable: false` only: were it the whole staged record,
    the refused edit (here a relative image path) would make the disable refusable too, and
    the product 1C deleted would stay on sale at Tec.Delivery."""
    assert platform.run("full_resync").success
    product = platform.catalog.products()[0]["id"]
    platform.catalog.upsert_product({"id": product, "image_url": "images/broken.jpg"})
    assert not platform.run("incremental_sync", raise_on_error=False).success  # 1 of 1 refused
    assert platform.query(
        "SELECT last_error IS NOT NULL FROM tec_delivery_products WHERE external_id = ?", [product]
    ) == [(True,)]

    platform.catalog.remove(product)
    assert platform.run("full_resync").success
    assert platform.tec.products[product]["enable"] is False
    [disable] = [
        item
        for request in platform.tec.requests
        for item in request["payload"]
        if item.get("external_id") == product and item.get("enable") is False
    ]
    assert disable == {"external_id": product, "name": disable["name"], "enable": False}


def test_a_disable_reaches_an_item_tec_delivery_no_longer_holds(platform):
    """Tec.Delivery lost an item (its data restored) that 1C has since deleted: the re-push
    of everything must still disable it, not fail on an item it does not know."""
    assert platform.run("full_resync").success
    product = platform.catalog.products()[0]["id"]
    platform.catalog.remove(product)
    platform.tec.forget(product)
    assert platform.run("full_resync").success
    assert platform.tec.products[product]["enable"] is False


def test_a_category_moved_under_an_orphan_then_deleted_is_disabled(platform):
    """The tree flags a category under an unknown parent and holds it back; once 1C deletes
    it, its disable must still go out (it names no parent), or it stays live, and the tree's
    check must pass again (an operator cannot fix a deleted record's parent)."""
    assert platform.run("full_resync").success
    parents = {c["parent"] for c in platform.catalog.categories()}
    leaf = next(c for c in platform.catalog.categories() if c["id"] not in parents)
    platform.catalog.upsert_category(leaf["id"], "no-such-category", leaf["name"])
    assert platform.run("incremental_sync").success
    assert platform.query("SELECT status FROM category_tree WHERE id = ?", [leaf["id"]]) == [
        ("orphan",)
    ]
    platform.catalog.remove(leaf["id"])
    deleted = platform.run("full_resync")
    assert deleted.success
    assert platform.tec.categories[leaf["id"]]["enable"] is False
    # Nothing is left to fix in 1C: the tree no longer counts it as held back.
    [whole] = [
        c for c in deleted.get_asset_check_evaluations() if c.check_name == "category_tree_is_whole"
    ]
    assert whole.passed, whole.description


def test_one_refused_category_does_not_hold_back_the_products_of_its_run(platform):
    """In a small incremental run one refused category is over the 10% share. Failing its
    step would skip `tec_delivery_products`, so every price and stock change would wait until
    the category is dead-lettered (5 failed runs, 5 minutes apart): the products go out first
    and the run fails after them, naming the categories."""
    assert platform.run("full_resync").success
    bad = platform.catalog.categories()[-1]
    platform.tec.reject_ids.add(bad["id"])
    platform.catalog.upsert_category(bad["id"], bad["parent"], bad["name"] + " (new)")
    product = next(p for p in platform.catalog.products() if p["parent"] != bad["id"])
    platform.catalog.upsert_product({"id": product["id"], "price": 777, "stock": 0})

    result = platform.run("incremental_sync", raise_on_error=False)
    assert not result.success
    assert platform.tec.products[product["id"]]["price"] == 777
    assert platform.tec.products[product["id"]]["store_balance"] == 0
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "tec_delivery_products"
    assert "rejected 1 of 1 categories" in failure.step_failure_data.error.message
    assert result.asset_materializations_for_node("tec_delivery_categories")

    # Materialized alone, the categories' step has no products step to leave it to.
    alone = dg.materialize(
        [tec_delivery_categories],
        instance=platform.instance,
        resources=platform.resources,
        run_config={"ops": {"tec_delivery_categories": {"config": {"repush_all": False}}}},
        raise_on_error=False,
    )
    assert not alone.success
    [failure] = [e for e in alone.all_events if e.is_step_failure]
    assert "rejected 1 of 1 categories" in failure.step_failure_data.error.message
