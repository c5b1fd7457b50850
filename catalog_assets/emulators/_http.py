"""Tiny loopback-only HTTP server base shared by the 1C and Tec.Delivery emulators.

Why not plain ``BaseHTTPRequestHandler.send_response``: it writes the status line, headers and
body in separate ``send`` calls. With HTTP/1.1 keep-alive that triggers Nagle's algorithm against
the client's delayed ACK and every request stalls ~40 ms, which would make the emulators, not the
client, the bottleneck in benchmarks. So each reply is built as one byte string and written once,
and TCP_NODELAY is set as a second guard.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

MAX_BODY_BYTES = 16 * 1024 * 1024


def is_loopback(host: str | None) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1: the only hosts emulators may bind to or call."""
    if not host:
        return False
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Message
    body: bytes


@dataclass
class Reply:
    """What an emulator answers; ``drop`` closes the socket without writing anything."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    drop: bool = False

    def encode(self, keep_alive: bool) -> bytes:
        if isinstance(self.body, bytes):
            payload, default_type = self.body, "application/octet-stream"
        elif isinstance(self.body, str):
            payload, default_type = self.body.encode(), "text/plain; charset=utf-8"
        elif self.body is None:
            payload, default_type = b"", "text/plain; charset=utf-8"
        else:
            payload = json.dumps(self.body, ensure_ascii=False).encode()
            default_type = "application/json; charset=utf-8"
        try:
            reason = HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Unknown"
        headers = {
            "Content-Type": self.content_type or default_type,
            "Content-Length": str(len(payload)),
            "Connection": "keep-alive" if keep_alive else "close",
            **self.headers,
        }
        head = f"HTTP/1.1 {self.status} {reason}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return (head + "\r\n").encode("latin-1") + payload


@dataclass
class Fault:
    """One injected misbehaviour; a fault with only ``delay_s`` delays a normal answer."""

    status: int | None = None
    body: Any = None
    content_type: str | None = None
    headers: dict[str, str] | None = None
    times: int = 1
    delay_s: float = 0
    match: Callable[[Any], bool] | None = None
    drop_connection: bool = False

    def reply(self, default_body: Any) -> Reply | None:
        """The faulty answer, or None when the request should then be served normally."""
        if self.drop_connection:
            return Reply(0, drop=True)
        if self.status is None and self.body is None:
            return None
        body = default_body if self.body is None else self.body
        return Reply(self.status or 200, body, dict(self.headers or {}), self.content_type)


class FaultQueue:
    """Thread-safe queue of faults; the first fault whose ``match`` accepts a request fires."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        if fault.times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, subject: Any) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                try:
                    matched = fault.match is None or bool(fault.match(subject))
                except Exception:  # a test's matcher choking on a malformed request = no match
                    matched = False
                if matched:
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def fire(self, subject: Any, default_body: Any) -> Reply | None:
        """Apply a matching fault: sleep if asked, then return its reply (None = serve normally)."""
        fault = self.take(subject)
        if fault is None:
            return None
        if fault.delay_s:
            time.sleep(fault.delay_s)
        return fault.reply(default_body)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "catalog-assets-emulator"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: per-request stderr lines would drown test and benchmark output."""

    def _serve(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self.wfile.write(Reply(411, {"error": "Content-Length required"}).encode(False))
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self.wfile.write(Reply(413, {"error": "request body too large"}).encode(False))
            return
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        query = {name: values[-1] for name, values in parse_qs(url.query, True).items()}
        request = Request(self.command, unquote(url.path), query, self.headers, body)
        try:
            reply = self.server.app.handle(request)  # type: ignore[attr-defined]
        except Exception as exc:  # surface emulator bugs as a 500 rather than a hung client
            reply = Reply(500, {"error": f"emulator error: {type(exc).__name__}: {exc}"})
        if reply.drop:
            self.close_connection = True
            return
        self.wfile.write(reply.encode(keep_alive=not self.close_connection))

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


class _Server6(_Server):
    address_family = socket.AF_INET6


class LoopbackServer:
    """Runs ``self.handle(Request) -> Reply`` on a background thread, loopback addresses only."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if not is_loopback(host):
            raise ValueError(f"emulators bind to loopback only, not {host!r}")
        self.host, self.port = host, port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.started_at = time.monotonic()

    def handle(self, request: Request) -> Reply:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self):
        if self._server is not None:
            return self
        server_class = _Server6 if ":" in self.host else _Server
        self._server = server_class((self.host, self.port), _Handler)
        self._server.app = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self.started_at = time.monotonic()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def parse_json(body: bytes) -> tuple[bool, Any]:
    """(ok, value); rejects NaN/Infinity, which Python's json accepts but JSON does not."""

    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return True, json.loads(body.decode("utf-8"), parse_constant=reject_constant)
    except (UnicodeDecodeError, ValueError):
        return False, None
