"""The endpoint Tec.Delivery calls when its asynchronous work (images, translation) is done.

`POST /tec-delivery/webhook?token=<WEBHOOK_SECRET>` (or the secret in an `X-Webhook-Token`
header) with `{"event": "products.processed", "request_id": ..., "external_ids": [...],
"status": ...}`. Tec.Delivery only lets us register a URL, so the secret usually travels in it:
`TEC_DELIVERY_WEBHOOK_URL` is therefore a secret too (wired as `dg.EnvVar`, redacted by
`http.safe_url`, never logged).

Every refusal is a 4xx with a specific reason and one log line naming the method, the path
(query values redacted), the peer and the reason, never the body: a malformed body may carry a
secret someone pasted by mistake. Verified notifications go to the SQLite spool
(`spool.py`) before we answer 2xx, so an acknowledged notification is never lost.

The stdlib server is enough: Tec.Delivery sends a few calls per pushed batch, and one less
dependency in the path of an authentication check is one less thing to audit.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from catalog_assets.http import safe_url
from catalog_assets.webhooks import spool

logger = logging.getLogger("catalog_assets.webhooks")

WEBHOOK_PATH = "/tec-delivery/webhook"
MAX_BODY_BYTES = 1024 * 1024
MAX_IDS = 10_000
# How long a connection may sit without sending: the receiver faces the internet, and a peer
# that connects and goes quiet (or promises more body than it sends) would otherwise hold one
# server thread for ever. Tec.Delivery's calls are one small POST each.
IDLE_TIMEOUT_SECONDS = 30.0
KNOWN_EVENTS = frozenset({"products.processed"})


class Rejected(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def validate_notification(body: Any) -> tuple[str, str, str, list[str]]:
    """(event, request_id, status, external_ids) or `Rejected` saying which field is wrong."""
    if not isinstance(body, dict):
        raise Rejected(422, "body must be a JSON object")
    event = body.get("event")
    if event not in KNOWN_EVENTS:
        raise Rejected(422, f"event must be one of {sorted(KNOWN_EVENTS)}")
    request_id = body.get("request_id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 200:
        raise Rejected(422, "request_id must be a non-empty string (at most 200 characters)")
    status = body.get("status")
    if not isinstance(status, str) or not 0 < len(status) <= 50:
        raise Rejected(422, "status must be a non-empty string (at most 50 characters)")
    ids = body.get("external_ids")
    if (
        not isinstance(ids, list)
        or len(ids) > MAX_IDS
        or not all(isinstance(i, str) and 0 < len(i) <= 200 for i in ids)
    ):
        raise Rejected(422, f"external_ids must be a list of at most {MAX_IDS} non-empty strings")
    return event, request_id, status, ids


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "catalog-assets-webhooks"

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout  # type: ignore[attr-defined]
        self.answered = False  # and no new request begun since: a keep-alive connection at rest
        super().setup()

    def parse_request(self) -> bool:
        self.answered = False
        return super().parse_request()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the default line holds the raw request path, token included."""

    def log_error(self, format: str, *args: Any) -> None:
        # The one stdlib error line worth keeping (the others quote the request line, token
        # included): the server closed a connection that stopped sending. Not one that went
        # quiet after its answer: every HTTP/1.1 client with a connection pool does that.
        if format.startswith("Request timed out") and not self.answered:
            logger.warning(
                "webhook connection from %s closed: idle for %.1f s",
                self.client_address[0],
                self.timeout,
            )

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.answered = True

    def _refuse(self, status: int, reason: str) -> None:
        logger.warning(
            "webhook refused: %s %s from %s -> %s %s",
            self.command,
            safe_url(self.path),
            self.client_address[0],
            status,
            reason,
        )
        self._reply(status, {"status": "error", "message": reason})

    def _drain(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            self._refuse(411, "Content-Length required")
            return None
        if int(length) > MAX_BODY_BYTES:
            self.close_connection = True
            self._refuse(413, f"body larger than {MAX_BODY_BYTES} bytes")
            return None
        return self.rfile.read(int(length))

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/healthz":
            self._reply(200, {"status": "ok"})
        elif path == WEBHOOK_PATH:
            self._refuse(405, "use POST")
        else:
            self._refuse(404, "no such route")

    def do_PUT(self) -> None:
        self._refuse(405, "use POST")

    do_DELETE = do_PATCH = do_PUT

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != WEBHOOK_PATH:
            self._refuse(404, "no such route")
            return
        body = self._drain()  # read before refusing, so keep-alive stays in sync
        if body is None:
            return
        presented = parse_qs(url.query).get("token", [None])[-1] or self.headers.get(
            "X-Webhook-Token"
        )
        secret: str = self.server.secret  # type: ignore[attr-defined]
        if not presented or not hmac.compare_digest(presented.encode(), secret.encode()):
            self._refuse(401, "missing or wrong webhook token")
            return
        try:
            parsed = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            self._refuse(400, "body is not JSON (or nested too deeply)")
            return
        try:  # a `\uXXXX` half of a surrogate pair parses, but no UTF-8 store can hold it
            json.dumps(parsed, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            self._refuse(400, "body holds a lone UTF-16 surrogate, not text")
            return
        try:
            event, request_id, status, ids = validate_notification(parsed)
        except Rejected as exc:
            self._refuse(exc.status, exc.reason)
            return
        try:
            fresh = spool.append(self.server.spool_path, event, request_id, status, ids)  # type: ignore[attr-defined]
        except Exception as exc:  # the sender must retry: answering 2xx would lose it
            logger.error("webhook spool write failed: %s", type(exc).__name__)
            self._reply(503, {"status": "error", "message": "spool unavailable, retry"})
            return
        logger.info(
            "webhook %s request_id=%s status=%s items=%d%s",
            event,
            request_id,
            status,
            len(ids),
            "" if fresh else " (repeat, ignored)",
        )
        self._reply(200, {"status": "ok", "duplicate": not fresh})


class WebhookReceiver:
    """The HTTP server on a background thread (tests) or in the foreground (`__main__`)."""

    def __init__(
        self,
        secret: str,
        spool_path: str,
        host: str = "127.0.0.1",
        port: int = 0,
        idle_timeout_seconds: float = IDLE_TIMEOUT_SECONDS,
    ):
        if not secret:
            raise ValueError("WEBHOOK_SECRET must be set: an open webhook would accept anyone")
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.secret = secret  # type: ignore[attr-defined]
        self._server.spool_path = spool_path  # type: ignore[attr-defined]
        self._server.idle_timeout = idle_timeout_seconds  # type: ignore[attr-defined]
        self.host, self.port = host, self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def url(self, secret: str | None = None) -> str:
        """The URL to register with Tec.Delivery; with `secret` it carries the token,
        percent-encoded: the query is decoded on receipt, where a bare `+` is a space and `&`
        or `#` would end the token early."""
        base = f"http://{self.host}:{self.port}{WEBHOOK_PATH}"
        return f"{base}?token={quote(secret, safe='')}" if secret else base

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> WebhookReceiver:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
