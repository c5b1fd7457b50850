"""Data rules on the staging tables, next to the assets they judge.

Each check reads DuckDB only and says, in its metadata, how many rows break the rule and which,
so an operator can act from the UI without opening the database.
"""

import dagster as dg

from catalog_assets.assets.onec import category_tree, onec_categories, onec_products
from catalog_assets.assets.tec_delivery import tec_delivery_categories, tec_delivery_products
from catalog_assets.storage import PUSH_TABLE, CatalogStore, preview


@dg.asset_check(
    asset=category_tree, description="Every category has a known parent chain up to the root."
)
def category_tree_is_whole(store: CatalogStore) -> dg.AssetCheckResult:
    with store.connect() as con:
        flagged = con.execute("SELECT count(*) FROM category_tree WHERE status <> 'ok'").fetchone()[
            0
        ]
        examples = preview(
            con, "SELECT id, status, problem FROM category_tree WHERE status <> 'ok' ORDER BY id"
        )
    return dg.AssetCheckResult(
        passed=flagged == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=None
        if not flagged
        else f"{flagged} categories flagged and held back from Tec.Delivery",
        metadata={"flagged": flagged, "examples": dg.MetadataValue.md(examples)},
    )


def _quarantine_check(entity: str) -> dg.AssetCheckResult:
    def evaluate(store: CatalogStore) -> dg.AssetCheckResult:
        with store.connect() as con:
            open_count = con.execute(
                "SELECT count(*) FROM quarantine WHERE entity = ? AND resolved_at IS NULL", [entity]
            ).fetchone()[0]
            examples = preview(
                con,
                "SELECT record_id, reason, left(raw, 80) AS raw FROM quarantine "
                "WHERE entity = ? AND resolved_at IS NULL ORDER BY last_seen_at DESC",
                [entity],
            )
        return dg.AssetCheckResult(
            passed=open_count == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            description=None
            if not open_count
            else f"{open_count} {entity} from 1C are quarantined",
            metadata={"quarantined": open_count, "examples": dg.MetadataValue.md(examples)},
        )

    return evaluate


def _removal_guard_check(entity: str):
    def evaluate(store: CatalogStore) -> dg.AssetCheckResult:
        with store.connect() as con:
            row = con.execute(
                "SELECT would_remove, live_total, max_share, blocked, run_id FROM removal_guard WHERE entity = ?",
                [entity],
            ).fetchone()
        if row is None:
            return dg.AssetCheckResult(passed=True, metadata={"would_remove": 0})
        would_remove, live_total, max_share, blocked, run_id = row
        return dg.AssetCheckResult(
            passed=not blocked,
            severity=dg.AssetCheckSeverity.ERROR,
            description=(
                f"{would_remove} of {live_total} {entity} vanished from 1C (> {max_share:.0%}); "
                "nothing was disabled. Confirm with full_resync and confirm_removals: true."
                if blocked
                else None
            ),
            metadata={
                "would_remove": would_remove,
                "live_total": live_total,
                "run_id": run_id or "",
            },
        )

    return evaluate


def _dead_letter_check(entity: str):
    def evaluate(store: CatalogStore) -> dg.AssetCheckResult:
        table = PUSH_TABLE[entity]
        with store.connect() as con:
            dead, failing = con.execute(
                f"""SELECT count(*) FILTER (WHERE dead_lettered_at IS NOT NULL),
                           count(*) FILTER (WHERE last_error IS NOT NULL AND dead_lettered_at IS NULL)
                    FROM {table}"""
            ).fetchone()
            examples = preview(
                con,
                f"SELECT external_id, attempts, last_error FROM {table} WHERE last_error IS NOT NULL "
                "ORDER BY last_attempt_at DESC",
            )
        return dg.AssetCheckResult(
            passed=dead == 0 and failing == 0,
            severity=dg.AssetCheckSeverity.ERROR if dead else dg.AssetCheckSeverity.WARN,
            description=None
            if not (dead or failing)
            else f"{dead} {entity} dead-lettered, {failing} rejected and awaiting retry",
            metadata={
                "dead_lettered": dead,
                "rejected_pending": failing,
                "examples": dg.MetadataValue.md(examples),
            },
        )

    return evaluate


onec_categories_not_quarantined = dg.asset_check(
    asset=onec_categories,
    name="no_quarantined_records",
    description="Every category 1C served could be staged.",
)(_quarantine_check("categories"))
onec_products_not_quarantined = dg.asset_check(
    asset=onec_products,
    name="no_quarantined_records",
    description="Every product 1C served could be staged.",
)(_quarantine_check("products"))
onec_categories_removal_guard = dg.asset_check(
    asset=onec_categories,
    name="removals_within_guard",
    description="A full resync did not find an implausible share of categories gone.",
)(_removal_guard_check("categories"))
onec_products_removal_guard = dg.asset_check(
    asset=onec_products,
    name="removals_within_guard",
    description="A full resync did not find an implausible share of products gone.",
)(_removal_guard_check("products"))
tec_delivery_categories_delivered = dg.asset_check(
    asset=tec_delivery_categories,
    name="no_rejected_items",
    description="Tec.Delivery accepted every category we sent.",
)(_dead_letter_check("categories"))
tec_delivery_products_delivered = dg.asset_check(
    asset=tec_delivery_products,
    name="no_rejected_items",
    description="Tec.Delivery accepted every product we sent.",
)(_dead_letter_check("products"))

HELD_BACK_PRODUCTS = """
SELECT p.id, p.parent,
       CASE WHEN c.id IS NULL AND pp.id IS NOT NULL THEN 'parent is a product'
            WHEN c.id IS NULL THEN 'parent unknown in 1C'
            WHEN t.status <> 'ok' THEN 'parent category flagged: ' || t.status
            ELSE 'parent category not delivered' END AS reason
FROM onec_products p
LEFT JOIN tec_delivery_products d ON d.external_id = p.id
LEFT JOIN tec_delivery_categories dc ON dc.external_id = p.parent
LEFT JOIN onec_categories c ON c.id = p.parent AND c.removed_at IS NULL
LEFT JOIN category_tree t ON t.id = p.parent
LEFT JOIN onec_products pp ON pp.id = p.parent
WHERE p.removed_at IS NULL AND p.parent <> '0'
  AND p.content_hash IS DISTINCT FROM d.pushed_hash
  AND NOT (dc.pushed_hash IS NOT NULL AND dc.enabled)
"""


@dg.asset_check(
    asset=tec_delivery_products,
    name="no_held_back_items",
    description="No product is held back because its parent is unknown, a product, flagged "
    "or undelivered.",
)
def tec_delivery_products_not_held_back(store: CatalogStore) -> dg.AssetCheckResult:
    """Held-back products are not lost (they go out once their parent is fixed), but without
    this check they would wait invisibly: only a push's `held_back` count mentioned them."""
    with store.connect() as con:
        held = con.execute(f"SELECT count(*) FROM ({HELD_BACK_PRODUCTS})").fetchone()[0]
        examples = preview(con, f"{HELD_BACK_PRODUCTS} ORDER BY p.id")
    return dg.AssetCheckResult(
        passed=held == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=None
        if not held
        else f"{held} products held back from Tec.Delivery by their parent",
        metadata={"held_back": held, "examples": dg.MetadataValue.md(examples)},
    )


catalog_checks = [
    category_tree_is_whole,
    onec_categories_not_quarantined,
    onec_products_not_quarantined,
    onec_categories_removal_guard,
    onec_products_removal_guard,
    tec_delivery_categories_delivered,
    tec_delivery_products_delivered,
    tec_delivery_products_not_held_back,
]
