"""The Tec.Delivery Product Management API client: `put-products` in batches of at most 100.

One request per batch; the client never splits or merges batches itself, so what the caller
records per batch is exactly what went over the wire. A batch's outcome is data, not an
exception: the caller decides whether to bisect (the server rejected an item), stop (auth or
transport failure) or record success.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from catalog_assets.http import (
    HttpClient,
    TransportError,
    decode_json,
    encode_json,
    failure_name,
    redact,
    safe_url,
    truncate,
    url_secrets,
)
from catalog_assets.mapping import put_products_request

DEFAULT_URL = "https://api.tec.delivery/common/merchant/1.0/"


@dataclass(frozen=True)
class BatchOutcome:
    """`ok` is HTTP 2xx with a JSON body whose `status` (if any) is not an error and which
    lists no per-item `errors`.

    `rejected` means the server judged the content (400/409/413/422, or a 2xx with an error
    status or item errors): splitting the batch can isolate the offending item. `fatal` means
    no batch can succeed (401/403): bisecting would only multiply the failure. Anything else
    is a transport or server failure that retries did not cure.
    """

    ok: bool
    http_status: int | None
    body: str
    error: str | None
    duration_ms: int
    rejected: bool = False
    fatal: bool = False


class TecDeliveryClient(dg.ConfigurableResource):
    url: str = DEFAULT_URL
    token: str
    language: str = "RU"
    translate: str = "true"
    webhook_url: str | None = None
    timeout_seconds: float = 60.0
    max_retries: int = 4
    backoff_seconds: float = 0.5
    push_concurrency: int = 2

    _session: HttpClient | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def translate_flag(self) -> bool:
        value = self.translate.strip().lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"TEC_DELIVERY_TRANSLATE must be true or false, got {self.translate!r}")

    def _http(self) -> HttpClient:
        with self._lock:  # batches are sent from several threads: one pool for all of them
            if self._session is None:
                self._session = HttpClient(
                    max_retries=self.max_retries,
                    backoff_seconds=self.backoff_seconds,
                    pool_size=max(self.push_concurrency, 1) + 1,
                )
            return self._session

    def put_products(self, items: list[dict[str, Any]]) -> BatchOutcome:
        body = put_products_request(
            items,
            token=self.token,
            language=self.language,
            translate=self.translate_flag,
            webhook=self.webhook_url or None,
        )
        described = f"POST {safe_url(self.url)} put-products ({len(items)} items)"
        started = time.monotonic()
        try:
            encoded = encode_json(body)
        except TypeError as exc:  # a value JSON cannot carry: judged like a server rejection
            return _unanswered(
                f"{described} not sent: an item is not JSON ({exc})", started, rejected=True
            )
        try:
            response = self._http().post(
                self.url,
                body=encoded,
                content_type="application/json",
                timeout=self.timeout_seconds,
            )
        except TransportError as exc:
            return _unanswered(
                f"{described} failed after {self.max_retries} retries: {failure_name(exc)}",
                started,
            )
        # The webhook URL carries its own secret and a server may quote our request back.
        text = redact(response.text, [self.token, *url_secrets(self.webhook_url)])
        duration = _since(started)
        status = response.status_code
        try:
            payload = decode_json(response.content)
        except ValueError:
            payload = None
        if 200 <= status < 300:
            if not isinstance(payload, dict | list):
                return BatchOutcome(
                    False,
                    status,
                    truncate(text, 2000),
                    f"{described}: HTTP {status} but the body is not JSON: {truncate(text, 200)}",
                    duration,
                )
            reported = payload.get("status") if isinstance(payload, dict) else None
            if isinstance(reported, str) and reported.lower() in (
                "error",
                "fail",
                "failed",
                "failure",
            ):
                return BatchOutcome(
                    False,
                    status,
                    truncate(text, 2000),
                    f"{described}: HTTP {status} with status {reported!r}: {truncate(text, 300)}",
                    duration,
                    rejected=True,
                )
            # Per-item refusals in a 2xx: those items were not taken, whatever `status` says.
            errors = payload.get("errors") if isinstance(payload, dict) else None
            if isinstance(errors, list) and errors:
                return BatchOutcome(
                    False,
                    status,
                    truncate(text, 2000),
                    f"{described}: HTTP {status} with {len(errors)} item errors: {truncate(text, 300)}",
                    duration,
                    rejected=True,
                )
            return BatchOutcome(True, status, truncate(text, 2000), None, duration)
        error = f"{described}: HTTP {status}: {truncate(text, 300)}"
        return BatchOutcome(
            False,
            status,
            truncate(text, 2000),
            error,
            duration,
            rejected=status in (400, 409, 413, 422),
            fatal=status in (401, 403),
        )


def _unanswered(error: str, started: float, *, rejected: bool = False) -> BatchOutcome:
    """An outcome without an HTTP answer: the request was never sent, or its retries ran out."""
    return BatchOutcome(
        ok=False,
        http_status=None,
        body="",
        error=error,
        duration_ms=_since(started),
        rejected=rejected,
    )


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
