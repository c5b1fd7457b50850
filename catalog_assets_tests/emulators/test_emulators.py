"""Contract tests for the loopback emulators, over real HTTP on 127.0.0.1.

The emulators are the yardstick for the client, so these tests pin the seed contract:
1C pages of at most 100 ordered by (modified_at, id) with a total ``count``, an inclusive
``modified_since``, ``parent`` filtering (omitted = every level, flat); Tec.Delivery batches of
1..100 items, all-or-nothing, parents before children, the token never logged.
"""

from __future__ import annotations

import base64
import json
import queue
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlencode

import pytest

from catalog_assets.emulators import (
    Catalog,
    OneCEmulator,
    TecDeliveryEmulator,
    demo_catalog,
    synthetic_catalog,
)

TOKEN = "53ec835c-631d-11f0-a416-fa163eed394d"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def call(url, method="GET", body=None, headers=None, timeout=5.0):
    """(status, headers, parsed JSON or raw text) without raising on HTTP errors."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            status, response_headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, response_headers, raw = exc.code, exc.headers, exc.read()
    try:
        return status, response_headers, json.loads(raw)
    except ValueError:
        return status, response_headers, raw.decode()


def catalog_page(onec, **params):
    return call(f"{onec.url}/api/catalog?{urlencode(params)}")


def fixed_clock(moment="2026-02-13T13:24:04"):
    return lambda: datetime.strptime(moment, "%Y-%m-%dT%H:%M:%S")


def product(product_id, parent="cat-1", **fields):
    return {
        "id": product_id,
        "parent": parent,
        "name": f"Товар {product_id}",
        "price": 10,
        **fields,
    }


@pytest.fixture
def catalog():
    return Catalog(clock=fixed_clock())


@pytest.fixture
def onec(catalog):
    with OneCEmulator(catalog) as emulator:
        yield emulator


@pytest.fixture
def tec():
    with TecDeliveryEmulator(TOKEN, webhook_delay_s=0.05) as emulator:
        yield emulator


# -- 1C: paging and filters --------------------------------------------------------------------
@pytest.mark.parametrize("n_products", [0, 1, 100, 101, 250])
def test_paging_returns_every_product_once_in_modified_order(catalog, onec, n_products):
    for number in range(n_products):
        catalog.upsert_product(product(f"p{number:03d}"), f"2026-02-{1 + number % 28:02d}T00:00:00")
    seen, offset = [], 0
    while True:
        status, _, page = catalog_page(onec, limit=100, offset=offset, type="product")
        assert status == 200 and page["count"] == n_products
        assert len(page["data"]) == min(100, max(0, n_products - offset))
        seen += page["data"]
        offset += 100
        if offset >= page["count"]:
            break
    assert len({record["id"] for record in seen}) == n_products
    keys = [(record["modified_at"], record["id"]) for record in seen]
    assert keys == sorted(keys)


def test_parent_filter_and_flat_query_without_parent(catalog, onec):
    catalog.upsert_category("root", "0", "Бакалея")
    catalog.upsert_category("child", "root", "Крупы")
    catalog.upsert_category("grandchild", "child", "Рис")
    catalog.upsert_product(product("rice", parent="grandchild"))
    ids = lambda page: [record["id"] for record in page["data"]]  # noqa: E731
    assert ids(catalog_page(onec, limit=100, type="category", parent="0")[2]) == ["root"]
    assert ids(catalog_page(onec, limit=100, type="category", parent="root")[2]) == ["child"]
    flat = catalog_page(onec, limit=100, type="category")[2]
    assert flat["count"] == 3 and set(ids(flat)) == {"root", "child", "grandchild"}
    assert ids(catalog_page(onec, limit=100, type="product", parent="grandchild")[2]) == ["rice"]
    assert catalog_page(onec, limit=100, type="product", parent="root")[2]["count"] == 0


def test_modified_since_is_inclusive(catalog, onec):
    moments = ["2026-02-10T23:59:59", "2026-02-11T00:00:00", "2026-03-01T00:00:00"]
    for number, moment in enumerate(moments):
        catalog.upsert_product(product(f"p{number}"), moment)
    status, _, page = catalog_page(
        onec, limit=100, type="product", modified_since="2026-02-11T00:00:00"
    )
    assert status == 200 and page["count"] == 2
    assert [record["id"] for record in page["data"]] == ["p1", "p2"]


def test_record_shape_and_modified_at_bump(catalog, onec):
    catalog.upsert_category("cat-1", "0", "Бакалея")
    catalog.upsert_product(product("p1", sku="4607120230971", stock=16, bulk=False))
    catalog.set_clock(fixed_clock("2026-02-14T08:00:00"))
    catalog.touch("cat-1")
    page = catalog_page(onec, limit=1, type="category")[2]
    assert page["data"][0] == {
        "id": "cat-1",
        "parent": "0",
        "name": "Бакалея",
        "type": "category",
        "modified_at": "2026-02-14T08:00:00",
    }
    record = catalog_page(onec, limit=1, type="product")[2]["data"][0]
    assert record["type"] == "product" and record["modified_at"] == "2026-02-13T13:24:04"


def test_the_seeds_example_requests_get_the_seeds_example_answers(catalog, onec):
    """The seed's categories carry no `modified_at`, yet its `modified_since=2026-02-11…`
    queries return them: a record without one matches every `modified_since`."""
    wine_parent = "9b2a2ade-c1f1-11e6-9cd7-10bf484d6226"
    roots = [
        {"id": wine_parent, "parent": "0", "name": "Алкогольная продукция", "type": "category"},
        {"id": "01f9449e-c385-11e6-9cd7-10bf484d6226", "parent": "0", "name": "Бакалея",
         "type": "category"},
    ]  # fmt: skip
    wine = {"id": "ae1441c0-c37c-11e6-9cd7-10bf484d6226", "parent": wine_parent, "name": "Вино",
            "type": "category"}  # fmt: skip
    for record in [*roots, wine]:
        catalog.add_raw(record)
    since = "limit=100&offset=0&modified_since=2026-02-11T00:00:00&type=category"
    status, _, body = call(f"{onec.url}/api/catalog?{since}&parent=0")
    assert status == 200 and body["count"] == 2
    assert sorted(body["data"], key=lambda r: r["id"]) == sorted(roots, key=lambda r: r["id"])
    status, _, body = call(f"{onec.url}/api/catalog?{since}&parent={wine_parent}")
    assert status == 200 and body == {"count": 1, "data": [wine]}


@pytest.mark.parametrize(
    "params",
    [
        {"type": "product"},  # limit is mandatory
        {"limit": 0, "type": "product"},
        {"limit": 101, "type": "product"},
        {"limit": "ten", "type": "product"},
        {"limit": 10, "offset": -1, "type": "product"},
        {"limit": 10, "offset": "x", "type": "product"},
        {"limit": 10},
        {"limit": 10, "type": "products"},
        {"limit": 10, "type": "product", "modified_since": "2026-02-11"},
        {"limit": 10, "type": "product", "modified_since": "2026-02-11T00:00:00Z"},
        {"limit": 10, "type": "product", "modified_since": "2026-02-11 00:00:00"},
        {"limit": 10, "type": "product", "modified_since": "2026-13-01T00:00:00"},
        {"limit": 10, "type": "product", "page": 2},
        {"limit": 10, "type": "category", "parent": ""},
    ],
)
def test_invalid_query_is_a_json_400(onec, params):
    status, headers, body = catalog_page(onec, **params)
    assert status == 400 and headers["Content-Type"].startswith("application/json")
    assert isinstance(body["error"], str)


def test_basic_auth_required_when_configured(catalog):
    with OneCEmulator(catalog, username="sync", password="s3cret") as onec:
        url = f"{onec.url}/api/catalog?limit=1&type=product"
        status, headers, body = call(url)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        assert "error" in body
        wrong = base64.b64encode(b"sync:nope").decode()
        assert call(url, headers={"Authorization": f"Basic {wrong}"})[0] == 401
        good = base64.b64encode(b"sync:s3cret").decode()
        assert call(url, headers={"Authorization": f"Basic {good}"})[0] == 200
        assert [entry["auth_present"] for entry in onec.requests] == [False, True, True]
        assert "s3cret" not in repr(onec.requests)


# -- 1C: faults, latency, hooks, admin ---------------------------------------------------------
def test_injected_faults_fire_then_clear(catalog, onec):
    onec.inject(status=503, body={"error": "busy"}, headers={"Retry-After": "1"}, times=2)
    status, headers, _ = catalog_page(onec, limit=1, type="product")
    assert status == 503 and headers["Retry-After"] == "1"
    assert catalog_page(onec, limit=1, type="product")[0] == 503
    assert catalog_page(onec, limit=1, type="product")[0] == 200
    onec.inject(body="<html>1C:Предприятие — ошибка</html>", content_type="text/html")
    status, headers, body = catalog_page(onec, limit=1, type="product")
    assert status == 200 and headers["Content-Type"] == "text/html" and body.startswith("<html>")
    onec.inject(status=500, match=lambda query: query.get("offset") == "100")
    assert catalog_page(onec, limit=1, offset=0, type="product")[0] == 200
    assert catalog_page(onec, limit=1, offset=100, type="product")[0] == 500
    assert [entry["status"] for entry in onec.requests][-2:] == [200, 500]


def test_dropped_connection_and_slow_answer(onec):
    onec.inject(drop_connection=True)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        catalog_page(onec, limit=1, type="product")
    onec.inject(delay_s=1.0)
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        call(f"{onec.url}/api/catalog?limit=1&type=product", timeout=0.2)
    assert catalog_page(onec, limit=1, type="product")[0] == 200


def test_latency_is_served_concurrently(catalog):
    with OneCEmulator(catalog, latency_ms=50) as onec:
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            statuses = list(
                pool.map(lambda _: catalog_page(onec, limit=1, type="product")[0], "abcd")
            )
        elapsed = time.perf_counter() - started
    print(f"4 parallel requests at 50 ms latency: {elapsed * 1000:.0f} ms")  # noqa: T201 - bench
    assert statuses == [200] * 4 and 0.05 <= elapsed < 0.19


def test_on_request_hook_can_move_the_catalog_mid_sync(catalog, onec):
    """Offset paging over a catalog that changes between pages skips a record: the client
    must recover it with the next incremental sync (modified_at moved past the cursor)."""
    for number in range(150):
        catalog.upsert_product(
            product(f"p{number:03d}"), f"2026-02-01T00:{number // 60:02d}:{number % 60:02d}"
        )

    def edit_first_record(query):
        if query.get("offset") == "100":
            catalog.upsert_product({"id": "p000", "price": 99}, "2026-02-20T00:00:00")
            catalog.upsert_product({"id": "p001", "price": 99}, "2026-02-20T00:00:00")

    onec.on_request(edit_first_record)
    first = catalog_page(onec, limit=100, offset=0, type="product")[2]["data"]
    second = catalog_page(onec, limit=100, offset=100, type="product")[2]["data"]
    ids = [record["id"] for record in first + second]
    assert "p100" not in ids and "p101" not in ids and ids.count("p000") == 2
    onec.on_request(None)


def test_admin_endpoints_edit_the_catalog(catalog, onec):
    catalog.upsert_category("cat-1", "0", "Бакалея")
    catalog.set_clock(fixed_clock("2026-03-01T10:00:00"))
    status, _, record = call(
        f"{onec.url}/admin/products/p1", "PUT", {"parent": "cat-1", "price": 5}
    )
    assert status == 200 and record["modified_at"] == "2026-03-01T10:00:00"
    assert call(f"{onec.url}/admin/catalog/p1")[2]["price"] == 5
    assert (
        call(f"{onec.url}/admin/categories/cat-2", "PUT", {"parent": "cat-1", "name": "Крупы"})[0]
        == 200
    )
    assert call(f"{onec.url}/admin/categories/cat-3", "PUT", {"parent": "cat-1"})[0] == 400
    assert call(f"{onec.url}/admin/items/p1", "DELETE")[0] == 200
    assert call(f"{onec.url}/admin/catalog/p1")[0] == 404
    stats = call(f"{onec.url}/admin/stats")[2]
    assert stats["category"] == 2 and stats["product"] == 0 and "requests_per_s" in stats


def test_raw_records_are_served_verbatim(catalog, onec):
    catalog.add_raw({"parent": "0", "type": "product", "name": "без id", "price": "сто"})
    catalog.add_raw({"id": "bad-ts", "type": "product", "price": 1, "modified_at": "13.02.2026"})
    page = catalog_page(onec, limit=100, type="product")[2]
    assert (
        page["count"] == 2
        and {"parent": "0", "type": "product", "name": "без id", "price": "сто"} in page["data"]
    )


def test_refuses_non_loopback_bind(catalog):
    with pytest.raises(ValueError):
        OneCEmulator(catalog, host="0.0.0.0")
    with pytest.raises(ValueError):
        TecDeliveryEmulator(TOKEN, host="192.168.1.10")


def test_sorted_indexes_match_a_brute_force_sort():
    rng = random.Random(7)
    catalog = Catalog(clock=lambda: f"2026-02-{rng.randint(1, 28):02d}T00:00:00")
    parents = ["0", "a", "b"]
    for _ in range(2000):
        item_id = f"i{rng.randrange(300)}"
        action = rng.random()
        if action < 0.4:
            catalog.upsert_product({"id": item_id, "parent": rng.choice(parents)})
        elif action < 0.6:
            catalog.upsert_category(item_id, rng.choice(parents), "c")
        elif action < 0.8 and item_id in catalog:
            catalog.touch(item_id)
        else:
            catalog.remove(item_id)
    everything = catalog.categories() + catalog.products()
    for kind in ("category", "product"):
        for parent in (None, *parents):
            for since in (None, "2026-02-14T00:00:00"):
                expected = sorted(
                    (
                        r
                        for r in everything
                        if r["type"] == kind
                        and parent in (None, r["parent"])
                        and (since is None or r["modified_at"] >= since)
                    ),
                    key=lambda r: (r["modified_at"], r["id"]),
                )
                count, page = catalog.query(kind, parent, since, limit=50, offset=10)
                assert count == len(expected) and page == expected[10:60]


# -- Tec.Delivery ------------------------------------------------------------------------------
def envelope(payload, **overrides):
    return {"api": "product", "method": "put-products", "token": TOKEN, "language": "RU",
            "translate": True, "payload": payload, **overrides}  # fmt: skip


CATEGORY = {"external_id": "cat-1", "name": "Бакалея", "is_category": True}
PRODUCT = {
    "external_id": "p1",
    "external_parent_id": "cat-1",
    "name": "Рис длинный пропаренный 800г Гудвилл",
    "description": "…",
    "price": 145,
    "info": [{"name": "sku", "value": "4607120230971"}, {"name": "Состав", "value": "рис"}],
    "store_balance": 16,
    "external_key": "2026-02-13T13:24:04",
    "image": {
        "url": "https://cdn.example/p1.jpg",
        "resize": False,
        "bgcolor": "#FFFFFF",
        "scale": 0.9,
    },
    "external_data": "f9a15f0d6ebf943aea177f597cb96689c2d5c44d",
}


def put(tec, payload, **overrides):
    return call(tec.url, "POST", envelope(payload, **overrides))


def test_seed_example_is_accepted_and_stored(tec):
    status, _, body = put(tec, [CATEGORY, PRODUCT])
    assert status == 200 and body["status"] == "success" and body["accepted"] == 2
    assert len(body["request_id"]) == 36
    assert set(tec.categories) == {"cat-1"} and tec.products["p1"]["price"] == 145
    assert tec.items["p1"]["enable"] is True
    entry = tec.requests[-1]
    assert entry["external_ids"] == ["cat-1", "p1"] and entry["language"] == "RU"
    assert entry["token"] == "***" and entry["translate"] is True


# The seed's three put-products requests, verbatim but for the category examples' placeholder
# token ("token"; the product example's token is TOKEN). The product's parent, 551b4ed9…, is
# never pushed in the seed's examples, so it is pushed first, under "Бакалея".
SEED_ROOTS = [
    {"external_id": "9b2a2ade-c1f1-11e6-9cd7-10bf484d6226", "name": "Алкогольная продукция",
     "is_category": True},
    {"external_id": "01f9449e-c385-11e6-9cd7-10bf484d6226", "name": "Бакалея",
     "is_category": True},
]  # fmt: skip
SEED_CHILD = {
    "external_id": "ae1441c0-c37c-11e6-9cd7-10bf484d6226",
    "external_parent_id": "9b2a2ade-c1f1-11e6-9cd7-10bf484d6226",
    "name": "Вино",
    "is_category": True,
}
SEED_PRODUCT = {
    "external_id": "b01a1a32-8ba2-11e6-9cf3-10bf484d6226",
    "external_parent_id": "551b4ed9-c385-11e6-9cd7-10bf484d6226",
    "description": "…",
    "price": 145,
    "info": [
        {"name": "sku", "value": "4607120230971"},
        {"name": "Состав", "value": "Рис"},
        {"name": "Энергетическая ценность", "value": "Б: 6,5, Ж: 1, У: 79, Ккал: 351"},
    ],
    "store_balance": 16,
    "external_key": "2026-02-13T13:24:04",
    "image": {
        "url": "https://…/images/b01a1a32-8ba2-11e6-9cf3-10bf484d6226.jpg",
        "resize": False,
        "bgcolor": "#FFFFFF",
        "scale": 0.9,
    },
    "external_data": "f9a15f0d6ebf943aea177f597cb96689c2d5c44d",
}


def test_the_seeds_own_requests_are_accepted(tec):
    """The seed's product example carries no `name`: a server that took the seed's requests
    must take it as a new product (only the client's choice adds the name)."""
    assert put(tec, SEED_ROOTS)[0] == 200
    assert put(tec, [SEED_CHILD])[0] == 200
    rice = {"external_id": "551b4ed9-c385-11e6-9cd7-10bf484d6226", "name": "Рис",
            "external_parent_id": "01f9449e-c385-11e6-9cd7-10bf484d6226", "is_category": True}  # fmt: skip
    assert put(tec, [rice])[0] == 200
    status, _, body = put(tec, [SEED_PRODUCT], webhook="https://...")
    assert status == 200, body
    assert tec.products[SEED_PRODUCT["external_id"]] == {**SEED_PRODUCT, "enable": True}


def test_token_is_checked_and_never_logged(tec):
    status, _, body = put(tec, [CATEGORY], token="wrong-token")
    assert status == 401 and body == {"status": "error", "message": "invalid token"}
    put(tec, [CATEGORY])
    admin_log = call(f"{tec.base_url}/admin/requests")[2]
    assert TOKEN not in repr(tec.requests) and TOKEN not in json.dumps(admin_log)
    assert "wrong-token" not in repr(tec.requests) and tec.items.keys() == {"cat-1"}


@pytest.mark.parametrize("size", [0, 101])
def test_batch_size_limits(tec, size):
    payload = [{"external_id": f"c{i}", "name": "К", "is_category": True} for i in range(size)]
    status, _, body = put(tec, payload)
    assert status == 400 and body["message"] == "payload must contain 1..100 items"


def test_batch_of_100_is_accepted(tec):
    payload = [{"external_id": f"c{i}", "name": "К", "is_category": True} for i in range(100)]
    assert put(tec, payload)[2]["accepted"] == 100


def test_parent_must_be_known_or_earlier_in_the_batch(tec):
    status, _, body = put(tec, [PRODUCT, CATEGORY])  # child before parent
    assert status == 400 and body["errors"][0]["external_id"] == "p1"
    assert "external_parent_id" in body["errors"][0]["error"] and tec.items == {}
    assert put(tec, [CATEGORY, PRODUCT])[0] == 200  # parent earlier in the same batch
    assert put(tec, [{**PRODUCT, "external_id": "p2"}])[0] == 200  # parent from earlier batch
    root_with_zero = {
        "external_id": "cat-2",
        "name": "Х",
        "is_category": True,
        "external_parent_id": "0",
    }
    assert put(tec, [root_with_zero])[0] == 400
    under_product = {**PRODUCT, "external_id": "p3", "external_parent_id": "p1"}
    assert "not a category" in put(tec, [under_product])[2]["errors"][0]["error"]


def test_category_cycle_is_rejected(tec):
    put(tec, [CATEGORY, {"external_id": "cat-2", "external_parent_id": "cat-1", "name": "Крупы",
                         "is_category": True}])  # fmt: skip
    status, _, body = put(tec, [{**CATEGORY, "external_parent_id": "cat-2"}])
    assert status == 400 and "cycle" in body["errors"][0]["error"]


@pytest.mark.parametrize(
    ("change", "expected_error"),
    [
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"price": -1}, "price must be a number >= 0"),
        ({"price": "145"}, "price must be a number >= 0"),
        ({"store_balance": None}, "store_balance must be a number"),
        ({"description": None}, "description must be a string"),
        ({"info": [{"name": "sku"}]}, "info entries must be objects"),
        ({"info": [{"name": "Состав", "value": ""}]}, "info entry name and value"),
        ({"image": {"url": "x.jpg"}}, "image url must be an http(s) URL"),
        ({"image": {"url": "https://a.example/1.jpg", "scale": 1.5}}, "image scale"),
        ({"image": {"url": "https://a.example/1.jpg", "bgcolor": "white"}}, "image bgcolor"),
        ({"enable": "yes"}, "enable must be a boolean"),
        ({"external_key": 20260213}, "external_key must be a string"),
        ({"external_id": ""}, "external_id must be a non-empty string"),
        ({"name": None}, "name must be a non-empty string"),
    ],
)
def test_invalid_item_rejects_the_whole_batch(tec, change, expected_error):
    status, _, body = put(tec, [CATEGORY, {**PRODUCT, **change}])
    assert status == 400 and body["status"] == "error"
    assert any(error["error"].startswith(expected_error) for error in body["errors"]), body
    assert all(error["index"] == 1 for error in body["errors"]) and tec.items == {}


def test_item_rules_that_depend_on_state(tec):
    no_id = {key: value for key, value in PRODUCT.items() if key != "external_id"}
    assert put(tec, [CATEGORY, no_id])[2]["errors"][0]["error"] == "external_id is required"
    no_name = {key: value for key, value in CATEGORY.items() if key != "name"}
    assert "name is required" in put(tec, [no_name])[2]["errors"][0]["error"]
    assert put(tec, [CATEGORY, PRODUCT])[0] == 200
    assert put(tec, [{"external_id": "p1", "price": 150}])[0] == 200  # update without name
    assert tec.items["p1"]["price"] == 150 and tec.items["p1"]["name"] == PRODUCT["name"]
    category_update = {"external_id": "cat-1", "name": "Бакалея"}  # is_category forgotten
    assert "is_category" in put(tec, [category_update])[2]["errors"][0]["error"]
    priced_category = {**CATEGORY, "price": 1}
    assert "not allowed on a category" in put(tec, [priced_category])[2]["errors"][0]["error"]
    assert "duplicate" in put(tec, [PRODUCT, PRODUCT])[2]["errors"][0]["error"]


@pytest.mark.parametrize(
    ("overrides", "status"),
    [
        ({"api": "orders"}, 400),
        ({"method": "get-products"}, 400),
        ({"language": ""}, 400),
        ({"language": "XX"}, 400),
        ({"translate": "yes"}, 400),
        ({"webhook": "ftp://127.0.0.1/hook"}, 400),
        ({"extra": 1}, 400),
        ({"webhook": "http://127.0.0.1:9/hook", "translate": False}, 200),
    ],
)
def test_envelope_validation(tec, overrides, status):
    got, _, body = put(tec, [CATEGORY], **overrides)
    assert got == status and body["status"] == ("success" if status == 200 else "error")


def test_non_json_body_is_400(tec):
    request = urllib.request.Request(tec.url, data=b"api=product", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        _OPENER.open(request, timeout=5)
    assert caught.value.code == 400


def test_enable_flag_is_tracked(tec):
    put(tec, [CATEGORY, PRODUCT])
    put(tec, [{"external_id": "p1", "enable": False}])
    assert (
        tec.items["p1"]["enable"] is False
        and call(f"{tec.base_url}/admin/stats")[2]["disabled"] == 1
    )
    put(tec, [{"external_id": "p1", "price": 99}])
    assert tec.items["p1"]["enable"] is False  # omitted = unchanged
    put(tec, [{"external_id": "p1", "enable": True}])
    assert tec.items["p1"]["enable"] is True


def test_reject_ids_fail_their_batch_for_bisecting(tec):
    put(tec, [CATEGORY])
    tec.reject_ids.add("p2")
    tec.fail_always_ids.add("p4")
    batch = [{**PRODUCT, "external_id": f"p{i}"} for i in range(1, 6)]
    status, _, body = put(tec, batch)
    assert status == 400 and {error["external_id"] for error in body["errors"]} == {"p2", "p4"}
    assert put(tec, batch[:1])[0] == 200 and put(tec, batch[2:3])[0] == 200
    assert set(tec.products) == {"p1", "p3"}


def test_tec_fault_injection(tec):
    tec.inject(status=502, body="<html>Bad Gateway</html>", content_type="text/html",
               match=lambda body: body["payload"][0]["external_id"] == "cat-1")  # fmt: skip
    status, headers, body = put(tec, [CATEGORY])
    assert status == 502 and body.startswith("<html>") and tec.items == {}
    tec.inject(drop_connection=True)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        put(tec, [CATEGORY])
    assert tec.items == {} and put(tec, [CATEGORY])[0] == 200
    assert [entry["status"] for entry in tec.requests] == [502, None, 200]


@pytest.fixture
def webhook_receiver():
    received: queue.Queue = queue.Queue()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - stdlib hook name
            received.put(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/tec", received
    server.shutdown()
    server.server_close()


def test_webhook_is_delivered_to_loopback_after_processing(tec, webhook_receiver):
    url, received = webhook_receiver
    status, _, body = put(tec, [CATEGORY, PRODUCT], webhook=url)
    assert status == 200
    notice = received.get(timeout=5)
    assert notice == {"event": "products.processed", "request_id": body["request_id"],
                      "external_ids": ["cat-1", "p1"], "status": "done"}  # fmt: skip
    deadline = time.monotonic() + 2
    while tec.webhooks[-1]["status"] == "pending" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tec.webhooks[-1]["status"] == "delivered"


def test_webhook_to_a_public_host_is_skipped(tec):
    assert put(tec, [CATEGORY], webhook="https://hooks.example.com/tec")[0] == 200
    assert tec.webhooks[-1]["status"] == "skipped"


# -- generators ---------------------------------------------------------------------------------
def tree_stats(catalog):
    categories = {record["id"]: record for record in catalog.categories()}

    def depth(category_id):
        levels = 0
        while category_id != "0":
            category_id, levels = categories[category_id]["parent"], levels + 1
        return levels

    widest = Counter(record["parent"] for record in categories.values()).most_common(1)[0][1]
    return max(map(depth, categories)), widest


def test_demo_catalog_is_realistic_and_deterministic():
    catalog = demo_catalog(seed=0)
    depth, widest = tree_stats(catalog)
    products = catalog.products()
    assert depth >= 6 and widest > 100 and len(products) >= 500
    assert any(not product.get("image_url") for product in products)
    assert any("description" not in product for product in products)
    assert any(product.get("description", "") is None for product in products)
    assert any(isinstance(product["price"], float) for product in products)
    assert all(isinstance(product["stock"], int) for product in products)
    category_ids = {category["id"] for category in catalog.categories()}
    assert all(product["parent"] in category_ids for product in products)
    assert any(product["name"].startswith("Рис длинный пропаренный") for product in products)
    assert demo_catalog(seed=0).products() == products
    assert demo_catalog(seed=1).products() != products


def test_wide_parent_pages_over_the_api():
    catalog = demo_catalog()
    wide_parent = Counter(record["parent"] for record in catalog.categories()).most_common(1)[0][0]
    with OneCEmulator(catalog) as onec:
        first = catalog_page(onec, limit=100, type="category", parent=wide_parent)[2]
        second = catalog_page(onec, limit=100, offset=100, type="category", parent=wide_parent)[2]
    assert first["count"] == 130 and len(first["data"]) == 100 and len(second["data"]) == 30


def test_synthetic_catalog_scales_to_100k_products():
    started = time.perf_counter()
    catalog = synthetic_catalog(100_000, 2000)
    built = time.perf_counter() - started
    depth, widest = tree_stats(catalog)
    assert catalog.counts() == {"category": 2000, "product": 100_000}
    assert depth == 6 and widest >= 500 and built < 10
    with OneCEmulator(catalog) as onec:
        started = time.perf_counter()
        for page in range(200):
            status, _, body = catalog_page(onec, limit=100, offset=page * 500, type="product")
            assert status == 200 and len(body["data"]) == 100
        rate = 200 / (time.perf_counter() - started)
    report = f"synthetic_catalog(100_000, 2000) built in {built:.2f}s; {rate:.0f} pages/s"
    print(report)  # noqa: T201 - benchmark figure wanted in the test output (pytest -s)
