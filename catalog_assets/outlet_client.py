"""The reference outlet client: what a 1C:Retail connector does, in a few dozen lines.

For each feed it calls `changes` with the cursor it stored, applies the items to a local store
(DuckDB or JSON), stores the new cursor, and repeats until `has_more` is false. The cursor is
stored only after the items are applied, so a crash between the two repeats the call and gets
the same items again (at-least-once), which upserting by id absorbs.

    OUTLET_MSK_001_TOKEN=... python -m catalog_assets.outlet_client --outlet msk-001 \\
        --base-url http://127.0.0.1:8090 --out msk-001.duckdb

The token comes from `--token-env` (default `OUTLET_<ID>_TOKEN`, e.g. OUTLET_MSK_001_TOKEN),
never from the command line, so it does not end up in shell history or `ps`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ENTITIES = ("categories", "products", "prices", "stock")


class OutletApiError(RuntimeError):
    """A non-2xx answer, with the API's error code (never the token)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@dataclass
class Page:
    items: list[dict[str, Any]]
    cursor: str
    has_more: bool


class OutletClient:
    def __init__(
        self,
        base_url: str,
        outlet: str,
        token: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 5,
    ) -> None:
        self.outlet = outlet
        self.max_retries = max_retries
        self._url = f"{base_url.rstrip('/')}/v1/outlets/{outlet}/changes"
        self._timeout = timeout
        self._http = requests.Session()
        self._headers = {"Authorization": f"Bearer {token}"}

    def __repr__(self) -> str:
        return f"OutletClient(outlet={self.outlet!r})"

    def changes(self, entity: str, cursor: str | None = None, limit: int | None = None) -> Page:
        """One call. 503 is retried after its Retry-After (capped, bounded attempts); any
        other error is raised with the API's code."""
        params: dict[str, Any] = {"entity": entity}
        if cursor:
            params["cursor"] = cursor
        if limit:
            params["limit"] = limit
        for attempt in range(self.max_retries + 1):
            response = self._http.get(
                self._url, params=params, headers=self._headers, timeout=self._timeout
            )
            if response.status_code == 200:
                body = response.json()
                return Page(body["items"], body["cursor"], body["has_more"])
            if response.status_code == 503 and attempt < self.max_retries:
                time.sleep(min(float(response.headers.get("Retry-After", "1")), 0.5 * 2**attempt))
                continue
            try:
                error = response.json()["error"]
                code, message = error["code"], error["message"]
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", response.text[:200]
            raise OutletApiError(response.status_code, code, message)
        raise AssertionError("unreachable: the loop returns or raises")

    def drain(self, entity: str, cursor: str | None, limit: int | None = None) -> Iterator[Page]:
        """Pages until has_more is false. A cursor the server no longer accepts (its signing
        secret changed) is dropped once: the server then continues from this outlet's
        acknowledged position, so nothing is skipped. A second refusal in one drain means the
        API's processes disagree on the secret (a rolling change, one misconfigured host):
        raised, rather than re-reading the first page for ever."""
        dropped = False
        while True:
            try:
                page = self.changes(entity, cursor, limit)
            except OutletApiError as exc:
                if exc.code != "invalid_cursor" or cursor is None or dropped:
                    raise
                print(f"{entity}: cursor refused ({exc.message}); continuing from the server's")
                cursor, dropped = None, True
                continue
            yield page
            cursor = page.cursor
            if not page.has_more:
                return

    def close(self) -> None:
        self._http.close()


@dataclass
class LocalStore:
    """The outlet's copy: items by feed and id, and the cursor per feed. Removed items are
    deleted, as an outlet would delist them."""

    path: Path
    items: dict[str, dict[str, dict]] = field(default_factory=dict)
    cursors: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str) -> LocalStore:
        store = cls(Path(path))
        if store.path.suffix == ".duckdb":
            store._load_duckdb()
        elif store.path.exists():
            data = json.loads(store.path.read_text(encoding="utf-8"))
            store.items, store.cursors = data.get("items", {}), data.get("cursors", {})
        return store

    def apply(self, entity: str, items: list[dict], cursor: str) -> None:
        table = self.items.setdefault(entity, {})
        for item in items:
            if item.get("removed"):
                table.pop(item["id"], None)
            else:
                table[item["id"]] = item
        self.cursors[entity] = cursor

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.suffix == ".duckdb":
            self._save_duckdb()
            return
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text(
            json.dumps({"items": self.items, "cursors": self.cursors}, ensure_ascii=False),
            encoding="utf-8",
        )
        os.replace(tmp, self.path)

    def _load_duckdb(self) -> None:
        import duckdb

        if not self.path.exists():
            return
        with duckdb.connect(str(self.path), read_only=True) as con:
            for entity, item_id, item in con.execute(
                "SELECT entity, id, item FROM items"
            ).fetchall():
                self.items.setdefault(entity, {})[item_id] = json.loads(item)
            self.cursors = dict(con.execute("SELECT entity, cursor FROM cursors").fetchall())

    def _save_duckdb(self) -> None:
        import duckdb

        with duckdb.connect(str(self.path)) as con:
            con.execute("BEGIN")
            con.execute("CREATE OR REPLACE TABLE items (entity VARCHAR, id VARCHAR, item JSON)")
            con.execute("CREATE OR REPLACE TABLE cursors (entity VARCHAR, cursor VARCHAR)")
            rows = [
                (e, i, json.dumps(item, ensure_ascii=False))
                for e, table in self.items.items()
                for i, item in table.items()
            ]
            if rows:
                con.executemany("INSERT INTO items VALUES (?, ?, ?)", rows)
            if self.cursors:
                con.executemany("INSERT INTO cursors VALUES (?, ?)", list(self.cursors.items()))
            con.execute("COMMIT")


def sync_outlet(
    client: OutletClient,
    store: LocalStore,
    entities: tuple[str, ...] = ENTITIES,
    limit: int | None = None,
) -> dict[str, int]:
    """Pull every feed until has_more is false; returns items received per feed."""
    received: dict[str, int] = {}
    for entity in entities:
        received[entity] = 0
        for page in client.drain(entity, store.cursors.get(entity), limit):
            store.apply(entity, page.items, page.cursor)
            received[entity] += len(page.items)
    return received


def default_token_env(outlet: str) -> str:
    return "OUTLET_" + "".join(c if c.isalnum() else "_" for c in outlet).upper() + "_TOKEN"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Pull every outlet feed into a local file.")
    parser.add_argument("--outlet", required=True)
    parser.add_argument(
        "--base-url", default=os.environ.get("OUTLET_API_URL", "http://127.0.0.1:8090")
    )
    parser.add_argument(
        "--token-env", help="variable holding the token (default OUTLET_<ID>_TOKEN)"
    )
    parser.add_argument("--out", help="a .duckdb or .json file (default <outlet>.json)")
    parser.add_argument("--entities", default=",".join(ENTITIES))
    parser.add_argument("--limit", type=int)
    args = parser.parse_args(argv)
    token_env = args.token_env or default_token_env(args.outlet)
    token = os.environ.get(token_env)
    if not token:
        print(f"set {token_env} to this outlet's token", file=sys.stderr)
        return 2
    entities = tuple(e.strip() for e in args.entities.split(",") if e.strip())
    store = LocalStore.open(args.out or f"{args.outlet}.json")
    client = OutletClient(args.base_url, args.outlet, token)
    try:
        received = sync_outlet(client, store, entities, args.limit)
    except (OutletApiError, requests.RequestException) as exc:
        print(f"{args.outlet}: {exc}", file=sys.stderr)
        store.save()  # what was applied so far, with its cursors
        return 1
    finally:
        client.close()
    store.save()
    for entity in entities:
        print(
            f"{entity:<11} received {received[entity]:>6}  held {len(store.items.get(entity, {})):>6}"
        )
    print(f"saved to {store.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
