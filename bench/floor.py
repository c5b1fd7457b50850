"""The HTTP floor: the least a correct sync must do, done as plainly as possible.

Walk the category tree by `parent` (one level after another, one request at a time), push the
categories parents-first in batches of 100, then page the products and push each page as one
batch. No validation beyond JSON, no staging, no Dagster, no state: every 1C page and every
`put-products` batch, nothing else. Run as its own process; prints one JSON line.

    python bench/floor.py --onec URL --tec URL --token TOKEN
"""

from __future__ import annotations

import argparse
import json
import resource
import time

STARTED = time.perf_counter()

import requests  # noqa: E402

from catalog_assets.mapping import EPOCH, category_item, product_item  # noqa: E402

PAGE = 100


def pages(session: requests.Session, url: str, **params) -> tuple[list[dict], int]:
    """Every record of one query and the requests it took, page by page, strictly sequential."""
    records, offset, sent = [], 0, 0
    while True:
        query = {"limit": PAGE, "offset": offset, "modified_since": EPOCH, **params}
        body = session.get(url, params=query, timeout=60).json()
        sent += 1
        records += body["data"]
        offset += len(body["data"])
        if len(body["data"]) < PAGE or offset >= body["count"]:
            return records, sent


def push(session: requests.Session, url: str, token: str, items: list[dict]) -> None:
    envelope = {
        "api": "product",
        "method": "put-products",
        "token": token,
        "language": "RU",
        "translate": True,
        "payload": items,
    }
    response = session.post(url, json=envelope, timeout=60)
    if response.status_code != 200:
        raise SystemExit(f"put-products failed: {response.status_code} {response.text[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--onec", required=True)
    parser.add_argument("--tec", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()
    catalog = args.onec.rstrip("/") + "/api/catalog"
    session = requests.Session()
    started = time.perf_counter()
    onec_requests = tec_requests = 0

    levels, level = [], ["0"]
    while level:
        children = []
        for parent in level:
            found, sent = pages(session, catalog, type="category", parent=parent)
            onec_requests += sent
            children += found
        if children:
            levels.append(children)
        level = [c["id"] for c in children]
    walked = time.perf_counter() - started
    categories = 0
    for records in levels:
        for start in range(0, len(records), PAGE):
            batch = records[start : start + PAGE]
            push(session, args.tec, args.token, [category_item(r) for r in batch])
            tec_requests += 1
            categories += len(batch)

    products, offset = 0, 0
    while True:
        query = {"limit": PAGE, "offset": offset, "modified_since": EPOCH, "type": "product"}
        body = session.get(catalog, params=query, timeout=60).json()
        onec_requests += 1
        data = body["data"]
        if data:
            push(session, args.tec, args.token, [product_item(r) for r in data])
            tec_requests += 1
            products += len(data)
        offset += len(data)
        if len(data) < PAGE or offset >= body["count"]:
            break
    finished = time.perf_counter()
    print(
        json.dumps(
            {
                "sync_s": finished - started,
                "walk_s": walked,
                "process_s": finished - STARTED,
                "categories": categories,
                "products": products,
                "onec_requests": onec_requests,
                "tec_requests": tec_requests,
                "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            }
        )
    )


if __name__ == "__main__":
    main()
