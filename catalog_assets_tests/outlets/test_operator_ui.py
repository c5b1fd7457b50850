"""What an operator does in the Dagster UI that the jobs do not: materialize a subset of the
outlet hub's assets by hand (the UI's ad-hoc asset run), in an order no job takes."""

from catalog_assets.outlet_client import LocalStore, sync_outlet
from catalog_assets_tests.conftest import materializations
from catalog_assets_tests.outlets.test_api import category_id, subtree_products
from catalog_assets_tests.test_operator_ui import materialize_from_ui


def test_a_product_published_by_hand_before_its_category_reaches_the_outlet(
    platform, hub, api, tmp_path
):
    """1C creates a category and a product in it. The operator refreshes the products and the
    outlet snapshot from the UI (the products and what is downstream of them), before the
    category's step ran: the product goes out in no subtree, and the filtered outlet's cursor
    passes it. When the tree later takes the category, the product must reach the outlet."""
    platform.run("full_resync")
    catalog = platform.catalog
    groceries = category_id(platform, "Бакалея")
    hub.write_registry([hub.entry("msk-001", categories=[groceries])])
    store = LocalStore(tmp_path / "msk.json")
    catalog.upsert_category("new-cat", groceries, "Новая")
    catalog.upsert_product(
        {"id": "waits", "parent": "new-cat", "type": "product", "name": "Ждёт", "price": 5}
    )
    materialize_from_ui(platform, "onec_products", "outlet_feed_snapshot")
    for _ in range(2):
        sync_outlet(api.client("msk-001"), store, limit=1000)
    assert "waits" not in store.items["products"]

    healed = platform.run("incremental_sync")  # what the sensor starts next
    assert healed.success
    sync_outlet(api.client("msk-001"), store, limit=1000)
    assert "new-cat" in store.items["categories"]
    for feed in ("products", "prices", "stock"):
        assert set(store.items[feed]) == subtree_products(platform, groceries), feed
    assert materializations(healed, "category_tree")["products_under_new_categories"] == 1
