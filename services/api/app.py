"""`create_app(settings)`: the FastAPI application behind `fusionwatch api` and `fusionwatch up`.

Where it sits: reads what the monitor (events) and the summarizer (summaries, media files) wrote,
writes reviewers' verdicts back, and serves the review page from services/api/static/ (plain HTML,
CSS and JavaScript; no build step). OpenAPI: /openapi.json. The interactive /docs page is off
because it loads its scripts from a CDN, which an isolated plant network cannot reach.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import inspect
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.errors import ConfigError
from services import db
from services.api.auth import LOOPBACK_HOSTS, Auth, Unauthorized, token_matches
from services.api.context import ApiContext, ApiError
from services.api.routes import admin, baselines, calls, events, media
from services.db import safe_url
from services.settings import Settings

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"

# Everything the page loads comes from this server; no inline scripts, no third parties.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Adds the headers above to every HTTP response (plain ASGI, so streaming stays streaming)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in names]
            await send(message)

        await self.app(scope, receive, with_headers)


class BodyLimit:
    """Refuses request bodies over `max_bytes` with 413 before anything reads them — before the
    token check too, which runs after FastAPI has read and parsed the body (a 200 MB body was read
    in full, unauthenticated). A declared Content-Length is checked at once; a chunked body is
    counted as it arrives."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._too_large(scope, receive, send)
        seen, started, over = 0, False, False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    raise _TooLarge()
            return message

        async def tracking(message: Message) -> None:
            nonlocal started
            if over:  # FastAPI turns the exception into its own 400 "error parsing the body": ours is the answer
                return
            started |= message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracking)
        except _TooLarge:
            pass
        if over and not started:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _error(413, f"request body over {self.max_bytes} bytes (FW_API__MAX_BODY_BYTES)")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class MetricsGuard:
    """/metrics needs the bearer token when the API is not bound to loopback (like the other reads;
    the mounted Prometheus app would otherwise answer anyone who can reach the port)."""

    def __init__(self, app: ASGIApp, auth: Auth):
        self.app, self.auth = app, auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.auth.reads_open:
            header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            if not token_matches(header, self.auth.token):
                response = _error(401, "/metrics needs 'Authorization: Bearer <token>' when the API is not bound to "
                                  "loopback (FW_API_TOKEN; Prometheus: authorization.credentials_file)",
                                  headers={"WWW-Authenticate": 'Bearer realm="fusionwatch"'})
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def _error(status: int, message: str, details: list | None = None, headers: dict | None = None) -> JSONResponse:
    body: dict = {"status": status, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _validation_message(errors: list[dict]) -> tuple[str, list[dict]]:
    details = []
    parts = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x not in ("body",)] or ["request"]
        where = ".".join(loc)
        details.append({"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")})
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "invalid request — " + "; ".join(parts[:5]), details


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, headers=exc.headers)

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return _error(401, exc.message, headers={"WWW-Authenticate": 'Bearer realm="fusionwatch"'})

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _validation_message(list(exc.errors()))
        return _error(422, message, details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "not found; the API lives under /api (see /openapi.json)"
        return _error(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    async def db_down(_: Request, exc: OperationalError) -> JSONResponse:
        log.error("database error: %s", db.redact(str(exc.orig), app.state.ctx.engine.url))
        return _error(503, "the database is not reachable right now; retry shortly (see /readyz)")

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in the API")
        return _error(500, "internal error; the API log has the details")


def _check_schema(ctx: ApiContext) -> None:
    db.wait_for_database(ctx.engine, ctx.settings.database.connect_timeout_s)
    if not inspect(ctx.engine).has_table("events"):
        raise ConfigError(f"the database at {safe_url(ctx.engine.url)} has no fusionwatch "
                          "tables; run `fusionwatch db upgrade` first")


@asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    app.state.ctx.engine.dispose()


def create_app(settings: Settings, *, live_poll_s: float = 1.0) -> FastAPI:
    """The review API and page for these settings (database, media root, bind host, token)."""
    engine = db.make_engine(settings.database.url)
    token = settings.api.token.get_secret_value() if settings.api.token else None
    ctx = ApiContext(settings=settings, engine=engine, sessions=db.session_factory(engine),
                     auth=Auth.from_settings(settings.api.host, token), media_root=settings.media_dir,
                     live_poll_s=live_poll_s)
    _check_schema(ctx)

    app = FastAPI(
        title="fusionwatch review API",
        version="1",
        description="Events, narrated clips and verdicts for quality-control review. Writes need "
        "`Authorization: Bearer <FW_API_TOKEN>`; reads too unless the API is bound to loopback. "
        "Errors are `{\"error\": {\"status\", \"message\"}}`.",
        docs_url=None, redoc_url=None, lifespan=_lifespan,
    )
    app.state.ctx = ctx
    if ctx.auth.generated:  # the token itself never goes to the log (see review_url)
        log.warning("FW_API_TOKEN is not set; writes (verdicts) need a token generated for this run, printed with the "
                    "page link on the terminal. Set FW_API_TOKEN to keep one across restarts.")
    _install_error_handlers(app)
    app.include_router(events.router)
    app.include_router(media.router)
    app.include_router(admin.router)
    app.include_router(baselines.router)
    app.include_router(calls.router)
    app.include_router(admin.health)

    try:
        from prometheus_client import make_asgi_app

        from services.observability.metrics import REGISTRY

        app.mount("/metrics", MetricsGuard(make_asgi_app(registry=REGISTRY), ctx.auth))
    except ImportError:  # observability is part of the same package; only a broken install lacks it
        log.warning("metrics module not importable; /metrics is off")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})

    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, max_bytes=settings.api.max_body_bytes)  # added last: runs first
    if ctx.auth.reads_open:
        # open reads on loopback: refuse other Host names so that DNS rebinding cannot reach them
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS)
    return app


def review_url(app: FastAPI, with_token: bool = True) -> str:
    """The page link to print at start-up; carries a generated token in the fragment (print that
    one to a terminal only: `token_note` says where else to find the token)."""
    ctx: ApiContext = app.state.ctx
    host = ctx.settings.api.host
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    url = f"http://{host}:{ctx.settings.api.port}/"
    return url + f"#token={ctx.auth.token}" if ctx.auth.generated and with_token else url


def print_review_link(app: FastAPI, console) -> None:
    """The page link on the terminal. A generated token goes into the link only when the console is a
    terminal; otherwise (output captured into a log) it is written to <var_dir>/api-token, mode 0600."""
    ctx: ApiContext = app.state.ctx
    if not ctx.auth.generated or console.is_terminal:
        console.print(f"Review page: [bold]{review_url(app)}[/]")
        return
    path = ctx.settings.var_dir / "api-token"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(ctx.auth.token + "\n")
    console.print(f"Review page: [bold]{review_url(app, with_token=False)}[/] (writes need the token generated for "
                  f"this run, in {path}; or set FW_API_TOKEN)")
