"""Pure: the category hierarchy from (id, parent) pairs, with every problem named.

Tec.Delivery rejects a category whose parent it does not know, so only categories with an
unbroken chain of valid ancestors up to the root are pushable. Everything else is flagged:
an orphan (parent unknown), a category in a parent cycle, one whose parent is a product, and
every descendant of those (it cannot be placed until its ancestor is fixed).

A parent 1C deleted is unknown too: the full resync disables it at Tec.Delivery, so a live
child still naming it would otherwise look whole and wait, unflagged, for a parent that never
comes back. Removed categories stay in the tree (their disables go out from it, and outlets
follow their parent links to deliver the removals), hanging under each other as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from catalog_assets.mapping import ROOT_PARENT

OK = "ok"
ORPHAN = "orphan"
CYCLE = "cycle"
PARENT_IS_PRODUCT = "parent_is_product"
UNDER_PROBLEM = "under_problem"


@dataclass(frozen=True)
class TreeNode:
    id: str
    parent: str
    depth: int | None
    path: str
    status: str
    problem: str | None


def build_category_tree(
    categories: dict[str, tuple[str, str]],
    product_ids: frozenset[str] = frozenset(),
    removed: frozenset[str] = frozenset(),
) -> list[TreeNode]:
    """`categories` maps id -> (parent, name), removed ones included (`removed`). Iterative,
    so a 10-level tree or a 2000-long chain costs the same stack. Each node is resolved once:
    O(n)."""
    resolved: dict[str, TreeNode] = {}

    def names(chain: list[str]) -> str:
        return " / ".join(categories[c][1] for c in chain)

    for start in categories:
        if start in resolved:
            continue
        chain: list[str] = []  # from `start` upwards, not yet resolved
        on_chain: set[str] = set()
        node = start
        while True:
            if node in resolved:
                base = resolved[node]
                break
            if node in on_chain:
                # Everything from the first occurrence of `node` upwards is the cycle.
                loop = chain[chain.index(node) :]
                loop_text = " -> ".join(loop + [node])
                for member in loop:
                    resolved[member] = TreeNode(
                        member,
                        categories[member][0],
                        None,
                        categories[member][1],
                        CYCLE,
                        f"parent cycle: {loop_text}",
                    )
                chain = chain[: chain.index(node)]
                base = resolved[node]
                break
            parent = categories[node][0]
            chain.append(node)
            on_chain.add(node)
            if parent == ROOT_PARENT:
                base = None
                break
            if parent not in categories or (parent in removed and node not in removed):
                if parent in categories:
                    kind, problem = ORPHAN, f"parent {parent} was removed in 1C"
                elif parent in product_ids:
                    kind, problem = (
                        PARENT_IS_PRODUCT,
                        f"parent {parent} is a product, not a category",
                    )
                else:
                    kind, problem = ORPHAN, f"parent {parent} is not a known category"
                resolved[node] = TreeNode(node, parent, None, categories[node][1], kind, problem)
                chain.pop()
                base = resolved[node]
                break
            node = parent
        # Unwind: resolve the chain top-down from `base`.
        for child in reversed(chain):
            parent, name = categories[child]
            if base is None:
                resolved[child] = TreeNode(child, parent, 0, name, OK, None)
            elif base.status == OK:
                resolved[child] = TreeNode(
                    child, parent, base.depth + 1, f"{base.path} / {name}", OK, None
                )
            else:
                resolved[child] = TreeNode(
                    child,
                    parent,
                    None,
                    f"{base.path} / {name}",
                    UNDER_PROBLEM,
                    f"ancestor {base.id} is flagged ({base.status})",
                )
            base = resolved[child]
    return [resolved[c] for c in categories]


def ancestors(node: str, parents: Mapping[str, str]) -> frozenset[str]:
    """Every category above `node`, following `parents` until the root, an unknown id or a
    cycle."""
    found: set[str] = set()
    current = parents.get(node)
    while current is not None and current != ROOT_PARENT and current not in found:
        found.add(current)
        if current == node:
            break
        current = parents.get(current)
    found.discard(node)
    return frozenset(found)


def moved_categories(
    old_parents: Mapping[str, str], new_parents: Mapping[str, str]
) -> dict[str, frozenset[str]]:
    """Categories whose ancestors changed between two trees, each with the ancestors it left.

    Outlets filter their feeds by subtree, so a move changes what an outlet may see without
    changing the moved items' content: a category that moved (and everything under it) must
    reach an outlet once more, as a removal if it left the outlet's subtree, or at all if it
    entered one. Categories new since the old tree have no place to leave, and those gone from
    the new one nowhere to be sent: neither is listed.

    A category's ancestors change exactly when some category at or above it (in the new tree)
    has another parent link than before: its own move, an ancestor's, or a parent that is new
    (an orphan whose missing parent appears) or gone.
    """
    children: dict[str, list[str]] = {}
    for child, parent in new_parents.items():
        children.setdefault(parent, []).append(child)
    frontier = [
        c
        for c in old_parents.keys() | new_parents.keys()
        if old_parents.get(c) != new_parents.get(c)
    ]
    moved: dict[str, frozenset[str]] = {}
    visited: set[str] = set()
    while frontier:
        node = frontier.pop()
        if node in visited:
            continue
        visited.add(node)
        if node in old_parents and node in new_parents:
            moved[node] = ancestors(node, old_parents) - ancestors(node, new_parents)
        frontier.extend(children.get(node, ()))
    return moved
