"""`make bench`: our sync against the HTTP floor, side by side, at 10,000 and 100,000 products.

Every sync runs as a fresh child process (imports and Dagster's own cost included) against a
fresh emulator process (its CPU does not count against the sync; restarting it resets
Tec.Delivery). Floor and ours alternate within each repetition, and every figure is the median
of the repetitions, because the machine is shared and noisy: compare ratios, not seconds.

    .venv/bin/python bench/run.py                      # the full benchmark (~4-6 minutes)
    .venv/bin/python bench/run.py --sizes 2000 --reps 1 --slow-products 2000   # a quick look

Writes the figures to bench/results/latest.json and prints the table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emulators import ROOT, TOKEN, Emulators

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "latest.json"
CATEGORIES = 2000
LATENCY_MS = 50


def run_child(args: list[str]) -> dict:
    """Run one bench script as a child; its wall time, its own peak RSS, its JSON line."""
    began = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = child.communicate()
    wall = time.perf_counter() - began
    if child.returncode:
        raise RuntimeError(f"{args[0]} failed ({child.returncode}):\n{stderr.decode()[-3000:]}")
    out = json.loads(stdout.decode().strip().splitlines()[-1])
    out["wall_s"] = round(wall, 3)
    out["rss_mb"] = round(out["maxrss_kb"] / 1024, 1)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_floor(products: int, categories: int) -> dict:
    with Emulators(products, categories) as emu:
        cpu_before = cpu_seconds(emu.process.pid)
        out = run_child(
            [str(HERE / "floor.py"), "--onec", emu.onec_url, "--tec", emu.tec_url, "--token", TOKEN]
        )
        out["emulator_cpu_s"] = round(cpu_seconds(emu.process.pid) - cpu_before, 3)
        out["onec_requests"] = emu.onec_requests()
        out["tec_requests"] = emu.tec_requests()
    served = out["onec_requests"] + out["tec_requests"]
    out["emulator_req_per_cpu_s"] = round(served / max(out["emulator_cpu_s"], 1e-3))
    return out


def run_ours(products: int, categories: int, latency_ms: float = 0, followup: bool = True) -> dict:
    with (
        Emulators(products, categories, latency_ms) as emu,
        tempfile.TemporaryDirectory(prefix="catalog-bench-") as tmp,
    ):
        common = ["--onec", emu.onec_url, "--tec", emu.tec_url, "--db", f"{tmp}/catalog.duckdb"]
        common += ["--instance", f"{tmp}/dagster"]
        run_child([str(HERE / "sync_once.py"), "init", *common])
        out = run_child([str(HERE / "sync_once.py"), "full", *common])
        out["onec_requests"] = emu.onec_requests()
        out["tec_requests"] = emu.tec_requests()
        out["tec_items"] = emu.tec_stats()["items"]
        if followup:
            out["followup"] = run_child([str(HERE / "sync_once.py"), "followup", *common])
            # The operator's resync: the same job on the store the runs above left, 1C
            # unchanged, so every record is staged again unchanged and every item re-pushed.
            onec_before, tec_before = emu.onec_requests(), emu.tec_requests()
            out["resync"] = run_child([str(HERE / "sync_once.py"), "full", *common])
            out["resync"]["onec_requests"] = emu.onec_requests() - onec_before
            out["resync"]["tec_requests"] = emu.tec_requests() - tec_before
    return out


def emulator_throughput(products: int, seconds: float = 2.0) -> dict:
    """1C product pages over one keep-alive connection, as fast as a client can ask."""
    with Emulators(products, 10) as emu:
        connection = http.client.HTTPConnection("127.0.0.1", emu.onec_port)
        pages = max(1, products // 100)
        served, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            offset = (served * 37 % pages) * 100
            connection.request(
                "GET",
                f"/api/catalog?limit=100&offset={offset}&type=product&modified_since=1970-01-01T00:00:00",
            )
            response = connection.getresponse()
            response.read()
            served += 1
        took = time.perf_counter() - began
        connection.close()
    return {"pages_per_s": round(served / took, 1), "ms_per_page": round(1000 * took / served, 2)}


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def summarize(products: int, floors: list[dict], ours: list[dict]) -> dict:
    full_ratio = [o["wall_s"] / f["wall_s"] for f, o in zip(floors, ours, strict=True)]
    follow = [o["followup"] for o in ours]
    return {
        "products": products,
        "categories": CATEGORIES,
        "floor_wall_s": median([f["wall_s"] for f in floors]),
        "floor_sync_s": median([f["sync_s"] for f in floors]),
        "floor_rss_mb": median([f["rss_mb"] for f in floors]),
        "floor_onec_requests": floors[0]["onec_requests"],
        "floor_tec_requests": floors[0]["tec_requests"],
        "ours_wall_s": median([o["wall_s"] for o in ours]),
        "ours_run_s": median([o["full"]["run_s"] for o in ours]),
        "ours_import_s": median([o["import_s"] for o in ours]),
        "ratio": median(full_ratio),
        "ratios": [round(r, 3) for r in full_ratio],
        "ours_rss_mb": median([o["rss_mb"] for o in ours]),
        "ours_onec_requests": ours[0]["onec_requests"],
        "ours_tec_requests": ours[0]["tec_requests"],
        "tec_items": ours[0]["tec_items"],
        "duckdb_mb": round(median([o["db_bytes"] for o in ours]) / 2**20, 1),
        "steps_s": {
            step: median([o["full"]["steps_s"][step] for o in ours])
            for step in ours[0]["full"]["steps_s"]
        },
        "quiet_tick_s": median([f["quiet_tick"]["tick_s"] for f in follow]),
        "quiet_tick_requests": max(f["quiet_tick"]["onec_requests"] for f in follow),
        "quiet_tick_requested_run": any(f["quiet_tick"]["run_requested"] for f in follow),
        "change_tick_requested_run": all(f["change_tick"]["run_requested"] for f in follow),
        "incremental_s": median([f["incremental"]["run_s"] for f in follow]),
        "incremental_onec_requests": follow[0]["incremental"]["onec_requests"],
        "incremental_tec_requests": follow[0]["incremental"]["tec_requests"],
        "noop_incremental_s": median([f["noop_incremental"]["run_s"] for f in follow]),
        "resync_wall_s": median([o["resync"]["wall_s"] for o in ours]),
        "resync_ratio": median(
            [o["resync"]["wall_s"] / f["wall_s"] for f, o in zip(floors, ours, strict=True)]
        ),
        "resync_onec_requests": ours[0]["resync"]["onec_requests"],
        "resync_tec_requests": ours[0]["resync"]["tec_requests"],
        "resync_rss_mb": median([o["resync"]["rss_mb"] for o in ours]),
        "resync_steps_s": {
            step: median([o["resync"]["full"]["steps_s"][step] for o in ours])
            for step in ours[0]["resync"]["full"]["steps_s"]
        },
        "emulator_req_per_cpu_s": median([f["emulator_req_per_cpu_s"] for f in floors]),
    }


def slow_bounds(products: int, categories: int, run: dict, walk_k: int, page_k: int) -> dict:
    """Lower bounds for a 1C that takes `LATENCY_MS` per request, from the requests made.

    Requests that must be sequential: the walk needs one round per tree level plus one to learn
    that the deepest level has no children (7 for a 6-level tree); the flat category listing
    and the product listing each need a first page (for `count`) before the rest can be asked
    for. With unbounded concurrency that is 7 + 2 + 2 rounds. With at most `walk_k` parents
    and `page_k` pages in flight (what a 1C server should be asked to bear), no schedule beats
    max(7, walk requests / walk_k) + 2 * (1 + pages / page_k) rounds either.
    """
    depth_rounds = 6 + 1
    listing_pages = -(-categories // 100)
    product_pages = max(1, -(-products // 100))
    walk_requests = run["onec_requests"] - listing_pages - product_pages
    strict_rounds = depth_rounds + 2 + 2
    bounded_rounds = (
        max(depth_rounds, -(-walk_requests // walk_k))
        + 1
        + -(-(listing_pages - 1) // page_k)
        + 1
        + -(-(product_pages - 1) // page_k)
    )
    seconds = LATENCY_MS / 1000
    return {
        "strict_s": round(strict_rounds * seconds, 3),
        "bounded_s": round(bounded_rounds * seconds, 3),
        "strict_rounds": strict_rounds,
        "bounded_rounds": bounded_rounds,
        "walk_requests": walk_requests,
        "requests": run["onec_requests"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--slow-products", type=int, default=10000)
    parser.add_argument("--slow-reps", type=int, default=3)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    started = time.perf_counter()
    from catalog_assets.onec.client import OneCCatalogClient

    defaults = OneCCatalogClient(base_url="http://127.0.0.1")
    walk_k, page_k = defaults.walk_concurrency, defaults.page_concurrency
    machine = {
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    print(f"machine: {machine}", flush=True)
    sizes = {}
    for products in [int(n) for n in args.sizes.split(",")]:
        floors, ours = [], []
        for rep in range(args.reps):
            order = ("floor", "ours") if rep % 2 == 0 else ("ours", "floor")
            for side in order:
                if side == "floor":
                    floors.append(run_floor(products, CATEGORIES))
                    figure = floors[-1]["wall_s"]
                else:
                    ours.append(run_ours(products, CATEGORIES))
                    figure = ours[-1]["wall_s"]
                print(f"  {products:>7} rep {rep + 1} {side:<5} {figure:7.2f}s", flush=True)
        sizes[str(products)] = summarize(products, floors, ours)
        sizes[str(products)]["runs"] = {"floor": floors, "ours": ours}
    slow_runs = []
    for rep in range(args.slow_reps):
        slow_runs.append(run_ours(args.slow_products, CATEGORIES, LATENCY_MS, followup=False))
        print(f"  slow-1C rep {rep + 1} {slow_runs[-1]['wall_s']:7.2f}s", flush=True)
    bounds = slow_bounds(args.slow_products, CATEGORIES, slow_runs[0], walk_k, page_k)
    slow = {
        "products": args.slow_products,
        "categories": CATEGORIES,
        "latency_ms": LATENCY_MS,
        "walk_concurrency": walk_k,
        "page_concurrency": page_k,
        "wall_s": median([r["wall_s"] for r in slow_runs]),
        "run_s": median([r["full"]["run_s"] for r in slow_runs]),
        "categories_step_s": median([r["full"]["steps_s"]["onec_categories"] for r in slow_runs]),
        "products_step_s": median([r["full"]["steps_s"]["onec_products"] for r in slow_runs]),
        **bounds,
        "runs": slow_runs,
    }
    throughput = emulator_throughput(100_000 if "100000" in sizes else max(map(int, sizes)))
    results = {
        "machine": machine,
        "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "bench_s": None,
        "sizes": sizes,
        "slow_1c": slow,
        "emulator": throughput,
    }
    results["bench_s"] = round(time.perf_counter() - started, 1)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(table(results))
    print(f"\nfigures written to {args.output} ({results['bench_s']:.0f}s)")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table(results: dict) -> str:
    lines = []
    for size in results["sizes"].values():
        lines += [
            "",
            f"{size['products']:,} products, {size['categories']:,} categories "
            f"(median of {len(size['runs']['ours'])} interleaved reps)",
            f"{'':<28}{'wall s':>9}{'× floor':>9}{'1C req':>8}{'TD req':>8}{'RSS MB':>8}{'DuckDB MB':>11}",
            f"{'floor (bench/floor.py)':<28}{size['floor_wall_s']:>9.2f}{1:>9.2f}"
            f"{size['floor_onec_requests']:>8}{size['floor_tec_requests']:>8}"
            f"{size['floor_rss_mb']:>8.0f}{'-':>11}",
            f"{'ours: full_resync':<28}{size['ours_wall_s']:>9.2f}{size['ratio']:>9.2f}"
            f"{size['ours_onec_requests']:>8}{size['ours_tec_requests']:>8}"
            f"{size['ours_rss_mb']:>8.0f}{size['duckdb_mb']:>11.1f}",
            f"{'ours: quiet sensor tick':<28}{size['quiet_tick_s']:>9.2f}{'':>9}"
            f"{size['quiet_tick_requests']:>8}{0:>8}",
            f"{'ours: incremental (100+1)':<28}{size['incremental_s']:>9.2f}{'':>9}"
            f"{size['incremental_onec_requests']:>8}{size['incremental_tec_requests']:>8}",
            f"{'ours: no-op incremental':<28}{size['noop_incremental_s']:>9.2f}",
            f"{'ours: resync, synced store':<28}{size['resync_wall_s']:>9.2f}"
            f"{size['resync_ratio']:>9.2f}{size['resync_onec_requests']:>8}"
            f"{size['resync_tec_requests']:>8}{size['resync_rss_mb']:>8.0f}",
            f"  in the full_resync process: imports {size['ours_import_s']:.2f}s, "
            f"run {size['ours_run_s']:.2f}s; steps "
            + ", ".join(f"{k} {v:.2f}s" for k, v in size["steps_s"].items()),
            "  in the resync: "
            + ", ".join(f"{k} {v:.2f}s" for k, v in size["resync_steps_s"].items()),
        ]
    slow = results["slow_1c"]
    lines += [
        "",
        f"slow 1C: {slow['latency_ms']} ms per 1C request, {slow['products']:,} products, "
        f"{slow['categories']:,} categories; {slow['walk_concurrency']} parents / "
        f"{slow['page_concurrency']} pages in flight",
        f"  full_resync {slow['wall_s']:.2f}s (run {slow['run_s']:.2f}s: walk + flat listing "
        f"{slow['categories_step_s']:.2f}s, products {slow['products_step_s']:.2f}s); "
        f"{slow['requests']} 1C requests, {slow['walk_requests']} of them the walk",
        f"  lower bound, unbounded concurrency: {slow['strict_rounds']} sequential rounds = "
        f"{slow['strict_s']:.2f}s -> {slow['wall_s'] / slow['strict_s']:.1f}× that",
        f"  lower bound at this concurrency: {slow['bounded_rounds']} rounds = "
        f"{slow['bounded_s']:.2f}s -> {slow['wall_s'] / slow['bounded_s']:.2f}× that",
    ]
    emulator = results["emulator"]
    ratios = [s["emulator_req_per_cpu_s"] for s in results["sizes"].values()]
    lines += [
        "",
        f"emulators: 1C serves {emulator['pages_per_s']:.0f} product pages/s to one keep-alive "
        f"client ({emulator['ms_per_page']:.2f} ms each); during the floor the pair handled "
        f"{max(ratios):.0f} requests per CPU second",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
