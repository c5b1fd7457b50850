"""Run configuration shared by the sync assets.

Defaults are what a person clicking "Materialize" in the UI expects: re-fetch everything,
re-push everything. The `incremental_sync` job overrides them to fetch from the cursor and push
only what is pending.
"""

import dagster as dg
from pydantic import Field


class FetchConfig(dg.Config):
    full: bool = Field(
        default=True,
        description="Fetch from 1970-01-01T00:00:00 and check the whole catalog for removals; "
        "false = only what changed since the stored cursor.",
    )
    confirm_removals: bool = Field(
        default=False,
        description="Apply removals even when they exceed max_removal_share (operator override).",
    )
    max_removal_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Largest share (0..1, not a percentage) of live items one full resync may "
        "disable.",
    )


class PushConfig(dg.Config):
    repush_all: bool = Field(
        default=True,
        description="Push every deliverable item (a resync, and the way to re-drive dead "
        "letters); false = only items whose staged content differs from what was pushed.",
    )
    journal_retention_days: float = Field(
        default=14,
        gt=0,
        description="push_batches rows whose request is older than this are deleted after the "
        "push, once folded into tec_delivery_* and unless an item still awaits Tec.Delivery's "
        "webhook notification about that batch.",
    )
