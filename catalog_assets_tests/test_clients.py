"""Both HTTP clients against the emulators on loopback: paging, the walk, retries, errors."""

import time

import pytest

from catalog_assets.emulators import Catalog, OneCEmulator, TecDeliveryEmulator
from catalog_assets.http import HttpClient, UpstreamError
from catalog_assets.mapping import EPOCH
from catalog_assets.onec.client import OneCCatalogClient, OneCResponseError, PassReport
from catalog_assets.tec_delivery.client import TecDeliveryClient

from .conftest import TOKEN


def catalog_of(products: int) -> Catalog:
    catalog = Catalog()
    catalog.upsert_category("cat", "0", "Бакалея", modified_at="2026-01-01T00:00:00")
    for i in range(products):
        catalog.upsert_product(
            {
                "id": f"p{i:05d}",
                "parent": "cat",
                "type": "product",
                "name": f"Товар {i}",
                "price": i,
                "stock": 1,
            },
            modified_at=f"2026-02-{1 + i % 28:02d}T00:00:00",
        )
    return catalog


def client(emulator: OneCEmulator, **kwargs) -> OneCCatalogClient:
    return OneCCatalogClient(
        base_url=emulator.url, backoff_seconds=0.01, max_retries=2, timeout_seconds=2, **kwargs
    )


@pytest.mark.parametrize("products, pages", [(0, 1), (1, 1), (100, 1), (101, 2), (250, 3)])
def test_pagination_returns_every_product_once(products, pages):
    with OneCEmulator(catalog_of(products)).start() as onec:
        report = PassReport()
        fetched = [
            r["id"]
            for page in client(onec).pages(type="product", modified_since=EPOCH, report=report)
            for r in page.records
        ]
        assert sorted(fetched) == [f"p{i:05d}" for i in range(products)]
        # `count` tells when to stop: 100 items need no second, empty request.
        assert report.requests == pages
        assert report.consistent
        assert all(int(r["query"]["limit"]) <= 100 for r in onec.requests)


def test_walk_reaches_every_level_and_every_sibling():
    catalog = Catalog()
    parent = "0"
    for depth in range(6):  # a chain 6 levels deep
        catalog.upsert_category(f"d{depth}", parent, f"Уровень {depth}")
        parent = f"d{depth}"
    for i in range(150):  # 150 siblings under one parent: two pages
        catalog.upsert_category(f"s{i:03d}", "d2", f"Подкатегория {i}")
    catalog.upsert_category("deep", "s149", "Под сотой")
    with OneCEmulator(catalog).start() as onec:
        report = PassReport()
        found = [
            r["id"]
            for page in client(onec).walk_categories(modified_since=EPOCH, report=report)
            for r in page.records
        ]
        assert sorted(found) == sorted(c["id"] for c in catalog.categories())
        assert len(found) == len(set(found)) == 6 + 150 + 1
        parents_asked = [r["query"].get("parent") for r in onec.requests]
        assert parents_asked.count("d2") == 2  # 150 children -> two pages


def test_retries_5xx_and_honours_retry_after():
    with OneCEmulator(catalog_of(3)).start() as onec:
        onec.inject(status=503, headers={"Retry-After": "0"}, times=2)
        page = client(onec).fetch_page(type="product", modified_since=EPOCH)
        assert page.count == 3
        assert onec.request_count == 3


def test_a_retry_after_longer_than_the_backoff_cap_waits_the_cap():
    """A 1C asking for an hour must not hold a run (or a sensor tick) for an hour a retry."""
    with OneCEmulator(catalog_of(3)).start() as onec:
        onec.inject(status=503, headers={"Retry-After": "3600"}, times=1)
        http = HttpClient(max_retries=2, backoff_seconds=0.01, max_backoff=0.2)
        started = time.monotonic()
        response = http.get(
            f"{onec.url}/api/catalog", params={"type": "product", "limit": 10}, timeout=2
        )
        assert response.status_code == 200 and time.monotonic() - started < 5


# Not RFC 9110 (delay-seconds is an integer), but sent by proxies and frameworks alike.
@pytest.mark.parametrize("retry_after", ["0.5", "", "later"], ids=["fraction", "empty", "word"])
def test_a_retry_after_urllib3_cannot_read_is_retried_with_backoff(retry_after):
    """A 429/503 whose Retry-After is unreadable is still transient: retried with our own
    backoff, and if it persists, reported with its status, not as a transport failure."""
    tec_item = [{"external_id": "c", "name": "C", "is_category": True}]
    with (
        OneCEmulator(catalog_of(3)).start() as onec,
        TecDeliveryEmulator(token=TOKEN).start() as tec,
    ):
        onec.inject(status=503, headers={"Retry-After": retry_after}, times=1)
        assert client(onec).fetch_page(type="product", modified_since=EPOCH).count == 3
        assert onec.request_count == 2
        tec.inject(status=429, headers={"Retry-After": retry_after}, times=1)
        tec_client = TecDeliveryClient(
            url=tec.url, token=TOKEN, backoff_seconds=0.01, max_retries=2
        )
        assert tec_client.put_products(tec_item).ok and len(tec.requests) == 2

        tec.inject(status=429, headers={"Retry-After": retry_after}, times=10)
        outcome = tec_client.put_products(tec_item)
        assert outcome.http_status == 429 and "HTTP 429" in outcome.error
        assert len(tec.requests) == 5


def test_gives_up_after_retries_naming_the_request_not_the_password():
    with OneCEmulator(catalog_of(3), username="u", password="pw-SECRET").start() as onec:
        onec.inject(status=500, times=10)
        with pytest.raises(UpstreamError) as failure:
            client(onec, username="u", password="pw-SECRET").fetch_page(
                type="product", modified_since=EPOCH
            )
        assert "HTTP 500" in str(failure.value) and "type=product" in str(failure.value)
        assert "pw-SECRET" not in str(failure.value)
        assert onec.request_count == 3  # the first try and two retries


@pytest.mark.parametrize("status", [500, 200], ids=["error status", "garbage with 200"])
def test_a_1c_answer_echoing_the_password_does_not_carry_it_on(status):
    """A proxy or a debug-mode 1C that echoes the request's credentials in its error page:
    the error (run log, alert text) and the body kept for the quarantine row hide it, as
    Tec.Delivery's echoed token is hidden."""
    echo = "<html>login u / pw-SECRET refused</html>"
    with OneCEmulator(catalog_of(3), username="u", password="pw-SECRET").start() as onec:
        onec.inject(status=status, body=echo, content_type="text/html", times=10)
        with pytest.raises(UpstreamError) as failure:
            client(onec, username="u", password="pw-SECRET").fetch_page(
                type="product", modified_since=EPOCH
            )
        assert "refused" in str(failure.value) and "pw-SECRET" not in str(failure.value)
        assert "pw-SECRET" not in (failure.value.body or "")


def test_a_cyrillic_1c_user_signs_in():
    """1C user names are often Cyrillic ("Администратор"); the credentials go as UTF-8, which
    the server's challenge asks for (`charset="UTF-8"`, RFC 7617)."""
    user, password = "Администратор", "пароль-1"
    with OneCEmulator(catalog_of(3), username=user, password=password).start() as onec:
        page = client(onec, username=user, password=password).fetch_page(
            type="product", modified_since=EPOCH
        )
        assert page.count == 3


def test_other_4xx_is_not_retried():
    with OneCEmulator(catalog_of(3), username="u", password="right").start() as onec:
        with pytest.raises(UpstreamError, match="HTTP 401"):
            client(onec, username="u", password="wrong").fetch_page(
                type="product", modified_since=EPOCH
            )
        assert onec.request_count == 1


def test_connection_errors_are_retried_then_named():
    with OneCEmulator(catalog_of(1)).start() as onec:
        onec.inject(drop_connection=True, times=1)
        assert client(onec).fetch_page(type="product", modified_since=EPOCH).count == 1
        onec.inject(drop_connection=True, times=10)
        with pytest.raises(UpstreamError, match="failed after 2 retries: GET .*type=product"):
            client(onec).fetch_page(type="product", modified_since=EPOCH)


def test_proxy_settings_in_the_environment_do_not_reroute_requests(monkeypatch):
    """A stray HTTP_PROXY must not carry 1C's credentials or the Tec.Delivery token elsewhere:
    the proxy named here does not exist, and the requests still reach the emulators."""
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    with (
        OneCEmulator(catalog_of(1)).start() as onec,
        TecDeliveryEmulator(token=TOKEN).start() as tec,
    ):
        assert client(onec).fetch_page(type="product", modified_since=EPOCH).count == 1
        tec_client = TecDeliveryClient(url=tec.url, token=TOKEN, max_retries=0)
        item = {"external_id": "c1", "name": "Бакалея", "is_category": True}
        assert tec_client.put_products([item]).ok


@pytest.mark.parametrize(
    "body, content_type, complaint",
    [
        ("<html><body>Сервис временно недоступен</body></html>", "text/html", "not JSON"),
        ({"count": 1}, "application/json", "without a `data` list"),
        (
            {"count": 1, "data": [{"id": "a"}, {"id": "b"}]},
            "application/json",
            "count=1 but 2 records",
        ),
        ({"count": "many", "data": []}, "application/json", "not a count"),
    ],
)
def test_untrustworthy_pages_are_refused_specifically(body, content_type, complaint):
    with OneCEmulator(catalog_of(1)).start() as onec:
        onec.inject(status=200, body=body, content_type=content_type)
        with pytest.raises(OneCResponseError, match=complaint):
            client(onec).fetch_page(type="product", modified_since=EPOCH)


def test_a_body_nested_too_deeply_to_parse_is_refused_not_a_crash():
    """orjson stops at 1,024 levels and the standard library's fallback then overflows the
    stack: such a body is as unusable as one that is not JSON, and must be judged like one."""
    deep = "[" * 100_000 + "]" * 100_000
    with (
        OneCEmulator(catalog_of(1)).start() as onec,
        TecDeliveryEmulator(token=TOKEN).start() as tec,
    ):
        onec.inject(status=200, body=deep, content_type="application/json")
        with pytest.raises(OneCResponseError, match="not JSON"):
            client(onec).fetch_page(type="product", modified_since=EPOCH)
        tec.inject(status=200, body=deep, content_type="application/json")
        outcome = TecDeliveryClient(url=tec.url, token=TOKEN).put_products(
            [{"external_id": "c", "name": "C", "is_category": True}]
        )
        assert not outcome.ok and "not JSON" in outcome.error


def test_a_page_with_a_byte_order_mark_or_as_plain_text_is_a_page():
    """1C's HTTP services write a UTF-8 byte order mark unless told not to, and a hand-set
    Content-Type may say text/plain: the body is still the page (RFC 8259 8.1)."""
    catalog = catalog_of(3)
    with OneCEmulator(catalog).start() as onec:
        body = catalog.query_json(type="product", modified_since=EPOCH)
        onec.inject(status=200, body=b"\xef\xbb\xbf" + body, content_type="text/plain")
        page = client(onec).fetch_page(type="product", modified_since=EPOCH)
        assert (page.count, page.records) == (3, catalog.products())


def test_a_page_past_the_end_is_an_empty_page_not_garbage():
    """`offset` beyond `count` (1C deleted records since the offset was planned) is answered
    with the true `count` and no records: a valid page, not a `count` contradicting `data`."""
    with OneCEmulator(catalog_of(3)).start() as onec:
        page = client(onec).fetch_page(type="product", modified_since=EPOCH, offset=5)
        assert page.count == 3 and page.records == []


def test_a_redirect_is_reported_not_followed():
    """A 3xx is an error naming the status: following it could carry Basic auth or a
    put-products body with its token to wherever the Location points."""
    with OneCEmulator(catalog_of(1)).start() as onec:
        onec.inject(status=302, body={}, headers={"Location": "http://127.0.0.1:9/elsewhere"})
        before = len(onec.requests)
        with pytest.raises(UpstreamError, match="HTTP 302"):
            client(onec).fetch_page(type="product", modified_since=EPOCH)
        assert len(onec.requests) == before + 1


def test_an_item_json_cannot_carry_is_a_rejection_not_a_crash():
    with TecDeliveryEmulator(token=TOKEN).start() as tec:
        outcome = TecDeliveryClient(url=tec.url, token=TOKEN).put_products(
            [{"external_id": "p1", "name": "X", "description": object()}]
        )
        assert not outcome.ok and outcome.rejected and "not JSON" in outcome.error
        assert tec.requests == []


def test_tec_delivery_success_rejection_and_fatal():
    with TecDeliveryEmulator(token=TOKEN).start() as tec:
        good = TecDeliveryClient(url=tec.url, token=TOKEN, backoff_seconds=0.01, max_retries=1)
        outcome = good.put_products([{"external_id": "c1", "name": "Бакалея", "is_category": True}])
        assert outcome.ok and outcome.http_status == 200 and "success" in outcome.body
        rejected = good.put_products(
            [{"external_id": "c2", "external_parent_id": "nope", "name": "X", "is_category": True}]
        )
        assert not rejected.ok and rejected.rejected and rejected.http_status == 400
        bad_token = TecDeliveryClient(
            url=tec.url, token="wrong-token", backoff_seconds=0.01, max_retries=1
        )
        fatal = bad_token.put_products([{"external_id": "c3", "name": "Y", "is_category": True}])
        assert fatal.fatal and fatal.http_status == 401 and "wrong-token" not in (fatal.error or "")
        assert all(r.get("token") in (None, "***") for r in tec.requests)


def test_tec_delivery_error_status_in_a_200_body_is_a_rejection():
    with TecDeliveryEmulator(token=TOKEN).start() as tec:
        tec.inject(status=200, body={"status": "error", "message": "quota"})
        outcome = TecDeliveryClient(url=tec.url, token=TOKEN).put_products(
            [{"external_id": "c", "name": "C", "is_category": True}]
        )
        assert not outcome.ok and outcome.rejected and "quota" in outcome.error


def test_tec_delivery_retries_then_reports_without_token():
    with TecDeliveryEmulator(token=TOKEN).start() as tec:
        tec.inject(status=502, times=10)
        outcome = TecDeliveryClient(
            url=tec.url, token=TOKEN, backoff_seconds=0.01, max_retries=2
        ).put_products([{"external_id": "c", "name": "C", "is_category": True}])
        assert not outcome.ok and not outcome.rejected and outcome.http_status == 502
        assert TOKEN not in outcome.error and TOKEN not in outcome.body
        assert len(tec.requests) == 3


def test_repeated_ids_are_reported_once_per_pass():
    catalog = catalog_of(250)
    with OneCEmulator(catalog).start() as onec:
        # Before the second page is cut, an already-read item moves to the end.
        onec.on_request(lambda q: q.get("offset") == "99" and catalog.touch("p00000"))
        report = PassReport()
        fetched = [
            r["id"]
            for p in client(onec).pages(type="product", modified_since=EPOCH, report=report)
            for r in p.records
        ]
        assert fetched.count("p00000") == 1 and report.duplicate_ids == 1
        assert [a for a in report.anomalies if "ids repeated" in a] == [
            "ids repeated across pages (product, parent=None)"
        ]
