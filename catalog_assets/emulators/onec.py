"""Loopback stand-in for 1C's ``GET /api/catalog``, strict enough to catch a client bug.

Choices beyond the seed contract, made so mistakes fail loudly instead of silently:
- ``limit`` and ``type`` are required (the seed makes paging mandatory, max 100 per page);
  ``offset`` defaults to 0. Unknown query parameters are rejected with 400.
- ``parent`` omitted = no parent filter: all levels as one flat list.
- ``modified_since`` must be exactly ``YYYY-MM-DDTHH:MM:SS`` (no zone, no fractions) and is
  inclusive. Pages are ordered by (modified_at, id), so offset paging over a catalog that
  changes mid-sync can skip or repeat records, just as the real server can.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any

from catalog_assets.emulators._http import (
    Fault,
    FaultQueue,
    LoopbackServer,
    Reply,
    Request,
    parse_json,
)
from catalog_assets.emulators.catalog import (
    CATEGORY,
    PRODUCT,
    ROOT_PARENT,
    TIMESTAMP_FORMAT,
    Catalog,
)

CATALOG_PATH = "/api/catalog"
MAX_LIMIT = 100
LOG_LIMIT = 200_000  # requests kept in the log; enough for a full 100k-product sync
_QUERY_PARAMS = {"limit", "offset", "modified_since", "type", "parent"}
_DIGITS = re.compile(r"[0-9]+")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def _error(status: int, message: str, **headers: str) -> Reply:
    return Reply(status, {"error": message}, headers)


def parse_catalog_query(query: dict[str, str]) -> dict[str, Any]:
    """Validate /api/catalog parameters into ``Catalog.query`` kwargs; ValueError = 400."""
    unknown = sorted(set(query) - _QUERY_PARAMS)
    if unknown:
        raise ValueError(f"unknown query parameter(s): {', '.join(unknown)}")
    if "limit" not in query:
        raise ValueError("limit is required (pagination is mandatory)")
    if not _DIGITS.fullmatch(query["limit"]) or not 1 <= int(query["limit"]) <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer 1..{MAX_LIMIT}")
    offset = query.get("offset", "0")
    if not _DIGITS.fullmatch(offset):
        raise ValueError("offset must be an integer >= 0")
    if query.get("type") not in (CATEGORY, PRODUCT):
        raise ValueError("type must be 'category' or 'product'")
    modified_since = query.get("modified_since")
    if modified_since is not None:
        try:
            if not _TIMESTAMP.fullmatch(modified_since):
                raise ValueError
            datetime.strptime(modified_since, TIMESTAMP_FORMAT)
        except ValueError:
            raise ValueError("modified_since must be YYYY-MM-DDTHH:MM:SS") from None
    if query.get("parent") == "":
        raise ValueError("parent must be a category id or '0'")
    return {
        "type": query["type"],
        "parent": query.get("parent"),
        "modified_since": modified_since,
        "limit": int(query["limit"]),
        "offset": int(offset),
    }


class OneCEmulator(LoopbackServer):
    """1C catalog API over a ``Catalog``, with fault injection, latency and a request log."""

    def __init__(
        self,
        catalog: Catalog,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str | None = None,
        password: str | None = None,
        latency_ms: float = 0,
    ) -> None:
        super().__init__(host, port)
        if (username is None) != (password is None):
            raise ValueError("set both username and password, or neither")
        self.catalog = catalog
        self.latency_ms = latency_ms
        self._credentials = f"{username}:{password}".encode() if username is not None else None
        self._faults = FaultQueue()
        self._hook: Callable[[dict[str, str]], None] | None = None
        self._log_lock = threading.Lock()
        self._log: deque[dict] = deque(maxlen=LOG_LIMIT)
        self._served = 0

    @property
    def url(self) -> str:
        """Base URL; the client calls ``{url}/api/catalog``."""
        return self.base_url

    # -- test hooks --------------------------------------------------------------------------
    def inject(
        self,
        status: int | None = None,
        body: Any = None,
        content_type: str | None = None,
        times: int = 1,
        delay_s: float = 0,
        match: Callable[[dict[str, str]], bool] | None = None,
        drop_connection: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Misbehave on the next ``times`` /api/catalog requests whose query ``match`` accepts."""
        self._faults.add(
            Fault(status, body, content_type, headers, times, delay_s, match, drop_connection)
        )

    def clear_faults(self) -> None:
        self._faults.clear()

    def on_request(self, callback: Callable[[dict[str, str]], None] | None) -> None:
        """Call ``callback(query)`` after validation, before the page is cut (None = remove)."""
        self._hook = callback

    @property
    def requests(self) -> list[dict]:
        with self._log_lock:
            return list(self._log)

    @property
    def request_count(self) -> int:
        return self._served

    def reset_log(self) -> None:
        with self._log_lock:
            self._log.clear()
            self._served = 0

    # -- HTTP --------------------------------------------------------------------------------
    def handle(self, request: Request) -> Reply:
        if request.path == CATALOG_PATH:
            reply = self._catalog(request)
            with self._log_lock:
                self._served += 1
                self._log.append(
                    {
                        "method": request.method,
                        "path": request.path,
                        "query": dict(request.query),
                        "status": None if reply.drop else reply.status,
                        "auth_present": "authorization" in request.headers,
                        "at": time.time(),
                    }
                )
            return reply
        if request.path.startswith("/admin/"):
            return self._admin(request)
        return _error(404, f"no route {request.path}; the catalog is at {CATALOG_PATH}")

    def _catalog(self, request: Request) -> Reply:
        if self.latency_ms:
            time.sleep(self.latency_ms / 1000)
        faulty = self._faults.fire(request.query, {"error": "injected fault"})
        if faulty is not None:
            return faulty
        if request.method != "GET":
            return _error(405, "method not allowed", Allow="GET")
        if not self._authorized(request.headers.get("Authorization")):
            return _error(
                401,
                "authentication required",
                **{"WWW-Authenticate": 'Basic realm="1C", charset="UTF-8"'},
            )
        try:
            params = parse_catalog_query(request.query)
        except ValueError as exc:
            return _error(400, str(exc))
        if self._hook is not None:
            self._hook(dict(request.query))
        body = self.catalog.query_json(**params)
        return Reply(200, body, content_type="application/json; charset=utf-8")

    def _authorized(self, header: str | None) -> bool:
        if self._credentials is None:
            return True
        scheme, _, encoded = (header or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            presented = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(presented, self._credentials)

    def _admin(self, request: Request) -> Reply:
        """Unauthenticated edit endpoints so a demo user can change 1C data with curl."""
        route = request.path.split("/")[2:]
        method = request.method
        if method == "GET" and route == ["stats"]:
            uptime = max(time.monotonic() - self.started_at, 1e-9)
            return Reply(
                200,
                {
                    **self.catalog.counts(),
                    "requests_served": self._served,
                    "uptime_s": round(uptime, 1),
                    "requests_per_s": round(self._served / uptime, 1),
                },
            )
        if len(route) != 2 or not route[1]:
            return _error(404, "unknown admin route")
        kind, item_id = route
        if method == "GET" and kind == "catalog":
            record = self.catalog.get(item_id)
            return Reply(200, record) if record else _error(404, f"{item_id} not found")
        if method == "DELETE" and kind == "items":
            removed = self.catalog.remove(item_id)
            return Reply(200, {"deleted": item_id}) if removed else _error(404, "not found")
        if method != "PUT" or kind not in ("products", "categories"):
            return _error(404, "unknown admin route")
        ok, body = parse_json(request.body)
        if not ok or not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        modified_at = body.pop("modified_at", None)
        if kind == "products":
            return Reply(200, self.catalog.upsert_product({**body, "id": item_id}, modified_at))
        current = self.catalog.get(item_id) or {"parent": ROOT_PARENT}
        name = body.get("name", current.get("name"))
        if not isinstance(name, str) or not name:
            return _error(400, "name is required for a new category")
        parent = body.get("parent", current.get("parent"))
        return Reply(200, self.catalog.upsert_category(item_id, parent, name, modified_at))
