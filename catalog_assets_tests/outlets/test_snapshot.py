"""The published snapshot against the staged catalog it was copied from (real DuckDB files)."""

import json
import os
from datetime import datetime

import duckdb

from catalog_assets.outlets import snapshot
from catalog_assets.outlets.feeds import FEEDS
from catalog_assets_tests.conftest import materializations


def published_feeds(platform, directory) -> dict[str, list[tuple]]:
    with platform.store.connect() as con:
        published = snapshot.publish_snapshot(
            con,
            str(directory),
            published_at=datetime(2026, 11, 24, 3, 0),
            run_id="test",
            keep_minutes=60,
        )
    with duckdb.connect(published.path, read_only=True) as copy:
        return {e: copy.execute(f"SELECT * FROM feed_{e}").fetchall() for e in FEEDS}


def test_a_feed_copied_in_slices_equals_one_copied_whole(platform, tmp_path, monkeypatch):
    """Slices bound the sort's memory; they must not change a row or its order on disk."""
    assert platform.run("full_resync").success
    for product in platform.catalog.products()[:40:3]:  # interleave sequence numbers
        platform.catalog.upsert_product({"id": product["id"], "price": 7})
    assert platform.run("incremental_sync").success

    whole = published_feeds(platform, tmp_path / "whole")
    monkeypatch.setattr(snapshot, "SLICE_ROWS", 7)
    sliced = published_feeds(platform, tmp_path / "sliced")

    assert len(whole["products"]) > 7 * 10
    assert sliced == whole
    for rows in sliced.values():
        seqs = [row[0] for row in rows]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def feeds_of(path: str) -> dict[str, list[tuple]]:
    with duckdb.connect(path, read_only=True) as copy:
        return {e: copy.execute(f"SELECT * FROM feed_{e} ORDER BY seq").fetchall() for e in FEEDS}


def test_a_snapshot_built_on_the_previous_one_holds_what_a_full_copy_would(platform, tmp_path):
    """Every kind of change a sync stages, replaced in a copy of the previous snapshot, must
    leave exactly the rows a full copy of the catalog makes."""
    assert platform.run("full_resync").success
    catalog = platform.catalog
    products = catalog.products()
    leaves = sorted({p["parent"] for p in products})
    moved, removed, renamed, repriced, restocked = products[:5]
    catalog.upsert_product({"id": repriced["id"], "price": 12345})
    catalog.upsert_product({"id": restocked["id"], "stock": 0})
    catalog.upsert_product({"id": renamed["id"], "name": "Новое имя"})
    catalog.upsert_product(
        {"id": moved["id"], "parent": next(c for c in leaves if c != moved["parent"])}
    )
    catalog.upsert_product({**products[6], "id": "new-product-1", "name": "Новый товар"})
    category = catalog.categories()[3]
    catalog.upsert_category(category["id"], category["parent"], "Переименованная категория")
    catalog.remove(removed["id"])

    result = platform.run("full_resync")  # judges the removal too
    assert result.success
    published = materializations(result, "outlet_feed_snapshot")
    assert published["built"] == "incremental", published["why_full_copy"]
    # price, stock, rename, move (products + both narrow feeds), new (three feeds), removal
    # (three feeds), the category
    assert published["rows_replaced"] >= 12
    with platform.store.connect() as con:
        whole = snapshot.publish_snapshot(
            con,
            str(tmp_path / "whole"),
            published_at=datetime(2026, 11, 24),
            run_id="t",
            keep_minutes=60,
        )
    assert whole.built == "full" and whole.why_full == "no previous snapshot"
    assert feeds_of(published["snapshot"]) == feeds_of(whole.path)
    removed_row = [r for r in feeds_of(published["snapshot"])["products"] if r[1] == removed["id"]]
    assert json.loads(removed_row[0][4])["removed"] is True


def test_a_snapshot_is_copied_whole_when_the_previous_one_cannot_be_its_base(platform, monkeypatch):
    assert platform.run("full_resync").success
    assert platform.run("incremental_sync").success  # nothing changed: a copy, nothing replaced
    quiet = materializations(platform.run("incremental_sync"), "outlet_feed_snapshot")
    assert (quiet["built"], quiet["rows_replaced"]) == ("incremental", 0)

    # Many changes (more than the share allowed between full copies) make a full copy.
    with monkeypatch.context() as patched:
        patched.setattr(snapshot, "COMPACT_SHARE", 0.001)
        for product in platform.catalog.products()[:5]:
            platform.catalog.upsert_product({"id": product["id"], "price": 1})
        busy = materializations(platform.run("incremental_sync"), "outlet_feed_snapshot")
        assert busy["built"] == "full" and "since the last full copy" in busy["why_full_copy"]

    # A new catalog store (the file recreated) must not build on the old store's snapshot,
    # whose sequence numbers mean nothing to it.
    for path in (platform.store.path, platform.store.path + ".wal"):
        if os.path.exists(path):
            os.remove(path)
    fresh = materializations(platform.run("full_resync"), "outlet_feed_snapshot")
    assert fresh["built"] == "full" and "another catalog store" in fresh["why_full_copy"]
