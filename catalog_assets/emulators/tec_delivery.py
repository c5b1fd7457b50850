"""Loopback stand-in for Tec.Delivery's Product Management API (``put-products``).

It validates what the real API would and, deliberately, a bit more, so a wrong mapping fails
in tests instead of being silently half-accepted in production:
- unknown fields (top level or per item) and ``null`` values are rejected, not ignored;
- ``external_parent_id`` must name a category accepted earlier or sent earlier in the same
  payload (so categories must be pushed parents-first, and roots carry no parent, not "0");
- an item cannot switch between category and product, nor repeat within one payload;
- info entries need a non-empty name and value (drop absent 1C fields instead of sending "");
- a new category needs a ``name`` (every category in the seed has one; its product does not).
Any invalid item rejects the whole batch and nothing from it is stored, which is what a
client's bisect-on-reject logic has to cope with. Accepted items are partial upserts: fields
an update omits keep their previous values; ``enable`` defaults to true.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from catalog_assets.emulators._http import (
    Fault,
    FaultQueue,
    LoopbackServer,
    Reply,
    Request,
    is_loopback,
    parse_json,
)

ENDPOINT_PATH = "/common/merchant/1.0/"
MAX_BATCH = 100
DEFAULT_LANGUAGES = ("RU", "EN", "KK", "UZ", "KY", "TG", "AZ", "HY", "KA")
_ENVELOPE_FIELDS = {"api", "method", "token", "language", "translate", "webhook", "payload"}
_PRODUCT_ONLY = ("price", "store_balance", "info")
_COLOR = re.compile(r"#[0-9A-Fa-f]{6}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _check_info(value: Any) -> str | None:
    if not isinstance(value, list):
        return "must be a list of {name, value} objects"
    for entry in value:
        if not isinstance(entry, dict) or set(entry) != {"name", "value"}:
            return "entries must be objects with exactly 'name' and 'value'"
        if not all(isinstance(entry[key], str) and entry[key] for key in ("name", "value")):
            return "entry name and value must be non-empty strings"
    return None


def _check_image(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be an object"
    unknown = set(value) - {"url", "resize", "bgcolor", "scale"}
    if unknown:
        return f"has unknown field(s): {', '.join(sorted(unknown))}"
    if not _is_http_url(value.get("url")):
        return "url must be an http(s) URL"
    if "resize" in value and not isinstance(value["resize"], bool):
        return "resize must be a boolean"
    if "bgcolor" in value and not (
        isinstance(value["bgcolor"], str) and _COLOR.fullmatch(value["bgcolor"])
    ):
        return "bgcolor must look like #RRGGBB"
    if "scale" in value and not (_is_number(value["scale"]) and 0 < value["scale"] <= 1):
        return "scale must be a number in (0, 1]"
    return None


def _expect(predicate: Callable[[Any], bool], problem: str) -> Callable[[Any], str | None]:
    return lambda value: None if predicate(value) else problem


_text = _expect(lambda v: isinstance(v, str), "must be a string")
_non_empty = _expect(lambda v: isinstance(v, str) and bool(v), "must be a non-empty string")
_bool = _expect(lambda v: isinstance(v, bool), "must be a boolean")
_ITEM_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "external_id": _non_empty,
    "external_parent_id": _non_empty,
    "name": _non_empty,
    "is_category": _bool,
    "enable": _bool,
    "description": _text,
    "external_key": _text,
    "external_data": _text,
    "price": _expect(lambda v: _is_number(v) and v >= 0, "must be a number >= 0"),
    "store_balance": _expect(_is_number, "must be a number"),
    "info": _check_info,
    "image": _check_image,
}


def _envelope_error(body: Any, token: str, languages: Iterable[str]) -> tuple[int, str] | None:
    """The request-level checks, in the order a gateway would run them."""
    if not isinstance(body, dict):
        return 400, "request body must be a JSON object"
    if body.get("api") != "product" or body.get("method") != "put-products":
        return 400, "expected api 'product' and method 'put-products'"
    presented = body.get("token")
    if not isinstance(presented, str) or not hmac.compare_digest(
        presented.encode(), token.encode()
    ):
        return 401, "invalid token"
    unknown = sorted(set(body) - _ENVELOPE_FIELDS)
    if unknown:
        return 400, f"unknown field(s): {', '.join(unknown)}"
    language = body.get("language")
    if not isinstance(language, str) or not language:
        return 400, "language must be a non-empty string"
    if language not in languages:
        return 400, f"language {language!r} is not enabled for this company"
    if "translate" in body and not isinstance(body["translate"], bool):
        return 400, "translate must be a boolean"
    if "webhook" in body and not _is_http_url(body["webhook"]):
        return 400, "webhook must be an http(s) URL"
    payload = body.get("payload")
    if not isinstance(payload, list) or not 1 <= len(payload) <= MAX_BATCH:
        return 400, f"payload must contain 1..{MAX_BATCH} items"
    return None


class TecDeliveryEmulator(LoopbackServer):
    """``put-products`` endpoint storing accepted items in ``.items``; webhooks to loopback only."""

    def __init__(
        self,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_languages: Iterable[str] = DEFAULT_LANGUAGES,
        webhook_delay_s: float = 0.2,
    ) -> None:
        super().__init__(host, port)
        if not token:
            raise ValueError("token must be non-empty")
        self._token = token
        self.allowed_languages = tuple(allowed_languages)
        self.webhook_delay_s = webhook_delay_s
        self.reject_ids: set[str] = set()
        self.fail_always_ids: set[str] = set()
        self._lock = threading.Lock()
        self._items: dict[str, dict] = {}
        self._log: list[dict] = []
        self._webhooks: list[dict] = []
        self._timers: list[threading.Timer] = []
        self._faults = FaultQueue()

    @property
    def url(self) -> str:
        """The full endpoint URL: POST the JSON envelope here."""
        return self.base_url + ENDPOINT_PATH

    # -- state for tests ---------------------------------------------------------------------
    @property
    def items(self) -> dict[str, dict]:
        with self._lock:
            return {key: dict(item) for key, item in self._items.items()}

    @property
    def categories(self) -> dict[str, dict]:
        return {key: item for key, item in self.items.items() if item.get("is_category")}

    @property
    def products(self) -> dict[str, dict]:
        return {key: item for key, item in self.items.items() if not item.get("is_category")}

    @property
    def requests(self) -> list[dict]:
        """Request log with the token replaced by "***"; the token itself is never kept."""
        with self._lock:
            return list(self._log)

    @property
    def webhooks(self) -> list[dict]:
        with self._lock:
            return [dict(record) for record in self._webhooks]

    def forget(self, *ids: str) -> None:
        """Lose these items, as Tec.Delivery would after restoring its own data."""
        with self._lock:
            for key in ids:
                self._items.pop(key, None)

    def inject(
        self,
        status: int | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        delay_s: float = 0,
        match: Callable[[Any], bool] | None = None,
        drop_connection: bool = False,
        content_type: str | None = None,
    ) -> None:
        """Misbehave on the next ``times`` requests whose parsed JSON body ``match`` accepts."""
        self._faults.add(
            Fault(status, body, content_type, headers, times, delay_s, match, drop_connection)
        )

    def clear_faults(self) -> None:
        self._faults.clear()

    def stop(self) -> None:
        with self._lock:
            for timer in self._timers:
                timer.cancel()
        super().stop()

    # -- HTTP --------------------------------------------------------------------------------
    def handle(self, request: Request) -> Reply:
        if request.path == ENDPOINT_PATH:
            if request.method != "POST":
                return Reply(405, {"status": "error", "message": "use POST"}, {"Allow": "POST"})
            return self._put_products(request)
        admin = {
            "/admin/items": lambda: {"count": len(self._items), "items": self.items},
            "/admin/requests": lambda: self.requests,
            "/admin/stats": self._stats,
        }
        if request.method == "GET" and request.path in admin:
            return Reply(200, admin[request.path]())
        return Reply(404, {"status": "error", "message": f"no route {request.path}"})

    def _stats(self) -> dict:
        items = self.items
        log = self.requests
        return {
            "items": len(items),
            "categories": sum(1 for item in items.values() if item.get("is_category")),
            "disabled": sum(1 for item in items.values() if item.get("enable") is False),
            "requests": len(log),
            "accepted_batches": sum(1 for entry in log if entry["status"] == 200),
            "webhooks": len(self.webhooks),
        }

    def _put_products(self, request: Request) -> Reply:
        ok, body = parse_json(request.body)
        reply = self._faults.fire(body, {"status": "error", "message": "injected fault"})
        request_id = None
        if reply is None:
            request_id = str(uuid.uuid4())
            reply = self._accept(body if ok else None, request_id)
        envelope = body if isinstance(body, dict) else {}
        payload = envelope.get("payload") if isinstance(envelope.get("payload"), list) else []
        accepted = reply.status == 200 and not reply.drop and request_id is not None
        entry = {
            "status": None if reply.drop else reply.status,
            "items": len(payload),
            "external_ids": [item.get("external_id") for item in payload if isinstance(item, dict)],
            "language": envelope.get("language"),
            "translate": envelope.get("translate"),
            "webhook": envelope.get("webhook"),
            "token": "***" if "token" in envelope else None,
            "payload": payload,
            "request_id": request_id if accepted else None,
            "response": reply.body if isinstance(reply.body, dict | list | str) else None,
            "at": time.time(),
        }
        with self._lock:
            self._log.append(entry)
        if accepted and envelope.get("webhook"):
            self._schedule_webhook(envelope["webhook"], request_id, entry["external_ids"])
        return reply

    def _accept(self, body: Any, request_id: str) -> Reply:
        problem = _envelope_error(body, self._token, self.allowed_languages)
        if problem:
            return Reply(problem[0], {"status": "error", "message": problem[1]})
        payload = body["payload"]
        with self._lock:  # validate and store atomically: concurrent batches see a consistent tree
            errors = self._item_errors(payload)
            if errors:
                message = f"{len({e['index'] for e in errors})} of {len(payload)} items invalid;"
                return Reply(
                    400,
                    {"status": "error", "message": message + " nothing stored", "errors": errors},
                )
            for item in payload:
                stored = {**self._items.get(item["external_id"], {}), **item}
                stored.setdefault("enable", True)
                self._items[item["external_id"]] = stored
        return Reply(200, {"status": "success", "accepted": len(payload), "request_id": request_id})

    def _item_errors(self, payload: list) -> list[dict]:
        errors: list[dict] = []
        seen: dict[str, dict] = {}  # earlier items of this payload
        poisoned = self.reject_ids | self.fail_always_ids

        def parent_of(key: str) -> str | None:
            return (seen.get(key) or self._items.get(key) or {}).get("external_parent_id")

        for index, item in enumerate(payload):
            external_id = item.get("external_id") if isinstance(item, dict) else None
            for problem in self._problems(item, seen, parent_of, poisoned):
                errors.append({"index": index, "external_id": external_id, "error": problem})
            if isinstance(external_id, str) and external_id not in seen:
                seen[external_id] = {**self._items.get(external_id, {}), **item}
        return errors

    def _problems(self, item: Any, seen: dict, parent_of: Callable, poisoned: set) -> list[str]:
        if not isinstance(item, dict):
            return ["item must be a JSON object"]
        problems = [f"unknown field {key!r}" for key in item if key not in _ITEM_FIELDS]
        problems += [
            f"{key} {problem}"
            for key, check in _ITEM_FIELDS.items()
            if key in item and (problem := check(item[key]))
        ]
        external_id = item.get("external_id")
        if not isinstance(external_id, str) or not external_id:
            return problems if "external_id" in item else [*problems, "external_id is required"]
        if external_id in seen:
            problems.append("duplicate external_id in payload")
        known = self._items.get(external_id)
        is_category = item.get("is_category") is True
        # The seed's product example carries no `name`, so only a new category needs one.
        if known is None and is_category and "name" not in item:
            problems.append("name is required for a new category")
        if known is not None and bool(known.get("is_category")) != is_category:
            problems.append("cannot switch between category and product (check is_category)")
        if is_category:
            problems += [
                f"{key} is not allowed on a category" for key in _PRODUCT_ONLY if key in item
            ]
        parent = item.get("external_parent_id")
        if isinstance(parent, str) and parent:
            parent_item = seen.get(parent) or self._items.get(parent)
            if parent_item is None:
                problems.append(f"unknown external_parent_id {parent!r}: send the category first")
            elif not parent_item.get("is_category"):
                problems.append(f"external_parent_id {parent!r} is a product, not a category")
            elif is_category and self._creates_cycle(external_id, parent, parent_of):
                problems.append(f"external_parent_id {parent!r} would create a cycle")
        if external_id in poisoned:
            problems.append("item rejected by Tec.Delivery (injected)")
        return problems

    @staticmethod
    def _creates_cycle(external_id: str, parent: str, parent_of: Callable) -> bool:
        visited: set[str] = set()
        node: str | None = parent
        while node is not None and node not in visited:
            if node == external_id:
                return True
            visited.add(node)
            node = parent_of(node)
        return False

    # -- webhooks ----------------------------------------------------------------------------
    def _schedule_webhook(self, url: str, request_id: str, external_ids: list) -> None:
        """Mimic async image/translation processing; never send traffic off the loopback."""
        record = {"url": url, "request_id": request_id, "status": "pending"}
        with self._lock:
            self._webhooks.append(record)
        if not is_loopback(urlsplit(url).hostname):
            record.update(status="skipped", reason="webhook host is not loopback")
            return
        notice = {
            "event": "products.processed",
            "request_id": request_id,
            "external_ids": external_ids,
            "status": "done",
        }
        timer = threading.Timer(self.webhook_delay_s, _deliver, (url, notice, record))
        timer.daemon = True
        with self._lock:
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead off the loopback, so webhooks never follow one."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


# No ProxyHandler settings from the environment: a proxy would carry loopback traffic elsewhere.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


def _deliver(url: str, notice: dict, record: dict) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(notice).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with _OPENER.open(request, timeout=5) as response:
            record.update(status="delivered", http_status=response.status)
    except urllib.error.HTTPError as exc:
        record.update(status="failed", http_status=exc.code)
    except (urllib.error.URLError, OSError) as exc:
        record.update(status="failed", error=str(exc))
