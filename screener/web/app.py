"""The console's ASGI app: routers, security headers, and how errors look."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import Response

from screener.errors import InputError, StoreError
from screener.web import audit, auth, calls, dashboard, lists, voicemail
from screener.web.core import Console, NotLoggedIn

STATIC = Path(__file__).parent / "static"
# Only our own scripts, styles, media and connections; no framing (clickjacking).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " media-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self';"
    " base-uri 'none'; object-src 'none'"
)


# Every router of the console, one or two (pages, API) per resource.
ROUTERS = (
    auth.router,
    dashboard.pages,
    dashboard.api,
    calls.pages,
    calls.api,
    lists.pages,
    lists.api,
    voicemail.pages,
    voicemail.api,
    audit.pages,
)


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def create_app(console: Console) -> FastAPI:
    """The console for one database."""
    app = FastAPI(
        title="screener console API",
        version="1",
        description="The web console's actions: calls, list entries, check, voicemail."
        " Authenticate with `Authorization: Bearer <token>` (`screener user token NAME`) or"
        " a console session (then send its CSRF token as `X-CSRF-Token` on changes).",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.console = console
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in ROUTERS:
        app.include_router(router)

    @app.exception_handler(NotLoggedIn)
    async def not_logged_in(request: Request, exc: NotLoggedIn) -> Response:
        if _is_api(request):
            return JSONResponse(
                {"detail": "log in first (session or bearer token)"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":
            target = "/"
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if _is_api(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return PlainTextResponse(str(exc.detail), status_code=exc.status_code)

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
            for e in exc.errors()
        )
        if _is_api(request):
            return JSONResponse({"detail": problems}, status_code=422)
        return PlainTextResponse(problems, status_code=422)

    return app
