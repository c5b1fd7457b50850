"""The two ways a sync runs: everything, or only what changed.

Both carry the `catalog/sync` tag, which `dagster.yaml` limits to one run at a time, so a
sensor-driven increment and a manual full resync queue behind each other instead of
interleaving their writes to DuckDB.
"""

import dagster as dg

from catalog_assets.assets.onec import category_tree, onec_categories, onec_products
from catalog_assets.assets.outlets import outlet_feed_snapshot
from catalog_assets.assets.tec_delivery import tec_delivery_categories, tec_delivery_products

SYNC_TAG = "catalog/sync"
# Dagster's job for runs started from the asset graph ("Materialize" in the UI).
UI_JOB = "__ASSET_JOB"
SYNC_ASSETS = [
    onec_categories,
    category_tree,
    onec_products,
    tec_delivery_categories,
    tec_delivery_products,
    # The outlet API's read-only copy: every sync that changes the catalog republishes it.
    outlet_feed_snapshot,
]


def _sync_config(full: bool) -> dict:
    fetch = {"config": {"full": full}}
    push = {"config": {"repush_all": full}}
    return {
        "ops": {
            "onec_categories": fetch,
            "onec_products": fetch,
            "tec_delivery_categories": push,
            "tec_delivery_products": push,
        }
    }


full_resync = dg.define_asset_job(
    "full_resync",
    selection=dg.AssetSelection.assets(*SYNC_ASSETS),
    config=_sync_config(full=True),
    tags={SYNC_TAG: "full"},
    description="Everything from 1970-01-01T00:00:00, every item re-pushed, removals judged.",
)

incremental_sync = dg.define_asset_job(
    "incremental_sync",
    selection=dg.AssetSelection.assets(*SYNC_ASSETS),
    config=_sync_config(full=False),
    tags={SYNC_TAG: "incremental"},
    description="Only what changed in 1C since the cursor, plus whatever is still pending.",
)

nightly_full_resync = dg.ScheduleDefinition(
    name="nightly_full_resync",
    job=full_resync,
    cron_schedule="0 3 * * *",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="The nightly check of the whole catalog (removals); off until an operator turns it on.",
)
