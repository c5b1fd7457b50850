"""Tree flattening: depth, path, and every way a hierarchy can be broken."""

from catalog_assets.tree import (
    CYCLE,
    OK,
    ORPHAN,
    PARENT_IS_PRODUCT,
    UNDER_PROBLEM,
    build_category_tree,
    moved_categories,
)


def by_id(nodes):
    return {n.id: n for n in nodes}


def test_depth_and_path():
    tree = by_id(
        build_category_tree({"a": ("0", "Бакалея"), "b": ("a", "Крупы"), "c": ("b", "Рис")})
    )
    assert (tree["a"].depth, tree["b"].depth, tree["c"].depth) == (0, 1, 2)
    assert tree["c"].path == "Бакалея / Крупы / Рис"
    assert {n.status for n in tree.values()} == {OK}


def test_orphan_and_its_descendants_are_flagged():
    tree = by_id(build_category_tree({"a": ("ghost", "A"), "b": ("a", "B")}))
    assert tree["a"].status == ORPHAN and "ghost" in tree["a"].problem
    assert tree["b"].status == UNDER_PROBLEM


def test_cycle_members_and_hangers_on_are_flagged():
    tree = by_id(
        build_category_tree({"a": ("b", "A"), "b": ("a", "B"), "c": ("a", "C"), "r": ("0", "R")})
    )
    assert tree["a"].status == tree["b"].status == CYCLE
    assert "a -> b -> a" in tree["a"].problem or "b -> a -> b" in tree["a"].problem
    assert tree["c"].status == UNDER_PROBLEM
    assert tree["r"].status == OK


def test_parent_that_is_a_product():
    tree = by_id(build_category_tree({"a": ("p1", "A")}, product_ids=frozenset({"p1"})))
    assert tree["a"].status == PARENT_IS_PRODUCT


def test_deep_chain_does_not_recurse():
    chain = {f"c{i}": (f"c{i - 1}" if i else "0", f"n{i}") for i in range(5000)}
    tree = by_id(build_category_tree(chain))
    assert tree["c4999"].depth == 4999


def test_a_moved_category_and_its_subtree_name_the_ancestors_they_left():
    old = {"a": "0", "b": "a", "c": "b", "d": "c", "x": "0", "y": "x"}
    new = {**old, "c": "y", "new": "c"}  # c (with d) moves from a/b to x/y
    assert moved_categories(old, new) == {
        "c": frozenset({"a", "b"}),
        "d": frozenset({"a", "b"}),
    }
    # Back again: they left x and y. Nothing moved: nothing to tell.
    assert moved_categories(new, old) == {"c": frozenset({"x", "y"}), "d": frozenset({"x", "y"})}
    assert moved_categories(old, old) == {}


def test_moves_within_a_subtree_leave_nothing_and_cycles_end():
    old = {"a": "0", "b": "a", "c": "a"}
    # c moves under its sibling: still under a, so it left no subtree, but it moved.
    assert moved_categories(old, {**old, "c": "b"}) == {"c": frozenset()}
    # A move into a cycle terminates; a cycle still counts its members as ancestors.
    assert moved_categories(old, {**old, "a": "b"}) == {
        "a": frozenset(),
        "b": frozenset(),
        "c": frozenset(),
    }


def test_an_orphan_whose_parent_appears_has_moved():
    """Its own parent link did not change, but it now hangs under a root: it entered that
    subtree (with everything under it) and must reach the outlets that filter on it."""
    old = {"a": "0", "orphan": "missing", "under": "orphan"}
    new = {**old, "missing": "a"}
    assert moved_categories(old, new) == {"orphan": frozenset(), "under": frozenset()}


def test_a_live_category_under_one_1c_removed_is_an_orphan():
    """Tec.Delivery has the removed parent disabled: the child cannot be placed under it.
    Removed categories still hang under each other, so their rows keep a place."""
    tree = by_id(
        build_category_tree(
            {"a": ("0", "A"), "b": ("a", "B"), "c": ("b", "C"), "d": ("a", "D")},
            removed=frozenset({"a", "d"}),
        )
    )
    assert tree["b"].status == ORPHAN and tree["b"].problem == "parent a was removed in 1C"
    assert tree["c"].status == UNDER_PROBLEM
    assert tree["a"].status == tree["d"].status == OK and tree["d"].depth == 1
