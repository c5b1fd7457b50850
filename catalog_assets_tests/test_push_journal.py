"""`apply_delivered` folds the push journal into `tec_delivery_*` a group of batches at a time;
grouping must not change what an item ends up with."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from catalog_assets.assets.tec_delivery import apply_delivered, prune_push_journal
from catalog_assets.storage import CatalogStore

T0 = datetime(2026, 11, 24, 12, 0, 0)


def journal(con, batch_id: str, minute: int, items: dict[str, str], *, ok: bool = True) -> None:
    con.execute(
        """INSERT INTO push_batches (batch_id, run_id, entity, started_at, item_count,
               external_ids, item_hashes, applied, ok)
           VALUES (?, 'run', 'products', ?, ?, ?, ?, NOT ?, ?)""",
        [
            batch_id,
            T0 + timedelta(minutes=minute),
            len(items),
            list(items),
            list(items.values()),
            ok,
            ok,
        ],
    )


@pytest.mark.parametrize("group", [1, 2, 100])
def test_the_latest_delivery_of_an_item_wins_whatever_the_grouping(tmp_path, group):
    store = CatalogStore(path=str(tmp_path / "catalog.duckdb"))
    with store.connect() as con:
        # Inserted out of time order, with ids that sort against time (real ones are random
        # uuids): grouping must follow started_at, not insertion or batch_id.
        journal(con, "a-third", 3, {"p1": "removed:h1c"})
        journal(con, "z-first", 1, {"p1": "h1a", "p2": "h2a"})
        journal(con, "m-second", 2, {"p1": "h1b", "p3": "h3b"})
        journal(con, "failed", 4, {"p2": "h2-never-accepted"}, ok=False)

        applied = apply_delivered(con, "products", group=group)

        rows = con.execute(
            "SELECT external_id, pushed_hash, enabled, last_batch_id, pushed_at"
            " FROM tec_delivery_products ORDER BY external_id"
        ).fetchall()
        assert rows == [
            ("p1", "removed:h1c", False, "a-third", T0 + timedelta(minutes=3)),
            ("p2", "h2a", True, "z-first", T0 + timedelta(minutes=1)),
            ("p3", "h3b", True, "m-second", T0 + timedelta(minutes=2)),
        ]
        # Every item folded in at least once (an item in two groups counts twice).
        assert applied >= 3
        pending = con.execute("SELECT count(*) FROM push_batches WHERE NOT applied").fetchone()
        assert pending == (0,)
        # Nothing left: a second call is a no-op.
        assert apply_delivered(con, "products", group=group) == 0


def test_pruning_keeps_what_is_recent_unapplied_or_another_entitys(tmp_path):
    store = CatalogStore(path=str(tmp_path / "catalog.duckdb"))
    with store.connect() as con:
        journal(con, "old-applied", -60 * 24 * 30, {"p1": "h1"})
        journal(con, "old-unapplied", -60 * 24 * 30, {"p2": "h2"})
        journal(con, "recent", 0, {"p3": "h3"})
        journal(con, "old-category", -60 * 24 * 30, {"c1": "hc"})
        con.execute(
            "UPDATE push_batches SET applied = (batch_id <> 'old-unapplied'),"
            " entity = CASE WHEN batch_id = 'old-category' THEN 'categories' ELSE entity END"
        )

        pruned = prune_push_journal(con, "products", started_before=T0 - timedelta(days=14))

        assert pruned == 1
        left = con.execute("SELECT batch_id FROM push_batches ORDER BY batch_id").fetchall()
        assert left == [("old-category",), ("old-unapplied",), ("recent",)]


def test_pruning_keeps_a_batch_whose_notification_is_still_awaited(tmp_path):
    store = CatalogStore(path=str(tmp_path / "catalog.duckdb"))
    month_ago = -60 * 24 * 30
    with store.connect() as con:
        journal(con, "awaited", month_ago, {"p1": "h1"})
        journal(con, "notified", month_ago, {"p2": "h2"})
        journal(con, "superseded", month_ago - 60, {"p3": "h3-old"})
        journal(con, "current", month_ago, {"p3": "h3"})
        apply_delivered(con, "products")
        # Tec.Delivery has reported on p2's and p3's current batches, not yet on p1's.
        con.execute(
            "UPDATE tec_delivery_products SET processed_batch_id = last_batch_id,"
            " processing_status = 'done' WHERE external_id IN ('p2', 'p3')"
        )

        pruned = prune_push_journal(con, "products", started_before=T0 - timedelta(days=14))

        assert pruned == 3
        assert con.execute("SELECT batch_id FROM push_batches").fetchall() == [("awaited",)]
