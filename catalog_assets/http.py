"""The one place that knows how we talk HTTP to the systems around us.

Both 1C and Tec.Delivery get the same policy: pooled keep-alive connections, a timeout on
every request, and urllib3's Retry doing exponential backoff with jitter on connection
errors, read timeouts, 429 and 5xx (honouring Retry-After up to the backoff cap, 30 s) —
never on other 4xx, which would only repeat a request the server has already judged. POST is
retried too because `put-products` is an upsert keyed by `external_id`: sending a batch twice
is harmless.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import urllib3
from urllib3.exceptions import HTTPError, InvalidHeader
from urllib3.util.retry import Retry

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# What a request raises once its retries are spent (connection refused, timeouts, resets).
TransportError = HTTPError


class UpstreamError(RuntimeError):
    """A request failed for good. The message names the request, never a credential."""

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class HttpResponse:
    status_code: int
    headers: Mapping[str, str]
    content: bytes
    elapsed_s: float

    @property
    def text(self) -> str:
        """The body for messages: UTF-8 (what both APIs speak), never charset sniffing."""
        return self.content.decode("utf-8", "replace")


class _CappedRetry(Retry):
    """Retry-After honoured up to `backoff_max`: a server asking for an hour would otherwise
    hold a run, or a sensor tick, an hour per retry. Past the cap the retries still end after
    `max_retries`, with the server's last answer reported. A Retry-After urllib3 cannot read
    ("1.5", empty) gets our own backoff: urllib3 would raise InvalidHeader, ending the retries
    at the first answer and losing its status."""

    def get_retry_after(self, response: Any) -> float | None:
        try:
            after = super().get_retry_after(response)
        except InvalidHeader:
            return None
        return None if after is None else min(after, self.backoff_max)


class HttpClient:
    """Pooled keep-alive connections on urllib3 itself, shared by the threads of one client.

    Not `requests`: a sync makes ~4,000 requests that share one GIL with validation, staging
    and mapping, and requests' session machinery (hooks, cookie jar, netrc and proxy lookups,
    charset sniffing) cost ~0.3 ms of CPU more per request than the urllib3 underneath it,
    with the same Retry policy. No proxies or netrc from the environment and no redirects:
    traffic goes exactly where the resource's URL says, so a stray HTTP_PROXY or a 302 cannot
    carry a token elsewhere. TLS is verified against the system trust store (SSL_CERT_FILE),
    not certifi. Responses may come gzip-compressed (Accept-Encoding) and are decoded.
    """

    def __init__(
        self,
        *,
        max_retries: int,
        backoff_seconds: float,
        pool_size: int = 8,
        max_backoff: float = 30.0,
        basic_auth: tuple[str, str] | None = None,
    ) -> None:
        retry = _CappedRetry(
            total=max_retries,
            connect=max_retries,
            read=max_retries,
            status=max_retries,
            other=0,
            backoff_factor=backoff_seconds,
            backoff_jitter=backoff_seconds,
            backoff_max=max_backoff,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=frozenset({"GET", "POST"}),
            respect_retry_after_header=True,
            # Hand the last response back instead of raising, so the caller can report its
            # status and body rather than urllib3's generic "too many 503 error responses".
            raise_on_status=False,
        )
        self._pool = urllib3.PoolManager(num_pools=4, maxsize=pool_size, retries=retry)
        self._headers: dict[str, str] = urllib3.make_headers(accept_encoding=True)
        if basic_auth:
            # UTF-8, not urllib3's latin-1: 1C user names are often Cyrillic (RFC 7617 charset).
            token = base64.b64encode(":".join(basic_auth).encode("utf-8")).decode("ascii")
            self._headers["authorization"] = f"Basic {token}"

    def get(self, url: str, *, params: Mapping[str, Any], timeout: float) -> HttpResponse:
        return self._request("GET", url, timeout, fields=dict(params))

    def post(self, url: str, *, body: bytes, content_type: str, timeout: float) -> HttpResponse:
        return self._request("POST", url, timeout, body=body, content_type=content_type)

    def _request(self, method: str, url: str, timeout: float, **kwargs: Any) -> HttpResponse:
        headers = dict(self._headers)
        if content_type := kwargs.pop("content_type", None):
            headers["Content-Type"] = content_type
        started = time.perf_counter()
        # No redirects: a 3xx is answered as itself (a clear error naming the status), never
        # followed, so a put-products body and its token cannot be re-sent to another host.
        response = self._pool.request(
            method, url, headers=headers, timeout=timeout, redirect=False, **kwargs
        )
        return HttpResponse(
            response.status, response.headers, response.data, time.perf_counter() - started
        )


def failure_name(exc: BaseException) -> str:
    """Exception class and reason (`MaxRetryError (NewConnectionError)`), never the exception
    text, which holds the URL and its query."""
    reason = getattr(exc, "reason", None) or exc.__context__ or exc
    return f"{type(exc).__name__} ({type(reason).__name__})"


def decode_json(content: bytes | str) -> Any:
    """orjson first (2-3x the standard library on a 100-record page); the standard library
    for what orjson refuses but a sloppy server sends (NaN, Infinity, 1e400), so that one
    record is judged and quarantined on its own instead of costing its whole page, and for
    integers beyond 64 bits, which it keeps exact. Raises ValueError for a body that is not
    JSON, or is nested too deeply to parse."""
    if isinstance(content, str):
        content = content.encode()
    # The UTF-8 byte order mark 1C's HTTP services write by default (RFC 8259 8.1 lets a parser
    # ignore it): orjson refuses it, and the standard library parses such a page ~3x slower.
    content = content.removeprefix(b"\xef\xbb\xbf")
    # orjson turns an integer beyond 64 bits into a float, silently; a run of 19+ digits
    # (rare outside such numbers) sends the body to the exact standard-library parser instead.
    # Found by turning every digit into "0" and searching for 19 of them: a regex (`\d{19}`)
    # took 0.7 ms on a 100-product page, eight times orjson's parse of it.
    if _NINETEEN_DIGITS not in content.translate(_DIGITS_AS_ZEROS):
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
    try:
        return json.loads(content, parse_constant=NonFiniteNumber, parse_float=_parse_float)
    except RecursionError:  # nested past orjson's 1,024 levels: as unusable as garbage
        raise ValueError("JSON nested too deeply") from None


_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19


def _parse_float(text: str) -> float:
    value = float(text)  # 1e400 overflows to inf: as non-finite as a literal Infinity
    return value if math.isfinite(value) else NonFiniteNumber(value)


class NonFiniteNumber(float):
    """NaN, ±Infinity or an overflowing literal (1e400) from a body only the standard library
    would parse. A float subclass: orjson refuses to write it, so `mapping.canonical_json`
    keeps the standard library's text for that record, and validation rejects the record."""


def encode_json(value: Any) -> bytes:
    """A request body: compact UTF-8 (not \\u-escaped Cyrillic), ~10x the standard library."""
    return orjson.dumps(value)


def safe_url(url: str) -> str:
    """The URL as it may appear in a log: no userinfo, no query values named like secrets."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = re.sub(r"(?i)((?:token|password|secret|key)=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def url_origin(url: str) -> str:
    """Scheme and host only, for a URL that is itself the credential: a Slack or Mattermost
    incoming webhook carries its secret in the path."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…"


def url_secrets(url: str | None) -> list[str]:
    """The secret parts of a URL we hand to others (the webhook URL carries its token): the
    whole URL, its password and query values named like secrets, for `redact`."""
    if not url:
        return []
    parts = urlsplit(url)
    found = [url, parts.password or ""]
    found += re.findall(r"(?i)(?:^|&)(?:token|password|secret|key)=([^&]+)", parts.query)
    return [s for s in found if s]


def redact(text: str, secrets: list[str | None]) -> str:
    """Belt and braces: whatever a server echoes back, no secret we hold leaves in it."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def truncate(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"
