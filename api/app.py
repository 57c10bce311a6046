"""The HTTP application: GraphQL (with GraphiQL), health and readiness."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from cross_web import HTTPException
from sqlalchemy import select, text
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UNSET, UnsetType

from api.auth import principal_from_authorization
from api.body_limit import BodyLimit
from api.config import Settings
from api.context import (
    RequestContext,
    header_id,
    new_request_id,
    parse_min_position,
)
from api.http_errors import BadRequestError, error_response, parse_json_object
from api.payment_webhooks import payment_webhook
from api.rate_limits import RateLimit, RatePolicy
from api.runtime import Runtime, migrate, migrations_current
from api.schema import build_schema
from api.webhooks import carrier_webhook
from domain.errors import DomainError, ValidationError
from projections.engine import failing_position
from projections.tables import projection_tracking

log = logging.getLogger("patron.http")


class RuntimeHolder:
    """The runtime exists only once the lifespan has started; routes look it up here."""

    def __init__(self, runtime: Runtime | None = None) -> None:
        self._runtime = runtime

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the application has not started (lifespan not run)")
        return self._runtime

    @runtime.setter
    def runtime(self, value: Runtime | None) -> None:
        self._runtime = value


class PatronGraphQL(GraphQL):
    def __init__(self, settings: Settings, holder: RuntimeHolder) -> None:
        super().__init__(build_schema(settings), graphql_ide="graphiql")
        self.holder = holder

    async def on_ws_connect(self, context: dict[str, Any]) -> UnsetType:
        """graphql-transport-ws `connection_init`: a token in its payload that is not valid
        closes the socket with 4403 Forbidden, as the protocol specifies, rather than
        acknowledging and failing every subscription later."""
        params = context.get("connection_params") or {}
        header = params.get("Authorization") or params.get("authorization")
        if header is not None:
            if not isinstance(header, str):
                raise ConnectionRejectionError()
            try:
                principal_from_authorization(header, self.holder.runtime.settings.secret_key)
            except DomainError:
                raise ConnectionRejectionError() from None
        return UNSET

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """strawberry answers its HTTP refusals in plain text; ours are GraphQL-shaped."""
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        try:
            response = await self.run(Request(scope=scope, receive=receive))
        except HTTPException as error:
            request_id = scope.get("state", {}).get("request_id")
            log.info("refused a malformed request %s: %s", request_id, error.reason)
            response = error_response(error.status_code, error.reason, "BAD_REQUEST",
                                      request_id=request_id)
        await response(scope, receive, send)

    def parse_json(self, data: str | bytes) -> Any:
        """Bodies and GET parameters: UTF-8 JSON objects, refused with 400 otherwise."""
        try:
            return parse_json_object(data.encode("utf-8", "surrogatepass")
                                     if isinstance(data, str) else data)
        except BadRequestError as error:
            raise HTTPException(400, error.message) from None

    async def get_context(self, request: Any, response: Any) -> dict[str, Any]:
        state = request.scope.setdefault("state", {})
        request_id = state.get("request_id") or new_request_id(request)
        patron = RequestContext(
            runtime=self.holder.runtime,
            request=request,
            principal=state["principal"],
            request_id=request_id,
            correlation_id=header_id(request, "x-correlation-id") or request_id,
            causation_id=header_id(request, "x-causation-id"),
            channel_header=request.headers.get("x-patron-channel"),
            min_position=state.get("min_position", 0),
            # A websocket has no response headers to add to once it is open.
            response_headers={} if isinstance(response, WebSocket) else response.headers,
        )
        if not isinstance(response, WebSocket):
            response.headers["X-Request-Id"] = request_id
        return {"request": request, "response": response, "patron": patron}


class RequestGate:
    """Authenticates and reads consistency headers before GraphQL sees the request.

    A bad token or header is answered here with a JSON error and the matching HTTP status,
    so resolvers only ever run with a known principal.
    """

    def __init__(self, app: ASGIApp, holder: RuntimeHolder) -> None:
        self.app = app
        self.holder = holder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = HTTPConnection(scope)
        request_id = new_request_id(request)
        try:
            principal = principal_from_authorization(
                request.headers.get("authorization"), self.holder.runtime.settings.secret_key
            )
            min_position = parse_min_position(request)
            if min_position:
                await self._require_recorded(min_position)
        except DomainError as error:
            if scope["type"] == "websocket":
                # Refuse the handshake; close codes 4xxx mirror the HTTP status.
                code = 4401 if error.code.value == "UNAUTHENTICATED" else 4400
                await WebSocket(scope, receive, send).close(code=code, reason=error.message)
                return
            status = 401 if error.code.value == "UNAUTHENTICATED" else 400
            response = JSONResponse(
                {"errors": [{"message": error.message,
                             "extensions": {"code": error.code.value, "requestId": request_id}}]},
                status_code=status,
                headers={"X-Request-Id": request_id},
            )
            await response(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state.update(principal=principal, min_position=min_position, request_id=request_id)
        await self.app(scope, receive, send)

    async def _require_recorded(self, position: int) -> None:
        """A position no event has yet can only be a client's mistake (a write's position is
        recorded before it is answered): say so at once rather than wait out the timeout."""
        head = await run_in_threadpool(self.holder.runtime.runner.head)
        if position > head:
            raise ValidationError(
                f"X-Patron-Min-Position {position} is beyond the last recorded event ({head}); "
                "send the position a write of yours answered"
            )


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.app.state.holder.runtime
    checks: dict[str, Any] = {}
    try:
        async with runtime.async_engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as error:
        checks["database"] = f"unreachable: {type(error).__name__}"
        return JSONResponse({"status": "unavailable", "checks": checks}, status_code=503)
    current = await run_in_threadpool(
        migrations_current, runtime.sync_engine, runtime.settings.database
    )
    checks["migrations"] = "current" if current else "pending: run `patron migrate`"
    checks["projections"] = await _projections_check(runtime)
    ready = current and checks["projections"] != "not running"
    degraded = ready and checks["projections"].startswith("degraded")
    return JSONResponse(
        {"status": "degraded" if degraded else "ready" if ready else "unavailable",
         "checks": checks},
        status_code=200 if ready else 503,
    )


async def _projections_check(runtime: Runtime) -> str:
    """"running", "not running", or "degraded: NAME stopped at position P (failing event E)".

    A failing projection stops only itself: the server still answers every read that does
    not touch it, so it stays ready (200) but says which read model is stale and where.
    """
    async with runtime.async_engine.connect() as conn:
        rows = (await conn.execute(select(
            projection_tracking.c.name, projection_tracking.c.position,
            projection_tracking.c.last_error, projection_tracking.c.lease_expires_at,
        ).order_by(projection_tracking.c.name))).all()
    if runtime.runner.running:
        running = True
    else:
        # Projections may run in their own process: then a live lease shows they are running.
        now = datetime.now(UTC)
        alive = [r for r in rows if r.lease_expires_at and _aware(r.lease_expires_at) > now]
        running = bool(rows) and len(alive) == len(rows)
    if not running:
        return "not running"
    failing = [
        f"{row.name} stopped at position {row.position} (failing event "
        f"{failing_position(row.last_error) or row.position + 1})"
        for row in rows if row.last_error
    ]
    return "degraded: " + "; ".join(failing) if failing else "running"


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def create_app(
    settings: Settings | None = None,
    runtime: Runtime | None = None,
    *,
    migrate_on_start: bool | None = None,
    run_projections: bool | None = None,
) -> Starlette:
    settings = settings or (runtime.settings if runtime else Settings.from_env())
    if migrate_on_start is None:
        migrate_on_start = settings.database.is_sqlite
    if run_projections is None:
        run_projections = settings.run_projections
    holder = RuntimeHolder(runtime)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if migrate_on_start:
            await run_in_threadpool(migrate, settings.database)
        active = runtime or await run_in_threadpool(Runtime, settings)
        holder.runtime = active
        if run_projections:
            active.start_projections()
        active.scheduler.start(settings.scheduler_interval)
        log.info("Patron ready on %s", settings.database.safe_url)
        try:
            yield
        finally:
            holder.runtime = None
            active.scheduler.stop()
            if runtime is None:
                await active.aclose()
            else:
                active.runner.stop()

    policy = RatePolicy.parse(settings.rate_limit_anonymous, settings.rate_limit_signed_in,
                              settings.rate_limit_storage)
    # The gate decodes the token; the rate limit counts by its subject before the body is
    # read; the body limit reads it (bounded) before strawberry parses it.
    graphql = BodyLimit(PatronGraphQL(settings, holder), settings.max_body_bytes)
    gate = RequestGate(RateLimit(graphql, policy), holder)
    app = Starlette(
        routes=[
            Route("/graphql", gate, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", gate),
            Route("/webhooks/carriers/{carrier}", carrier_webhook, methods=["POST"]),
            Route("/webhooks/payments/{provider}", payment_webhook, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
        ],
        lifespan=lifespan,
    )
    app.state.holder = holder
    return app
