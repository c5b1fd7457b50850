"""The store's transaction helper against a real DuckDB connection."""

import duckdb
import pytest

from catalog_assets.storage import transaction


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
