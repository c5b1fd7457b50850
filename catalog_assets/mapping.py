"""Pure functions: a 1C record -> a validated staged row -> a Tec.Delivery `put-products` item.

The field mapping is the contract in `shared/seeds/1c-tec-delivery-catalog-sync.txt`; every
rule here cites it. Nothing in this module does I/O, so it is tested field by field without
Dagster, HTTP or DuckDB.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

ROOT_PARENT = "0"
# 1C's empty reference (ПустаяСсылка): how a service that writes references as they are says
# "no parent". No item can have it as its own id, so it is the root, like "0", "" and null.
EMPTY_REFERENCE = "00000000-0000-0000-0000-000000000000"
NO_PARENT = (None, "", ROOT_PARENT, EMPTY_REFERENCE)
EPOCH = "1970-01-01T00:00:00"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S"


@dataclass(frozen=True)
class MappingOptions:
    """What the seed shows as constants but a merchant may want to change.

    `info_labels` maps a 1C field to the label Tec.Delivery shows in the product's `info`
    list; the defaults are the seed's ("sku", "Состав", "Энергетическая ценность").
    """

    info_labels: tuple[tuple[str, str], ...] = (
        ("sku", "sku"),
        ("composition", "Состав"),
        ("nutrition", "Энергетическая ценность"),
    )
    image_resize: bool = False
    image_bgcolor: str = "#FFFFFF"
    image_scale: float = 0.9


@dataclass(frozen=True)
class StagedRecord:
    """A 1C record that passed validation, with what staging needs to upsert it."""

    id: str
    parent: str
    name: str
    modified_at: str | None
    price: float | None
    stock: float | None
    record_json: str
    content_hash: str


@dataclass
class Rejection:
    """A record we refuse to stage, kept whole so nothing is lost while 1C fixes it."""

    record_id: str | None
    reason: str
    raw: str = field(repr=False)


def parse_timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"timestamp must be a string like {EPOCH!r}, got {value!r}")
    # `fromisoformat` is C and ~10x faster than `strptime`, but accepts more forms (dates,
    # offsets, fractions): the length and separators pin it to exactly TIMESTAMP_FORMAT.
    if len(value) == 19 and value[4] + value[7] + value[10] + value[13] + value[16] == "--T::":
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"timestamp {value!r} is not in the form {EPOCH!r}")


def format_timestamp(moment: datetime) -> str:
    return moment.strftime(TIMESTAMP_FORMAT)


def shift_timestamp(value: str, seconds: int) -> str:
    return format_timestamp(parse_timestamp(value) + timedelta(seconds=seconds))


def canonical_json(record: dict[str, Any]) -> str:
    """Sorted keys, no spaces, UTF-8: the text that is stored and hashed.

    orjson writes it ~10x faster than the standard library and identically, except that a
    float with a large or tiny exponent is spelled out differently (`0.00001`, not `1e-05`):
    such a record hashed by an older version is pushed once more. orjson refuses integers
    beyond 64 bits and the non-finite numbers only the standard-library decoder yields
    (`http.NonFiniteNumber`, a float subclass): those records take the standard library's
    form, so a record's text never changes quietly.
    """
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return _stdlib_canonical(record)


def _stdlib_canonical(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _non_finite_at(value: Any, path: str = "") -> str | None:
    """Where a NaN or Infinity sits in a record (`description`, `info[2]`), if anywhere."""
    return _first_at(value, lambda v: isinstance(v, float) and not math.isfinite(v), path)


def _lone_surrogate_at(value: Any) -> str | None:
    """Where a string holding a lone UTF-16 surrogate sits in a record, if anywhere."""
    return _first_at(value, lambda v: isinstance(v, str) and not _encodes(v))


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _first_at(value: Any, bad: Callable[[Any], bool], path: str = "") -> str | None:
    if bad(value):
        return path or "value"
    if isinstance(value, dict):
        children = [(f"{path}.{key}" if path else str(key), item) for key, item in value.items()]
    elif isinstance(value, list):
        children = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    else:
        return None
    for where, item in children:
        if found := _first_at(item, bad, where):
            return found
    return None


def hash_canonical(canonical: str) -> str:
    """The identity of a record's content (of its `canonical_json`): two fetches of an
    unchanged item hash equal.

    Because `modified_since` is inclusive, items at the cursor come back on every run; the
    hash is what tells a re-delivery from a genuine change.
    """
    return hashlib.sha1(canonical.encode()).hexdigest()


def _number(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} must be a number, got {value!r}")
    return float(value)


def validate_record(record: Any, expected_type: str) -> StagedRecord | Rejection:
    """Accept a record for staging, or say exactly why not.

    Rejected here: not an object, no id, wrong type, no name, a timestamp that does not parse,
    a non-numeric price or stock, a lone UTF-16 surrogate. Problems that need the whole catalog
    to see (unknown parent, cycles, a parent that is a product) are judged later, in
    `category_tree`.
    """
    try:
        raw = (
            canonical_json(record) if isinstance(record, dict) else json.dumps(record, default=str)
        )
    except RecursionError:
        return _too_deep(record)
    try:
        digest = hash_canonical(raw)
    except UnicodeEncodeError:
        # A lone UTF-16 surrogate (1C escaping non-ASCII as `\\uXXXX`, a name cut mid-emoji at
        # its field's length): JSON syntax, not Unicode, so neither DuckDB nor Tec.Delivery can
        # take it. The raw text keeps it escaped, so the quarantine row can hold it.
        where = (_lone_surrogate_at(record) or "value").encode("utf-8", "backslashreplace")
        raw = json.dumps(record, sort_keys=True, separators=(",", ":"))
        record_id = record.get("id") if isinstance(record, dict) else None
        usable_id = record_id if isinstance(record_id, str) and _encodes(record_id) else None
        return Rejection(
            usable_id, f"{where.decode()} holds a lone UTF-16 surrogate, not text", raw
        )
    if not isinstance(record, dict):
        return Rejection(None, f"record is not a JSON object: {raw[:80]}", raw)
    record_id = record.get("id")
    if not isinstance(record_id, str) or not record_id.strip():
        return Rejection(None, "record has no id", raw)
    try:
        if record.get("type") != expected_type:
            raise ValueError(f"type is {record.get('type')!r}, expected {expected_type!r}")
        name = record.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError("record has no name")
        parent = record.get("parent")
        parent = ROOT_PARENT if parent in NO_PARENT else parent
        if not isinstance(parent, str):
            raise ValueError(f"parent must be a string id, got {parent!r}")
        if parent == record_id:
            raise ValueError("record is its own parent")
        modified_at = record.get("modified_at")
        if modified_at is not None:
            parse_timestamp(modified_at)
        elif expected_type == "product":
            raise ValueError("product has no modified_at")
        price = _number(record, "price")
        stock = _number(record, "stock")
        if ("NaN" in raw or "Infinity" in raw) and (where := _non_finite_at(record)):
            # Tec.Delivery takes JSON, and NaN is not JSON: staged, it could never be sent.
            raise ValueError(f"{where} is NaN or Infinity, not a JSON number")
    except ValueError as problem:
        return Rejection(record_id, str(problem), raw)
    return StagedRecord(
        id=record_id,
        parent=parent,
        name=name,
        modified_at=modified_at,
        price=price,
        stock=stock,
        record_json=raw,
        content_hash=digest,
    )


def _too_deep(record: Any) -> Rejection:
    """orjson reads 1,024 levels but writes 255, and the standard library's writer it falls back
    on overflows Python's stack near 1,000: a record between the two parses but cannot be
    written, so it can be neither staged nor kept whole. Its top-level scalars (id, name, …)
    are kept, so the quarantine row says which record 1C must fix."""
    fields = record if isinstance(record, dict) else {}
    nested = sorted(str(k) for k, v in fields.items() if isinstance(v, dict | list))
    kept = {k: v for k, v in fields.items() if not isinstance(v, dict | list)}
    record_id = kept.get("id")
    usable_id = record_id if isinstance(record_id, str) and _encodes(record_id) else None
    where = ", ".join(nested) or "record"
    # ensure_ascii (the default) escapes a lone surrogate too, so the row can always be stored.
    raw = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return Rejection(usable_id, f"{where} nested too deeply to store (about 1,000 levels)", raw)


def _with_enable(item: dict[str, Any], enable: bool | None) -> dict[str, Any]:
    # `enable` is Tec.Delivery's availability flag. The seed's mapping has no such field, so
    # it is sent only when it carries news: false for an item 1C no longer returns, true for
    # one that came back after being disabled.
    if enable is not None:
        item["enable"] = enable
    return item


def disabled_item(record: dict[str, Any], *, is_category: bool) -> dict[str, Any]:
    """A removal: the id, the name and `enable: false`, nothing else of the last staged record.

    `put-products` is an upsert, so that is all a disable needs; sending the whole record
    would make the disable as refusable as that record (a relative image path, a parent
    Tec.Delivery does not know), and a product 1C deleted would stay on sale. The name (checked
    when staged) is what Tec.Delivery needs to take the disable for an item it no longer holds
    (its data restored), so a re-push after that disables rather than fails.
    """
    item: dict[str, Any] = {"external_id": record["id"], "name": record["name"], "enable": False}
    if is_category:
        item["is_category"] = True
    return item


def category_item(record: dict[str, Any], enable: bool | None = None) -> dict[str, Any]:
    """Seed: external_id <- id, external_parent_id <- parent (absent for roots), name."""
    item: dict[str, Any] = {"external_id": record["id"]}
    parent = record.get("parent")
    if parent not in NO_PARENT:
        item["external_parent_id"] = parent
    item["name"] = record["name"]
    item["is_category"] = True
    return _with_enable(item, enable)


def product_item(
    record: dict[str, Any], options: MappingOptions = MappingOptions(), enable: bool | None = None
) -> dict[str, Any]:
    """Seed mapping for products; a field 1C leaves empty is left out rather than sent blank.

    `composition` is passed through verbatim: the seed's example shows "рис" arriving as
    "Рис", which we read as a typo in the example, since rewriting merchant text is not an
    integration's call. `bulk` has no Tec.Delivery field in the seed and is not sent.
    """
    item: dict[str, Any] = {"external_id": record["id"]}
    parent = record.get("parent")
    if parent not in NO_PARENT:
        item["external_parent_id"] = parent
    item["name"] = record["name"]
    if record.get("description"):
        item["description"] = record["description"]
    if record.get("price") is not None:
        item["price"] = record["price"]
    info = [
        {"name": label, "value": str(record[key])}
        for key, label in options.info_labels
        if record.get(key) not in (None, "")
    ]
    if info:
        item["info"] = info
    if record.get("stock") is not None:
        item["store_balance"] = record["stock"]
    if record.get("modified_at"):
        item["external_key"] = record["modified_at"]
    if record.get("image_url"):
        item["image"] = {
            "url": record["image_url"],
            "resize": options.image_resize,
            "bgcolor": options.image_bgcolor,
            "scale": options.image_scale,
        }
    if record.get("image_hash"):
        item["external_data"] = record["image_hash"]
    return _with_enable(item, enable)


def put_products_request(
    items: list[dict[str, Any]],
    *,
    token: str,
    language: str,
    translate: bool,
    webhook: str | None,
) -> dict[str, Any]:
    """The request envelope: `language`, `translate` and (when set) `webhook` on every call."""
    if not 1 <= len(items) <= 100:
        raise ValueError(f"put-products takes 1..100 items, got {len(items)}")
    body: dict[str, Any] = {
        "api": "product",
        "method": "put-products",
        "token": token,
        "language": language,
        "translate": translate,
    }
    if webhook:
        body["webhook"] = webhook
    body["payload"] = items
    return body
