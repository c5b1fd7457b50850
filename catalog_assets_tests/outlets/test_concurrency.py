"""A sync writing DuckDB while 20 outlets poll the API: no 5xx other than a deliberate 503,
no item missed, nothing out of order."""

import threading
import time

import duckdb

from catalog_assets.outlet_client import OutletApiError
from catalog_assets.outlets.feeds import CursorCodec, expand_subtrees
from catalog_assets_tests.outlets.conftest import CURSOR_SECRET, token_env

OUTLETS = 20
ENTITIES = ("categories", "products", "prices", "stock")


def expected_state(snapshot_dir, roots) -> dict[str, dict[str, dict]]:
    """What an outlet must hold after draining: the final snapshot's items in its scope, with
    removed ones delisted. Read straight from the published file, not through the API."""
    import json
    from pathlib import Path

    directory = Path(snapshot_dir)
    path = directory / (directory / "CURRENT").read_text().strip()
    with duckdb.connect(str(path), read_only=True) as con:
        parents = dict(con.execute("SELECT id, parent FROM categories").fetchall())
        scope = expand_subtrees(parents, roots) if roots else None
        state = {}
        for entity in ENTITIES:
            rows = con.execute(f"SELECT scope, item FROM feed_{entity} ORDER BY seq").fetchall()
            items = [json.loads(i) for s, i in rows if scope is None or s in scope]
            state[entity] = {i["id"]: i for i in items if not i.get("removed")}
    return state


def test_a_sync_writing_while_20_outlets_poll(platform, hub, api):
    platform.run("full_resync")
    roots = [c["id"] for c in platform.catalog.categories() if c["parent"] == "0"]
    outlets: dict[str, list[str] | None] = {}
    tokens: dict[str, str] = {}
    entries = []
    for n in range(OUTLETS):
        outlet_id = f"out-{n:02d}"
        token = f"tok-{outlet_id}-SECRET"
        tokens[outlet_id] = token
        hub.monkeypatch.setenv(token_env(outlet_id), token)
        outlets[outlet_id] = [roots[n % len(roots)]] if n % 2 else None
        extra = {"categories": outlets[outlet_id]} if outlets[outlet_id] else {}
        entries.append(hub.entry(outlet_id, **extra))
    hub.write_registry(entries)
    codec = CursorCodec(CURSOR_SECRET.encode())
    syncing = threading.Event()
    syncing.set()
    failures: list[str] = []
    held: dict[str, dict[str, dict[str, dict]]] = {}
    polls_during_sync: list[int] = []

    def poll(outlet_id: str) -> None:
        client = api.client(outlet_id, token=tokens[outlet_id])
        state = {e: {} for e in ENTITIES}
        cursors: dict[str, str | None] = dict.fromkeys(ENTITIES)
        last_seq = dict.fromkeys(ENTITIES, 0)
        polls = 0

        def one_round() -> None:
            nonlocal polls
            for entity in ENTITIES:
                for page in client.drain(entity, cursors[entity], limit=50):
                    polls += 1
                    seq = codec.decode(page.cursor, outlet_id, entity)
                    if seq < last_seq[entity]:
                        failures.append(f"{outlet_id}/{entity}: cursor went back {seq}")
                    last_seq[entity] = seq
                    for item in page.items:
                        if item.get("removed"):
                            state[entity].pop(item["id"], None)
                        else:
                            state[entity][item["id"]] = item
                    cursors[entity] = page.cursor

        try:
            while syncing.is_set():
                one_round()
                time.sleep(0.05)  # an outlet polls; it does not spin
            polls_during_sync.append(polls)
            one_round()  # after the last sync: catch up to the final snapshot
        except OutletApiError as exc:  # 503 is retried inside the client; anything else fails
            failures.append(f"{outlet_id}: {exc}")
        held[outlet_id] = state

    threads = [threading.Thread(target=poll, args=(o,)) for o in outlets]
    for thread in threads:
        thread.start()
    products = platform.catalog.products()
    for round_ in range(2):  # an increment, then a full resync that judges removals
        for product in products[round_ * 40 : round_ * 40 + 40]:
            platform.catalog.upsert_product({"id": product["id"], "price": 1000 + round_})
        platform.catalog.remove(products[200 + round_]["id"])
        platform.run("full_resync" if round_ == 1 else "incremental_sync")
    syncing.clear()
    for thread in threads:
        thread.join(timeout=60)

    assert failures == []
    assert sum(polls_during_sync) > OUTLETS * len(ENTITIES)  # they really polled meanwhile
    for outlet_id, roots_ in outlets.items():
        expected = expected_state(hub.resource.snapshot_dir, roots_)
        assert held[outlet_id] == expected, outlet_id
    assert held["out-00"]["prices"][products[0]["id"]]["price"] == 1000
    assert products[201]["id"] not in held["out-00"]["products"]
