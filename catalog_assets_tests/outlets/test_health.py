"""Silence and lag arithmetic (pure), and the monitor's memory."""

from datetime import datetime, timedelta

from catalog_assets.outlets.health import FeedLag, assess, minutes_between
from catalog_assets.outlets.monitor import load_cursor
from catalog_assets.outlets.registry import Outlet
from catalog_assets.outlets.state import OutletRecord

NOW = datetime(2026, 3, 1, 12, 0, 0)
OUTLET = Outlet("msk-001", "Москва", "T", None, 15)


def test_a_recent_caller_with_no_backlog_is_healthy():
    record = OutletRecord(NOW - timedelta(minutes=3), 10, {"products": 50})
    health = assess(OUTLET, record, {"products": FeedLag(50, 0, None)}, NOW, NOW)
    assert health.healthy and health.problem is None
    assert health.silent_minutes == 3 and health.lag_items == 0 and health.lag_minutes == 0


def test_silence_counts_from_last_contact_or_from_registration():
    stale = OutletRecord(NOW - timedelta(minutes=16), 1, {})
    assert "silent for 16 min" in assess(OUTLET, stale, {}, NOW, NOW).problem
    fresh = assess(OUTLET, None, {}, NOW, registered_at=NOW - timedelta(minutes=5))
    assert fresh.healthy
    never = assess(OUTLET, None, {}, NOW, registered_at=NOW - timedelta(minutes=20))
    assert "never contacted" in never.problem


def test_lag_in_items_and_time_against_thresholds():
    record = OutletRecord(NOW, 1, {"products": 10, "prices": 7})
    feeds = {
        "products": FeedLag(10, 40, NOW - timedelta(minutes=90)),
        "prices": FeedLag(7, 5, NOW - timedelta(minutes=10)),
    }
    health = assess(OUTLET, record, feeds, NOW, NOW, max_lag_items=30, max_lag_minutes=60)
    assert health.lag_items == 45 and health.lag_minutes == 90
    assert "45 items behind (allowed 30)" in health.problem
    assert "waits 90 min (allowed 60)" in health.problem
    assert health.metadata()["acked_cursor"] == {"prices": 7, "products": 10}


def test_a_registry_problem_fails_the_outlet():
    health = assess(OUTLET, OutletRecord(NOW, 1, {}), {}, NOW, NOW, problem="unknown categories")
    assert not health.healthy and health.problem == "unknown categories"


def test_minutes_never_go_negative_and_cursor_garbage_starts_afresh():
    assert minutes_between(NOW + timedelta(minutes=1), NOW) == 0
    assert load_cursor("not json") == {"open": {}, "seen": {}, "reported": {}, "verdicts": {}}
    assert load_cursor('{"open": {"outlet:a": "x"}}')["open"] == {"outlet:a": "x"}
