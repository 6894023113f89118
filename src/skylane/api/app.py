"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from skylane import __version__
from skylane.api.routers import deployments, health, keys, pools, runs, schedules, workers
from skylane.errors import SkylaneError
from skylane.settings import Settings
from skylane.store.repository import Store

log = logging.getLogger("skylane.api")


def _field_from_loc(loc: Iterable[object]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    return ".".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SkylaneError)
    async def skylane_error(_: Request, exc: SkylaneError) -> JSONResponse:
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back: it may hold a secret the user pasted in the wrong field.
        errors = [
            {"field": _field_from_loc(e.get("loc", ())), "message": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"field": "", "message": "invalid request"}
        body = {
            "code": "invalid",
            "message": f"{first['field']}: {first['message']}",
            "field": first["field"],
            "details": {"errors": errors},
        }
        return JSONResponse({"error": body}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        body = {"code": "internal", "message": "internal server error; see the server log"}
        return JSONResponse({"error": body}, status_code=500)


def create_app(settings: Settings, store: Store, *, services: Iterable[str] = ()) -> FastAPI:
    """The API app; `services` names background services to run inside it ("dispatcher",
    "reconciler"; see skylane.services.background)."""
    background = [name for name in services if name != "api"]

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from skylane.services.background import start_services, stop_services

        started = start_services(background, store, settings)
        try:
            yield
        finally:
            stop_services(started)

    app = FastAPI(
        title="skylane",
        version=__version__,
        description="Control plane API: pools, deployments, schedules, runs, logs.",
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.settings = settings
    _install_error_handlers(app)
    for module in (health, pools, deployments, schedules, runs, keys, workers):
        app.include_router(module.router)
    return app
