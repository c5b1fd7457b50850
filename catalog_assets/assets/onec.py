"""Fetch from 1C and stage in DuckDB: `onec_categories`, `category_tree`, `onec_products`.

Pages are validated and staged a chunk at a time (`STAGE_CHUNK` records, one set-based
statement and one transaction per chunk) while the next pages are already being fetched, so
memory holds a few chunks whatever the catalog's size, and a crash loses at most the chunk in
hand. The cursor moves only after the whole pass is staged, and only if 1C held still while we
paged.
"""

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg

from catalog_assets.assets.config import FetchConfig
from catalog_assets.checks import FLAGGED_CATEGORIES, check_specs, evaluate_checks
from catalog_assets.mapping import EPOCH, Rejection, StagedRecord, validate_record
from catalog_assets.onec.client import CatalogPage, OneCCatalogClient, PassReport
from catalog_assets.storage import (
    CatalogStore,
    StageCounts,
    apply_removals,
    get_cursor,
    load_rows,
    max_modified_at,
    preview,
    resequence_appeared,
    resequence_moved,
    set_cursor,
    stage_page,
    transaction,
    utcnow,
)
from catalog_assets.tree import build_category_tree, moved_categories

SYNC_POOL = "catalog_store"
# Records per staging transaction: large enough that DuckDB's per-statement cost is spread over
# many rows (one transaction per 100-record page cost more than the HTTP), small enough to keep
# memory flat (~1 MB of records).
STAGE_CHUNK = 1000


def rechunk(pages: Iterable[list[Any]], size: int = STAGE_CHUNK) -> Iterator[list[Any]]:
    """Pages (of any size: walk pages hold a handful of categories) regrouped into chunks of
    at least `size` records, in order; the last chunk takes what is left."""
    chunk: list[Any] = []
    for records in pages:
        chunk.extend(records)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def prefetch(pages: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Fetch the next page(s) while the current one is staged: HTTP and DuckDB overlap.

    Bounded by `depth`, so memory stays at a few pages. An error in the fetching thread is
    re-raised here, in order, after the pages before it.
    """
    slots: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for page in pages:
                if stop.is_set():
                    return
                slots.put(page)
            slots.put(done)
        except BaseException as exc:  # handed to the consumer, not lost in a thread
            slots.put(exc)

    worker = threading.Thread(target=produce, name="onec-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():
            try:
                slots.get_nowait()
            except queue.Empty:
                worker.join(timeout=0.05)


@dataclass(frozen=True)
class UnusablePage:
    """Stands in for a page 1C kept answering with garbage; it is quarantined as a whole."""

    offset: int
    problem: str
    raw: str
    parent: str | None = None  # set for a page of the tree walk

    @property
    def key(self) -> str:
        where = f"parent={self.parent}:" if self.parent is not None else ""
        return f"page@{where}{self.offset}"


def split_page(
    records: list[Any], expected_type: str
) -> tuple[list[StagedRecord], list[Rejection]]:
    good: list[StagedRecord] = []
    bad: list[Rejection] = []
    for record in records:
        if isinstance(record, UnusablePage):
            bad.append(Rejection(record.key, record.problem, record.raw))
            continue
        result = validate_record(record, expected_type)
        (good if isinstance(result, StagedRecord) else bad).append(result)
    return good, bad


def stage_pass(
    con, entity: str, pages: Iterable[list[Any]], *, seen_at, run_id: str | None
) -> StageCounts:
    expected = "category" if entity == "categories" else "product"
    counts = StageCounts()
    # Fetching and validating happen in the prefetch thread, so this one only stages: DuckDB
    # works (without the GIL) on one chunk while Python parses and checks the next.
    validated = (split_page(records, expected) for records in rechunk(pages))
    for good, bad in prefetch(validated):
        counts.add(stage_page(con, entity, good, bad, seen_at=seen_at, run_id=run_id))
    return counts


def finish_pass(
    context: dg.AssetExecutionContext,
    con,
    entity: str,
    config: FetchConfig,
    report: PassReport,
    cursor_before: str | None,
    pass_started,
) -> dict[str, Any]:
    """Move the cursor and judge removals — only over a pass that saw a still catalog.

    If 1C moved while we paged (count changed, ids repeated) an item may have slid past us
    between two offsets. Holding the cursor means the next incremental run asks again from
    the same point, and the skipped item comes with it; removals are not judged either,
    since an item missing from a moving list is not evidence that it is gone.
    """
    metadata: dict[str, Any] = {}
    cursor_after = cursor_before
    if report.consistent:
        newest, future = max_modified_at(con, entity, pass_started)
        if future:
            context.log.warning(
                f"{len(future)} {entity} dated more than a day ahead of now ({', '.join(future[:5])}"
                f"{', …' if len(future) > 5 else ''}): staged, but the cursor does not follow them, "
                "or every edit dated before theirs would go unseen"
            )
            metadata["future_dated"] = dg.MetadataValue.text(", ".join(future[:20]))
        candidates = [c for c in (cursor_before, newest) if c]
        cursor_after = max(candidates) if candidates else None
        with transaction(con):
            if cursor_after and cursor_after != cursor_before:
                set_cursor(con, entity, cursor_after, context.run_id)
            # A clean pass from a held cursor has re-read whatever an unusable page hid; a
            # page of the tree walk only a clean walk re-reads (a full pass).
            walk_pages = "" if config.full else " AND record_key NOT LIKE 'page@parent=%'"
            con.execute(
                "UPDATE quarantine SET resolved_at = ? WHERE entity = ? AND resolved_at IS NULL"
                f" AND record_key LIKE 'page@%'{walk_pages}",
                [utcnow(), entity],
            )
    else:
        context.log.warning(
            f"1C changed while {entity} were paged ({'; '.join(report.anomalies)}): "
            f"cursor held at {cursor_before or EPOCH} so the next run re-reads from there"
        )
        metadata["paging_anomalies"] = dg.MetadataValue.text("\n".join(report.anomalies))
    if config.full and report.consistent:
        decision = apply_removals(
            con,
            entity,
            pass_started=pass_started,
            max_share=config.max_removal_share,
            confirmed=config.confirm_removals,
            run_id=context.run_id,
        )
        metadata["removed"] = decision.applied
        metadata["quarantine_resolved_as_gone"] = decision.quarantine_resolved
        if decision.blocked:
            context.log.error(
                f"Removal guard: {decision.would_remove} of {decision.live_total} {entity} are "
                f"missing from 1C's answer (> {decision.max_share:.0%}); none were disabled. "
                "If this is real, re-run full_resync with confirm_removals: true."
            )
            metadata["removals_blocked"] = decision.would_remove
    metadata["cursor_before"] = cursor_before or "(none)"
    metadata["cursor_after"] = cursor_after or "(none)"
    metadata["pass_consistent"] = report.consistent
    metadata["onec_requests"] = report.requests
    return metadata


@dg.asset(
    group_name="onec",
    kinds={"duckdb"},
    pool=SYNC_POOL,
    check_specs=check_specs("onec_categories"),
    description="1C categories staged in DuckDB: the recursive walk from parent=0 (full) or "
    "the categories changed since the cursor (incremental).",
)
def onec_categories(
    context: dg.AssetExecutionContext,
    config: FetchConfig,
    onec: OneCCatalogClient,
    store: CatalogStore,
) -> dg.MaterializeResult:
    with store.connect() as con:
        cursor_before = get_cursor(con, "categories")
        pass_started = utcnow()
        report = PassReport()
        if config.full:
            # The seed's walk by parent, then one flat listing: the walk cannot reach an
            # orphan or a cycle, and those must be staged to be flagged.
            walked = stage_pass(
                con,
                "categories",
                _records(onec.walk_categories(modified_since=EPOCH, report=report)),
                seen_at=pass_started,
                run_id=context.run_id,
            )
            listed = stage_pass(
                con,
                "categories",
                _records(onec.pages(type="category", modified_since=EPOCH, report=report)),
                seen_at=pass_started,
                run_id=context.run_id,
            )
            counts = StageCounts(
                walked.fetched,
                walked.changed + listed.changed,
                walked.quarantined + listed.quarantined,
            )
            counts.fetched = max(walked.fetched, listed.fetched)
        else:
            since = cursor_before or EPOCH
            counts = stage_pass(
                con,
                "categories",
                _records(onec.pages(type="category", modified_since=since, report=report)),
                seen_at=pass_started,
                run_id=context.run_id,
            )
        metadata = finish_pass(
            context, con, "categories", config, report, cursor_before, pass_started
        )
        total = con.execute(
            "SELECT count(*) FROM onec_categories WHERE removed_at IS NULL"
        ).fetchone()[0]
        metadata.update(
            fetched=counts.fetched,
            changed=counts.changed,
            quarantined=counts.quarantined,
            live_categories=total,
            preview=dg.MetadataValue.md(
                preview(
                    con,
                    "SELECT id, parent, name, modified_at FROM onec_categories ORDER BY staged_at DESC",
                )
            ),
        )
        checks = evaluate_checks(con, "onec_categories")
    context.log.info(
        f"categories: fetched {counts.fetched}, changed {counts.changed}, quarantined {counts.quarantined}"
    )
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


def _records(pages: Iterable[CatalogPage]) -> Iterator[list[Any]]:
    for page in pages:
        if page.problem:
            yield [UnusablePage(page.offset, page.problem, page.raw or "", page.parent)]
        else:
            yield page.records


@dg.asset(
    group_name="onec",
    kinds={"duckdb"},
    pool=SYNC_POOL,
    deps=[onec_categories],
    check_specs=check_specs("category_tree"),
    description="The validated hierarchy: depth and path per category; orphans, cycles and "
    "categories under a product are flagged and held back from Tec.Delivery.",
)
def category_tree(context: dg.AssetExecutionContext, store: CatalogStore) -> dg.MaterializeResult:
    with store.connect() as con:
        rows = con.execute(
            "SELECT id, parent, name, removed_at IS NOT NULL FROM onec_categories"
        ).fetchall()
        categories = {r[0]: (r[1], r[2]) for r in rows}
        removed = frozenset(r[0] for r in rows if r[3])
        parents = {p for p, _ in categories.values()} - categories.keys()
        product_ids = (
            frozenset(
                r[0]
                for r in con.execute(
                    "SELECT id FROM onec_products WHERE id IN (SELECT unnest($ids))",
                    {"ids": sorted(parents)},
                ).fetchall()
            )
            if parents
            else frozenset()
        )
        nodes = build_category_tree(categories, product_ids, removed)
        previous = dict(con.execute("SELECT id, parent FROM category_tree").fetchall())
        # Products could have been served in no subtree by a snapshot published with the last
        # tree, or by one published since without a new tree (the products and the snapshot
        # materialized by hand from the UI).
        previous_at = con.execute(
            "SELECT greatest((SELECT max(computed_at) FROM category_tree),"
            " (SELECT max(published_at) FROM outlet_snapshot_published))"
        ).fetchall()[0][0]
        moved = moved_categories(previous, {c: parent for c, (parent, _) in categories.items()})
        now = utcnow()
        with transaction(con):
            # In the tree's own transaction: the moves are judged against the tree it replaces.
            moved_counts = resequence_moved(con, moved, now=now)
            waited = resequence_appeared(
                con,
                sorted(categories.keys() - previous.keys()),
                published_before=previous_at,
                now=now,
            )
            con.execute("DELETE FROM category_tree")
            load_rows(
                con,
                "tree",
                {
                    "id": ("VARCHAR", [n.id for n in nodes]),
                    "parent": ("VARCHAR", [n.parent for n in nodes]),
                    "depth": ("INTEGER", [n.depth for n in nodes]),
                    "path": ("VARCHAR", [n.path for n in nodes]),
                    "status": ("VARCHAR", [n.status for n in nodes]),
                    "problem": ("VARCHAR", [n.problem for n in nodes]),
                },
            )
            con.execute(
                "INSERT INTO category_tree (id, parent, depth, path, status, problem, computed_at)"
                " SELECT *, $now FROM tree",
                {"now": now},
            )
            con.execute("DROP TABLE tree")
        by_status = dict(
            con.execute(
                "SELECT t.status, count(*) FROM category_tree t JOIN onec_categories c"
                " ON c.id = t.id AND c.removed_at IS NULL GROUP BY t.status"
            ).fetchall()
        )
        max_depth = con.execute("SELECT max(depth) FROM category_tree").fetchone()[0]
        flagged = preview(con, f"{FLAGGED_CATEGORIES} ORDER BY t.id")
        checks = evaluate_checks(con, "category_tree")
    for status, count in sorted(by_status.items()):
        if status != "ok":
            context.log.warning(f"category_tree: {count} categories flagged {status}; not pushed")
    return dg.MaterializeResult(
        metadata={
            # 1C's live categories: a removed one is disabled wherever the tree places it.
            "categories": len(nodes) - len(removed),
            "ok": by_status.get("ok", 0),
            "flagged": len(nodes) - len(removed) - by_status.get("ok", 0),
            "by_status": dg.MetadataValue.json(by_status),
            "max_depth": max_depth if max_depth is not None else -1,
            # Moved since the last tree, with the products directly under them: resent to
            # the outlets whose subtrees they left or entered.
            "moved_categories": moved_counts[0],
            "products_under_moved": moved_counts[1],
            # Products that waited for their category (new to the tree): resent likewise.
            "products_under_new_categories": waited,
            "flagged_preview": dg.MetadataValue.md(flagged),
        },
        check_results=checks,
    )


@dg.asset(
    group_name="onec",
    kinds={"duckdb"},
    pool=SYNC_POOL,
    check_specs=check_specs("onec_products"),
    description="1C products staged in DuckDB, paged by modified_since from the cursor "
    "(incremental) or from 1970-01-01T00:00:00 (full).",
)
def onec_products(
    context: dg.AssetExecutionContext,
    config: FetchConfig,
    onec: OneCCatalogClient,
    store: CatalogStore,
) -> dg.MaterializeResult:
    with store.connect() as con:
        cursor_before = get_cursor(con, "products")
        since = EPOCH if config.full else (cursor_before or EPOCH)
        pass_started = utcnow()
        report = PassReport()
        counts = stage_pass(
            con,
            "products",
            _records(onec.pages(type="product", modified_since=since, report=report)),
            seen_at=pass_started,
            run_id=context.run_id,
        )
        metadata = finish_pass(
            context, con, "products", config, report, cursor_before, pass_started
        )
        total = con.execute(
            "SELECT count(*) FROM onec_products WHERE removed_at IS NULL"
        ).fetchone()[0]
        metadata.update(
            modified_since=since,
            fetched=counts.fetched,
            changed=counts.changed,
            quarantined=counts.quarantined,
            live_products=total,
            preview=dg.MetadataValue.md(
                preview(
                    con,
                    "SELECT id, name, price, stock, modified_at FROM onec_products ORDER BY staged_at DESC, id",
                )
            ),
        )
        checks = evaluate_checks(con, "onec_products")
    context.log.info(
        f"products: fetched {counts.fetched}, changed {counts.changed}, quarantined {counts.quarantined}"
    )
    return dg.MaterializeResult(metadata=metadata, check_results=checks)
