"""Shared parts of the fault-injection suite.

Every fault test runs against the real emulators, a real DuckDB file and a real Dagster
instance (the parent conftest's `platform`), and is wrapped in a leak guard: when it ends, every
log line, Dagster event, asset metadata value, DuckDB table, spool row, alert and exception it
produced is searched for the Tec.Delivery token, the 1C password and the webhook secret.

The ledger counts what the suite did (faults injected, bad inputs tried, items checked, items
lost) and prints it at the end of the session, so the claim "nothing lost" comes with its
denominator.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from catalog_assets_tests.conftest import ONEC_PASSWORD, TOKEN, Platform
from catalog_assets_tests.faults.ledger import LEDGER, Ledger

WEBHOOK_SECRET = "whs-5d1e-SECRET-hook-0a9b"
SECRETS = {
    "TEC_DELIVERY_TOKEN": TOKEN,
    "ONEC_PASSWORD": ONEC_PASSWORD,
    "WEBHOOK_SECRET": WEBHOOK_SECRET,
}


def pytest_sessionfinish(session):
    """A test worker (pytest-xdist) hands its counts to the controller, which prints the sum."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output["fault_ledger"] = LEDGER.dumps()


@pytest.fixture
def ledger() -> Ledger:
    return LEDGER


def duckdb_text(path: str) -> str:
    import duckdb

    if not Path(path).exists():
        return ""
    chunks = []
    con = duckdb.connect(path, read_only=True)
    try:
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            chunks.append(str(con.execute(f'SELECT * FROM "{table}"').fetchall()))
    finally:
        con.close()
    return "\n".join(chunks)


def instance_text(instance: dg.DagsterInstance) -> str:
    """Every event of every run (logs, failures with their errors, materialization and check
    metadata), plus sensor ticks: all of it is what an operator or a UI shows."""
    chunks = []
    for record in instance.get_run_records():
        chunks.append(repr(record.dagster_run))
        for entry in instance.all_logs(record.dagster_run.run_id):
            chunks.append(repr(entry))
    return "\n".join(chunks)


def sqlite_text(path: str) -> str:
    if not Path(path).exists():
        return ""
    con = sqlite3.connect(path)
    try:
        return str(con.execute("SELECT * FROM notifications").fetchall())
    finally:
        con.close()


class LeakGuard:
    """Collects every place a secret could leak to; checked when the test ends."""

    def __init__(self) -> None:
        self.duckdb_paths: list[str] = []
        self.instances: list[dg.DagsterInstance] = []
        self.spools: list[str] = []
        self.texts: list[str] = []

    def watch(self, platform: Platform) -> None:
        self.duckdb_paths.append(platform.store.path)
        self.instances.append(platform.instance)

    def exception(self, exc: BaseException) -> None:
        self.texts.append(f"{type(exc).__name__}: {exc!s} {exc!r}")

    def text(self, text: str) -> None:
        self.texts.append(text)

    def haystacks(self, captured: str, logged: str) -> dict[str, str]:
        places = {"stdout+stderr": captured, "python logging": logged}
        for n, path in enumerate(self.duckdb_paths):
            places[f"duckdb[{n}]"] = duckdb_text(path)
        for n, instance in enumerate(self.instances):
            places[f"dagster events[{n}]"] = instance_text(instance)
        for n, path in enumerate(self.spools):
            places[f"spool[{n}]"] = sqlite_text(path)
        places["exceptions, alerts, child output"] = "\n".join(self.texts)
        return places


@pytest.fixture
def leak_guard(capfd, caplog):
    caplog.set_level(logging.INFO)
    guard = LeakGuard()
    yield guard
    captured = capfd.readouterr()
    places = guard.haystacks(captured.out + captured.err, caplog.text)
    leaks = [
        f"{name} found in {place}"
        for place, haystack in places.items()
        for name, secret in SECRETS.items()
        if secret in haystack
    ]
    assert not leaks, leaks


@pytest.fixture
def platform(platform, leak_guard):  # noqa: F811 - wraps the parent conftest's platform
    leak_guard.watch(platform)
    return platform


def delivered(platform: Platform, kind: str = "product") -> set[str]:
    items = platform.tec.products if kind == "product" else platform.tec.categories
    return {key for key, item in items.items() if item.get("enable", True)}


def live_valid_ids(platform: Platform, kind: str = "product") -> set[str]:
    """What must be at Tec.Delivery: every record 1C holds now that is a valid, placeable item."""
    records = platform.catalog.products() if kind == "product" else platform.catalog.categories()
    return {r["id"] for r in records if isinstance(r.get("id"), str)}


def pushes(platform: Platform, since: int = 0) -> list[str]:
    """Ids in accepted put-products requests since request number `since`, with repeats."""
    return [
        i for r in platform.tec.requests[since:] if r["status"] == 200 for i in r["external_ids"]
    ]
