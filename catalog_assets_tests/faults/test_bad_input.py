"""(2) Bad input from 1C is quarantined, never fatal, and released when 1C fixes it.

Record-level problems go to the `quarantine` table (reason + raw record) and fail
`no_quarantined_records`. Problems only the whole catalog shows (unknown parent, cycle, a parent
that is a product) are flagged in `category_tree` and fail `category_tree_is_whole`; products
held back because of their parent fail `no_held_back_items`. Unusable pages are asked again and,
if they stay bad, quarantined as `page@<offset>` (`page@parent=<id>:<offset>` in the tree walk)
with the cursor held. The rest always syncs.
"""

from ..conftest import materializations
from .conftest import delivered, live_valid_ids

T = "2026-09-01T00:00:00"
BAD_RECORDS = {
    "no-price": {
        "id": "bad-price",
        "parent": "0",
        "type": "product",
        "name": "Цена",
        "price": "сто",
        "modified_at": T,
    },
    "no-stock": {
        "id": "bad-stock",
        "parent": "0",
        "type": "product",
        "name": "Остаток",
        "price": 1,
        "stock": [],
        "modified_at": T,
    },
    "no-name": {
        "id": "bad-name",
        "parent": "0",
        "type": "product",
        "name": "  ",
        "price": 1,
        "modified_at": T,
    },
    "bad-time": {
        "id": "bad-time",
        "parent": "0",
        "type": "product",
        "name": "Время",
        "price": 1,
        "modified_at": "2026-09-01 12:00:00",
    },
    "nan-price": {
        "id": "bad-inf",
        "parent": "0",
        "type": "product",
        "name": "Бесконечность",
        "price": 1e999,
        "modified_at": T,
    },
    "own-parent": {
        "id": "bad-self",
        "parent": "bad-self",
        "type": "category",
        "name": "Сам себе",
        "modified_at": T,
    },
}
NO_ID = {"parent": "0", "type": "product", "name": "Без id", "price": 1, "modified_at": T}


def checks(result) -> dict:
    return {
        (c.asset_key.to_user_string(), c.check_name): c
        for c in result.get_asset_check_evaluations()
    }


def test_bad_records_and_pages_are_quarantined_and_the_rest_syncs(platform, ledger):
    catalog = platform.catalog
    for record in BAD_RECORDS.values():
        catalog.add_raw(record)
    no_id_key = catalog.add_raw(NO_ID)
    some_product = catalog.products()[0]["id"]
    catalog.upsert_category("orphan", "no-such-parent", "Сирота", T)
    catalog.upsert_category("cyc-a", "cyc-b", "Цикл А", T)
    catalog.upsert_category("cyc-b", "cyc-a", "Цикл Б", T)
    catalog.upsert_category("under-product", some_product, "Под товаром", T)
    catalog.upsert_product(
        {"id": "lost-parent", "parent": "no-such-parent", "name": "Без родителя", "price": 1}, T
    )
    catalog.upsert_product(
        {"id": "product-parent", "parent": some_product, "name": "Товар в товаре", "price": 1}, T
    )
    ledger.bad_input("invalid record", len(BAD_RECORDS) + 1)
    ledger.bad_input(
        "tree problem (orphan, cycle x2, under product, product orphan, product under product)", 6
    )

    # Page 3 of products stays unusable: three different bad answers, one per attempt. (Each
    # page after the first starts one record early, so page k is asked for at offset 99 k.)
    at_198 = lambda q: q.get("type") == "product" and q.get("offset") == "198"  # noqa: E731
    platform.onec.inject(
        status=200, body="<html>502 Bad Gateway</html>", content_type="text/html", match=at_198
    )
    platform.onec.inject(
        status=200,
        body='{"count": 5, "data": [{"id"',
        content_type="application/json",
        match=at_198,
    )
    platform.onec.inject(status=200, body={"count": 3, "data": [{"id": "x"}] * 50}, match=at_198)
    # Page 5 is bad once (a count that is not a count), then fine: a retry cures it. After
    # the unusable page the next one starts where it ended, without the repeated record.
    platform.onec.inject(
        status=200,
        body={"count": "many", "data": []},
        match=lambda q: q.get("type") == "product" and q.get("offset") == "397",
    )
    ledger.bad_input("unusable 1C page answer", 4)

    first = platform.run("full_resync")
    assert first.success
    rows = platform.query(
        "SELECT record_key, record_id, reason, raw FROM quarantine WHERE resolved_at IS NULL ORDER BY record_key"
    )
    by_key = {r[0]: r for r in rows}
    assert "page@198" in by_key
    assert "count=3 but 50 records" in by_key["page@198"][2]  # the last of the three answers
    assert "page@397" not in by_key
    for key in (
        "bad-price",
        "bad-stock",
        "bad-name",
        "bad-time",
        "bad-inf",
        "bad-self",
    ):
        assert key in by_key, key
        assert by_key[key][3].startswith("{") and key in by_key[key][3]  # the raw record kept
    assert "price must be a number" in by_key["bad-price"][2]
    assert "stock must be a number" in by_key["bad-stock"][2]
    assert "no name" in by_key["bad-name"][2]
    assert "is not in the form" in by_key["bad-time"][2]
    assert "its own parent" in by_key["bad-self"][2]
    assert [r for r in rows if r[1] is None and r[0].startswith("raw:")]  # the one without id

    tree = dict(platform.query("SELECT id, status FROM category_tree WHERE status <> 'ok'"))
    assert tree == {
        "orphan": "orphan",
        "cyc-a": "cycle",
        "cyc-b": "cycle",
        "under-product": "parent_is_product",
    }
    results = checks(first)
    assert not results[("onec_products", "no_quarantined_records")].passed
    quarantined = results[("onec_products", "no_quarantined_records")].metadata
    assert quarantined["quarantined"].value >= 7 and "bad-price" in quarantined["examples"].value
    assert not results[("category_tree", "category_tree_is_whole")].passed
    held = results[("tec_delivery_products", "no_held_back_items")]
    assert not held.passed and held.metadata["held_back"].value == 2
    assert "lost-parent" in held.metadata["examples"].value
    assert materializations(first, "onec_products")["cursor_after"] == "(none)"  # page@198

    # The rest of the catalog went out.
    # The emulator's page order, which tolerates the records without an id or a timestamp.
    order = sorted(catalog.products(), key=lambda r: (r.get("modified_at"), r.get("id", "")))
    hidden = {r.get("id") for r in order[199:298]}  # page 3 repeats 198, which page 2 read
    problem_ids = {r.get("id") for r in BAD_RECORDS.values()} | {"lost-parent", "product-parent"}
    assert delivered(platform) == live_valid_ids(platform) - problem_ids - hidden
    assert delivered(platform, "category") == live_valid_ids(platform, "category") - {
        "orphan",
        "cyc-a",
        "cyc-b",
        "under-product",
        "bad-self",
    }

    # 1C fixes everything; the next incremental run delivers all of it.
    platform.onec.clear_faults()
    catalog.upsert_product({"id": "bad-price", "price": 100})
    catalog.upsert_product({"id": "bad-stock", "stock": 4})
    catalog.upsert_product({"id": "bad-name", "name": "Имя"})
    catalog.upsert_product({"id": "bad-time", "name": "Время"})  # new modified_at in 1C format
    catalog.upsert_product({"id": "bad-inf", "price": 5})
    catalog.upsert_category("bad-self", "0", "Исправлена")
    catalog.upsert_category("orphan", "0", "Нашла родителя")
    catalog.upsert_category("cyc-a", "0", "Цикл разорван")
    catalog.upsert_category("under-product", "0", "Теперь в корне")
    catalog.upsert_product({"id": "lost-parent", "parent": "orphan"})
    catalog.upsert_product({"id": "product-parent", "parent": "under-product"})
    second = platform.run("incremental_sync")
    assert second.success
    results = checks(second)
    # Only the record without an id is left: 1C cannot fix what it cannot name.
    assert results[("onec_products", "no_quarantined_records")].metadata["quarantined"].value == 1
    assert results[("category_tree", "category_tree_is_whole")].passed
    assert results[("tec_delivery_products", "no_held_back_items")].passed
    lost = ledger.settle(live_valid_ids(platform), delivered(platform))
    lost |= ledger.settle(live_valid_ids(platform, "category"), delivered(platform, "category"))
    assert lost == set()
    assert platform.tec.products["bad-price"]["price"] == 100
    assert platform.tec.products["lost-parent"]["external_parent_id"] == "orphan"

    # 1C drops the record without an id: the next full resync no longer meets it.
    catalog.remove(no_id_key)
    third = platform.run("full_resync")
    assert materializations(third, "onec_products")["quarantine_resolved_as_gone"] == 1
    assert checks(third)[("onec_products", "no_quarantined_records")].passed


def test_a_product_that_turns_bad_stays_live_until_1c_fixes_it(platform, ledger):
    """Quarantine holds the new version back; it does not take the product off sale."""
    assert platform.run("full_resync").success
    good = next(iter(platform.catalog.products()))["id"]
    before = platform.tec.products[good]
    platform.catalog.upsert_product({"id": good, "price": "xyz"})
    ledger.bad_input("no-price")

    result = platform.run("full_resync")
    assert result.success
    assert checks(result)[("onec_products", "no_quarantined_records")].passed is False
    assert platform.query("SELECT removed_at FROM onec_products WHERE id = ?", [good]) == [(None,)]
    assert platform.tec.products[good] == before  # neither disabled nor changed
    assert platform.query(
        "SELECT enabled IS NOT false FROM tec_delivery_products WHERE external_id = ?", [good]
    ) == [(True,)]


def test_an_unusable_walk_page_is_quarantined_and_the_walk_goes_on(platform, ledger):
    """A parent whose children 1C keeps answering with garbage: the rest of the tree is
    walked, the flat listing still stages the categories under it, and the page is
    quarantined with the cursor held until a clean pass re-reads it."""
    catalog = platform.catalog
    parent = next(c["id"] for c in catalog.categories() if c["parent"] == "0")
    under = [c["id"] for c in catalog.categories() if c["parent"] == parent]
    assert under
    platform.onec.inject(
        status=200,
        body="<html>502 Bad Gateway</html>",
        content_type="text/html",
        times=3,  # every attempt at the parent's first page
        match=lambda q: q.get("parent") == parent,
    )
    ledger.bad_input("unusable 1C page answer", 3)

    first = platform.run("full_resync")
    assert first.success
    meta = materializations(first, "onec_categories")
    assert meta["pass_consistent"] is False and "not JSON" in meta["paging_anomalies"]
    rows = platform.query(
        "SELECT record_key, reason FROM quarantine WHERE resolved_at IS NULL AND entity = 'categories'"
    )
    assert [key for key, _ in rows] == [f"page@parent={parent}:0"]
    assert not checks(first)[("onec_categories", "no_quarantined_records")].passed
    assert set(under) <= delivered(platform, "category")  # met by the flat listing
    assert delivered(platform, "category") == live_valid_ids(platform, "category")

    # An incremental pass pages the flat listing, not the walk: it re-reads nothing of that
    # parent's children, so the row stays open however clean the pass.
    incremental = platform.run("incremental_sync")
    assert materializations(incremental, "onec_categories")["pass_consistent"] is True
    assert not checks(incremental)[("onec_categories", "no_quarantined_records")].passed

    second = platform.run("full_resync")  # 1C answers properly again
    assert materializations(second, "onec_categories")["pass_consistent"] is True
    assert checks(second)[("onec_categories", "no_quarantined_records")].passed


def serve_one_doctored_product(platform, record: dict, placeholder: bytes, raw: bytes) -> str:
    """After a full resync, 1C serves `record` (its `placeholder` replaced in the page's bytes by
    `raw`, which JSON from Python could not produce) and a good product after it; the
    incremental run must quarantine that one record and deliver the other. Returns the
    quarantine reason."""
    assert platform.run("full_resync").success
    ((cursor,),) = platform.query(
        "SELECT modified_since FROM sync_cursors WHERE entity = 'products'"
    )
    later = "2026-12-01T00:00:00"
    platform.catalog.upsert_product({"parent": "0", **record}, later)
    platform.catalog.upsert_product(
        {"id": "after-it", "parent": "0", "name": "Ок", "price": 2}, later
    )
    page = platform.catalog.query_json(type="product", modified_since=cursor, limit=100)
    platform.onec.inject(
        status=200,
        body=page.replace(placeholder, raw),
        content_type="application/json; charset=utf-8",
        times=3,
        match=lambda q: q.get("type") == "product" and q.get("offset") == "0",
    )
    assert platform.run("incremental_sync", raise_on_error=False).success
    reason = platform.query(
        "SELECT reason FROM quarantine WHERE record_key = ? AND resolved_at IS NULL",
        [record["id"]],
    )
    assert reason, platform.query("SELECT record_key, reason FROM quarantine")
    assert "after-it" in delivered(platform)
    return reason[0][0]


def test_a_cut_emoji_is_quarantined_and_the_rest_syncs(platform, ledger):
    """1C writing non-ASCII as `\\uXXXX` escapes (ЭкранированиеСимволовJSON.СимволыВнеASCII)
    serves a name cut mid-emoji at its field's length as a lone surrogate: valid JSON
    syntax, but not Unicode, so DuckDB and Tec.Delivery cannot take it. That record is
    quarantined by id; the run, and the records after it, go on."""
    ledger.bad_input("lone surrogate")
    cut = b'"\\u041f\\u0438\\u0446\\u0446\\u0430 \\ud83c"'
    record = {"id": "cut-emoji", "name": "CUT-NAME", "price": 1}
    assert "surrogate" in serve_one_doctored_product(platform, record, b'"CUT-NAME"', cut)


def test_1c_empty_reference_as_parent_is_the_root(platform, ledger):
    """1C's empty reference (ПустаяСсылка, the all-zero GUID) is what `parent` holds for an
    item at the top when a service writes the reference as it is, rather than the seed's
    "0": the same root, never a category that could be missing."""
    empty = "00000000-0000-0000-0000-000000000000"
    platform.catalog.upsert_category("top-by-empty-ref", empty, "Верх", T)
    platform.catalog.upsert_product(
        {"id": "under-it", "parent": "top-by-empty-ref", "name": "Товар", "price": 1}, T
    )
    platform.catalog.upsert_product({"id": "at-root", "parent": empty, "name": "Корень"}, T)
    ledger.bad_input("empty reference as parent", 2)

    result = platform.run("full_resync")
    assert result.success
    assert platform.query("SELECT status FROM category_tree WHERE id = 'top-by-empty-ref'") == [
        ("ok",)
    ]
    assert "external_parent_id" not in platform.tec.categories["top-by-empty-ref"]
    assert "external_parent_id" not in platform.tec.products["at-root"]
    assert platform.tec.products["under-it"]["external_parent_id"] == "top-by-empty-ref"
    assert checks(result)[("tec_delivery_products", "no_held_back_items")].passed


def test_a_record_nested_deeper_than_python_can_write_is_quarantined(platform, ledger):
    """orjson reads 1,024 levels but writes only 255, handing a deeper record to the standard
    library's writer, which overflows Python's stack near 1,000: a record within orjson's limit
    but past that one must be judged on its own, like a body nested past orjson's limit, not
    crash the run (and every later run, which reads it again at the held cursor)."""
    ledger.bad_input("record nested 1,000 levels deep")
    record = {"id": "too-deep", "name": "Глубоко", "price": 1, "info": "DEEP"}
    deep = b"[" * 1000 + b"]" * 1000
    assert "nested" in serve_one_doctored_product(platform, record, b'"DEEP"', deep)
