"""Run both emulators for a local demo: ``python -m catalog_assets.emulators``.

Secrets default from the environment here, at run time (never at import), so the demo pair
accepts the same TEC_DELIVERY_TOKEN / ONEC_USERNAME / ONEC_PASSWORD the Dagster code uses.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time

from catalog_assets.emulators.catalog import demo_catalog, synthetic_catalog
from catalog_assets.emulators.onec import OneCEmulator
from catalog_assets.emulators.tec_delivery import TecDeliveryEmulator


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    parser.add_argument("--onec-port", type=int, default=8081)
    parser.add_argument("--tec-port", type=int, default=8082)
    parser.add_argument("--token", default=os.environ.get("TEC_DELIVERY_TOKEN", "demo-token"))
    parser.add_argument("--onec-username", default=os.environ.get("ONEC_USERNAME"))
    parser.add_argument("--onec-password", default=os.environ.get("ONEC_PASSWORD"))
    parser.add_argument("--products", type=int, help="synthetic catalog with N products")
    parser.add_argument("--categories", type=int, help="synthetic catalog with C categories")
    parser.add_argument("--onec-latency-ms", type=float, default=0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    started = time.perf_counter()
    if args.products is not None or args.categories is not None:
        catalog = synthetic_catalog(args.products or 0, args.categories or 100, seed=args.seed)
    else:
        catalog = demo_catalog(seed=args.seed)
    print(f"catalog: {catalog.counts()} built in {time.perf_counter() - started:.1f}s")
    username, password = args.onec_username, args.onec_password
    if (username is None) != (password is None):
        raise SystemExit("set both --onec-username and --onec-password, or neither")
    onec = OneCEmulator(
        catalog, args.host, args.onec_port, username, password, args.onec_latency_ms
    )
    tec = TecDeliveryEmulator(args.token, args.host, args.tec_port)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    with onec, tec:
        auth = f" -u {username}:***" if username else ""
        product = next(iter(catalog.products()), {}).get("id", "<id>")
        print(f"1C emulator:           {onec.url}/api/catalog (basic auth: {bool(username)})")
        print(f"Tec.Delivery emulator: {tec.url} (token from --token/TEC_DELIVERY_TOKEN)")
        print("Try:")
        print(f"  curl{auth} '{onec.url}/api/catalog?limit=5&offset=0&type=category&parent=0'")
        print(f"  curl {onec.url}/admin/catalog/{product}")
        print(f"  curl -X PUT {onec.url}/admin/products/{product} -d '{{\"price\": 199.9}}'")
        print(
            f"  curl -X PUT {onec.url}/admin/categories/new-cat -d "
            '\'{"parent": "0", "name": "Новинки"}\''
        )
        print(f"  curl -X DELETE {onec.url}/admin/items/{product}")
        print(f"  curl {onec.url}/admin/stats")
        for view in ("items", "requests", "stats"):
            print(f"  curl {tec.base_url}/admin/{view}")
        print("Ctrl+C to stop.", flush=True)
        stopping.wait()
    print("stopped")


if __name__ == "__main__":
    main()
