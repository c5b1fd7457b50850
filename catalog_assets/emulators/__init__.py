"""Loopback stand-ins for 1C and Tec.Delivery, for demos, contract tests and benchmarks.

They are written from the seed contract only (never from our client code), so a client that
gets the contract wrong fails against them. Both bind to loopback addresses only and never send
traffic anywhere else. Run ``python -m catalog_assets.emulators`` for a demo pair.
"""

from catalog_assets.emulators.catalog import (
    TIMESTAMP_FORMAT,
    Catalog,
    demo_catalog,
    format_timestamp,
    synthetic_catalog,
)
from catalog_assets.emulators.onec import OneCEmulator, parse_catalog_query
from catalog_assets.emulators.tec_delivery import TecDeliveryEmulator

__all__ = [
    "TIMESTAMP_FORMAT",
    "Catalog",
    "OneCEmulator",
    "TecDeliveryEmulator",
    "demo_catalog",
    "format_timestamp",
    "parse_catalog_query",
    "synthetic_catalog",
]
