"""`OutletHub`: where the outlet hub's files live, shared by the snapshot asset, the
per-outlet asset and check, and the monitor sensor (the API reads the same settings from the
environment, see `catalog_assets.outlet_api.config`)."""

from __future__ import annotations

import os

import dagster as dg

from catalog_assets.outlets.health import DEFAULT_MAX_LAG_ITEMS, DEFAULT_MAX_LAG_MINUTES

DEFAULT_CONFIG = "outlets.yaml"
DEFAULT_SNAPSHOT_DIR = "data/outlet_snapshots"
DEFAULT_STATE_PATH = "data/outlet_state.sqlite"


class OutletHub(dg.ConfigurableResource):
    config_path: str = DEFAULT_CONFIG
    snapshot_dir: str = DEFAULT_SNAPSHOT_DIR
    state_path: str = DEFAULT_STATE_PATH
    max_lag_items: int = DEFAULT_MAX_LAG_ITEMS
    max_lag_minutes: float = DEFAULT_MAX_LAG_MINUTES
    # Old snapshots stay this long after being replaced, for readers that opened them just
    # before the swap.
    snapshot_keep_minutes: float = 10.0

    @classmethod
    def beside(cls, catalog_path: str, **overrides) -> OutletHub:
        """Snapshots and state next to the catalog DuckDB file: what the defaults amount to
        (data/catalog.duckdb -> data/outlet_snapshots), and what tests and the benchmark get
        when they hand in their own store without naming an outlet hub."""
        base = os.path.dirname(os.path.abspath(catalog_path))
        return cls(
            snapshot_dir=os.path.join(base, "outlet_snapshots"),
            state_path=os.path.join(base, "outlet_state.sqlite"),
            config_path=os.path.join(base, "outlets.yaml"),
            **overrides,
        )
