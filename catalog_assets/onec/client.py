"""The 1C catalog API client: `{ONEC_BASE_URL}/api/catalog`, paged by limit/offset.

It owns all HTTP to 1C (timeouts, retries, Basic auth, error translation) and yields one page
at a time, so nothing upstream ever holds the whole catalog. It also watches each paging pass
for signs that 1C changed underneath it (the `count` moved, an id came back twice): offset
paging over a moving list can skip an item, and the caller must then not advance its cursor.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from catalog_assets.http import (
    HttpClient,
    HttpResponse,
    TransportError,
    UpstreamError,
    decode_json,
    failure_name,
    redact,
    safe_url,
    truncate,
)
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
    latency_s: float = 0.0  # request sent to response headers in: how slow 1C itself is
    parent: str | None = None  # the `parent` asked for (tree walk), so a problem names it


@dataclass
class PassReport:
    """What one paging pass saw; `consistent` is False when 1C moved while we paged."""

    requests: int = 0
    pages: int = 0
    records: int = 0
    first_count: int | None = None
    last_count: int | None = None
    duplicate_ids: int = 0
    pages_ahead: int = 0  # pages fetched concurrently, ahead of the one being judged
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
    # How hard a sync may press 1C: parents asked at once during the full walk, and pages of one
    # listing in flight once 1C has answered two pages in a row in `slow_page_ms` or more (a
    # fast 1C is paged strictly in sequence). A 1C server spends a session per request. What
    # was learnt lasts as long as the resource (one run): after the walk has met a slow 1C,
    # the listings that follow page ahead from their second page.
    walk_concurrency: int = 8
    page_concurrency: int = 4
    slow_page_ms: float = 20.0
    bad_page_retries: int = 2

    _session: HttpClient | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _session_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _slow_streak: int = PrivateAttr(default=0)  # answers in a row that took `slow_page_ms`+

    def _http(self) -> HttpClient:
        with self._session_lock:  # pages are fetched from several threads: one pool for all
            if self._session is None:
                if not 2 <= self.page_size <= 100:
                    raise ValueError(
                        "page_size must be 2..100 (1C pages hold at most 100, and each page after "
                        f"the first repeats the previous page's last record), got {self.page_size}"
                    )
                self._session = HttpClient(
                    max_retries=self.max_retries,
                    backoff_seconds=self.backoff_seconds,
                    pool_size=max(self.walk_concurrency, self.page_concurrency, 2) + 2,
                    basic_auth=(self.username, self.password or "") if self.username else None,
                )
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
        try:
            response = self._http().get(url, params=params, timeout=self.timeout_seconds)
        except TransportError as exc:
            raise UpstreamError(
                f"1C request failed after {self.max_retries} retries: {described}: {failure_name(exc)}"
            ) from None
        if response.status_code != 200:
            text = redact(response.text, [self.password])
            raise UpstreamError(
                f"1C answered HTTP {response.status_code} to {described}: {truncate(text, 300)}",
                status=response.status_code,
                body=truncate(text),
            )
        page = parse_page(response, described, offset, secrets=[self.password])
        page.latency_s = response.elapsed_s
        with self._lock:
            slow = page.latency_s * 1000 >= self.slow_page_ms
            self._slow_streak = self._slow_streak + 1 if slow else 0
        return page

    @property
    def onec_is_slow(self) -> bool:
        """1C's last two answers (in this pass or an earlier one) each took `slow_page_ms` or more."""
        return self._slow_streak >= 2

    def pages(
        self,
        *,
        type: str,
        modified_since: str,
        parent: str | None = None,
        report: PassReport | None = None,
        concurrency: int | None = None,
        first_page_may_fail: bool = False,
    ) -> Iterator[CatalogPage]:
        """Every page of one query, in order, until every position below `count` was read.

        Offset paging over a list that moves can skip an item without `count` moving: 1C
        deletes a record already read and creates one, and the record at the page boundary
        slides back into a page already read. So each page after the first is asked for from
        one position earlier, and its first record must be the previous page's last; when it
        is not, 1C shifted the list under us. That costs one record a page (1,011 pages for
        100,000 products instead of 1,000). A short page does not end the query while `count`
        says more exists (a server may cap its pages, or drop a record it cannot serialise),
        and a query that ends below its `count` is an anomaly too. Any anomaly marks the pass
        inconsistent, and the caller then holds its cursor and judges no removals.

        Against a slow 1C (`onec_is_slow`: its last two answers, in this pass or an earlier
        one of the same run, took `slow_page_ms` or more), up to
        `concurrency` (default `page_concurrency`) further offsets below `count` are asked for
        at once, so the pass costs about pages / concurrency round trips instead of one per
        page. Against a fast 1C that buys nothing, so the requests stay strictly sequential
        (the caller's prefetch still overlaps them with staging). Either way pages are judged
        and yielded in offset order, exactly as a sequential pass would. Only offsets below
        the latest `count` are asked for, so a still catalog costs no request beyond the
        sequential pass; when 1C moves, a page asked for ahead may be dropped unread.

        Records whose id was already seen in this pass are dropped here (and counted): 1C
        shifted the list under us, and the first copy is as fresh as the pass can know.

        A first page that stays unusable fails the pass (there is no `count` to page on),
        unless `first_page_may_fail`: then it is yielded as a problem page and ends the query.
        """
        report = report if report is not None else PassReport()
        width = max(1, self.page_concurrency if concurrency is None else concurrency)
        step = self.page_size - 1  # new positions a full page brings after its anchor
        seen: set[str] = set()
        in_flight: deque[tuple[int, Future]] = deque()
        pool: ThreadPoolExecutor | None = None
        where = f"({type}, parent={parent})"

        def fetch(at: int, known_count: int | None) -> tuple[CatalogPage, int]:
            return self._fetch_trusted(type, modified_since, parent, at, known_count)

        try:
            position = 0  # the first position of the list not read yet
            anchor: list[Any] = []  # the last record read, which the next page must start with
            while True:
                asked = position - 1 if anchor else position
                if in_flight and in_flight[0][0] != asked:
                    _drop(in_flight)  # 1C paged differently than planned: ask again in order
                if in_flight:
                    page, attempts = in_flight.popleft()[1].result()
                    report.pages_ahead += 1
                else:
                    known = report.last_count
                    if known is None and first_page_may_fail:
                        known = 0  # a problem page then counts as the whole (empty) answer
                    page, attempts = fetch(asked, known)
                report.requests += attempts
                if page.problem:
                    # Skip the page, not the pass: the rest of the catalog still syncs, and the
                    # anomaly holds the cursor so the next run asks for these items again.
                    page.count = report.last_count if report.last_count is not None else page.count
                    report.anomalies.append(page.problem)
                    yield page
                    _drop(in_flight)
                    position, anchor = asked + self.page_size, []
                    if position >= page.count:
                        return
                    continue
                if report.first_count is None:
                    report.first_count = page.count
                elif page.count != report.last_count:
                    report.anomalies.append(
                        f"count changed from {report.last_count} to {page.count} at offset {asked} {where}"
                    )
                report.last_count = page.count
                records = page.records
                if anchor:
                    if records and records[0] == anchor[0]:
                        records = records[1:]
                    else:
                        report.anomalies.append(
                            f"1C's list shifted between pages: the record at offset {asked} is "
                            f"not the one the previous page ended with {where}"
                        )
                fresh = []
                for record in records:
                    record_id = record.get("id") if isinstance(record, dict) else None
                    if isinstance(record_id, str):
                        if record_id in seen:
                            report.duplicate_ids += 1
                            continue
                        seen.add(record_id)
                    fresh.append(record)
                if report.duplicate_ids and not any("ids repeated" in a for a in report.anomalies):
                    report.anomalies.append(f"ids repeated across pages {where}")
                report.pages += 1
                report.records += len(fresh)
                position = asked + len(page.records)
                if page.records:
                    anchor = [page.records[-1]]
                if not records or position >= page.count:
                    if position < page.count:
                        report.anomalies.append(
                            f"1C counted {page.count} records but served {position} {where}"
                        )
                    yield CatalogPage(asked, page.count, fresh)
                    return
                # Ask for the next pages before handing this one over, so the caller's work
                # on it overlaps with 1C's.
                if pool is None and width > 1 and self.onec_is_slow:
                    pool = ThreadPoolExecutor(width, thread_name_prefix="onec-page")
                if pool is not None:
                    ahead = in_flight[-1][0] + step if in_flight else position - 1
                    while len(in_flight) < width and ahead + 1 < page.count:
                        in_flight.append((ahead, pool.submit(fetch, ahead, page.count)))
                        ahead += step
                yield CatalogPage(asked, page.count, fresh)
        finally:
            _drop(in_flight)
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _fetch_trusted(
        self,
        type: str,
        modified_since: str,
        parent: str | None,
        offset: int,
        known_count: int | None,
    ) -> tuple[CatalogPage, int]:
        """A page and the requests it took, asking again when 1C answers 200 with something that
        is not a page (a proxy's HTML error page, a truncated body). A page that stays bad is
        returned with `problem` set — unless no `count` is known yet (the first page), when
        there is nothing to page on and the pass fails."""
        for attempt in range(self.bad_page_retries + 1):
            try:
                page = self.fetch_page(
                    type=type, modified_since=modified_since, parent=parent, offset=offset
                )
                return page, attempt + 1
            except OneCResponseError as exc:
                if known_count is None and attempt == self.bad_page_retries:
                    raise
                if attempt == self.bad_page_retries:
                    problem = CatalogPage(
                        offset, known_count, [], problem=str(exc), raw=exc.body, parent=parent
                    )
                    return problem, attempt + 1
                time.sleep(self.backoff_seconds * (2**attempt))
        raise AssertionError("unreachable")

    def walk_categories(self, *, modified_since: str, report: PassReport) -> Iterator[CatalogPage]:
        """The seed's walk: children of `parent=0`, then of each category found.

        Up to `walk_concurrency` parents are asked at once (bounded, so a 1C server is not
        flooded), and a parent is asked as soon as its own parent's answer names it, without
        waiting for the rest of its level: a slow 1C costs about
        max(depth, categories / walk_concurrency) round trips, not categories round trips.
        Each parent's children are paged sequentially (almost all fit one page). A category
        reached twice (1C reporting a cycle or a duplicate) is not descended into again, so
        the walk always ends. Pages are yielded as parents complete, in no fixed order.

        A parent whose page stays unusable (its first one included: the flat listing that
        follows a full walk still meets the categories under it) is yielded as a problem page
        and held as an anomaly, so the walk goes on and the caller quarantines the page.
        """
        visited: set[str] = {ROOT_PARENT}
        width = max(1, self.walk_concurrency)
        with ThreadPoolExecutor(max_workers=width, thread_name_prefix="onec-walk") as pool:
            running = {pool.submit(self._children, ROOT_PARENT, modified_since)}
            try:
                while running:
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        parent_report, pages = future.result()
                        report.requests += parent_report.requests
                        report.pages += parent_report.pages
                        report.records += parent_report.records
                        report.duplicate_ids += parent_report.duplicate_ids
                        report.anomalies.extend(parent_report.anomalies)
                        for page in pages:
                            for record in page.records:
                                record_id = record.get("id") if isinstance(record, dict) else None
                                if isinstance(record_id, str) and record_id not in visited:
                                    visited.add(record_id)
                                    running.add(
                                        pool.submit(self._children, record_id, modified_since)
                                    )
                            yield page
            finally:
                for future in running:
                    future.cancel()

    def _children(self, parent: str, modified_since: str) -> tuple[PassReport, list[CatalogPage]]:
        report = PassReport()
        pages = list(
            self.pages(
                type="category",
                modified_since=modified_since,
                parent=parent,
                report=report,
                concurrency=1,
                first_page_may_fail=True,
            )
        )
        return report, pages


def _drop(in_flight: deque) -> None:
    """Forget pages asked for ahead: cancel what has not started, let the rest finish unread."""
    while in_flight:
        in_flight.popleft()[1].cancel()


def parse_page(
    response: HttpResponse, described: str, offset: int, secrets: Sequence[str | None] = ()
) -> CatalogPage:
    """A catalog page or a specific complaint. An HTML error page served with 200 by a proxy
    in front of 1C is the classic case; so is a `count` smaller than the data it came with.
    A complaint quotes the body with `secrets` hidden: a proxy may echo the credentials, and
    the quote reaches the run log, the alert and the quarantine row."""
    content_type = response.headers.get("Content-Type", "")
    try:
        body = decode_json(response.content)
    except ValueError:
        text = redact(response.text, list(secrets))
        raise OneCResponseError(
            f"1C answered {described} with a body that is not JSON "
            f"(Content-Type {content_type!r}): {truncate(text, 200)}",
            status=response.status_code,
            body=truncate(text),
        ) from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        text = redact(response.text, list(secrets))
        raise OneCResponseError(
            f"1C answered {described} without a `data` list: {truncate(text, 200)}"
        )
    count = body.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise OneCResponseError(
            f"1C answered {described} with a `count` that is not a count: {count!r}"
        )
    # An empty page at or past `count` is what 1C serves for an offset beyond the end (records
    # deleted since the offset was planned): valid, and the caller sees the smaller `count`.
    if body["data"] and offset + len(body["data"]) > count:
        raise OneCResponseError(
            f"1C answered {described} with count={count} but {len(body['data'])} records at offset {offset}"
        )
    return CatalogPage(offset=offset, count=count, records=body["data"])
