"""Real parts for every test: both emulators on 127.0.0.1, a DuckDB file in tmp_path, a
temporary Dagster instance, and the project's own definitions wired to them."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import pytest

from catalog_assets.definitions import build_definitions
from catalog_assets.emulators import Catalog, OneCEmulator, TecDeliveryEmulator, demo_catalog
from catalog_assets.onec.client import OneCCatalogClient
from catalog_assets.storage import CatalogStore
from catalog_assets.tec_delivery.client import TecDeliveryClient
from catalog_assets_tests.faults.ledger import LEDGER


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist: a test worker finished; add its fault-suite counts to the summary."""
    raw = getattr(node, "workeroutput", {}).get("fault_ledger")
    if raw:
        LEDGER.add(raw)


def pytest_terminal_summary(terminalreporter):
    LEDGER.report(terminalreporter)


TOKEN = "tok-7f3a9c1e-SECRET-do-not-leak"
ONEC_PASSWORD = "pw-1c-SECRET-b64e"


@dataclass
class Platform:
    catalog: Catalog
    onec: OneCEmulator
    tec: TecDeliveryEmulator
    store: CatalogStore
    instance: dg.DagsterInstance
    resources: dict

    @property
    def defs(self) -> dg.Definitions:
        return build_definitions(self.resources)

    def run(self, job_name: str, raise_on_error: bool = True, run_config: dict | None = None):
        job = self.defs.resolve_job_def(job_name)
        return job.execute_in_process(
            instance=self.instance, raise_on_error=raise_on_error, run_config=run_config
        )

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        with self.store.connect() as con:
            return con.execute(sql, params or []).fetchall()


def make_resources(onec: OneCEmulator, tec: TecDeliveryEmulator, db_path: str) -> dict:
    return {
        "onec": OneCCatalogClient(
            base_url=onec.url,
            username="integration",
            password=dg.EnvVar("ONEC_PASSWORD"),
            backoff_seconds=0.01,
            max_retries=2,
            timeout_seconds=5,
        ),
        "tec_delivery": TecDeliveryClient(
            url=tec.url,
            token=dg.EnvVar("TEC_DELIVERY_TOKEN"),
            backoff_seconds=0.01,
            max_retries=2,
            timeout_seconds=5,
        ),
        "store": CatalogStore(path=db_path, lock_timeout_seconds=5),
    }


@pytest.fixture
def catalog() -> Catalog:
    return demo_catalog(seed=7)


@pytest.fixture
def platform(catalog, tmp_path, monkeypatch):
    monkeypatch.setenv("TEC_DELIVERY_TOKEN", TOKEN)
    monkeypatch.setenv("ONEC_PASSWORD", ONEC_PASSWORD)
    with (
        OneCEmulator(catalog, username="integration", password=ONEC_PASSWORD).start() as onec,
        TecDeliveryEmulator(token=TOKEN).start() as tec,
        dg.instance_for_test() as instance,
    ):
        db_path = str(tmp_path / "catalog.duckdb")
        resources = make_resources(onec, tec, db_path)
        yield Platform(catalog, onec, tec, resources["store"], instance, resources)


def materializations(result, asset: str) -> dict:
    """The metadata of one asset's materialization in a run, as plain values."""
    for event in result.get_asset_materialization_events():
        if event.asset_key == dg.AssetKey(asset):
            return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")
