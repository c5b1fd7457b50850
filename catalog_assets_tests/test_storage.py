"""The store's transaction helper and staging, against a real DuckDB file."""

from datetime import datetime

import duckdb
import pytest

from catalog_assets.mapping import Rejection, validate_record
from catalog_assets.storage import SCHEMA, stage_page, transaction


def test_a_failed_rollback_does_not_hide_the_error_that_caused_it(tmp_path):
    """The run log must name what went wrong in the body, not the ROLLBACK that could not
    follow it (a connection already gone answers every statement with its own error)."""
    con = duckdb.connect(str(tmp_path / "catalog.duckdb"))
    with pytest.raises(ValueError, match="the body's own failure") as raised:
        with transaction(con):
            con.execute("CREATE TABLE t (x INTEGER)")
            con.close()  # the connection breaks under the body
            raise ValueError("the body's own failure")
    notes = getattr(raised.value, "__notes__", [])
    assert any("ROLLBACK failed" in note and "closed" in note for note in notes), notes


def _product(**changes):
    record = {
        "id": "p-1",
        "parent": "0",
        "type": "product",
        "name": "Рис",
        "price": 145,
        "stock": 16,
        "modified_at": "2026-02-13T13:24:04",
        **changes,
    }
    return validate_record(record, "product")


def _row(con):
    return con.execute(
        "SELECT staged_at, seen_at, change_seq, price_seq, removed_at, record"
        " FROM onec_products WHERE id = 'p-1'"
    ).fetchone()


def test_restaging_writes_only_what_changed_and_marks_the_rest_seen(tmp_path):
    """Unchanged records are only marked seen (a full resync finds removals by `seen_at`);
    their change numbers stay, so outlets are not sent them again. A record 1C served badly
    and then served as it was before is released from quarantine although nothing changed."""
    con = duckdb.connect(str(tmp_path / "catalog.duckdb"))
    con.execute(SCHEMA)
    first, second, third, fourth = (datetime(2026, 3, day) for day in (1, 2, 3, 4))
    assert stage_page(con, "products", [_product()], [], seen_at=first, run_id="r1").changed == 1
    staged = _row(con)

    broken = _product(price="сто")
    assert isinstance(broken, Rejection)
    stage_page(con, "products", [], [broken], seen_at=second, run_id="r2")
    assert con.execute("SELECT count(*) FROM quarantine WHERE resolved_at IS NULL").fetchone()[0]

    counts = stage_page(con, "products", [_product()], [], seen_at=third, run_id="r3")
    assert counts.changed == 0
    assert _row(con) == (staged[0], third, *staged[2:])
    assert con.execute("SELECT resolved_at FROM quarantine").fetchall() == [(third,)]

    # A removed record that comes back unchanged is a change: outlets dropped it.
    con.execute("UPDATE onec_products SET removed_at = $t", {"t": third})
    counts = stage_page(con, "products", [_product()], [], seen_at=fourth, run_id="r4")
    assert counts.changed == 1
    back = _row(con)
    assert back[:2] == (fourth, fourth) and back[2] > staged[2] and back[4] is None

    counts = stage_page(con, "products", [_product(price=150)], [], seen_at=fourth, run_id="r5")
    assert counts.changed == 1
    assert _row(con)[3] > back[3] and '"price":150' in _row(con)[5]
