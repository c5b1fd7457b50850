"""Real parts for the outlet hub: the platform (emulators, DuckDB in tmp_path, a temporary
Dagster instance), an outlets.yaml beside the catalog file, and the outlet API served by
uvicorn on a free 127.0.0.1 port in a thread."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
import yaml

from catalog_assets.outlet_api import create_app
from catalog_assets.outlet_api.config import ApiSettings
from catalog_assets.outlet_client import OutletClient
from catalog_assets.outlets.resource import OutletHub

TOKENS = {
    "msk-001": "tok-msk-001-SECRET-a1b2c3",
    "spb-002": "tok-spb-002-SECRET-d4e5f6",
    "ekb-003": "tok-ekb-003-SECRET-g7h8i9",
}
CURSOR_SECRET = "cursor-secret-for-tests"


def token_env(outlet_id: str) -> str:
    return "OUTLET_" + outlet_id.upper().replace("-", "_") + "_TOKEN"


@dataclass
class ApiServer:
    url: str
    settings: ApiSettings

    def client(self, outlet: str, token: str | None = None) -> OutletClient:
        return OutletClient(self.url, outlet, token or TOKENS[outlet], max_retries=20)


class Hub:
    """The outlet side of a test: the registry file, the hub paths, the running API."""

    def __init__(self, platform, monkeypatch) -> None:
        self.platform = platform
        self.monkeypatch = monkeypatch
        self.resource: OutletHub = OutletHub.beside(platform.store.path)
        self.config = Path(self.resource.config_path)
        for outlet, token in TOKENS.items():
            monkeypatch.setenv(token_env(outlet), token)

    def write_registry(self, entries: list[dict]) -> None:
        """Rewrite outlets.yaml; the mtime is bumped explicitly so a rewrite within the same
        filesystem timestamp tick is still seen as a change."""
        text = yaml.safe_dump({"outlets": entries}, allow_unicode=True)
        self.config.write_text(text, encoding="utf-8")
        stamp = time.time_ns() + 1_000_000_000 * getattr(self, "_bumps", 0)
        self._bumps = getattr(self, "_bumps", 0) + 1
        import os

        os.utime(self.config, ns=(stamp, stamp))

    def entry(self, outlet_id: str, **extra) -> dict:
        return {
            "id": outlet_id,
            "name": f"Outlet {outlet_id}",
            "token_env": token_env(outlet_id),
        } | extra

    def settings(self) -> ApiSettings:
        return ApiSettings(
            config_path=str(self.config),
            snapshot_dir=self.resource.snapshot_dir,
            state_path=self.resource.state_path,
            cursor_secret=CURSOR_SECRET.encode(),
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # not the main thread
        pass


def serve(settings: ApiSettings):
    """Start the real app under uvicorn on loopback; returns (ApiServer, stop)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings), log_level="warning", log_config=None, lifespan="on"
    )
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("outlet API did not start")
        time.sleep(0.01)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return ApiServer(f"http://127.0.0.1:{port}", settings), stop


@pytest.fixture
def hub(platform, monkeypatch) -> Hub:
    return Hub(platform, monkeypatch)


@pytest.fixture
def api(hub):
    server, stop = serve(hub.settings())
    yield server
    stop()
