"""Wiring only: assets, checks, jobs, the sensor and the resources they share.

Required settings (ONEC_BASE_URL, TEC_DELIVERY_TOKEN) are `dg.EnvVar`s resolved when a run or
tick starts, so the UI loads without them and a missing one fails loudly at use. Optional
settings are wired as `dg.EnvVar` only when set, and otherwise take the documented default.
"""

from __future__ import annotations

import os

import dagster as dg

from catalog_assets.assets.onec import category_tree, onec_categories, onec_products
from catalog_assets.assets.tec_delivery import tec_delivery_categories, tec_delivery_products
from catalog_assets.checks import catalog_checks
from catalog_assets.jobs import full_resync, incremental_sync, nightly_full_resync
from catalog_assets.onec.client import OneCCatalogClient
from catalog_assets.sensors import onec_change_sensor
from catalog_assets.storage import CatalogStore
from catalog_assets.tec_delivery.client import DEFAULT_URL, TecDeliveryClient


def _env(name: str, default=None):
    return dg.EnvVar(name) if os.environ.get(name) else default


def build_definitions(resources: dict | None = None) -> dg.Definitions:
    """`resources` replaces the environment-wired ones (tests, the benchmark)."""
    return dg.Definitions(
        assets=[
            onec_categories,
            category_tree,
            onec_products,
            tec_delivery_categories,
            tec_delivery_products,
        ],
        asset_checks=catalog_checks,
        jobs=[full_resync, incremental_sync],
        schedules=[nightly_full_resync],
        sensors=[onec_change_sensor],
        resources=resources
        or {
            "onec": OneCCatalogClient(
                base_url=dg.EnvVar("ONEC_BASE_URL"),
                username=_env("ONEC_USERNAME"),
                password=_env("ONEC_PASSWORD"),
            ),
            "tec_delivery": TecDeliveryClient(
                url=_env("TEC_DELIVERY_URL", DEFAULT_URL),
                token=dg.EnvVar("TEC_DELIVERY_TOKEN"),
                language=_env("TEC_DELIVERY_LANGUAGE", "RU"),
                translate=_env("TEC_DELIVERY_TRANSLATE", "true"),
                webhook_url=_env("TEC_DELIVERY_WEBHOOK_URL"),
            ),
            "store": CatalogStore(path=_env("CATALOG_DUCKDB_PATH", "data/catalog.duckdb")),
        },
    )


defs = build_definitions()
