"""(3) Tec.Delivery rejects part of what we send.

The emulator rejects a whole batch when any item in it is invalid (and stores nothing of it),
which is what bisection has to cope with. `fail_always_ids` makes an item invalid for good, so
the retry cap and the dead letter are reached through real runs, not by editing DuckDB.
"""

import math

import dagster as dg

from catalog_assets.assets.tec_delivery import MAX_ATTEMPTS, tec_delivery_products

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
