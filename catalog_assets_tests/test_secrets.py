"""Neither the Tec.Delivery token nor the 1C password may reach a log line, an event, asset
metadata, an exception or a DuckDB table — on the happy path or the failure paths."""

import dagster as dg

from catalog_assets.storage import CatalogStore

from .conftest import ONEC_PASSWORD, TOKEN


def everything_in_duckdb(store: CatalogStore) -> str:
    chunks = []
    with store.connect() as con:
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            chunks.append(str(con.execute(f'SELECT * FROM "{table}"').fetchall()))
    return "\n".join(chunks)


def everything_in_events(instance: dg.DagsterInstance) -> str:
    chunks = []
    for record in instance.get_run_records():
        for entry in instance.all_logs(record.dagster_run.run_id):
            chunks.append(repr(entry))
    return "\n".join(chunks)


def test_no_secret_leaks_on_success_or_failure(platform, capfd):
    assert platform.run("full_resync").success
    # A rejected item, a Tec.Delivery that keeps failing, and a 1C that refuses us.
    platform.catalog.upsert_product(
        {"id": "zzz-new", "parent": "0", "type": "product", "name": "Новый", "price": 1}
    )
    platform.tec.reject_ids.add("zzz-new")
    assert not platform.run("incremental_sync", raise_on_error=False).success  # 1 of 1 rejected
    platform.tec.inject(status=401, times=1)
    platform.catalog.upsert_product(
        {"id": "zzz-newer", "parent": "0", "type": "product", "name": "Ещё", "price": 2}
    )
    assert not platform.run("incremental_sync", raise_on_error=False).success
    platform.tec.inject(status=503, times=100)
    platform.catalog.upsert_product(
        {"id": "zzz-newest", "parent": "0", "type": "product", "name": "И ещё", "price": 3}
    )
    failed = platform.run("incremental_sync", raise_on_error=False)
    assert not failed.success
    platform.onec.inject(status=500, times=100)
    assert not platform.run("incremental_sync", raise_on_error=False).success

    errors = [
        repr(e)
        for r in platform.instance.get_run_records()
        for e in platform.instance.all_logs(r.dagster_run.run_id)
        if e.dagster_event and e.dagster_event.is_failure
    ]
    assert errors, "the failure paths above must have produced failure events"
    captured = capfd.readouterr()
    for haystack in (
        everything_in_duckdb(platform.store),
        everything_in_events(platform.instance),
        captured.out,
        captured.err,
        "\n".join(errors),
    ):
        assert TOKEN not in haystack
        assert ONEC_PASSWORD not in haystack
    assert "401" in everything_in_events(
        platform.instance
    )  # the failures were recorded, just not the secrets
