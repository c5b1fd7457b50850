"""Is each outlet keeping up? Pure assessment, plus the one function that gathers its inputs.

An outlet is healthy when it has called within its `silent_after_minutes` and its backlog is
under the thresholds. Lag in items is the number of feed items (after the outlet's category
filter) newer than what it acknowledged, summed over the feeds it has used (a feed an outlet
never asked for is not its business: a prices-only outlet does not lag on products). Lag in time
is how long the oldest such item has been waiting. Both count from the acknowledged cursor,
so the last page an outlet fetched counts until it calls again: that is the at-least-once
contract, not an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from catalog_assets.outlets.registry import Outlet, Registry
from catalog_assets.outlets.snapshot import Snapshot
from catalog_assets.outlets.state import OutletRecord

DEFAULT_MAX_LAG_ITEMS = 5000
DEFAULT_MAX_LAG_MINUTES = 60.0


@dataclass(frozen=True)
class FeedLag:
    acked_seq: int
    items: int
    oldest_change: datetime | None


@dataclass(frozen=True)
class OutletHealth:
    outlet: str
    name: str
    healthy: bool
    problem: str | None
    last_contact_at: datetime | None
    silent_minutes: float | None
    lag_items: int
    lag_minutes: float
    feeds: dict[str, FeedLag] = field(default_factory=dict)

    def metadata(self) -> dict:
        """Plain values for an AssetMaterialization / AssetCheckEvaluation (no secrets: the
        registry never holds a token, only its digest, and that is not included either)."""
        return {
            "outlet": self.outlet,
            "name": self.name,
            "last_contact_at": self.last_contact_at.isoformat(timespec="seconds") + "Z"
            if self.last_contact_at
            else "never",
            "silent_minutes": round(self.silent_minutes, 1)
            if self.silent_minutes is not None
            else -1.0,
            "lag_items": self.lag_items,
            "lag_minutes": round(self.lag_minutes, 1),
            "acked_cursor": {e: f.acked_seq for e, f in sorted(self.feeds.items())},
            "lag_items_by_feed": {e: f.items for e, f in sorted(self.feeds.items())},
            "problem": self.problem or "",
        }


def minutes_between(earlier: datetime | None, later: datetime) -> float:
    if earlier is None:
        return 0.0
    return max(0.0, (later - earlier).total_seconds() / 60.0)


def assess(
    outlet: Outlet,
    record: OutletRecord | None,
    feeds: dict[str, FeedLag],
    now: datetime,
    registered_at: datetime,
    *,
    problem: str | None = None,
    max_lag_items: int = DEFAULT_MAX_LAG_ITEMS,
    max_lag_minutes: float = DEFAULT_MAX_LAG_MINUTES,
) -> OutletHealth:
    """Judge one outlet. An outlet that never called is silent from when the monitor first saw
    it in outlets.yaml (`registered_at`), so a freshly onboarded outlet gets its grace period."""
    last = record.last_contact_at if record else None
    silent = minutes_between(last or registered_at, now)
    lag_items = sum(f.items for f in feeds.values())
    oldest = min((f.oldest_change for f in feeds.values() if f.oldest_change), default=None)
    lag_minutes = minutes_between(oldest, now)
    problems = [problem] if problem else []
    if silent > outlet.silent_after_minutes:
        since = f"last contact {last:%Y-%m-%d %H:%M} UTC" if last else "never contacted"
        problems.append(
            f"silent for {silent:.0f} min ({since}; allowed {outlet.silent_after_minutes:g})"
        )
    if lag_items > max_lag_items:
        problems.append(f"{lag_items} items behind (allowed {max_lag_items})")
    if lag_minutes > max_lag_minutes:
        problems.append(
            f"oldest unacknowledged change waits {lag_minutes:.0f} min (allowed {max_lag_minutes:g})"
        )
    return OutletHealth(
        outlet=outlet.id,
        name=outlet.name,
        healthy=not problems,
        problem="; ".join(problems) or None,
        last_contact_at=last,
        silent_minutes=minutes_between(last, now) if last else None,
        lag_items=lag_items,
        lag_minutes=lag_minutes,
        feeds=feeds,
    )


def feed_lags(
    snapshot: Snapshot | None, outlet: Outlet, acks: dict[str, int]
) -> dict[str, FeedLag]:
    """Backlog per feed the outlet has asked for at least once, from the snapshot."""
    lags: dict[str, FeedLag] = {}
    scope = snapshot.scope(outlet.categories) if snapshot and outlet.categories else None
    for entity, seq in sorted(acks.items()):
        if snapshot is None:
            lags[entity] = FeedLag(seq, 0, None)
            continue
        count, oldest = snapshot.backlog(entity, seq, scope)
        lags[entity] = FeedLag(seq, count, oldest)
    return lags


def gather(
    registry: Registry,
    records: dict[str, OutletRecord],
    snapshot: Snapshot | None,
    now: datetime,
    registered_at: dict[str, datetime],
    api_problems: dict[str, str],
    *,
    max_lag_items: int = DEFAULT_MAX_LAG_ITEMS,
    max_lag_minutes: float = DEFAULT_MAX_LAG_MINUTES,
) -> dict[str, OutletHealth]:
    """Every outlet with a usable id, valid or not: an invalid entry is shown failing with its
    problem rather than vanishing from the graph, and so is a served one with a warning (a
    root category 1C removed), which no outlet's call would ever make visible."""
    health: dict[str, OutletHealth] = {}
    everyone = {**registry.invalid, **registry.outlets}
    for outlet_id, outlet in sorted(everyone.items()):
        record = records.get(outlet_id)
        problem = (
            registry.problems.get(outlet_id)
            or api_problems.get(outlet_id)
            or registry.warnings.get(outlet_id)
        )
        feeds = feed_lags(
            snapshot if outlet_id in registry.outlets else None,
            outlet,
            record.acks if record else {},
        )
        health[outlet_id] = assess(
            outlet,
            record,
            feeds,
            now,
            registered_at.get(outlet_id, now),
            problem=problem,
            max_lag_items=max_lag_items,
            max_lag_minutes=max_lag_minutes,
        )
    return health
