"""Our sync, as a fresh process: the project's own Dagster definitions, `execute_in_process`.

    python bench/sync_once.py init     --onec URL --tec URL --db PATH --instance DIR
    python bench/sync_once.py full     --onec URL --tec URL --db PATH --instance DIR
    python bench/sync_once.py followup --onec URL --tec URL --db PATH --instance DIR

`init` creates the Dagster instance (SQLite storages and their migrations), untimed: a
deployment has its instance before the first run, so that one-off cost is not a sync's. `full`
runs `full_resync` once: on a fresh store the first sync, after `followup` an operator's resync
of a store already in step with 1C. `followup` (on the same DuckDB file and Dagster instance) runs
a sensor tick over a quiet catalog, changes 100 products and one of the deepest categories in
the 1C emulator, ticks again, runs `incremental_sync`, then one more `incremental_sync` with
nothing to do (Dagster's own fixed cost per run plus the two cursor pages). Prints one JSON
line; wall time and peak RSS of the whole process are measured by the parent.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import dagster as dg  # noqa: E402

from catalog_assets.definitions import build_definitions  # noqa: E402
from catalog_assets.mapping import shift_timestamp  # noqa: E402
from catalog_assets.onec.client import OneCCatalogClient  # noqa: E402
from catalog_assets.sensors import onec_change_sensor  # noqa: E402
from catalog_assets.storage import CatalogStore  # noqa: E402
from catalog_assets.tec_delivery.client import TecDeliveryClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emulators import TOKEN, http_json  # noqa: E402

IMPORTED = time.perf_counter()
CHANGED_PRODUCTS = 100


def onec_served(onec_url: str) -> int:
    return http_json(f"{onec_url}/admin/stats")["requests_served"]


def tec_served(tec_url: str) -> int:
    base = tec_url.split("/common/")[0]
    return http_json(f"{base}/admin/stats")["requests"]


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Wall time per step of a run, from its event log (start to success or failure)."""
    started: dict[str, float] = {}
    spent: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type_value == "STEP_START":
            started[event.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            spent[event.step_key] = round(entry.timestamp - started[event.step_key], 3)
    return spent


def run_job(defs: dg.Definitions, instance: dg.DagsterInstance, name: str) -> dict:
    began = time.perf_counter()
    result = defs.resolve_job_def(name).execute_in_process(instance=instance)
    took = time.perf_counter() - began
    if not result.success:
        raise SystemExit(f"{name} failed")
    return {"run_s": round(took, 3), "steps_s": step_seconds(instance, result.run_id)}


def tick(instance: dg.DagsterInstance, resources: dict, onec_url: str) -> dict:
    before = onec_served(onec_url)
    began = time.perf_counter()
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        outcome = onec_change_sensor(context)
    took = time.perf_counter() - began
    requested = isinstance(outcome, dg.SensorResult) and bool(outcome.run_requests)
    return {
        "tick_s": round(took, 3),
        "onec_requests": onec_served(onec_url) - before,
        "run_requested": requested,
        "reason": outcome.skip_message if isinstance(outcome, dg.SkipReason) else outcome.cursor,
    }


def change_catalog(store: CatalogStore, onec_url: str) -> None:
    """100 products spread over the catalog get a new price, one deepest category a new name."""
    with store.connect(read_only=True) as con:
        ids = [
            r[0]
            for r in con.execute(
                "SELECT id FROM onec_products ORDER BY hash(id) LIMIT ?", [CHANGED_PRODUCTS]
            ).fetchall()
        ]
        deepest = con.execute(
            "SELECT t.id, c.parent FROM category_tree t JOIN onec_categories c USING (id)"
            " ORDER BY t.depth DESC, t.id LIMIT 1"
        ).fetchone()
        cursor = con.execute(
            "SELECT max(modified_since) FROM sync_cursors WHERE entity = 'products'"
        ).fetchone()[0]
    stamp = shift_timestamp(cursor, 3600)  # after the cursor, whatever the wall clock says
    for number, product_id in enumerate(ids):
        http_json(
            f"{onec_url}/admin/products/{product_id}",
            "PUT",
            {"price": 1000 + number, "modified_at": stamp},
        )
    http_json(
        f"{onec_url}/admin/categories/{deepest[0]}",
        "PUT",
        {"parent": deepest[1], "name": "Переименованная глубокая категория", "modified_at": stamp},
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["init", "full", "followup"])
    parser.add_argument("--onec", required=True)
    parser.add_argument("--tec", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--instance", required=True)
    args = parser.parse_args()
    resources = {
        "onec": OneCCatalogClient(base_url=args.onec),
        "tec_delivery": TecDeliveryClient(url=args.tec, token=TOKEN),
        "store": CatalogStore(path=args.db),
    }
    defs = build_definitions(resources)
    os.makedirs(args.instance, exist_ok=True)
    instance = dg.DagsterInstance.local_temp(tempdir=args.instance)
    out: dict = {"import_s": round(IMPORTED - STARTED, 3)}
    if args.mode == "init":
        pass  # a deployment's instance exists before its first run: create it untimed
    elif args.mode == "full":
        out["full"] = run_job(defs, instance, "full_resync")
        out["db_bytes"] = sum(
            os.path.getsize(p) for p in (args.db, args.db + ".wal") if os.path.exists(p)
        )
    else:
        out["quiet_tick"] = tick(instance, resources, args.onec)
        change_catalog(resources["store"], args.onec)
        out["change_tick"] = tick(instance, resources, args.onec)
        onec_before, tec_before = onec_served(args.onec), tec_served(args.tec)
        out["incremental"] = run_job(defs, instance, "incremental_sync")
        out["incremental"]["onec_requests"] = onec_served(args.onec) - onec_before
        out["incremental"]["tec_requests"] = tec_served(args.tec) - tec_before
        out["noop_incremental"] = run_job(defs, instance, "incremental_sync")
    out["process_s"] = round(time.perf_counter() - STARTED, 3)
    out["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
