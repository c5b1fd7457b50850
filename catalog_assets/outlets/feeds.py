"""Pure rules of the outlet feeds: what each feed is, the opaque cursor, category subtrees.

Nothing here does I/O, so every rule is unit-tested without Dagster, HTTP or a database.

A feed is an ordered list of changes, each with a sequence number taken from the catalog's
`catalog_change_seq`. Paging is keyset (`seq > cursor ORDER BY seq`), never offset: a page
boundary cannot shift when items change between two calls, so nothing is skipped or repeated
out of order while a sync writes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclass(frozen=True)
class Feed:
    """One entity feed: the staging table, which sequence column orders it, and what an item
    carries. `scope` is the column an outlet's category filter applies to: a category is
    filtered by its own id, a product (and its price or stock) by its parent category."""

    name: str
    table: str
    seq_column: str
    scope_column: str


FEEDS: dict[str, Feed] = {
    "categories": Feed("categories", "onec_categories", "change_seq", "id"),
    "products": Feed("products", "onec_products", "change_seq", "parent"),
    # The narrow feeds move only when their one value moves (price_seq / stock_seq), so an
    # outlet that refreshes prices downloads price changes, not every renamed product.
    "prices": Feed("prices", "onec_products", "price_seq", "parent"),
    "stock": Feed("stock", "onec_products", "stock_seq", "parent"),
}


class CursorError(ValueError):
    """A cursor we did not mint, or minted for another outlet or entity: the API answers 400."""


class CursorPosition(NamedTuple):
    seq: int
    scope: str | None
    publication: str | None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Opaque, tamper-evident cursors: base64url(JSON {o, e, s, k, p}) + "." + HMAC-SHA256 tag.

    The outlet and entity are inside the signed payload, so a cursor copied from another
    outlet, or from the products feed into the prices feed, is refused instead of silently
    skipping or replaying items. The tag is truncated to 128 bits: plenty against forgery,
    short enough to keep the cursor small in a 1C connector's settings.
    """

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("cursor secret must not be empty")
        self._secret = secret

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()[:16]

    def encode(
        self,
        outlet: str,
        entity: str,
        seq: int,
        scope: str | None = None,
        publication: str | None = None,
    ) -> str:
        """`scope` (`scope_key`) names the category filter the position was taken under,
        `publication` the snapshot whose numbering it is in (`Snapshot.knows`)."""
        data: dict = {"o": outlet, "e": entity, "s": int(seq)}
        if scope is not None:
            data["k"] = scope
        if publication is not None:
            data["p"] = publication
        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        return f"{_b64(payload)}.{_b64(self._tag(payload))}"

    def decode(self, cursor: str, outlet: str, entity: str) -> int:
        return self.decode_position(cursor, outlet, entity)[0]

    def decode_position(self, cursor: str, outlet: str, entity: str) -> CursorPosition:
        """The sequence number in `cursor`, the scope it was taken under and the publication
        that minted it (None in cursors minted before those were), if it is ours and was
        minted for this outlet and entity; otherwise CursorError saying which it is not."""
        body, dot, tag = cursor.partition(".")
        if not dot or not body or not tag or len(cursor) > 512:
            raise CursorError("cursor is not one this API issued (malformed)")
        try:
            payload, given_tag = _unb64(body), _unb64(tag)
        except (binascii.Error, ValueError):
            raise CursorError("cursor is not one this API issued (not base64url)") from None
        if not hmac.compare_digest(given_tag, self._tag(payload)):
            raise CursorError(
                "cursor is not one this API issued (signature mismatch; cursors issued before "
                "OUTLET_CURSOR_SECRET changed are no longer valid: call again without a cursor)"
            )
        try:
            data = json.loads(payload)
            minted_outlet, minted_entity, seq = data["o"], data["e"], data["s"]
        except (ValueError, KeyError, TypeError):
            raise CursorError("cursor is not one this API issued (bad payload)") from None
        if minted_outlet != outlet:
            raise CursorError("cursor was issued to another outlet")
        if minted_entity != entity:
            raise CursorError(f"cursor was issued for the {minted_entity!r} feed, not {entity!r}")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise CursorError("cursor is not one this API issued (bad position)")
        scope, publication = data.get("k"), data.get("p")
        return CursorPosition(
            seq,
            scope if isinstance(scope, str) else None,
            publication if isinstance(publication, str) else None,
        )


# Stands for "the whole catalog": an unfiltered outlet's scope, or what an outlet that was
# unfiltered may still hold.
EVERYTHING = "*"


def scope_key(roots: tuple[str, ...] | None) -> str:
    """Names an outlet's category filter, so a position taken under one filter is never taken
    for a position under another (the items before it were filtered differently)."""
    if roots is None:
        return EVERYTHING
    return hashlib.sha1("\n".join(sorted(set(roots))).encode()).hexdigest()[:12]


def merge_held(held: list[str] | str | None, roots: tuple[str, ...] | None) -> list[str] | str:
    """What an outlet may hold items from after its filter changed from `roots`: the roots of
    the filters it had (`EVERYTHING` absorbs the rest)."""
    if held == EVERYTHING or roots is None:
        return EVERYTHING
    return sorted(set(held or ()) | set(roots))


def expand_subtrees(parents: Mapping[str, str], roots: Iterable[str]) -> frozenset[str]:
    """Every category at or under `roots`, following `parents` (child id -> parent id).

    Breadth-first over a children index, with a visited set, so a cycle in bad data cannot
    loop forever and a deep tree costs one pass.
    """
    children: dict[str, list[str]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    seen: set[str] = set()
    frontier = list(roots)
    while frontier:
        node = frontier.pop()
        if node in seen:
            continue
        seen.add(node)
        frontier.extend(children.get(node, ()))
    return frozenset(seen)


def page_cursor_seq(after: int, seqs: list[int]) -> int:
    """Where the next page starts: the last item's sequence, or where this one started when the
    page was empty (so an empty answer never moves an outlet backwards or forwards)."""
    return seqs[-1] if seqs else after


def parse_limit(raw: str | int | None) -> int:
    """`limit` as an int in 1..MAX_LIMIT, or ValueError with the reason."""
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {raw!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"limit must be from 1 to {MAX_LIMIT}, got {value}")
    return value


def parse_entity(raw: str | None) -> Feed:
    if not raw:
        raise ValueError(f"entity is required: one of {', '.join(FEEDS)}")
    feed = FEEDS.get(raw)
    if feed is None:
        raise ValueError(f"unknown entity {raw!r}: expected one of {', '.join(FEEDS)}")
    return feed
