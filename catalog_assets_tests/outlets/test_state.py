"""The outlet state file on its own: positions, filters, and a file from before filters."""

import sqlite3
from datetime import datetime

from catalog_assets.outlets.feeds import EVERYTHING, scope_key
from catalog_assets.outlets.state import OutletState

NOW = datetime(2026, 1, 1)
OLD_SCHEMA = """CREATE TABLE acks (
    outlet TEXT NOT NULL, entity TEXT NOT NULL, seq INTEGER NOT NULL, acked_at TEXT NOT NULL,
    PRIMARY KEY (outlet, entity));"""


def test_a_file_from_before_filters_is_upgraded_and_its_positions_kept(tmp_path):
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as con:
        con.executescript(OLD_SCHEMA)
        con.execute("INSERT INTO acks VALUES ('o', 'products', 100, 'x')")
    state = OutletState(str(path))
    assert state.begin_request("o", "products", None, NOW, roots=("A",)).after == 100
    # Its first call after the upgrade sends a cursor without a filter, and the answer is
    # lost; the operator edits the filter; the retry must start again, not absorb the edit.
    assert state.begin_request("o", "products", 120, NOW, roots=("A",)).after == 120
    retry = state.begin_request("o", "products", 120, NOW, roots=("B",))
    assert retry.after == 0 and retry.held == ("A",)
    OutletState(str(path))  # opening an upgraded file again changes nothing


def test_a_cursor_from_an_unknown_filter_may_have_held_anything(tmp_path):
    state = OutletState(str(tmp_path / "state.sqlite"))
    position = state.begin_request(
        "o", "products", 50, NOW, sent_scope=scope_key(("Z",)), roots=("B",)
    )
    assert position.after == 0 and position.held == EVERYTHING
    # Under the whole catalog nothing is outside the filter: nothing to delist.
    assert state.begin_request("o", "products", None, NOW, roots=None).held is None


def test_a_position_from_a_numbering_the_store_no_longer_continues_starts_again(tmp_path):
    """Sent or stored, a position minted by a publication the served snapshot's history does
    not hold (the store was restored from an older backup) replays the feed; a known one and
    one from before publications were recorded are kept."""
    state = OutletState(str(tmp_path / "state.sqlite"))
    known = {"p-old", "p-now"}.__contains__
    assert state.begin_request("o", "products", 70, NOW, sent_publication="p-old").after == 70
    kept = state.begin_request("o", "products", None, NOW, known=known)
    assert (kept.after, kept.restarted) == (70, False)
    assert state.begin_request("o", "products", 90, NOW, sent_publication="p-lost").after == 90
    stored = state.begin_request("o", "products", None, NOW, known=known)
    assert (stored.after, stored.restarted) == (0, True)
    assert state.begin_request("o", "products", None, NOW, known=known).after == 0
    sent = state.begin_request("o", "products", 90, NOW, sent_publication="p-lost", known=known)
    assert (sent.after, sent.restarted) == (0, True)
    legacy = state.begin_request("o", "products", 90, NOW, known=known)
    assert (legacy.after, legacy.restarted) == (90, False)
