"""The published snapshot against the staged catalog it was copied from (real DuckDB files)."""

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from catalog_assets.outlets import snapshot
from catalog_assets.outlets.feeds import FEEDS
from catalog_assets.storage import CatalogStore
from catalog_assets_tests.conftest import materializations


def published_feeds(platform, tmp_path, name: str) -> dict[str, list[tuple]]:
    """A full copy's feeds in their order on disk."""
    with duckdb.connect(full_copy(platform, tmp_path, name).path, read_only=True) as copy:
        return {e: copy.execute(f"SELECT * FROM feed_{e}").fetchall() for e in FEEDS}


def test_a_feed_copied_in_slices_equals_one_copied_whole(platform, tmp_path, monkeypatch):
    """Slices bound the sort's memory; they must not change a row or its order on disk."""
    assert platform.run("full_resync").success
    for product in platform.catalog.products()[:40:3]:  # interleave sequence numbers
        platform.catalog.upsert_product({"id": product["id"], "price": 7})
    assert platform.run("incremental_sync").success

    whole = published_feeds(platform, tmp_path, "whole")
    monkeypatch.setattr(snapshot, "SLICE_ROWS", 7)
    sliced = published_feeds(platform, tmp_path, "sliced")

    assert len(whole["products"]) > 7 * 10
    assert sliced == whole
    for rows in sliced.values():
        seqs = [row[0] for row in rows]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def feeds_of(path: str) -> dict[str, list[tuple]]:
    with duckdb.connect(path, read_only=True) as copy:
        return {e: copy.execute(f"SELECT * FROM feed_{e} ORDER BY seq").fetchall() for e in FEEDS}


def full_copy(platform, tmp_path, name: str) -> snapshot.PublishedSnapshot:
    """What a full copy of the catalog holds, published from a copy of the store's file so the
    store itself does not record it as its last snapshot."""
    store_copy = tmp_path / f"{name}.duckdb"
    for suffix in ("", ".wal"):
        if os.path.exists(platform.store.path + suffix):
            shutil.copyfile(platform.store.path + suffix, f"{store_copy}{suffix}")
    with CatalogStore(path=str(store_copy)).connect() as con:
        published = snapshot.publish_snapshot(
            con,
            str(tmp_path / name),
            published_at=datetime(2026, 11, 24),
            run_id="t",
            keep_minutes=60,
        )
    assert published.built == "full" and published.why_full == "no previous snapshot"
    return published


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
    whole = full_copy(platform, tmp_path, "whole")
    assert feeds_of(published["snapshot"]) == feeds_of(whole.path)
    removed_row = [r for r in feeds_of(published["snapshot"])["products"] if r[1] == removed["id"]]
    assert json.loads(removed_row[0][4])["removed"] is True

    # On top of that incremental snapshot: the removed product comes back, a row replaced
    # last time changes again, and a category moves under another parent.
    catalog.upsert_product(removed)
    catalog.upsert_product({"id": repriced["id"], "price": 54321})
    category = catalog.categories()[5]
    new_parent = next(
        c["id"] for c in catalog.categories() if c["id"] not in (category["id"], category["parent"])
    )
    catalog.upsert_category(category["id"], new_parent, category["name"])
    again = published_by(platform, "full_resync")
    assert again["built"] == "incremental", again["why_full_copy"]
    whole = full_copy(platform, tmp_path, "whole2")
    assert feeds_of(again["snapshot"]) == feeds_of(whole.path)
    comeback = [r for r in feeds_of(again["snapshot"])["products"] if r[1] == removed["id"]]
    assert "removed" not in json.loads(comeback[0][4])


def published_by(platform, job: str = "incremental_sync") -> dict:
    result = platform.run(job)
    assert result.success
    return materializations(result, "outlet_feed_snapshot")


def reprice(platform, count: int, price: float) -> None:
    for product in platform.catalog.products()[:count]:
        platform.catalog.upsert_product({"id": product["id"], "price": price})


def test_a_quiet_run_copies_the_previous_snapshot_and_replaces_nothing(platform):
    published_by(platform, "full_resync")
    first = published_by(platform)
    quiet = published_by(platform)
    assert (first["built"], quiet["built"], quiet["rows_replaced"]) == ("incremental",) * 2 + (0,)
    assert quiet["snapshot"] != first["snapshot"]
    assert feeds_of(quiet["snapshot"]) == feeds_of(first["snapshot"])


def test_large_changes_make_a_full_copy(platform, monkeypatch):
    published_by(platform, "full_resync")
    with monkeypatch.context() as patched:
        patched.setattr(snapshot, "MAX_REPLACED_ROWS", 3)  # more in one feed: a full copy
        reprice(platform, 5, 1)
        busy = published_by(platform)
    assert busy["built"] == "full" and "rows of one feed changed" in busy["why_full_copy"]
    with monkeypatch.context() as patched:
        patched.setattr(snapshot, "COMPACT_SHARE", 0.001)  # few rows between full copies
        reprice(platform, 5, 2)
        busy = published_by(platform)
    assert busy["built"] == "full" and "since the last full copy" in busy["why_full_copy"]


def test_a_restored_store_does_not_build_on_a_snapshot_from_the_future_it_lost(platform, tmp_path):
    """A backup's rows are numbered by its own history: a snapshot published after the backup
    holds rows (and numbers) the restored store no longer has."""
    published_by(platform, "full_resync")
    backup = tmp_path / "backup.duckdb"
    shutil.copyfile(platform.store.path, backup)
    reprice(platform, 10, 999)
    assert published_by(platform)["built"] == "incremental"

    shutil.copyfile(backup, platform.store.path)
    reprice(platform, 10, 5)  # the same products again, at another price
    restored = published_by(platform)
    assert restored["built"] == "full"
    assert "not the last one this catalog store published" in restored["why_full_copy"]
    whole = full_copy(platform, tmp_path, "whole3")
    assert feeds_of(restored["snapshot"]) == feeds_of(whole.path)


def test_a_recreated_store_makes_a_full_copy(platform):
    published_by(platform, "full_resync")
    for path in (platform.store.path, platform.store.path + ".wal"):
        if os.path.exists(path):
            os.remove(path)
    fresh = published_by(platform, "full_resync")
    assert fresh["built"] == "full"
    assert "not the last one this catalog store published (none)" in fresh["why_full_copy"]


def test_a_base_of_another_format_is_not_used(platform, monkeypatch):
    with monkeypatch.context() as patched:
        patched.setattr(snapshot, "snapshot_format", lambda catalog: "an older format")
        published_by(platform, "full_resync")
    later = published_by(platform)
    assert later["built"] == "full" and "another feed format" in later["why_full_copy"]


def test_an_unreadable_base_or_a_failed_build_on_it_makes_a_full_copy(platform, monkeypatch):
    first = published_by(platform, "full_resync")
    Path(first["snapshot"]).write_bytes(b"not a database")
    unreadable = published_by(platform)
    assert unreadable["built"] == "full" and "cannot be opened" in unreadable["why_full_copy"]

    def broken(*args, **kwargs):
        raise duckdb.IOException("disk full")

    with monkeypatch.context() as patched:
        patched.setattr(snapshot, "_replace_moved", broken)
        reprice(platform, 2, 3)
        fallback = published_by(platform)
    assert fallback["built"] == "full" and "failed (IOException" in fallback["why_full_copy"]
    directory = Path(fallback["snapshot"]).parent
    assert not list(directory.glob("*.building*"))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # a run terminated from the UI while building on the base

    monkeypatch.setattr(snapshot, "_replace_moved", interrupted)
    reprice(platform, 2, 4)
    with platform.store.connect() as con, pytest.raises(KeyboardInterrupt):
        snapshot.publish_snapshot(
            con, str(directory), published_at=datetime(2026, 11, 24), run_id="t", keep_minutes=60
        )
    assert not list(directory.glob("*.building*"))


def test_a_snapshot_carries_the_publications_of_its_store(tmp_path, monkeypatch):
    """Each snapshot knows the publications its store made lately, itself included, so the
    API can tell a cursor from a history the store does not continue; a quiet catalog keeps
    its newest publications past the age limit."""
    monkeypatch.setattr(snapshot, "HISTORY_KEEP_NEWEST", 2)
    directory = tmp_path / "snapshots"
    with CatalogStore(path=str(tmp_path / "catalog.duckdb")).connect() as con:
        names = []
        # The last one after two months without a change.
        for at in (
            datetime(2026, 1, 1),
            datetime(2026, 1, 2),
            datetime(2026, 1, 3),
            datetime(2026, 3, 31),
        ):
            published = snapshot.publish_snapshot(
                con, str(directory), published_at=at, run_id="t", keep_minutes=60
            )
            names.append(snapshot.Snapshot(published.path))
        publications = [s.publication for s in names]
        latest = names[-1]
        assert latest.knows(publications[-1]) and latest.knows(publications[-2])
        assert not latest.knows(publications[0])  # older than 30 days and not among the newest 2
        assert not latest.knows("never-published")
        assert names[1].knows(publications[0]) and not names[1].knows(publications[2])
        for opened in names:
            opened.close()


def test_a_publication_is_on_disk_before_the_next_step_relies_on_it(tmp_path, monkeypatch):
    """A host crash must not leave `CURRENT` empty or naming a file the disk never got: the
    API would answer 503 until the next sync, and the store would renumber every feed. Each
    file is synced before it is renamed into place, and the directory after each rename.
    (What reaches the platter cannot be observed in a test; the calls at the OS boundary can.)"""
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst, **kwargs) -> None:
        events.append(("replace", str(Path(src).resolve()), str(Path(dst).resolve())))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    directory = (tmp_path / "snapshots").resolve()
    with CatalogStore(path=str(tmp_path / "catalog.duckdb")).connect() as con:
        published = snapshot.publish_snapshot(
            con, str(directory), published_at=datetime(2026, 11, 24), run_id="t", keep_minutes=60
        )

    renames = [i for i, event in enumerate(events) if event[0] == "replace"]
    assert [Path(events[i][2]).name for i in renames] == [Path(published.path).name, "CURRENT"]
    for n, i in enumerate(renames):
        _, source, _ = events[i]
        before, after = events[:i], events[i + 1 : (renames[n + 1 :] or [len(events)])[0]]
        assert ("fsync", source) in before, (source, events)
        assert ("fsync", str(directory)) in after, events
    assert (directory / "CURRENT").read_text(encoding="utf-8") == Path(published.path).name
