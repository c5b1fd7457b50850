"""Response shapes, for the OpenAPI page at /docs (the changes body itself is assembled from
pre-serialized item JSON for speed, but has exactly this shape)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Changes(BaseModel):
    items: list[dict[str, Any]] = Field(
        description="Records in the 1C shape (id, parent, name, price, stock, modified_at, ...) "
        'in sequence order; the narrow feeds carry {id, price} or {id, stock}; "removed": true '
        "marks an item to delist. Empty when nothing changed after the cursor."
    )
    cursor: str = Field(description="Opaque; send it with the next call to acknowledge this page.")
    has_more: bool = Field(description="Call again at once with the cursor while true.")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: str
    snapshot: str | None
    published_at: str | None
    outlets: int
    registry_problems: int
