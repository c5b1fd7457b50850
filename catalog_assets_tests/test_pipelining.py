"""The performance paths keep the sync's guarantees: pages asked for ahead are still judged in
order, a moving catalog is still noticed, and every request sent to Tec.Delivery while several
are in flight is recorded. (Speed itself is measured by `make bench`, never asserted here.)"""

from catalog_assets.emulators import OneCEmulator, demo_catalog
from catalog_assets.mapping import EPOCH
from catalog_assets.onec.client import OneCCatalogClient, PassReport


def page_order(catalog) -> list[str]:
    return [r["id"] for r in sorted(catalog.products(), key=lambda r: (r["modified_at"], r["id"]))]


def product_pass(onec: OneCEmulator) -> tuple[list[str], PassReport]:
    client = OneCCatalogClient(base_url=onec.url, max_retries=1, backoff_seconds=0.01)
    report = PassReport()
    ids = [
        record["id"]
        for page in client.pages(type="product", modified_since=EPOCH, report=report)
        for record in page.records
    ]
    return ids, report


def test_a_slow_1c_is_paged_ahead_yet_judged_in_order():
    catalog = demo_catalog(seed=3)
    with OneCEmulator(catalog, latency_ms=30).start() as onec:
        ids, report = product_pass(onec)
        assert ids == page_order(catalog)
        assert report.consistent and report.pages_ahead > 0
        # Nothing is asked twice or beyond `count` while 1C holds still.
        assert onec.request_count == report.requests == -(-len(ids) // 100)


def test_a_1c_known_to_be_slow_is_paged_ahead_from_the_second_page():
    """What one pass learnt (the walk, typically) spares the next one its two slow pages."""
    catalog = demo_catalog(seed=3)
    with OneCEmulator(catalog, latency_ms=30).start() as onec:
        client = OneCCatalogClient(base_url=onec.url, max_retries=1, backoff_seconds=0.01)
        first, second = PassReport(), PassReport()
        for report in (first, second):
            ids = [
                record["id"]
                for page in client.pages(type="product", modified_since=EPOCH, report=report)
                for record in page.records
            ]
            assert ids == page_order(catalog) and report.consistent
        assert first.pages_ahead == first.pages - 2
        assert second.pages_ahead == second.pages - 1


def test_a_fast_1c_is_paged_strictly_in_sequence():
    catalog = demo_catalog(seed=3)
    with OneCEmulator(catalog).start() as onec:
        ids, report = product_pass(onec)
        assert ids == page_order(catalog)
        assert report.consistent and report.pages_ahead == 0


def test_pages_asked_for_ahead_still_notice_a_moving_catalog():
    catalog = demo_catalog(seed=3)
    fired = []

    def insert_while_paging(query):
        if query.get("offset") == "297" and not fired:
            fired.append(True)
            catalog.upsert_product({"id": "new-during-pass", "name": "Новинка", "price": 1})

    with OneCEmulator(catalog, latency_ms=30).start() as onec:
        onec.on_request(insert_while_paging)
        _, report = product_pass(onec)
    assert fired and not report.consistent
    assert any("count changed" in anomaly for anomaly in report.anomalies)


def test_every_request_sent_with_several_in_flight_is_recorded(platform):
    assert platform.run("full_resync").success
    sent = platform.tec.requests
    recorded = platform.query("SELECT count(*), sum(item_count) FROM push_batches")[0]
    assert recorded == (len(sent), sum(r["items"] for r in sent))
    batch_ids = platform.query(
        "SELECT count(*) FROM tec_delivery_products p JOIN push_batches b"
        " ON b.batch_id = p.last_batch_id AND list_contains(b.external_ids, p.external_id)"
    )[0][0]
    assert batch_ids == len(platform.catalog.products())


def test_a_refusing_tec_delivery_costs_one_request_not_one_per_worker(platform):
    platform.tec.inject(status=401, times=100)
    result = platform.run("full_resync", raise_on_error=False)
    assert not result.success
    assert len(platform.tec.requests) == 1
    assert platform.query("SELECT count(*), bool_and(NOT ok) FROM push_batches")[0] == (1, True)
