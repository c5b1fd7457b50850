"""Data rules on the staging tables, evaluated in the step of the asset they judge.

Each rule is an `AssetCheckSpec` on its asset plus a function that reads DuckDB on that
asset's own connection, right after the materialization it judges; its metadata says how many
rows break the rule and which, so an operator can act from the UI without opening the database.

Why not a step per check: every rule judges what its asset's materialization just wrote
(quarantine, the removal guard, the tree, push outcomes), while a step of its own cost ~40 ms
of Dagster and a DuckDB open per run: eight of them were ~0.45 s, a fifth of an incremental run
with nothing to do. A check still passes or fails on its own, with its own severity and its own
alert; only the step is shared. Two rules also see what other steps change (`no_held_back_items`
reads the category tables, and webhook ingestion folds deliveries into `no_rejected_items`'s
table), and they are re-judged only when their asset is next materialized.

A rule that cannot be evaluated (a DuckDB error) fails as a check, never the asset: what the
asset wrote is committed by then, and its materialization must not be lost to its check.
"""

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import duckdb

from catalog_assets.storage import PUSH_TABLE, STAGING_TABLE, preview

Evaluate = Callable[[duckdb.DuckDBPyConnection], dg.AssetCheckResult]


# Flagged categories 1C still serves. A removed one keeps its row (and flag) for its disable
# and the outlets' removals, but is held back from nothing and has no parent left to fix in 1C:
# counted, it would fail the check for good.
FLAGGED_CATEGORIES = """
SELECT t.id, t.status, t.problem, t.path FROM category_tree t
JOIN onec_categories c ON c.id = t.id AND c.removed_at IS NULL
WHERE t.status <> 'ok'
"""


def _tree_is_whole(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    flagged = con.execute(f"SELECT count(*) FROM ({FLAGGED_CATEGORIES})").fetchone()[0]
    examples = preview(con, f"SELECT id, status, problem FROM ({FLAGGED_CATEGORIES}) ORDER BY id")
    return dg.AssetCheckResult(
        passed=flagged == 0,
        severity=dg.AssetCheckSeverity.WARN,
        description=None
        if not flagged
        else f"{flagged} categories flagged and held back from Tec.Delivery",
        metadata={"flagged": flagged, "examples": dg.MetadataValue.md(examples)},
    )


def _not_quarantined(entity: str) -> Evaluate:
    def evaluate(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
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


def _removals_within_guard(entity: str) -> Evaluate:
    def evaluate(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
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


def _no_rejected_items(entity: str) -> Evaluate:
    def evaluate(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
        # An item 1C deleted before Tec.Delivery ever took it is owed nothing (no disable
        # is sent for it): its old refusal would fail this check for good, and keep its
        # incident open over every later rejection. Only refused items are joined: joined
        # over every item, the check could not be evaluated (out of DuckDB's memory) at the
        # end of a full sync's push of 1,000,000 products.
        owed = f"""FROM (SELECT * FROM {PUSH_TABLE[entity]}
                         WHERE dead_lettered_at IS NOT NULL OR last_error IS NOT NULL) d
                   LEFT JOIN {STAGING_TABLE[entity]} s ON s.id = d.external_id
                   WHERE NOT (s.removed_at IS NOT NULL AND d.pushed_hash IS NULL)"""
        dead, failing = con.execute(
            f"""SELECT count(*) FILTER (WHERE d.dead_lettered_at IS NOT NULL),
                       count(*) FILTER (WHERE d.last_error IS NOT NULL AND d.dead_lettered_at IS NULL)
                {owed}"""
        ).fetchone()
        examples = preview(
            con,
            f"SELECT d.external_id, d.attempts, d.last_error {owed} AND d.last_error IS NOT NULL "
            "ORDER BY d.last_attempt_at DESC",
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


def _no_held_back_products(con: duckdb.DuckDBPyConnection) -> dg.AssetCheckResult:
    """Held-back products are not lost (they go out once their parent is fixed), but without
    this check they would wait invisibly: only a push's `held_back` count mentioned them."""
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


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    evaluate: Evaluate


RULES: dict[str, list[Rule]] = {
    "onec_categories": [
        Rule(
            "no_quarantined_records",
            "Every category 1C served could be staged.",
            _not_quarantined("categories"),
        ),
        Rule(
            "removals_within_guard",
            "A full resync did not find an implausible share of categories gone.",
            _removals_within_guard("categories"),
        ),
    ],
    "onec_products": [
        Rule(
            "no_quarantined_records",
            "Every product 1C served could be staged.",
            _not_quarantined("products"),
        ),
        Rule(
            "removals_within_guard",
            "A full resync did not find an implausible share of products gone.",
            _removals_within_guard("products"),
        ),
    ],
    "category_tree": [
        Rule(
            "category_tree_is_whole",
            "Every category has a known parent chain up to the root.",
            _tree_is_whole,
        ),
    ],
    "tec_delivery_categories": [
        Rule(
            "no_rejected_items",
            "Tec.Delivery accepted every category we sent.",
            _no_rejected_items("categories"),
        ),
    ],
    "tec_delivery_products": [
        Rule(
            "no_rejected_items",
            "Tec.Delivery accepted every product we sent.",
            _no_rejected_items("products"),
        ),
        Rule(
            "no_held_back_items",
            "No product is held back because its parent is unknown, a product, flagged or "
            "undelivered.",
            _no_held_back_products,
        ),
    ],
}


def check_specs(asset: str) -> list[dg.AssetCheckSpec]:
    """The `check_specs` of `asset`'s decorator."""
    return [
        dg.AssetCheckSpec(rule.name, asset=asset, description=rule.description)
        for rule in RULES[asset]
    ]


def evaluate_checks(con: duckdb.DuckDBPyConnection, asset: str) -> list[dg.AssetCheckResult]:
    """Every rule of `asset`, on the connection that just wrote it. (Dagster runs an asset with
    all of its `check_specs`: a plain `@asset` cannot be materialized without them.)"""
    results = []
    for rule in RULES[asset]:
        try:
            found = rule.evaluate(con)
            fields = {
                "passed": found.passed,
                "severity": found.severity,
                "description": found.description,
                "metadata": found.metadata,
            }
        except duckdb.Error as exc:
            fields = {
                "passed": False,
                "severity": dg.AssetCheckSeverity.ERROR,
                "description": f"could not be evaluated: {type(exc).__name__}: {exc}"[:500],
            }
        results.append(dg.AssetCheckResult(check_name=rule.name, **fields))
    return results
