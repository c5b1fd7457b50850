"""The data rules on their own: a DuckDB file, no Dagster run."""

import dagster as dg
import duckdb

from catalog_assets.checks import RULES, check_specs, evaluate_checks
from catalog_assets.storage import CatalogStore


def test_every_rule_passes_on_an_empty_store_and_matches_its_spec(tmp_path):
    with CatalogStore(path=str(tmp_path / "c.duckdb")).connect() as con:
        for asset in RULES:
            results = evaluate_checks(con, asset)
            assert [r.check_name for r in results] == [s.name for s in check_specs(asset)]
            assert all(r.passed for r in results), asset


def test_a_quarantined_product_fails_only_its_rule(tmp_path):
    with CatalogStore(path=str(tmp_path / "c.duckdb")).connect() as con:
        con.execute(
            "INSERT INTO quarantine VALUES ('products', 'p-1', 'p-1', 'product has no name',"
            " '{}', now()::TIMESTAMP, now()::TIMESTAMP, 'run-1', NULL)"
        )
        results = {r.check_name: r for r in evaluate_checks(con, "onec_products")}
    quarantined = results["no_quarantined_records"]
    assert not quarantined.passed and quarantined.metadata["quarantined"].value == 1
    assert "1 products from 1C are quarantined" == quarantined.description
    assert results["removals_within_guard"].passed


def test_a_rule_that_cannot_run_fails_as_a_check_not_as_an_error():
    """The asset's data is committed by the time its rules run; a DuckDB error in one of them
    must show as that check failing, not lose the materialization."""
    with duckdb.connect(":memory:") as con:  # none of the tables exist
        results = evaluate_checks(con, "tec_delivery_products")
    assert [r.check_name for r in results] == ["no_rejected_items", "no_held_back_items"]
    assert all(not r.passed and "could not be evaluated" in r.description for r in results)
    assert all(r.severity == dg.AssetCheckSeverity.ERROR for r in results)
