"""Outlet API polling throughput and latency on loopback (run by hand, not by `make test`).

Syncs a catalog into a temporary DuckDB (the demo catalog, or `--products N` synthetic), which
publishes the outlet snapshot; starts the API under uvicorn in its own process on 127.0.0.1;
then N reference clients (threads, one outlet each, half with a category filter) drain every
feed and keep polling for `--seconds`, timing every request. Prints a small table and writes
bench/results/outlet_poll.json.

    .venv/bin/python bench/outlet_poll.py                        # demo catalog, 20 clients
    .venv/bin/python bench/outlet_poll.py --products 10000 --clients 50 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catalog_assets.definitions import build_definitions  # noqa: E402
from catalog_assets.emulators import (  # noqa: E402
    OneCEmulator,
    TecDeliveryEmulator,
    demo_catalog,
    synthetic_catalog,
)
from catalog_assets.onec.client import OneCCatalogClient  # noqa: E402
from catalog_assets.outlet_client import ENTITIES, OutletClient  # noqa: E402
from catalog_assets.outlets.resource import OutletHub  # noqa: E402
from catalog_assets.storage import CatalogStore  # noqa: E402
from catalog_assets.tec_delivery.client import TecDeliveryClient  # noqa: E402

TOKEN = "bench-tec-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sync(catalog, workdir: Path) -> OutletHub:
    with (
        OneCEmulator(catalog).start() as onec,
        TecDeliveryEmulator(token=TOKEN).start() as tec,
        dg.instance_for_test() as instance,
    ):
        os.environ["BENCH_TEC_TOKEN"] = TOKEN
        store = CatalogStore(path=str(workdir / "catalog.duckdb"))
        resources = {
            "onec": OneCCatalogClient(base_url=onec.url),
            "tec_delivery": TecDeliveryClient(url=tec.url, token=dg.EnvVar("BENCH_TEC_TOKEN")),
            "store": store,
        }
        started = time.perf_counter()
        build_definitions(resources).resolve_job_def("full_resync").execute_in_process(
            instance=instance
        )
        print(f"full_resync of {len(catalog)} records: {time.perf_counter() - started:.1f}s")
    return OutletHub.beside(store.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=0, help="synthetic catalog size")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()

    catalog = (
        synthetic_catalog(args.products, max(20, args.products // 50))
        if args.products
        else demo_catalog(seed=0)
    )
    workdir = Path(tempfile.mkdtemp(prefix="outlet-bench-"))
    hub = sync(catalog, workdir)
    roots = [c["id"] for c in catalog.categories() if c["parent"] == "0"]
    outlets, env = [], dict(os.environ)
    for n in range(args.clients):
        outlet = {"id": f"bench-{n:03d}", "token_env": f"OUTLET_BENCH_{n:03d}_TOKEN"}
        if n % 2:
            outlet["categories"] = [roots[n % len(roots)]]
        env[outlet["token_env"]] = f"bench-token-{n:03d}"
        outlets.append(outlet)
    Path(hub.config_path).write_text(yaml.safe_dump({"outlets": outlets}), encoding="utf-8")
    env.update(
        OUTLETS_CONFIG=hub.config_path,
        OUTLET_SNAPSHOT_DIR=hub.snapshot_dir,
        OUTLET_STATE_PATH=hub.state_path,
        OUTLET_CURSOR_SECRET="bench-secret",
    )
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "catalog_assets.outlet_api",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        results = run_clients(base, outlets, env, args)
    finally:
        server.terminate()
        server.wait(10)
    report(results, args, len(catalog))


def run_clients(base: str, outlets: list[dict], env: dict, args) -> dict:
    drain_latencies: list[float] = []
    poll_latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(len(outlets))
    items = [0]

    def client_loop(outlet: dict) -> None:
        client = OutletClient(base, outlet["id"], env[outlet["token_env"]])
        cursors: dict[str, str | None] = dict.fromkeys(ENTITIES)
        local_drain, local_poll, received = [], [], 0
        start_gate.wait()
        deadline = time.perf_counter() + args.seconds
        first_round = True
        try:
            while time.perf_counter() < deadline:
                for entity in ENTITIES:
                    while True:
                        began = time.perf_counter()
                        page = client.changes(entity, cursors[entity], args.limit)
                        elapsed = time.perf_counter() - began
                        (local_drain if first_round else local_poll).append(elapsed)
                        received += len(page.items)
                        cursors[entity] = page.cursor
                        if not page.has_more:
                            break
                first_round = False
        except Exception as exc:  # a benchmark reports failures rather than dying mid-way
            errors.append(f"{outlet['id']}: {type(exc).__name__}: {exc}")
        finally:
            client.close()
        with lock:
            drain_latencies.extend(local_drain)
            poll_latencies.extend(local_poll)
            items[0] += received

    threads = [threading.Thread(target=client_loop, args=(o,)) for o in outlets]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    return {
        "drain": drain_latencies,
        "poll": poll_latencies,
        "wall": wall,
        "items": items[0],
        "errors": errors,
    }


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"requests": 0}
    ordered = sorted(values)
    return {
        "requests": len(values),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


def report(results: dict, args, records: int) -> None:
    total = len(results["drain"]) + len(results["poll"])
    summary = {
        "catalog_records": records,
        "clients": args.clients,
        "limit": args.limit,
        "seconds": round(results["wall"], 2),
        "requests": total,
        "requests_per_second": round(total / results["wall"], 1),
        "items_received": results["items"],
        "drain_pages": percentiles(results["drain"]),
        "no_change_polls": percentiles(results["poll"]),
        "all_requests": percentiles(results["drain"] + results["poll"]),
        "errors": results["errors"][:20],
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    print(f"\n{'':18}{'requests':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for label in ("drain_pages", "no_change_polls", "all_requests"):
        row = summary[label]
        print(
            f"{label:18}{row['requests']:>10}{row.get('p50_ms', '-'):>10}{row.get('p99_ms', '-'):>10}"
        )
    print(
        f"\n{args.clients} clients, {records} records, {summary['seconds']}s: "
        f"{summary['requests_per_second']} requests/s, {results['items']} items, "
        f"{len(results['errors'])} errors"
    )
    out = ROOT / "bench" / "results" / "outlet_poll.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
