"""The published snapshot against the staged catalog it was copied from (real DuckDB files)."""

from datetime import datetime

import duckdb

from catalog_assets.outlets import snapshot
from catalog_assets.outlets.feeds import FEEDS


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
