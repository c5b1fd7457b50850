"""`GET /v1/outlets/{outlet_id}/changes` and `GET /healthz`.

A call: authenticate (401/404/403), validate parameters (400), record the contact and the
acknowledgement (the cursor sent), then read one keyset page from the snapshot. The page is
`limit + 1` rows so `has_more` needs no count. The cursor returned names the last item sent
(on the last page, the feed's newest row: nothing up to it is left for this outlet); it is
only acknowledged when the outlet sends it back, which is what makes a repeated call after a
crash return the same items (at-least-once).
"""

from __future__ import annotations

import json
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Security
from fastapi.responses import Response
from fastapi.security import HTTPBearer

from catalog_assets.outlet_api.deps import (
    ApiError,
    OutletService,
    get_service,
    store_unavailable,
)
from catalog_assets.outlet_api.schemas import Changes, ErrorBody, Health
from catalog_assets.outlets.feeds import (
    DEFAULT_LIMIT,
    EVERYTHING,
    FEEDS,
    MAX_LIMIT,
    CursorError,
    page_cursor_seq,
    parse_entity,
    parse_limit,
    scope_key,
)
from catalog_assets.outlets.state import StateUnavailable, utc_now

logger = logging.getLogger("catalog_assets.outlet_api")
router = APIRouter()
ERRORS = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "bad parameters: unknown entity, limit out of range, a cursor that is not ours",
        401: "missing or wrong token",
        403: "a valid token for another outlet",
        404: "unknown outlet, or an outlet whose outlets.yaml entry is invalid",
        503: "the store cannot be read; retry after Retry-After seconds",
    }.items()
}
# Both are read by the handler itself, after authentication, so that a caller without a valid
# token gets 401 whatever else it sends; the schema still says that a call needs them (an
# `Authorization` header parameter is ignored by OpenAPI, a security scheme is not).
BEARER = HTTPBearer(
    auto_error=False, scheme_name="outletToken", description="the outlet's own token"
)
ENTITY = {
    "name": "entity",
    "in": "query",
    "required": True,
    "schema": {"type": "string", "enum": list(FEEDS)},
    "description": "the feed to read",
}
# Parsed by the handler too (400 `bad_request`, not FastAPI's 422), but published as what it is.
LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
    "description": "items per page",
}


@router.get(
    "/v1/outlets/{outlet_id}/changes",
    response_model=Changes,
    responses=ERRORS,
    summary="Changes for one outlet after its cursor",
    dependencies=[Security(BEARER)],
    openapi_extra={"parameters": [ENTITY, LIMIT]},
)
def changes(
    outlet_id: str,
    service: Annotated[OutletService, Depends(get_service)],
    entity: Annotated[str | None, Query(include_in_schema=False)] = None,
    cursor: Annotated[
        str | None,
        Query(description="from the previous answer; absent = continue from the last one sent"),
    ] = None,
    limit: Annotated[str | None, Query(include_in_schema=False)] = None,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    with service.view() as view:
        service.authenticate(view.registry, outlet_id, authorization)
        try:
            feed = parse_entity(entity)
            size = parse_limit(limit)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        try:
            sent = service.codec.decode_position(cursor, outlet_id, feed.name) if cursor else None
        except CursorError as exc:
            raise ApiError(400, "invalid_cursor", str(exc)) from None
        outlet = view.registry.outlets[outlet_id]
        roots = outlet.categories or None
        try:
            position = service.state.begin_request(
                outlet_id,
                feed.name,
                sent.seq if sent else None,
                utc_now(),
                sent_scope=sent.scope if sent else None,
                sent_publication=sent.publication if sent else None,
                known=view.snapshot.knows if view.snapshot else None,
                roots=roots,
                latest_seq=view.snapshot.max_seq[feed.name] if view.snapshot else None,
            )
        except StateUnavailable as exc:
            raise store_unavailable(f"outlet state cannot be written ({exc})") from None
        if view.snapshot is None:
            raise store_unavailable(view.snapshot_problem or "no feed snapshot")
        if position.restarted:
            logger.warning(
                "outlet %s, %s: its position is in a numbering the catalog store no longer "
                "continues (restored from a backup); replaying the feed from the start",
                outlet_id,
                feed.name,
            )
        after = position.after
        scope = view.snapshot.scope(roots) if roots else None
        held = position.held
        if scope is not None and held is not None and held != EVERYTHING:
            held = view.snapshot.scope(held)
        rows = view.snapshot.page(feed.name, after, size + 1, scope, held=held)
        # The last page has shown every row for this outlet up to the feed's newest: the
        # cursor says so, so a filtered outlet does not re-scan the rows of other categories,
        # and one that caught up after a filter edit can be seen to have.
        newest = view.snapshot.max_seq[feed.name]
        publication = view.snapshot.publication
    has_more = len(rows) > size
    rows = rows[:size]
    next_seq = page_cursor_seq(after, [r[0] for r in rows])
    if not has_more:
        next_seq = max(next_seq, newest)
    next_cursor = service.codec.encode(
        outlet_id, feed.name, next_seq, scope_key(roots), publication
    )
    body = (
        '{"items": ['
        + ", ".join(r[1] for r in rows)
        + f'], "cursor": {json.dumps(next_cursor)}, "has_more": {"true" if has_more else "false"}}}'
    )
    return Response(content=body.encode(), media_type="application/json")


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: ERRORS[503]},
    summary="Liveness, and which snapshot is served",
)
def healthz(service: Annotated[OutletService, Depends(get_service)]) -> Health:
    with service.view() as view:
        return Health(
            status="ok" if view.snapshot else "no_snapshot",
            snapshot=view.snapshot.name if view.snapshot else None,
            published_at=view.snapshot.published_at if view.snapshot else None,
            outlets=len(view.registry.outlets),
            registry_problems=len(view.registry.problems) + (1 if view.registry.error else 0),
        )
