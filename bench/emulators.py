"""The emulator pair in a process of its own, so its CPU never counts against a sync.

`python -m catalog_assets.emulators` on two free loopback ports; a fresh process per
repetition is also the cleanest reset of Tec.Delivery's state and of the 1C catalog.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
# Never route loopback traffic through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(url: str, method: str = "GET", body: dict | None = None, timeout: float = 30):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with _OPENER.open(request, timeout=timeout) as response:
        return json.loads(response.read())


class Emulators:
    """1C + Tec.Delivery emulators for one synthetic catalog, in a child process."""

    def __init__(self, products: int, categories: int, latency_ms: float = 0) -> None:
        self.products, self.categories, self.latency_ms = products, categories, latency_ms
        self.onec_port, self.tec_port = free_port(), free_port()
        self.onec_url = f"http://127.0.0.1:{self.onec_port}"
        self.tec_base = f"http://127.0.0.1:{self.tec_port}"
        self.tec_url = f"{self.tec_base}/common/merchant/1.0/"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Emulators:
        command = [
            sys.executable,
            "-m",
            "catalog_assets.emulators",
            "--products",
            str(self.products),
            "--categories",
            str(self.categories),
            "--onec-port",
            str(self.onec_port),
            "--tec-port",
            str(self.tec_port),
            "--token",
            TOKEN,
            "--onec-latency-ms",
            str(self.latency_ms),
        ]
        # No Basic auth in the benchmark: the emulator would otherwise pick it up from the env.
        env = {k: v for k, v in os.environ.items() if k not in ("ONEC_USERNAME", "ONEC_PASSWORD")}
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"emulators exited: {self.process.stderr.read().decode()}")
            try:
                self.onec_stats()
                self.tec_stats()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def onec_stats(self) -> dict:
        return http_json(f"{self.onec_url}/admin/stats", timeout=5)

    def tec_stats(self) -> dict:
        return http_json(f"{self.tec_base}/admin/stats", timeout=60)

    def onec_requests(self) -> int:
        return self.onec_stats()["requests_served"]

    def tec_requests(self) -> int:
        return self.tec_stats()["requests"]
