"""The outlet hub on the asset graph: `outlet_feed_snapshot` and `outlet_deliveries`.

`outlet_feed_snapshot` runs in every sync (after products and the category tree) and publishes
the immutable snapshot the API serves from. `outlet_deliveries` has one dynamic partition per
outlet in outlets.yaml; `outlet_monitor_sensor` keeps the partitions in line with the file and
reports each outlet's materialization and `outlet_is_live` check every minute without a run.
Materializing a partition from the UI does the same assessment on demand.
"""

from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime

import dagster as dg

from catalog_assets.assets.onec import SYNC_POOL, category_tree, onec_products
from catalog_assets.outlets.health import OutletHealth, gather
from catalog_assets.outlets.registry import RegistryLoader
from catalog_assets.outlets.resource import OutletHub
from catalog_assets.outlets.snapshot import SnapshotReader, SnapshotUnavailable, publish_snapshot
from catalog_assets.outlets.state import OutletState, utc_now
from catalog_assets.storage import CatalogStore

OUTLET_PARTITIONS = dg.DynamicPartitionsDefinition(name="outlets")


@dg.asset(
    group_name="outlets",
    kinds={"duckdb"},
    pool=SYNC_POOL,
    deps=[onec_products, category_tree],
    description="The outlet feeds (categories, products, prices, stock) copied into a new "
    "read-only DuckDB file and published atomically: the API serves from it while syncs write. "
    "A run that changed little copies the previous snapshot and replaces the changed rows.",
)
def outlet_feed_snapshot(
    context: dg.AssetExecutionContext, store: CatalogStore, outlet_hub: OutletHub
) -> dg.MaterializeResult:
    with store.connect() as con:
        published = publish_snapshot(
            con,
            outlet_hub.snapshot_dir,
            published_at=utc_now(),
            run_id=context.run_id,
            keep_minutes=outlet_hub.snapshot_keep_minutes,
            log=context.log,
        )
    how = (
        f"{published.replaced} changed rows replaced in a copy of the previous snapshot"
        if published.built == "incremental"
        else f"full copy: {published.why_full}"
    )
    context.log.info(
        f"published {published.path} ({how}): max sequence {max(published.max_seq.values())}, "
        f"{published.deleted_old} old snapshots removed"
    )
    return dg.MaterializeResult(
        metadata={
            "snapshot": published.path,
            "max_seq": max(published.max_seq.values()),
            "max_seq_by_feed": dg.MetadataValue.json(published.max_seq),
            "items_by_feed": dg.MetadataValue.json(published.items),
            "categories": published.categories,
            "old_snapshots_removed": published.deleted_old,
            "built": published.built,
            "why_full_copy": published.why_full or "(incremental)",
            "rows_replaced": published.replaced,
            # Non-zero once after a store restore or rebuild: every outlet replays its feeds.
            "rows_renumbered": published.renumbered,
        }
    )


# One loader per outlets.yaml for the life of the process (the code server that evaluates the
# monitor sensor, a run): it keeps the last readable version, so a bad edit leaves every
# outlet monitored instead of none.
_loaders: dict[str, RegistryLoader] = {}


def registry_loader(path: str) -> RegistryLoader:
    loader = _loaders.get(path)
    if loader is None:
        loader = _loaders.setdefault(path, RegistryLoader(path, require_tokens=False))
    return loader


@dataclass
class OutletsAssessment:
    health: dict[str, OutletHealth]
    general: list[str]  # registry problems that belong to no single outlet
    # outlets.yaml cannot be read now: `health` is the last readable version's outlets, or
    # none in a process that never read it; nothing may be judged removed from it.
    unreadable: str | None = None


def assess_outlets(
    hub: OutletHub, registered_seed: dict[str, datetime] | None = None
) -> OutletsAssessment:
    """Every outlet's health from the registry, the state file and the current snapshot, plus
    the registry problems that belong to no single outlet. Shared by the asset, the check and
    the sensor so the three never disagree."""
    reader = SnapshotReader(hub.snapshot_dir)
    state = OutletState(hub.state_path)
    general: list[str] = []
    try:
        with ExitStack() as stack:
            try:
                snapshot = stack.enter_context(reader.acquire())
                categories = (snapshot.name, snapshot.valid_categories)
                unplaced = snapshot.unplaced_categories
            except SnapshotUnavailable as exc:
                # Still judge silence: an outlet that stopped calling is news even before the
                # first snapshot, and an unknown category cannot be judged without one.
                snapshot, categories, unplaced = None, (None, None), None
                general.append(str(exc))
            registry = registry_loader(hub.config_path).get(categories, unplaced)
            now = utc_now()
            everyone = {**registry.invalid, **registry.outlets}
            registered_at = state.registered(
                everyone, now, seed=registered_seed, forget_others=not registry.error
            )
            health = gather(
                registry,
                state.outlets(),
                snapshot,
                now,
                registered_at,
                state.problems(),
                max_lag_items=hub.max_lag_items,
                max_lag_minutes=hub.max_lag_minutes,
            )
    finally:
        state.close()
        reader.close()
    if registry.error:
        general.append(registry.error)
    general.extend(v for k, v in registry.problems.items() if k not in health)
    return OutletsAssessment(health, general, registry.error)


@dg.asset(
    group_name="outlets",
    partitions_def=OUTLET_PARTITIONS,
    deps=[outlet_feed_snapshot],
    description="One partition per outlet in outlets.yaml: last contact, acknowledged cursor "
    "per feed, lag in items and in minutes. Reported every minute by outlet_monitor_sensor.",
)
def outlet_deliveries(
    context: dg.AssetExecutionContext, outlet_hub: OutletHub
) -> dg.MaterializeResult:
    assessed = assess_outlets(outlet_hub)
    outlet = assessed.health.get(context.partition_key)
    if outlet is None:
        raise dg.Failure(
            f"outlet {context.partition_key!r} is not in {outlet_hub.config_path}"
            if assessed.unreadable is None
            else f"{outlet_hub.config_path} cannot be read: {assessed.unreadable}",
            metadata={"registry_problems": "\n".join(assessed.general) or "(none)"},
        )
    return dg.MaterializeResult(metadata=outlet.metadata())


@dg.asset_check(
    asset=outlet_deliveries,
    name="outlet_is_live",
    partitions_def=OUTLET_PARTITIONS,
    description="The outlet called within its silent_after_minutes and is not too far behind.",
    # outlet_monitor_sensor alerts on this verdict itself (one message per incident, naming the
    # outlet), so catalog_alerts does not send a second one for the same outlet.
    metadata={"catalog/alerts": "self"},
)
def outlet_is_live(
    context: dg.AssetCheckExecutionContext, outlet_hub: OutletHub
) -> dg.AssetCheckResult:
    assessed = assess_outlets(outlet_hub)
    outlet = assessed.health.get(context.partition_key)
    if outlet is None:
        return dg.AssetCheckResult(
            passed=False,
            description=f"outlet {context.partition_key!r} is no longer in outlets.yaml"
            if assessed.unreadable is None
            else f"outlets.yaml cannot be read: {assessed.unreadable}",
        )
    return dg.AssetCheckResult(
        passed=outlet.healthy, description=outlet.problem, metadata=outlet.metadata()
    )


outlet_health_job = dg.define_asset_job(
    "outlet_health_job",
    selection=dg.AssetSelection.assets(outlet_deliveries),
    partitions_def=OUTLET_PARTITIONS,
    description="One outlet's delivery status and outlet_is_live check; started by "
    "outlet_monitor_sensor when that outlet's verdict changes.",
)
