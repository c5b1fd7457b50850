"""(1) 1C changes while we page through it with `offset`.

The emulator orders pages by (modified_at, id), like 1C. Editing an item we already read moves
it to the end of the list and shifts every later item one place left, so the item sitting on
the next page boundary slides into a page we already read: this pass never sees it. Deleting
an unread item does the same; inserting one grows the list. The count may even stay the same
(one delete plus one insert), and the id need not come back twice (the deleted one was read), so
the client asks for each page from one record early and checks that it starts with the record
the previous page ended with. That record also absorbs a shift of one place: nothing is missed
then, but the pass is still judged inconsistent.
"""

from collections import Counter
from datetime import datetime, timedelta
from itertools import count

import dagster as dg

from catalog_assets.sensors import onec_change_sensor

from ..conftest import materializations
from .conftest import delivered, live_valid_ids, pushes


def ticking_clock(start: datetime):
    """Each edit gets its own second, after every demo timestamp: page order is predictable."""
    seconds = count()
    return lambda: start + timedelta(seconds=next(seconds))


def by_page_order(catalog) -> list[dict]:
    return sorted(catalog.products(), key=lambda r: (r["modified_at"], r["id"]))


def tick(platform):
    with dg.build_sensor_context(
        instance=platform.instance, resources=platform.resources
    ) as context:
        return onec_change_sensor(context)


def incremental_over_a_moving_backlog(platform, edit) -> dg.ExecuteInProcessResult:
    """`incremental_sync` over a backlog of three pages after the cursor (so the pass has
    pages to slip), with `edit(pending)` applied in 1C once, as the second page is asked for;
    `pending` is what the pass is paging through, in page order."""
    catalog = platform.catalog
    assert platform.run("full_resync").success
    catalog.set_clock(ticking_clock(datetime(2026, 7, 1)))
    for record in by_page_order(catalog)[:250]:
        catalog.upsert_product({"id": record["id"], "stock": (record.get("stock") or 0) + 1})
    fired = []

    def move_while_paging(query):
        if query.get("type") == "product" and query.get("offset") == "99" and not fired:
            fired.append(True)
            since = query["modified_since"]
            edit([r for r in by_page_order(catalog) if r["modified_at"] >= since])

    platform.onec.on_request(move_while_paging)
    result = platform.run("incremental_sync")
    platform.onec.on_request(None)
    assert result.success and fired
    return result


def test_full_resync_over_a_moving_catalog_loses_nothing_and_pushes_nothing_twice(platform, ledger):
    catalog = platform.catalog
    catalog.set_clock(ticking_clock(datetime(2026, 6, 1)))
    order = by_page_order(catalog)
    assert len(order) > 650  # seven pages; the edits land before the last one is read
    edited, doomed = order[10], order[640]
    new_id = "feed0000-0000-4000-8000-000000000001"
    fired = []

    def move_while_paging(query):
        if query.get("type") == "product" and query.get("offset") == "594" and not fired:
            fired.append(True)
            catalog.upsert_product({"id": edited["id"], "price": 777.0})  # read -> moves to end
            catalog.remove(doomed["id"])  # unread -> shifts the rest left
            catalog.upsert_product(
                {"id": new_id, "parent": "0", "name": "Новинка во время синка", "price": 5}
            )

    platform.onec.on_request(move_while_paging)
    ledger.fault("1C edits/deletes/inserts while paging", 3)
    first = platform.run("full_resync")
    platform.onec.on_request(None)
    assert first.success and fired

    meta = materializations(first, "onec_products")
    # One delete and one insert: `count` stayed put, the repeated id gave the move away.
    assert meta["pass_consistent"] is False
    assert "repeated" in meta["paging_anomalies"]
    assert meta["cursor_after"] == "(none)"  # held: the next run re-reads from the start
    assert "removed" not in meta  # a moving list is no evidence that anything is gone
    # The item on the boundary slid one place back, onto the record the next page repeats:
    # read already, so nothing is missed this time. The shift was still seen.
    assert "shifted" in meta["paging_anomalies"]
    missed = live_valid_ids(platform) - delivered(platform)
    assert missed == set()
    per_item = Counter(pushes(platform))
    assert max(per_item.values()) == 1, "an item was pushed twice within one run"

    # The sensor must not wait for an unrelated change: the held cursor is itself a reason,
    # even though the missed item is further in than the pages a tick reads.
    outcome = tick(platform)
    assert isinstance(outcome, dg.SensorResult) and outcome.run_requests, outcome
    before = len(platform.tec.requests)
    second = platform.run("incremental_sync")
    assert second.success
    assert materializations(second, "onec_products")["pass_consistent"] is True
    again = Counter(pushes(platform, before))
    assert set(again) <= {edited["id"]} and max(again.values(), default=1) == 1
    assert platform.tec.products[edited["id"]]["price"] == 777.0
    assert doomed["id"] not in platform.tec.products  # gone before we read it: never sent

    lost = ledger.settle(live_valid_ids(platform), delivered(platform))
    assert lost == set()
    # Every delivered item carries 1C's current content.
    for record in catalog.products():
        assert platform.tec.products[record["id"]].get("price") == record.get("price")
    # And now 1C holds still: the cursor moves and nothing more goes out.
    before = len(platform.tec.requests)
    third = platform.run("incremental_sync")
    assert materializations(third, "onec_products")["cursor_after"] != "(none)"
    assert pushes(platform, before) == []


def test_incremental_pass_with_inserts_deletes_and_edits_recovers(platform, ledger):
    catalog = platform.catalog

    def edit(pending):
        catalog.upsert_product({"id": pending[3]["id"], "price": 1.5})  # already read
        for record in pending[150:152]:
            catalog.remove(record["id"])  # not yet read
        for n in range(3):
            catalog.upsert_product(
                {"id": f"feed0000-0000-4000-8000-00000000010{n}", "parent": "0", "name": f"Н {n}"}
            )

    ledger.fault("1C edits/deletes/inserts while paging", 6)
    result = incremental_over_a_moving_backlog(platform, edit)
    meta = materializations(result, "onec_products")
    assert meta["pass_consistent"] is False and "count changed" in meta["paging_anomalies"]
    assert meta["cursor_after"] == meta["cursor_before"]  # held
    assert max(Counter(pushes(platform)).values()) <= 2  # once by full_resync, once now

    assert platform.run("incremental_sync").success
    lost = ledger.settle(live_valid_ids(platform), delivered(platform))
    assert lost == set()
    for record in catalog.products():
        assert platform.tec.products[record["id"]].get("store_balance") == record.get("stock")
    # Deleted in 1C: the next full resync disables what had been delivered.
    assert platform.run("full_resync").success
    gone = set(platform.tec.products) - {r["id"] for r in catalog.products()}
    assert len(gone) == 2 and all(platform.tec.products[i]["enable"] is False for i in gone)


def test_a_read_item_deleted_and_a_new_one_created_mid_pass_hold_the_pass(platform):
    """One delete of an item already read plus one insert: `count` stays put and no id comes
    back twice, yet the item on the next page boundary slides into a page already read. Judged
    consistent, the full resync would disable that live item at Tec.Delivery."""
    catalog = platform.catalog
    assert platform.run("full_resync").success
    catalog.set_clock(ticking_clock(datetime(2026, 6, 1)))
    order = by_page_order(catalog)
    deleted = order[10]
    fired = []

    def move_while_paging(query):
        # The seventh page, asked for from 594 (each page after the first starts one early).
        if query.get("type") == "product" and query.get("offset") == "594" and not fired:
            fired.append(True)
            catalog.remove(deleted["id"])  # already read
            catalog.remove(order[595]["id"])  # a second shift: the repeated record absorbs one
            catalog.upsert_product({"id": "feed0000-0000-4000-8000-0000000000b1", "name": "Н"})
            catalog.upsert_product({"id": "feed0000-0000-4000-8000-0000000000b2", "name": "Н"})

    platform.onec.on_request(move_while_paging)
    second = platform.run("full_resync")
    platform.onec.on_request(None)
    assert second.success and fired
    meta = materializations(second, "onec_products")
    assert meta["pass_consistent"] is False and "shifted" in meta["paging_anomalies"]
    assert meta["cursor_after"] == meta["cursor_before"] and "removed" not in meta
    live = live_valid_ids(platform)
    assert not {i for i in live if platform.tec.products[i].get("enable") is False}
    # 1C holds still: the next full resync sees everything and disables exactly the two gone.
    assert platform.run("full_resync").success
    assert set(platform.tec.products) - live == {deleted["id"], order[595]["id"]}
    for gone in (deleted["id"], order[595]["id"]):
        assert platform.tec.products[gone]["enable"] is False
    assert live <= delivered(platform)


def test_an_incremental_pass_that_slipped_holds_its_cursor(platform):
    """The same fault in an incremental pass: the change on the page boundary was not staged,
    so the cursor must not move past it."""
    catalog = platform.catalog

    def edit(pending):
        catalog.remove(pending[3]["id"])  # already read
        catalog.remove(pending[4]["id"])
        for n in range(2):
            catalog.upsert_product({"id": f"feed0000-0000-4000-8000-00000000020{n}", "name": "Н"})

    result = incremental_over_a_moving_backlog(platform, edit)
    meta = materializations(result, "onec_products")
    assert meta["pass_consistent"] is False and "shifted" in meta["paging_anomalies"]
    assert meta["cursor_after"] == meta["cursor_before"]
    outcome = tick(platform)
    assert isinstance(outcome, dg.SensorResult) and outcome.run_requests  # the held cursor
    assert platform.run("incremental_sync").success
    for record in catalog.products():
        assert platform.tec.products[record["id"]].get("store_balance") == record.get("stock")


def test_a_short_page_before_count_does_not_end_the_listing(platform):
    """1C answers one page with 99 records while `count` says more follow (a server capping its
    pages, or its count and data being two queries). Taken for the end, the full resync would
    disable everything after it."""
    catalog = platform.catalog
    assert platform.run("full_resync").success
    total, page = catalog.query(
        "product", modified_since="1970-01-01T00:00:00", limit=100, offset=495
    )
    platform.onec.inject(
        status=200,
        body={"count": total, "data": page[:99]},
        match=lambda q: q.get("type") == "product" and q.get("offset") == "495",
    )
    second = platform.run("full_resync")
    assert second.success
    meta = materializations(second, "onec_products")
    assert meta["pass_consistent"] is True and meta["fetched"] == total
    assert not [i for i, item in platform.tec.products.items() if item.get("enable") is False]


def test_a_listing_that_ends_below_its_count_holds_the_pass(platform):
    """1C counts a record it never serves (one it cannot serialise): every page is full but
    the last, and the listing ends short of `count`. Nothing may be judged removed."""
    catalog = platform.catalog
    assert platform.run("full_resync").success
    total, _ = catalog.query("product", modified_since="1970-01-01T00:00:00", limit=1)
    # Every page 1C serves in the pass (from 0, then 99 k, then one early for the missing one).
    for offset in [*range(0, total, 99), total - 1]:
        _, data = catalog.query(
            "product", modified_since="1970-01-01T00:00:00", limit=100, offset=offset
        )
        platform.onec.inject(
            status=200,
            body={"count": total + 1, "data": data},
            times=10,
            match=lambda q, at=str(offset): q.get("type") == "product" and q.get("offset") == at,
        )
    result = platform.run("full_resync")
    assert result.success
    meta = materializations(result, "onec_products")
    assert meta["pass_consistent"] is False
    assert f"1C counted {total + 1} records but served {total}" in meta["paging_anomalies"]
    assert meta["cursor_after"] == meta["cursor_before"] and "removed" not in meta
