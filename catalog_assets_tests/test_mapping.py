"""The seed's field mapping, field by field, with no Dagster, HTTP or DuckDB."""

import json

import pytest

from catalog_assets.http import decode_json
from catalog_assets.mapping import (
    MappingOptions,
    Rejection,
    StagedRecord,
    canonical_json,
    category_item,
    hash_canonical,
    product_item,
    put_products_request,
    shift_timestamp,
    validate_record,
)

SEED_PRODUCT = {
    "id": "b01a1a32-8ba2-11e6-9cf3-10bf484d6226",
    "parent": "551b4ed9-c385-11e6-9cd7-10bf484d6226",
    "type": "product",
    "bulk": False,
    "name": "Рис длинный пропаренный 800г Гудвилл",
    "sku": "4607120230971",
    "price": 145,
    "stock": 16,
    "modified_at": "2026-02-13T13:24:04",
    "description": "…",
    "composition": "рис",
    "nutrition": "Б: 6,5, Ж: 1, У: 79, Ккал: 351",
    "image_url": "https://example.invalid/images/b01a1a32.jpg",
    "image_hash": "f9a15f0d6ebf943aea177f597cb96689c2d5c44d",
}


@pytest.mark.parametrize("root", ["0", "", None, "00000000-0000-0000-0000-000000000000"])
def test_root_category_has_no_parent_field(root):
    """The seed's "0", and how else 1C says "no parent": empty, null, its empty reference."""
    record = {"id": "9b2a", "parent": root, "name": "Алкогольная продукция", "type": "category"}
    item = category_item(record)
    assert item == {"external_id": "9b2a", "name": "Алкогольная продукция", "is_category": True}
    assert "external_parent_id" not in product_item(dict(SEED_PRODUCT, parent=root))
    assert validate_record(record, "category").parent == "0"


def test_child_category_carries_its_parent():
    item = category_item({"id": "ae14", "parent": "9b2a", "name": "Вино"})
    assert item == {
        "external_id": "ae14",
        "external_parent_id": "9b2a",
        "name": "Вино",
        "is_category": True,
    }


def test_product_maps_every_seed_field():
    item = product_item(SEED_PRODUCT)
    assert item["external_id"] == SEED_PRODUCT["id"]
    assert item["external_parent_id"] == SEED_PRODUCT["parent"]
    assert item["name"] == SEED_PRODUCT["name"]
    assert item["description"] == "…"
    assert item["price"] == 145
    assert item["info"] == [
        {"name": "sku", "value": "4607120230971"},
        {"name": "Состав", "value": "рис"},
        {"name": "Энергетическая ценность", "value": "Б: 6,5, Ж: 1, У: 79, Ккал: 351"},
    ]
    assert item["store_balance"] == 16
    assert item["external_key"] == "2026-02-13T13:24:04"
    assert item["image"] == {
        "url": SEED_PRODUCT["image_url"],
        "resize": False,
        "bgcolor": "#FFFFFF",
        "scale": 0.9,
    }
    assert item["external_data"] == SEED_PRODUCT["image_hash"]
    assert "bulk" not in item and "enable" not in item
    assert set(item) == {
        "external_id", "external_parent_id", "name", "description", "price", "info",
        "store_balance", "external_key", "image", "external_data",
    }  # fmt: skip


@pytest.mark.parametrize(
    "missing, absent_key",
    [
        ("description", "description"),
        ("image_url", "image"),
        ("image_hash", "external_data"),
        ("price", "price"),
        ("stock", "store_balance"),
    ],
)
def test_product_leaves_out_what_1c_leaves_empty(missing, absent_key):
    record = dict(SEED_PRODUCT, **{missing: None})
    assert absent_key not in product_item(record)


def test_info_entries_without_value_are_left_out():
    record = dict(SEED_PRODUCT, composition="", nutrition=None)
    assert product_item(record)["info"] == [{"name": "sku", "value": "4607120230971"}]
    record = dict(record, sku=None)
    assert "info" not in product_item(record)


def test_info_labels_and_image_options_are_configuration():
    options = MappingOptions(
        info_labels=(("sku", "Артикул"),),
        image_bgcolor="#000000",
        image_scale=1.0,
        image_resize=True,
    )
    item = product_item(SEED_PRODUCT, options)
    assert item["info"] == [{"name": "Артикул", "value": "4607120230971"}]
    assert item["image"] == {
        "url": SEED_PRODUCT["image_url"],
        "resize": True,
        "bgcolor": "#000000",
        "scale": 1.0,
    }


def test_enable_is_sent_only_with_news():
    assert product_item(SEED_PRODUCT, enable=False)["enable"] is False
    assert category_item({"id": "a", "parent": "0", "name": "A"}, enable=True)["enable"] is True


def test_request_envelope_carries_language_translate_and_webhook():
    body = put_products_request(
        [{"external_id": "x"}],
        token="t",
        language="RU",
        translate=True,
        webhook="http://127.0.0.1/hook",
    )
    assert body == {
        "api": "product", "method": "put-products", "token": "t", "language": "RU",
        "translate": True, "webhook": "http://127.0.0.1/hook", "payload": [{"external_id": "x"}],
    }  # fmt: skip
    assert "webhook" not in put_products_request(
        [{}], token="t", language="EN", translate=False, webhook=None
    )


@pytest.mark.parametrize("size", [0, 101])
def test_request_refuses_empty_or_oversized_batches(size):
    with pytest.raises(ValueError, match="1..100"):
        put_products_request([{}] * size, token="t", language="RU", translate=True, webhook=None)


def test_hash_ignores_key_order_and_sees_every_value():
    def digest(record):
        return validate_record(record, "product").content_hash

    assert digest(SEED_PRODUCT) == digest(dict(reversed(SEED_PRODUCT.items())))
    assert digest(SEED_PRODUCT) != digest(dict(SEED_PRODUCT, price=146))


@pytest.mark.parametrize(
    "record, reason",
    [
        ("not a dict", "not a JSON object"),
        ({"parent": "0", "name": "x", "type": "product"}, "no id"),
        (dict(SEED_PRODUCT, name=""), "no name"),
        (dict(SEED_PRODUCT, price="145р"), "price must be a number"),
        (dict(SEED_PRODUCT, stock=True), "stock must be a number"),
        (dict(SEED_PRODUCT, modified_at="13.02.2026"), "is not in the form"),
        (dict(SEED_PRODUCT, type="category"), "expected 'product'"),
        (dict(SEED_PRODUCT, parent=SEED_PRODUCT["id"]), "its own parent"),
        (dict(SEED_PRODUCT, name="Рис \ud83c"), "name holds a lone UTF-16 surrogate"),
        (dict(SEED_PRODUCT, info=[{"v": "\udc00"}]), "info[0].v holds a lone"),
    ],
)
def test_bad_records_are_rejected_with_a_reason(record, reason):
    result = validate_record(record, "product")
    assert isinstance(result, Rejection)
    assert reason in result.reason
    assert result.raw  # the raw record is kept whole for the quarantine table
    result.raw.encode(), result.reason.encode()  # and storable: valid Unicode


def test_a_lone_surrogate_in_the_id_leaves_the_record_without_a_usable_id():
    result = validate_record(dict(SEED_PRODUCT, id="b01a\ud83c"), "product")
    assert isinstance(result, Rejection) and result.record_id is None
    assert "id holds a lone UTF-16 surrogate" in result.reason
    assert json.loads(result.raw)["id"] == "b01a\ud83c"  # escaped, not lost


def test_good_record_is_staged_with_numbers_and_hash():
    result = validate_record(SEED_PRODUCT, "product")
    assert isinstance(result, StagedRecord)
    assert (result.price, result.stock, result.parent) == (145.0, 16.0, SEED_PRODUCT["parent"])
    assert result.content_hash == hash_canonical(canonical_json(SEED_PRODUCT))


def test_category_without_modified_at_is_accepted():
    # The seed's category examples carry no modified_at.
    assert isinstance(
        validate_record({"id": "a", "parent": "0", "name": "A", "type": "category"}, "category"),
        StagedRecord,
    )


def test_shift_timestamp():
    assert shift_timestamp("2026-02-13T23:59:59", 1) == "2026-02-14T00:00:00"


def test_page_decoding_keeps_every_number_exact_or_judges_it():
    """orjson decodes pages, but never at the cost of a value: an integer beyond 64 bits is
    kept exact, and NaN/Infinity/1e400 anywhere in a record reject that record by name."""
    head = f'"type": "product", "modified_at": "{SEED_PRODUCT["modified_at"]}"'
    body = (
        (
            '{"count": 4, "data": ['
            '{"id": "big", "name": "B", HEAD, "sku": 123456789012345678901234567890},'
            '{"id": "nan", "name": "N", HEAD, "description": NaN},'
            '{"id": "huge", "name": "H", HEAD, "w": 1e400},'
            '{"id": "deep", "name": "D", HEAD, "x": {"y": [1, -Infinity]}}'
            "]}"
        )
        .replace("HEAD", head)
        .encode()
    )
    big, nan, huge, deep = [validate_record(r, "product") for r in decode_json(body)["data"]]
    assert (
        isinstance(big, StagedRecord) and '"sku":123456789012345678901234567890' in big.record_json
    )
    assert [r.reason for r in (nan, huge, deep)] == [
        "description is NaN or Infinity, not a JSON number",
        "w is NaN or Infinity, not a JSON number",
        "x.y[1] is NaN or Infinity, not a JSON number",
    ]
    assert '"description":NaN' in nan.raw  # kept whole and verbatim for the quarantine
    # Either side of the 19-digit switch to the exact parser, both signs, inside a string too.
    edges = (
        b'[123456789012345678, -18446744073709551616, 18446744073709551616, "12345678901234567890"]'
    )
    assert decode_json(edges) == [123456789012345678, -(2**64), 2**64, "12345678901234567890"]
    assert all(isinstance(v, int) for v in decode_json(edges)[:3])


def test_canonical_json_matches_the_standard_library_text():
    record = dict(SEED_PRODUCT, note='кавычки " и \\ слэш', ratio=0.25, count=10**18, flag=None)
    expected = json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert canonical_json(record) == expected


def test_a_record_too_deep_to_write_is_rejected_naming_its_field():
    """Within orjson's 1,024 levels, past what Python can write back: judged, not a crash."""
    deep: list = []
    for _ in range(1000):
        deep = [deep]
    result = validate_record(dict(SEED_PRODUCT, info=deep), "product")
    assert isinstance(result, Rejection) and result.record_id == SEED_PRODUCT["id"]
    assert "info nested too deeply" in result.reason
    assert json.loads(result.raw)["name"] == SEED_PRODUCT["name"]
