"""The pull API over real HTTP: uvicorn on 127.0.0.1, the reference client, a real sync into
a DuckDB file in tmp_path, and the snapshot it publishes."""

import dataclasses
import json
import logging
import os
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
import requests
import yaml

from catalog_assets.outlet_api.config import ApiSettings
from catalog_assets.outlet_api.deps import ApiError, OutletService
from catalog_assets.outlet_client import ENTITIES, LocalStore, OutletApiError, main, sync_outlet
from catalog_assets.outlets.feeds import FEEDS, CursorCodec, expand_subtrees
from catalog_assets.outlets.snapshot import Snapshot
from catalog_assets_tests.conftest import materializations
from catalog_assets_tests.outlets.conftest import CURSOR_SECRET, TOKENS, serve, token_env


def category_id(platform, name: str) -> str:
    return next(c["id"] for c in platform.catalog.categories() if c["name"] == name)


def subtree_products(platform, root: str) -> set[str]:
    parents = {c["id"]: c["parent"] for c in platform.catalog.categories()}
    scope = expand_subtrees(parents, [root])
    return {p["id"] for p in platform.catalog.products() if p["parent"] in scope}


def drain(client, entity, cursor=None, limit=None) -> tuple[list[dict], str]:
    items: list[dict] = []
    for page in client.drain(entity, cursor, limit):
        items += page.items
        cursor = page.cursor
    return items, cursor


def error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return response.status_code, body["error"]["code"]


def test_onboarding_is_one_entry_and_a_token_without_restart(platform, hub, api, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    hub.write_registry([hub.entry("msk-001")])
    platform.run("full_resync")
    products, _ = drain(api.client("msk-001"), "products")
    assert {p["id"] for p in products} == {p["id"] for p in platform.catalog.products()}
    with pytest.raises(OutletApiError) as refused:
        api.client("spb-002").changes("products")
    assert refused.value.status == 401

    hub.write_registry([hub.entry("msk-001"), hub.entry("spb-002", silent_after_minutes=5)])
    products, _ = drain(api.client("spb-002"), "products", limit=1000)
    assert len(products) == len(platform.catalog.products())

    # Tokens stay in the environment: not in logs, the snapshot, the state file or the registry.
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in files) and any(p.suffix == ".duckdb" for p in files)
    for token in TOKENS.values():
        assert token not in caplog.text
        assert all(token.encode() not in p.read_bytes() for p in files)


def test_every_error_code_is_json_with_a_specific_code(platform, hub, api, tmp_path):
    hub.write_registry([hub.entry("msk-001"), hub.entry("spb-002")])
    url = f"{api.url}/v1/outlets/msk-001/changes"
    auth = {"Authorization": f"Bearer {TOKENS['msk-001']}"}
    # Before the first sync there is no snapshot: a deliberate 503 with Retry-After.
    unavailable = httpx.get(url, params={"entity": "products"}, headers=auth)
    assert error(unavailable) == (503, "store_unavailable")
    assert int(unavailable.headers["Retry-After"]) > 0

    platform.run("full_resync")
    assert error(httpx.get(url, params={"entity": "products"})) == (401, "missing_token")
    assert error(
        httpx.get(url, params={"entity": "products"}, headers={"Authorization": "Bearer nope"})
    ) == (401, "invalid_token")
    spb = {"Authorization": f"Bearer {TOKENS['spb-002']}"}
    assert error(httpx.get(url, params={"entity": "products"}, headers=spb)) == (403, "forbidden")
    ghost = f"{api.url}/v1/outlets/ghost-999/changes"
    assert error(httpx.get(ghost, params={"entity": "products"}, headers=auth)) == (
        404,
        "unknown_outlet",
    )
    for params, needle in [
        ({"entity": "orders"}, "unknown entity 'orders'"),
        ({}, "entity is required"),
        ({"entity": "products", "limit": "0"}, "from 1 to 1000"),
        ({"entity": "products", "limit": "1001"}, "from 1 to 1000"),
        ({"entity": "products", "limit": "many"}, "integer"),
        ({"entity": "products", "cursor": "not-ours"}, "not one this API issued"),
    ]:
        response = httpx.get(url, params=params, headers=auth)
        assert error(response)[0] == 400 and needle in response.json()["error"]["message"]
    codec = CursorCodec(CURSOR_SECRET.encode())
    for cursor, needle in [
        (codec.encode("spb-002", "products", 5), "another outlet"),
        (codec.encode("msk-001", "prices", 5), "'prices' feed"),
        (CursorCodec(b"other").encode("msk-001", "products", 5), "signature"),
    ]:
        response = httpx.get(url, params={"entity": "products", "cursor": cursor}, headers=auth)
        assert error(response) == (400, "invalid_cursor")
        assert needle in response.json()["error"]["message"]

    # An invalid entry is unavailable to its owner, with the reason; the others keep working.
    hub.write_registry(
        [hub.entry("msk-001"), hub.entry("spb-002", categories=["no-such-category"])]
    )
    spb_url = f"{api.url}/v1/outlets/spb-002/changes"
    broken = httpx.get(spb_url, params={"entity": "products"}, headers=spb)
    assert error(broken) == (404, "outlet_unavailable")
    assert "unknown categories ['no-such-category']" in broken.json()["error"]["message"]
    assert httpx.get(url, params={"entity": "products"}, headers=auth).status_code == 200

    # The current snapshot turning unreadable is a 503 too, never a 500.
    pointer = tmp_path / "outlet_snapshots" / "CURRENT"
    (tmp_path / "outlet_snapshots" / "garbage.duckdb").write_bytes(b"not a database" * 100)
    pointer.write_text("garbage.duckdb")
    assert error(httpx.get(url, params={"entity": "products"}, headers=auth)) == (
        503,
        "store_unavailable",
    )
    for response in [unavailable, broken]:
        assert all(token not in response.text for token in TOKENS.values())
    assert httpx.get(f"{api.url}/docs").status_code == 200
    assert "/v1/outlets/{outlet_id}/changes" in httpx.get(f"{api.url}/openapi.json").json()["paths"]


def test_no_change_is_an_empty_array_and_a_repeated_call_repeats(platform, hub, api):
    hub.write_registry([hub.entry("msk-001")])
    platform.run("full_resync")
    client = api.client("msk-001")
    first = client.changes("products", limit=5)
    again = client.changes("products", limit=5)  # crashed before sending the cursor back
    assert again.items == first.items and len(first.items) == 5 and first.has_more
    second = client.changes("products", cursor=first.cursor, limit=5)
    assert {p["id"] for p in second.items}.isdisjoint({p["id"] for p in first.items})
    repeat = client.changes("products", limit=5)  # no cursor: continue from the last one sent
    assert repeat.items == second.items

    rest, cursor = drain(client, "products", second.cursor, limit=1000)
    assert len(first.items) + len(second.items) + len(rest) == len(platform.catalog.products())
    empty = client.changes("products", cursor=cursor)
    assert empty.items == [] and not empty.has_more
    platform.run("incremental_sync")  # nothing changed in 1C
    assert client.changes("products", cursor=cursor).items == []
    assert httpx.get(f"{api.url}/healthz").json()["status"] == "ok"


def test_narrow_feeds_move_only_with_their_value_and_removals_are_marked(platform, hub, api):
    hub.write_registry([hub.entry("msk-001")])
    platform.run("full_resync")
    client = api.client("msk-001")
    cursors = {e: drain(client, e, limit=1000)[1] for e in ("products", "prices", "stock")}
    renamed, repriced, gone = platform.catalog.products()[:3]
    platform.catalog.upsert_product({"id": renamed["id"], "name": "Новое имя"})
    platform.catalog.upsert_product({"id": repriced["id"], "price": 12345})
    platform.catalog.remove(gone["id"])
    platform.run("full_resync")

    products, _ = drain(client, "products", cursors["products"])
    assert {p["id"] for p in products} == {renamed["id"], repriced["id"], gone["id"]}
    removed = next(p for p in products if p["id"] == gone["id"])
    assert removed["removed"] is True and removed["name"] == gone["name"]
    prices, _ = drain(client, "prices", cursors["prices"])
    assert {"id": repriced["id"], "price": 12345} in prices
    assert {p["id"] for p in prices} == {repriced["id"], gone["id"]}
    assert all(set(p) <= {"id", "price", "removed"} for p in prices)
    stock, _ = drain(client, "stock", cursors["stock"])
    assert [s["id"] for s in stock] == [gone["id"]]


def test_category_filters_and_no_outlet_sees_another_outlets_data(platform, hub, api):
    platform.run("full_resync")
    groceries = category_id(platform, "Бакалея")
    dairy = category_id(platform, "Молочная продукция")
    hub.write_registry(
        [
            hub.entry("msk-001", categories=[groceries]),
            hub.entry("spb-002", categories=[dairy]),
            hub.entry("ekb-003"),
        ]
    )
    seen: dict[str, set[str]] = {}
    for outlet, root in [("msk-001", groceries), ("spb-002", dairy)]:
        client = api.client(outlet)
        products, _ = drain(client, "products")
        prices, _ = drain(client, "prices")
        categories, _ = drain(client, "categories")
        expected = subtree_products(platform, root)
        assert expected and {p["id"] for p in products} == expected
        assert {p["id"] for p in prices} == expected
        parents = {c["id"]: c["parent"] for c in platform.catalog.categories()}
        assert {c["id"] for c in categories} == expand_subtrees(parents, [root])
        seen[outlet] = expected
    assert seen["msk-001"].isdisjoint(seen["spb-002"])
    everything, _ = drain(api.client("ekb-003"), "products", limit=1000)
    assert len(everything) == len(platform.catalog.products())

    # A token, a cursor or a path of one outlet never opens another outlet's feed.
    msk_cursor = api.client("msk-001").changes("products").cursor
    with pytest.raises(OutletApiError) as wrong_path:
        api.client("spb-002", token=TOKENS["msk-001"]).changes("products")
    assert wrong_path.value.status == 403
    with pytest.raises(OutletApiError) as wrong_cursor:
        api.client("spb-002").changes("products", cursor=msk_cursor)
    assert wrong_cursor.value.code == "invalid_cursor"


def test_reference_client_cli_writes_duckdb_and_json(platform, hub, api, tmp_path, capsys):
    hub.write_registry([hub.entry("msk-001"), hub.entry("ekb-003")])
    platform.run("full_resync")
    out = tmp_path / "msk.duckdb"
    args = ["--outlet", "msk-001", "--base-url", api.url, "--out", str(out)]
    assert main(args) == 0
    with duckdb.connect(str(out), read_only=True) as con:
        counts = dict(con.execute("SELECT entity, count(*) FROM items GROUP BY 1").fetchall())
    assert counts["products"] == len(platform.catalog.products())
    assert counts["categories"] == len(platform.catalog.categories())
    assert counts["prices"] == counts["stock"] == counts["products"]
    assert main(args) == 0  # again: nothing new, from the stored cursors
    assert "received      0" in capsys.readouterr().out

    store = LocalStore.open(str(tmp_path / "ekb.json"))
    received = sync_outlet(api.client("ekb-003"), store, ("prices",), limit=250)
    store.save()
    saved = json.loads((tmp_path / "ekb.json").read_text(encoding="utf-8"))
    assert received == {"prices": len(platform.catalog.products())}
    assert len(saved["items"]["prices"]) == received["prices"] and saved["cursors"]["prices"]

    hub.monkeypatch.delenv(token_env("msk-001"))
    assert main(args) == 2  # no token in the environment: a clear refusal, no request


def test_an_item_that_leaves_an_outlets_categories_is_delisted_there(platform, hub, api, tmp_path):
    """Moves in 1C change what a filtered outlet may see without changing the moved items: a
    product or a whole category that leaves the outlet's subtree must be delisted there, and
    one that enters it must arrive, in every feed."""
    platform.run("full_resync")
    catalog = platform.catalog
    groceries = category_id(platform, "Бакалея")
    dairy = category_id(platform, "Молочная продукция")
    hub.write_registry([hub.entry("msk-001", categories=[groceries]), hub.entry("ekb-003")])
    outlets = {o: LocalStore(tmp_path / f"{o}.json") for o in ("msk-001", "ekb-003")}

    def sync_and_check() -> None:
        parents = {c["id"]: c["parent"] for c in catalog.categories()}
        for outlet, store in outlets.items():
            sync_outlet(api.client(outlet), store, limit=1000)
        msk, everything = outlets["msk-001"].items, outlets["ekb-003"].items
        assert set(msk["categories"]) == expand_subtrees(parents, [groceries])
        for feed in ("products", "prices", "stock"):
            assert set(msk[feed]) == subtree_products(platform, groceries), feed
            assert set(everything[feed]) == {p["id"] for p in catalog.products()}, feed
        assert set(everything["categories"]) == set(parents)

    sync_and_check()
    parents = {c["id"]: c["parent"] for c in catalog.categories()}
    dairy_leaf = next(c for c in expand_subtrees(parents, [dairy]) if c not in parents.values())
    # The child of groceries with the most products under it leaves, with its subtree.
    branch = max(
        (c for c, parent in parents.items() if parent == groceries),
        key=lambda c: len(subtree_products(platform, c)),
    )
    branch_products = subtree_products(platform, branch)
    leaving = sorted(subtree_products(platform, groceries) - branch_products)[0]
    entering = sorted(subtree_products(platform, dairy))[0]
    assert branch_products
    catalog.upsert_product({"id": leaving, "parent": dairy_leaf})
    catalog.upsert_product({"id": entering, "parent": groceries})
    catalog.upsert_category(branch, dairy, catalog.get(branch)["name"])
    pushes_before = len(platform.tec.requests)
    moved = platform.run("incremental_sync")
    assert moved.success
    tree = materializations(moved, "category_tree")
    assert tree["moved_categories"] == len(expand_subtrees(parents, [branch]))
    assert tree["products_under_moved"] == len(branch_products)
    # The outlet's lag counts what it must delist, too.
    current = Path(hub.resource.snapshot_dir) / "CURRENT"
    snapshot = Snapshot(str(current.parent / current.read_text().strip()))
    try:
        acked = CursorCodec(CURSOR_SECRET.encode()).decode(
            outlets["msk-001"].cursors["products"], "msk-001", "products"
        )
        scope = snapshot.scope((groceries,))
        assert snapshot.backlog("products", acked, scope)[0] == len(branch_products) + 2
    finally:
        snapshot.close()
    sync_and_check()
    # Moving a category changes no product's content: Tec.Delivery gets only what changed.
    pushed = {i for r in platform.tec.requests[pushes_before:] for i in r["external_ids"]}
    assert pushed == {leaving, entering, branch}

    # The branch comes back: its products arrive again at the filtered outlet.
    catalog.upsert_category(branch, groceries, catalog.get(branch)["name"])
    assert platform.run("incremental_sync").success
    sync_and_check()
    assert branch_products <= set(outlets["msk-001"].items["products"])


def test_a_product_is_delisted_even_if_its_old_category_also_left_before_the_outlet_called(
    platform, hub, api, tmp_path
):
    platform.run("full_resync")
    catalog = platform.catalog
    groceries = category_id(platform, "Бакалея")
    dairy = category_id(platform, "Молочная продукция")
    hub.write_registry([hub.entry("msk-001", categories=[groceries])])
    store = LocalStore(tmp_path / "msk.json")
    sync_outlet(api.client("msk-001"), store, limit=1000)
    parents = {c["id"]: c["parent"] for c in catalog.categories()}
    branch = next(c for c, parent in parents.items() if parent == groceries)
    product = sorted(p["id"] for p in catalog.products() if p["parent"] == branch)[0]
    assert product in store.items["products"]

    # The product leaves its category, then the category leaves groceries; the outlet was
    # not calling meanwhile, so it no longer finds the product's old category in its subtree.
    catalog.upsert_product({"id": product, "parent": dairy})
    assert platform.run("incremental_sync").success
    catalog.upsert_category(branch, dairy, catalog.get(branch)["name"])
    assert platform.run("incremental_sync").success
    sync_outlet(api.client("msk-001"), store, limit=1000)
    for feed in ("products", "prices", "stock"):
        assert set(store.items[feed]) == subtree_products(platform, groceries), feed
    assert product not in store.items["products"] and branch not in store.items["categories"]


def test_an_orphan_whose_parent_appears_reaches_the_outlet_with_its_products(
    platform, hub, api, tmp_path
):
    """No category's own parent changed, yet the orphan (and its product) entered the
    outlet's subtree after the outlet's cursor had passed their rows."""
    platform.run("full_resync")
    catalog = platform.catalog
    groceries = category_id(platform, "Бакалея")
    hub.write_registry([hub.entry("msk-001", categories=[groceries])])
    store = LocalStore(tmp_path / "msk.json")
    catalog.upsert_category("orphan", "missing-parent", "Сирота")
    catalog.upsert_product(
        {"id": "under-orphan", "parent": "orphan", "type": "product", "name": "Ждёт", "price": 1}
    )
    assert platform.run("incremental_sync").success
    in_scope = sorted(subtree_products(platform, groceries))[0]
    catalog.upsert_product({"id": in_scope, "name": "Переименован"})  # the cursor moves past
    assert platform.run("incremental_sync").success
    sync_outlet(api.client("msk-001"), store, limit=1000)
    assert "orphan" not in store.items["categories"]

    catalog.upsert_category("missing-parent", groceries, "Нашёлся")
    healed = platform.run("incremental_sync")
    assert healed.success
    assert materializations(healed, "category_tree")["moved_categories"] == 1  # the orphan
    sync_outlet(api.client("msk-001"), store, limit=1000)
    assert {"missing-parent", "orphan"} <= set(store.items["categories"])
    assert "under-orphan" in store.items["products"]


def test_a_product_that_waited_for_its_category_reaches_the_outlet(platform, hub, api, tmp_path):
    """A product whose category 1C had not created yet belonged to no subtree when the outlet
    was served it. 1C then creates the category in the outlet's subtree and the product, which
    did not change, must arrive in every feed."""
    first = platform.run("full_resync")
    # A first tree resequences nothing (every category is new, every product staged with it).
    assert materializations(first, "category_tree")["products_under_new_categories"] == 0
    catalog = platform.catalog
    groceries = category_id(platform, "Бакалея")
    hub.write_registry([hub.entry("msk-001", categories=[groceries]), hub.entry("ekb-003")])
    catalog.upsert_product(
        {"id": "waits", "parent": "new-cat", "type": "product", "name": "Ждёт", "price": 5}
    )
    assert platform.run("incremental_sync").success
    store, everything = LocalStore(tmp_path / "msk.json"), LocalStore(tmp_path / "ekb.json")
    for _ in range(2):
        sync_outlet(api.client("msk-001"), store, limit=1000)
        sync_outlet(api.client("ekb-003"), everything, limit=1000)
    assert "waits" not in store.items["products"] and "waits" in everything.items["products"]

    catalog.upsert_category("new-cat", groceries, "Новая")
    created = platform.run("incremental_sync")
    assert created.success
    assert materializations(created, "category_tree")["products_under_new_categories"] == 1
    sync_outlet(api.client("msk-001"), store, limit=1000)
    assert "new-cat" in store.items["categories"]
    for feed in ("products", "prices", "stock"):
        assert set(store.items[feed]) == subtree_products(platform, groceries), feed


def test_an_outlet_whose_root_category_1c_deletes_delists_it_and_gets_it_back(
    platform, hub, api, tmp_path
):
    """1C deletes the category an outlet is filtered to, with everything under it. The outlet
    must be told to delist all it held (a refused feed would leave it on sale there) and then
    get empty answers; when 1C restores the category, its items arrive again."""
    platform.run("full_resync")
    catalog = platform.catalog
    dairy = category_id(platform, "Молочная продукция")
    store = caught_up(hub, api, tmp_path, [dairy])
    parents = {c["id"]: c["parent"] for c in catalog.categories()}
    held = subtree_products(platform, dairy)
    assert held and set(store.items["products"]) == held
    deleted = [catalog.get(c) for c in expand_subtrees(parents, [dairy])]
    deleted += [catalog.get(p) for p in sorted(held)]
    for record in deleted:
        catalog.remove(record["id"])
    assert platform.run("full_resync").success

    sync_outlet(api.client("msk-001"), store, limit=1000)
    assert all(store.items[feed] == {} for feed in ENTITIES), "the outlet still sells them"
    empty = api.client("msk-001").changes("products", cursor=store.cursors["products"])
    assert empty.items == [] and not empty.has_more

    for record in deleted:  # 1C restores the category and what was under it
        if record["type"] == "category":
            catalog.upsert_category(record["id"], record["parent"], record["name"])
        else:
            catalog.upsert_product({k: v for k, v in record.items() if k != "modified_at"})
    assert platform.run("incremental_sync").success
    sync_outlet(api.client("msk-001"), store, limit=1000)
    assert set(store.items["categories"]) == expand_subtrees(parents, [dairy])
    for feed in ("products", "prices", "stock"):
        assert set(store.items[feed]) == held, feed


def test_an_outlet_rooted_under_a_category_1c_deleted_keeps_getting_its_changes(
    platform, hub, api, tmp_path
):
    """1C deletes the parent of the category an outlet is filtered to, and keeps the category:
    the tree flags it (orphan, held back from Tec.Delivery), but it is 1C's, and the outlet
    gets 1C's view. Refused as unknown, the outlet would sell yesterday's prices for good."""
    platform.run("full_resync")
    catalog = platform.catalog
    categories = catalog.categories()
    parents = {c["id"]: c["parent"] for c in categories}
    root = next(
        c["id"]
        for c in sorted(categories, key=lambda c: c["id"])
        if c["parent"] != "0" and subtree_products(platform, c["id"])
    )
    store = caught_up(hub, api, tmp_path, [root])
    held = subtree_products(platform, root)
    assert set(store.items["products"]) == held
    catalog.remove(parents[root])
    assert platform.run("full_resync").success
    assert platform.query(f"SELECT status FROM category_tree WHERE id = '{root}'") == [("orphan",)]

    product = sorted(held)[0]
    catalog.upsert_product({"id": product, "price": 12345})
    assert platform.run("incremental_sync").success
    sync_outlet(api.client("msk-001"), store, limit=1000)
    assert store.items["prices"][product]["price"] == 12345
    assert set(store.items["products"]) == held and root in store.items["categories"]


def test_an_outlet_gets_changes_made_after_the_store_was_restored_or_rebuilt(
    platform, hub, api, tmp_path
):
    """A restored catalog store numbers changes from where its backup stood, below what the
    outlet has acknowledged; a rebuilt one from 1. Its changes must still reach the outlet."""
    platform.run("full_resync")
    catalog = platform.catalog
    store = caught_up(hub, api, tmp_path, None)
    backup = tmp_path / "catalog-backup.duckdb"
    shutil.copyfile(platform.store.path, backup)
    chosen = [p["id"] for p in catalog.products()[:10]]

    def reprice_and_sync(price) -> dg.ExecuteInProcessResult:
        for product in chosen:
            catalog.upsert_product({"id": product, "price": price})
        result = platform.run("incremental_sync")
        assert result.success
        for _ in range(2):
            sync_outlet(api.client("msk-001"), store, limit=1000)
        assert {store.items["prices"][p]["price"] for p in chosen} == {price}
        return result

    reprice_and_sync(999)
    shutil.copyfile(backup, platform.store.path)  # the operator restores the catalog store
    restored = materializations(reprice_and_sync(5), "outlet_feed_snapshot")
    assert restored["rows_renumbered"] > 0
    for path in (platform.store.path, platform.store.path + ".wal"):
        if os.path.exists(path):
            os.remove(path)  # or deletes it and rebuilds with a full resync
    assert platform.run("full_resync").success
    reprice_and_sync(7)
    assert set(store.items["products"]) == {p["id"] for p in catalog.products()}


@pytest.mark.parametrize("with_state", [False, True], ids=["store+snapshots", "whole-data-dir"])
def test_an_outlet_gets_changes_after_the_store_and_its_snapshots_were_restored(
    platform, hub, tmp_path, with_state
):
    """Restored together, the store and its snapshots agree, so nothing on our side shows
    that outlets were served a later history (nor does the state file, restored with them):
    only the outlet's cursor does, by the publication that minted it. Its position is then
    meaningless, and it replays its feeds."""
    platform.run("full_resync")
    catalog = platform.catalog
    api, stop = serve(hub.settings())
    try:
        store = caught_up(hub, api, tmp_path, None)
        snapshots, state = Path(hub.resource.snapshot_dir), Path(hub.resource.state_path)
        backup = tmp_path / "backup"
        shutil.copytree(snapshots, backup / "outlet_snapshots")
        shutil.copyfile(platform.store.path, backup / "catalog.duckdb")
        with (
            closing(sqlite3.connect(state)) as live,
            closing(sqlite3.connect(backup / "outlet_state.sqlite")) as copy,
        ):
            live.backup(copy)
        chosen = [p["id"] for p in catalog.products()[:10]]

        def reprice_and_sync(price) -> None:
            for product in chosen:
                catalog.upsert_product({"id": product, "price": price})
            assert platform.run("incremental_sync").success
            for _ in range(2):
                sync_outlet(api.client("msk-001"), store, limit=1000)

        reprice_and_sync(999)
        assert {store.items["prices"][p]["price"] for p in chosen} == {999}
    finally:
        stop()
    # The operator restores the data directory (services stopped); the outlet keeps its own
    # cursors, as outlets do.
    Path(platform.store.path + ".wal").unlink(missing_ok=True)
    shutil.copyfile(backup / "catalog.duckdb", platform.store.path)
    shutil.rmtree(snapshots)
    shutil.copytree(backup / "outlet_snapshots", snapshots)
    if with_state:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{state}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(backup / "outlet_state.sqlite", state)
    api, stop = serve(hub.settings())
    try:
        reprice_and_sync(5)  # 1C changes the same products again after the restore
    finally:
        stop()
    assert {p: store.items["prices"][p]["price"] for p in chosen} == dict.fromkeys(chosen, 5)
    assert set(store.items["products"]) == {p["id"] for p in catalog.products()}


def test_editing_an_outlets_categories_replays_and_delists(platform, hub, api, tmp_path):
    """The outlet's own filter changes (an operator edits outlets.yaml): it gets the older
    items of categories it gained, and removals for what it held from categories it lost."""
    platform.run("full_resync")
    catalog = platform.catalog
    groceries = category_id(platform, "Бакалея")
    dairy = category_id(platform, "Молочная продукция")
    store = LocalStore(tmp_path / "msk.json")
    every_product = {p["id"] for p in catalog.products()}

    def configure_and_sync(categories) -> None:
        extra = {"categories": categories} if categories is not None else {}
        hub.write_registry([hub.entry("msk-001", **extra)])
        sync_outlet(api.client("msk-001"), store, limit=1000)
        parents = {c["id"]: c["parent"] for c in catalog.categories()}
        if categories is None:
            products, cats = every_product, set(parents)
        else:
            products = set().union(*(subtree_products(platform, c) for c in categories))
            cats = expand_subtrees(parents, categories)
        for feed in ("products", "prices", "stock"):
            assert set(store.items[feed]) == products, (categories, feed)
        assert set(store.items["categories"]) == cats

    configure_and_sync([groceries])
    configure_and_sync([groceries, dairy])  # widened: dairy's older items arrive
    old_cursor = store.cursors["products"]
    configure_and_sync([dairy])  # narrowed: groceries' items are delisted
    configure_and_sync(None)  # the whole catalog
    configure_and_sync([groceries])  # from everything to one subtree

    # The answer to the first call after a change got lost: the outlet sends the cursor it
    # held from before (taken under another filter), and still starts again.
    hub.write_registry([hub.entry("msk-001", categories=[dairy])])
    replay = api.client("msk-001").changes("products", cursor=store.cursors["products"], limit=1000)
    assert replay.items  # the replay's first page
    again = api.client("msk-001").changes("products", cursor=store.cursors["products"], limit=1000)
    assert [i["id"] for i in again.items] == [i["id"] for i in replay.items]
    assert old_cursor != store.cursors["products"]


def caught_up(hub, api, tmp_path, categories, feeds=ENTITIES) -> LocalStore:
    """Outlet msk-001 with these categories (None: the whole catalog), its feeds drained and
    their ends acknowledged (the second pass sends the last cursors back)."""
    extra = {"categories": categories} if categories is not None else {}
    hub.write_registry([hub.entry("msk-001", **extra)])
    store = LocalStore(tmp_path / "msk.json")
    for _ in range(2):
        sync_outlet(api.client("msk-001"), store, feeds, limit=1000)
    return store


def test_an_edit_after_an_item_moved_out_still_delists_it(platform, hub, api, tmp_path):
    """A product and a category left the outlet's categories, then the operator replaced
    those categories, all before the outlet called: both must still be delisted."""
    platform.run("full_resync")
    catalog = platform.catalog
    groceries = category_id(platform, "Бакалея")
    dairy = category_id(platform, "Молочная продукция")
    drinks = category_id(platform, "Напитки")
    store = caught_up(hub, api, tmp_path, [groceries])
    parents = {c["id"]: c["parent"] for c in catalog.categories()}
    branch = next(c for c, p in parents.items() if p == groceries and subtree_products(platform, c))
    product = sorted(subtree_products(platform, groceries) - subtree_products(platform, branch))[0]
    catalog.upsert_product({"id": product, "parent": drinks})
    catalog.upsert_category(branch, drinks, catalog.get(branch)["name"])
    assert platform.run("incremental_sync").success
    hub.write_registry([hub.entry("msk-001", categories=[dairy])])
    sync_outlet(api.client("msk-001"), store, limit=1000)
    parents = {c["id"]: c["parent"] for c in catalog.categories()}
    assert set(store.items["categories"]) == expand_subtrees(parents, [dairy])
    for feed in ("products", "prices", "stock"):
        assert set(store.items[feed]) == subtree_products(platform, dairy), feed


def test_a_repeated_first_call_after_an_edit_returns_the_same_items(platform, hub, api, tmp_path):
    platform.run("full_resync")
    groceries = category_id(platform, "Бакалея")
    dairy = category_id(platform, "Молочная продукция")
    store = caught_up(hub, api, tmp_path, [groceries, dairy])
    hub.write_registry([hub.entry("msk-001", categories=[dairy])])
    old = store.cursors["products"]
    first = api.client("msk-001").changes("products", cursor=old, limit=1000)
    again = api.client("msk-001").changes("products", cursor=old, limit=1000)  # answer lost
    assert [i["id"] for i in again.items] == [i["id"] for i in first.items]
    removed = {i["id"] for i in first.items if i.get("removed")}
    assert removed == subtree_products(platform, groceries)


def test_removals_for_lost_categories_stop_once_the_outlet_caught_up(platform, hub, api, tmp_path):
    platform.run("full_resync")
    catalog = platform.catalog
    dairy = category_id(platform, "Молочная продукция")
    hub.write_registry([hub.entry("msk-001")])
    store = LocalStore(tmp_path / "msk.json")
    sync_outlet(api.client("msk-001"), store, limit=1000)
    hub.write_registry([hub.entry("msk-001", categories=[dairy])])
    sync_outlet(api.client("msk-001"), store, limit=1000)  # the replay, with its removals
    sync_outlet(api.client("msk-001"), store, limit=1000)  # caught up: acknowledges the end
    outside = sorted({p["id"] for p in catalog.products()} - subtree_products(platform, dairy))
    for product in outside[:20]:
        catalog.upsert_product({"id": product, "price": 777})
    assert platform.run("incremental_sync").success
    page = api.client("msk-001").changes("prices", cursor=store.cursors["prices"], limit=1000)
    assert page.items == []


def test_an_outlet_restored_mid_replay_is_told_again(platform, hub, api, tmp_path):
    """Narrowed from the whole catalog; a backup taken one page into the replay is restored
    after the outlet caught up: its older cursor gets the same removals again."""
    platform.run("full_resync")
    dairy = category_id(platform, "Молочная продукция")
    store = caught_up(hub, api, tmp_path, None, ("products",))
    hub.write_registry([hub.entry("msk-001", categories=[dairy])])
    client = api.client("msk-001")
    first = client.changes("products", cursor=store.cursors["products"], limit=5)
    store.apply("products", first.items, first.cursor)
    backup = LocalStore(tmp_path / "backup.json", json.loads(json.dumps(store.items)))
    backup.cursors = dict(store.cursors)
    answer = client.changes("products", cursor=first.cursor, limit=1000)
    for _ in range(2):  # drains, then acknowledges the end
        sync_outlet(client, store, ("products",), limit=1000)
    again = client.changes("products", cursor=first.cursor, limit=1000)
    assert [i["id"] for i in again.items] == [i["id"] for i in answer.items]
    sync_outlet(client, backup, ("products",), limit=1000)
    assert set(backup.items["products"]) == subtree_products(platform, dairy)


def test_removals_stop_after_catching_up_from_one_filter_to_another(platform, hub, api, tmp_path):
    """The feed's newest row is in neither filter: the outlet still catches up (its last
    page's cursor reaches the newest row), and lost categories' changes stop coming."""
    platform.run("full_resync")
    catalog = platform.catalog
    groceries = category_id(platform, "Бакалея")
    dairy = category_id(platform, "Молочная продукция")
    drinks = category_id(platform, "Напитки")
    store = caught_up(hub, api, tmp_path, [groceries, dairy])
    hub.write_registry([hub.entry("msk-001", categories=[dairy])])
    sync_outlet(api.client("msk-001"), store, limit=1000)
    drink = sorted(subtree_products(platform, drinks))[0]
    catalog.upsert_product({"id": drink, "price": 555, "stock": 5})
    assert platform.run("incremental_sync").success
    for _ in range(2):
        sync_outlet(api.client("msk-001"), store, limit=1000)
    for product in sorted(subtree_products(platform, groceries))[:10]:
        catalog.upsert_product({"id": product, "price": 777})
    assert platform.run("incremental_sync").success
    page = api.client("msk-001").changes("prices", cursor=store.cursors["prices"], limit=1000)
    assert page.items == []


ROTATED = {"OUTLET_MSK_001_TOKEN": "tok-msk-001-OLD", "OUTLET_MSK_001_TOKEN_V2": "tok-msk-001-NEW"}


def test_a_rotated_token_is_refused_however_often_the_registry_reloads(tmp_path, monkeypatch):
    """The token map is cached per registry object. Keyed by `id()`, a later registry born at
    a freed one's address matched the stale map: the revoked token let in, the new one 401."""
    for name, value in ROTATED.items():
        monkeypatch.setenv(name, value)
    config = tmp_path / "outlets.yaml"
    bumps = [0]

    def write(token_variable: str, name: str = "Outlet msk-001") -> None:
        entry = {"id": "msk-001", "name": name, "token_env": token_variable}
        config.write_text(yaml.safe_dump({"outlets": [entry]}), encoding="utf-8")
        bumps[0] += 1
        stamp = time.time_ns() + bumps[0] * 1_000_000_000
        os.utime(config, ns=(stamp, stamp))

    write("OUTLET_MSK_001_TOKEN")
    service = OutletService(
        ApiSettings(str(config), str(tmp_path / "snapshots"), str(tmp_path / "state.sqlite"), b"k")
    )

    def auth(token: str) -> str:
        with service.view() as view:  # what a request does before it reads the snapshot
            try:
                service.authenticate(view.registry, "msk-001", f"Bearer {token}")
            except ApiError as exc:
                return exc.code
            return "ok"

    names = list(ROTATED)
    try:
        for i in range(1000):  # address reuse is likely within a few dozen reloads
            current, revoked = names[i % 2], names[(i + 1) % 2]
            write(revoked)
            assert auth(ROTATED[revoked]) == "ok"
            write(current)
            for k in range(1 + i % 3):  # /healthz reloads without authenticating
                with service.view():
                    pass
                write(current, name=f"Outlet msk-001 (probe {k})")
            write(current, name="Outlet msk-001 (rotated)")
            answers = auth(ROTATED[revoked]), auth(ROTATED[current])
            assert answers == ("invalid_token", "ok"), f"round {i}: {answers}"
    finally:
        service.close()


class RoundRobin(requests.Session):
    """A load balancer in front of two API processes: each request goes to the next one."""

    def __init__(self, bases: list[str], cap: int) -> None:
        super().__init__()
        self.bases, self.cap, self.calls = bases, cap, 0

    def get(self, url, **kwargs):
        self.calls += 1
        if self.calls > self.cap:
            raise RuntimeError(f"still paging after {self.cap} requests")
        base = self.bases[self.calls % len(self.bases)]
        return super().get(base + url[len(self.bases[0]) :], **kwargs)


def test_the_client_stops_when_api_processes_disagree_on_the_cursor_secret(platform, hub, api):
    """A rolling change of OUTLET_CURSOR_SECRET behind a load balancer: each process refuses
    the other's cursors. Dropping a refused cursor once is the recovery; a second refusal in
    the same drain is an error, not the first page downloaded for ever."""
    hub.write_registry([hub.entry("msk-001")])
    platform.run("full_resync")
    other, stop = serve(dataclasses.replace(hub.settings(), cursor_secret=b"rotated-secret"))
    try:
        client = api.client("msk-001")
        client._http = RoundRobin([api.url, other.url], cap=200)
        with pytest.raises(OutletApiError) as refused:
            for _ in client.drain("products", None, limit=5):
                pass
        assert refused.value.code == "invalid_cursor" and client._http.calls < 10
    finally:
        stop()


def test_a_token_shared_with_a_refused_entry_is_refused_for_both(platform, hub, api):
    """An entry copied while onboarding keeps the other outlet's token variable and has a
    mistake of its own: the token must not read the other outlet's feed meanwhile."""
    platform.run("full_resync")
    hub.write_registry(
        [
            hub.entry("msk-001", token_env=token_env("spb-002"), silent_after_minutes=0),
            hub.entry("spb-002"),
        ]
    )
    shared = {"Authorization": f"Bearer {TOKENS['spb-002']}"}
    params = {"entity": "products", "limit": 1}
    spb = httpx.get(f"{api.url}/v1/outlets/spb-002/changes", params=params, headers=shared)
    assert spb.status_code == 404 and "shares its token with msk-001" in spb.text
    msk = httpx.get(f"{api.url}/v1/outlets/msk-001/changes", params=params, headers=shared)
    assert msk.status_code in (403, 404)


def test_the_published_schema_lists_what_the_api_answers(hub, api):
    """Outlets generate their clients from /openapi.json: every status the API answers must be
    there with the body it has, none it never sends, and what it will not go without (the
    feed, the token) must be required."""
    hub.write_registry([hub.entry("msk-001"), hub.entry("spb-002")])
    url = f"{api.url}/v1/outlets/msk-001/changes"
    msk = {"Authorization": f"Bearer {TOKENS['msk-001']}"}
    spb = {"Authorization": f"Bearer {TOKENS['spb-002']}"}
    answered = {
        error(httpx.get(url.replace("msk-001", outlet), params=params, headers=headers))[0]
        for outlet, params, headers in [
            ("msk-001", {"entity": "products"}, {}),
            ("msk-001", {"entity": "products"}, spb),
            ("ghost-999", {"entity": "products"}, msk),
            ("msk-001", {}, msk),
            ("msk-001", {"entity": "products"}, msk),  # no snapshot yet
        ]
    }
    assert answered == {400, 401, 403, 404, 503}
    schema = httpx.get(f"{api.url}/openapi.json").json()
    operation = schema["paths"]["/v1/outlets/{outlet_id}/changes"]["get"]
    bodies = {
        status: response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        for status, response in operation["responses"].items()
    }
    assert bodies == {"200": "Changes"} | {str(s): "ErrorBody" for s in answered}
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["entity"]["required"] is True
    assert parameters["entity"]["schema"]["enum"] == list(FEEDS)
    assert parameters["limit"]["schema"]["type"] == "integer"
    assert set(parameters) == {"outlet_id", "entity", "cursor", "limit"}
    health = schema["paths"]["/healthz"]["get"]["responses"]
    assert set(health) == {"200", "503"}  # a snapshot that breaks while read
    [requirement] = operation["security"]
    [scheme] = [schema["components"]["securitySchemes"][name] for name in requirement]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def assert_msk_unavailable(api, mentioning: str = "") -> None:
    """msk-001, with its valid token, is told "unavailable, retry": 503 `store_unavailable`
    with Retry-After and a message naming what cannot be read."""
    response = httpx.get(
        f"{api.url}/v1/outlets/msk-001/changes",
        params={"entity": "products"},
        headers={"Authorization": f"Bearer {TOKENS['msk-001']}"},
    )
    assert error(response) == (503, "store_unavailable")
    assert mentioning in response.json()["error"]["message"]
    assert int(response.headers["Retry-After"]) > 0


def test_an_unreadable_state_file_is_a_503_until_it_can_be_read(platform, hub):
    """The API starts even when its state file cannot be read (a bad restore, a wrong file),
    answers 503 naming it, and serves again, without a restart, once the file is fixed."""
    hub.write_registry([hub.entry("msk-001")])
    platform.run("full_resync")
    state = Path(hub.resource.state_path)
    state.write_bytes(b"not a database" * 100)
    api, stop = serve(hub.settings())
    try:
        assert_msk_unavailable(api, "outlet state")
        state.unlink()  # the operator moves the broken file away
        products, _ = drain(api.client("msk-001"), "products", limit=1000)
        assert len(products) == len(platform.catalog.products())
    finally:
        stop()


def test_an_api_started_while_outlets_yaml_is_broken_is_a_503_not_a_wrong_token(platform, hub):
    """The API restarts during a bad edit of outlets.yaml: no version of the file is in force,
    so no token can be checked. Every outlet must hear "unavailable, retry", not 401
    `invalid_token`, which a connector takes for its own wrong credentials; and it is served
    again, without a restart, once the file is fixed."""
    hub.write_registry([hub.entry("msk-001")])
    platform.run("full_resync")
    hub.config.write_text("outlets:\n  - {id: msk-001, name: [unclosed\n", encoding="utf-8")
    api, stop = serve(hub.settings())
    try:
        assert_msk_unavailable(api, "outlet registry")
        hub.write_registry([hub.entry("msk-001")])
        products, _ = drain(api.client("msk-001"), "products", limit=1000)
        assert len(products) == len(platform.catalog.products())
    finally:
        stop()


def test_a_snapshot_directory_that_cannot_be_searched_is_a_503(platform, hub, tmp_path):
    """`OUTLET_SNAPSHOT_DIR` pointing at a file (a wrong mount, a bad restore), or a directory
    the API's user cannot enter: stat-ing the pointer fails with another error than "no such
    file". The outlet must get the API's 503 with Retry-After, not a bare 500."""
    hub.write_registry([hub.entry("msk-001")])
    platform.run("full_resync")
    not_a_directory = tmp_path / "snapshots-mounted-wrong"
    not_a_directory.write_text("", encoding="utf-8")
    settings = dataclasses.replace(hub.settings(), snapshot_dir=str(not_a_directory))
    api, stop = serve(settings)
    try:
        assert_msk_unavailable(api, "CURRENT pointer")
        assert httpx.get(f"{api.url}/healthz").json()["status"] == "no_snapshot"
    finally:
        stop()
