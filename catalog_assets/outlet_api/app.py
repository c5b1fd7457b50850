"""The FastAPI application: routes, error bodies, and the service's lifetime."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from catalog_assets.outlet_api.config import ApiSettings
from catalog_assets.outlet_api.deps import ApiError, OutletService
from catalog_assets.outlet_api.routes import router


def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """`settings=None` reads the environment when the app starts, not when it is imported,
    so `catalog_assets.outlet_api:app` can be imported anywhere without configuration."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service = OutletService(settings or ApiSettings.from_env())
        app.state.outlets = service
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="Retail outlet hub",
        version="1",
        description="One pull API for every 1C:Retail outlet: the changes to categories, "
        "products, prices and stock after the outlet's cursor, filtered to its categories.",
        lifespan=lifespan,
    )
    app.include_router(router)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return _error(400, "bad_request", problems)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    def openapi() -> dict:
        """FastAPI lists a 422 for every route that takes parameters, but this API never sends
        one (`bad_request` answers 400, which each route lists): outlets generate their clients
        from this schema."""
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for operation in (op for path in schema["paths"].values() for op in path.values()):
                operation["responses"].pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema["components"]["schemas"].pop(unused, None)
        return app.openapi_schema

    app.openapi = openapi
    return app
