"""Pure rules: cursors, subtrees, parameters, page positions. No Dagster, HTTP or database."""

import pytest

from catalog_assets.outlets.feeds import (
    DEFAULT_LIMIT,
    EVERYTHING,
    CursorCodec,
    CursorError,
    expand_subtrees,
    merge_held,
    page_cursor_seq,
    parse_entity,
    parse_limit,
    scope_key,
)

codec = CursorCodec(b"k1")


def test_a_cursor_round_trips_for_its_outlet_and_feed_only():
    cursor = codec.encode("msk-001", "products", 4711)
    assert codec.decode(cursor, "msk-001", "products") == 4711
    with pytest.raises(CursorError, match="another outlet"):
        codec.decode(cursor, "spb-002", "products")
    with pytest.raises(CursorError, match="'products' feed, not 'prices'"):
        codec.decode(cursor, "msk-001", "prices")


@pytest.mark.parametrize(
    "bad",
    ["", "abc", "a.b", "@@@.@@@", "x" * 600, "eyJvIjoibXNrLTAwMSJ9.AAAAAAAAAAAAAAAAAAAAAA"],
)
def test_anything_we_did_not_mint_is_refused(bad):
    with pytest.raises(CursorError, match="not one this API issued"):
        codec.decode(bad, "msk-001", "products")


def test_a_tampered_position_or_another_secret_breaks_the_signature():
    body, tag = codec.encode("msk-001", "products", 10).split(".")
    forged = CursorCodec(b"k1").encode("msk-001", "products", 99).split(".")[0]
    with pytest.raises(CursorError, match="signature"):
        codec.decode(f"{forged}.{tag}", "msk-001", "products")
    with pytest.raises(CursorError, match="signature"):
        CursorCodec(b"k2").decode(f"{body}.{tag}", "msk-001", "products")


def test_subtrees_include_every_descendant_and_survive_cycles():
    parents = {"a": "0", "b": "a", "c": "b", "d": "0", "x": "y", "y": "x"}
    assert expand_subtrees(parents, ["a"]) == {"a", "b", "c"}
    assert expand_subtrees(parents, ["b", "d"]) == {"b", "c", "d"}
    assert expand_subtrees(parents, ["x"]) == {"x", "y"}
    assert expand_subtrees(parents, []) == frozenset()


def test_limit_and_entity_are_checked_with_specific_messages():
    assert parse_limit(None) == DEFAULT_LIMIT and parse_limit("1000") == 1000
    with pytest.raises(ValueError, match="from 1 to 1000, got 0"):
        parse_limit("0")
    with pytest.raises(ValueError, match="integer"):
        parse_limit("ten")
    assert parse_entity("prices").seq_column == "price_seq"
    with pytest.raises(ValueError, match="unknown entity 'orders'"):
        parse_entity("orders")
    with pytest.raises(ValueError, match="required"):
        parse_entity(None)


def test_an_empty_page_keeps_the_position():
    assert page_cursor_seq(42, []) == 42
    assert page_cursor_seq(42, [43, 50]) == 50


def test_a_cursor_names_the_filter_it_was_taken_under():
    scoped = codec.encode("msk-001", "products", 7, scope_key(("b", "a")))
    assert codec.decode_position(scoped, "msk-001", "products") == (7, scope_key(("a", "b")), None)
    legacy = codec.encode("msk-001", "products", 7)
    assert codec.decode_position(legacy, "msk-001", "products") == (7, None, None)
    assert scope_key(None) == EVERYTHING != scope_key(("a",)) != scope_key(("a", "b"))


def test_what_an_outlet_may_hold_after_its_filters_changed():
    assert merge_held(None, ("a",)) == ["a"]
    assert merge_held(["a"], ("b", "a")) == ["a", "b"]
    assert merge_held(["a"], None) == EVERYTHING  # it had the whole catalog
    assert merge_held(EVERYTHING, ("a",)) == EVERYTHING
