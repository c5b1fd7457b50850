"""The 1C catalog API client: `{ONEC_BASE_URL}/api/catalog`, paged by limit/offset.

It owns all HTTP to 1C (timeouts, retries, Basic auth, error translation) and yields one page
at a time, so nothing upstream ever holds the whole catalog. It also watches each paging pass
for signs that 1C changed underneath it (the `count` moved, an id came back twice): offset
paging over a moving list can skip an item, and the caller must then not advance its cursor.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import requests
from pydantic import PrivateAttr

from catalog_assets.http import UpstreamError, build_session, safe_url, truncate
from catalog_assets.mapping import ROOT_PARENT


class OneCResponseError(UpstreamError):
    """1C answered, but not with a catalog page we can trust."""


@dataclass
class CatalogPage:
    """One page. `problem` is set (and `records` empty) when 1C kept serving garbage for it."""

    offset: int
    count: int
    records: list[Any]
    problem: str | None = None
    raw: str | None = None


@dataclass
class PassReport:
    """What one paging pass saw; `consistent` is False when 1C moved while we paged."""

    requests: int = 0
    pages: int = 0
    records: int = 0
    first_count: int | None = None
    last_count: int | None = None
    duplicate_ids: int = 0
    anomalies: list[str] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        return not self.anomalies


class OneCCatalogClient(dg.ConfigurableResource):
    """1C HTTP services usually sit behind HTTP Basic; both credentials are optional."""

    base_url: str
    username: str | None = None
    password: str | None = None
    page_size: int = 100
    timeout_seconds: float = 30.0
    max_retries: int = 4
    backoff_seconds: float = 0.5
    walk_concurrency: int = 4
    bad_page_retries: int = 2

    _session: requests.Session | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _request_count: int = PrivateAttr(default=0)

    @property
    def request_count(self) -> int:
        return self._request_count

    def _http(self) -> requests.Session:
        if self._session is None:
            if not 1 <= self.page_size <= 100:
                raise ValueError(
                    f"page_size must be 1..100 (1C pages hold at most 100), got {self.page_size}"
                )
            session = build_session(
                max_retries=self.max_retries,
                backoff_seconds=self.backoff_seconds,
                pool_size=max(self.walk_concurrency, 2) + 2,
            )
            if self.username:
                session.auth = (self.username, self.password or "")
            self._session = session
        return self._session

    def fetch_page(
        self,
        *,
        type: str,
        modified_since: str,
        offset: int = 0,
        parent: str | None = None,
        limit: int | None = None,
    ) -> CatalogPage:
        params: dict[str, Any] = {
            "limit": limit or self.page_size,
            "offset": offset,
            "modified_since": modified_since,
            "type": type,
        }
        if parent is not None:
            params["parent"] = parent
        url = self.base_url.rstrip("/") + "/api/catalog"
        described = f"GET {safe_url(url)} type={type} parent={parent} offset={offset} modified_since={modified_since}"
        with self._lock:
            self._request_count += 1
        try:
            response = self._http().get(url, params=params, timeout=self.timeout_seconds)
        except requests.RequestException as exc:
            raise UpstreamError(
                f"1C request failed after {self.max_retries} retries: {described}: {type_name(exc)}"
            ) from None
        if response.status_code != 200:
            raise UpstreamError(
                f"1C answered HTTP {response.status_code} to {described}: {truncate(response.text, 300)}",
                status=response.status_code,
                body=truncate(response.text),
            )
        return parse_page(response, described, offset)

    def pages(
        self,
        *,
        type: str,
        modified_since: str,
        parent: str | None = None,
        report: PassReport | None = None,
    ) -> Iterator[CatalogPage]:
        """Every page of one query, in order. Stops on an empty or short page or at `count`.

        Records whose id was already seen in this pass are dropped here (and counted): 1C
        shifted the list under us, and the first copy is as fresh as the pass can know.
        """
        report = report if report is not None else PassReport()
        seen: set[str] = set()
        offset = 0
        while True:
            page = self._fetch_trusted(type, modified_since, parent, offset, report)
            if page.problem:
                # Skip the page, not the pass: the rest of the catalog still syncs, and the
                # anomaly holds the cursor so the next run asks for these items again.
                report.anomalies.append(page.problem)
                yield page
                offset += self.page_size
                if offset >= page.count:
                    return
                continue
            if report.first_count is None:
                report.first_count = page.count
            elif page.count != report.last_count:
                report.anomalies.append(
                    f"count changed from {report.last_count} to {page.count} at offset {offset} ({type}, parent={parent})"
                )
            report.last_count = page.count
            fresh = []
            for record in page.records:
                record_id = record.get("id") if isinstance(record, dict) else None
                if isinstance(record_id, str):
                    if record_id in seen:
                        report.duplicate_ids += 1
                        continue
                    seen.add(record_id)
                fresh.append(record)
            if report.duplicate_ids and not any("duplicate" in a for a in report.anomalies):
                report.anomalies.append(f"ids repeated across pages ({type}, parent={parent})")
            report.pages += 1
            report.records += len(fresh)
            yield CatalogPage(page.offset, page.count, fresh)
            offset += len(page.records)
            if not page.records or len(page.records) < self.page_size or offset >= page.count:
                return

    def _fetch_trusted(
        self, type: str, modified_since: str, parent: str | None, offset: int, report: PassReport
    ) -> CatalogPage:
        """A page, asking again when 1C answers 200 with something that is not a page (a proxy's
        HTML error page, a truncated body). A page that stays bad is returned with `problem`
        set — unless it is the first, when there is no `count` to page on and the pass fails."""
        for attempt in range(self.bad_page_retries + 1):
            try:
                report.requests += 1
                return self.fetch_page(
                    type=type, modified_since=modified_since, parent=parent, offset=offset
                )
            except OneCResponseError as exc:
                if report.last_count is None and attempt == self.bad_page_retries:
                    raise
                if attempt == self.bad_page_retries:
                    return CatalogPage(
                        offset, report.last_count, [], problem=str(exc), raw=exc.body
                    )
                time.sleep(self.backoff_seconds * (2**attempt))
        raise AssertionError("unreachable")

    def walk_categories(self, *, modified_since: str, report: PassReport) -> Iterator[list[Any]]:
        """The seed's walk: children of `parent=0`, then of each category found, level by level.

        Each level's parents are fetched concurrently (bounded by `walk_concurrency`, so a 1C
        server is not flooded), which makes a slow 1C cost about depth x latency, not
        categories x latency. A category reached twice (1C reporting a cycle or a
        duplicate) is not descended into again, so the walk always ends.
        """
        visited: set[str] = {ROOT_PARENT}
        level = [ROOT_PARENT]
        with ThreadPoolExecutor(max_workers=max(1, self.walk_concurrency)) as pool:
            while level:
                next_level: list[str] = []
                children = pool.map(lambda parent: self._children(parent, modified_since), level)
                for parent_report, pages in children:
                    report.requests += parent_report.requests
                    report.pages += parent_report.pages
                    report.records += parent_report.records
                    report.duplicate_ids += parent_report.duplicate_ids
                    report.anomalies.extend(parent_report.anomalies)
                    for records in pages:
                        for record in records:
                            record_id = record.get("id") if isinstance(record, dict) else None
                            if isinstance(record_id, str) and record_id not in visited:
                                visited.add(record_id)
                                next_level.append(record_id)
                        yield records
                level = next_level

    def _children(self, parent: str, modified_since: str) -> tuple[PassReport, list[list[Any]]]:
        report = PassReport()
        pages = [
            page.records
            for page in self.pages(
                type="category", modified_since=modified_since, parent=parent, report=report
            )
        ]
        return report, pages


def type_name(exc: BaseException) -> str:
    """Exception class and reason, never the exception text (which may hold a URL with query)."""
    reason = exc.__context__ or exc
    return f"{type(exc).__name__} ({type(reason).__name__})"


def parse_page(response: requests.Response, described: str, offset: int) -> CatalogPage:
    """A catalog page or a specific complaint. An HTML error page served with 200 by a proxy
    in front of 1C is the classic case; so is a `count` smaller than the data it came with."""
    content_type = response.headers.get("Content-Type", "")
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        raise OneCResponseError(
            f"1C answered {described} with a body that is not JSON "
            f"(Content-Type {content_type!r}): {truncate(response.text, 200)}",
            status=response.status_code,
            body=truncate(response.text),
        ) from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise OneCResponseError(
            f"1C answered {described} without a `data` list: {truncate(response.text, 200)}"
        )
    count = body.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise OneCResponseError(
            f"1C answered {described} with a `count` that is not a count: {count!r}"
        )
    if offset + len(body["data"]) > count:
        raise OneCResponseError(
            f"1C answered {described} with count={count} but {len(body['data'])} records at offset {offset}"
        )
    return CatalogPage(offset=offset, count=count, records=body["data"])
