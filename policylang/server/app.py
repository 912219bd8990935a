"""The HTTP decision service (docs/server.md): the app factory and its endpoints.

``create_app(config)`` loads the policy set (raising :class:`~policylang.PolicyError`
when it fails its checks), and returns a FastAPI app serving:

* the OpenID AuthZEN Authorization API 1.0: ``POST /access/v1/evaluation``,
  ``/access/v1/evaluations``, ``/access/v1/search/{subject,resource,action}`` and
  ``GET /.well-known/authzen-configuration``;
* ``POST /v1/decide`` (a docs/requests.md#request request in, the docs/requests.md#decision decision out);
* ``GET /healthz`` and ``GET /metrics``;
* the approval and token routes of :mod:`policylang.server.zsp`, when that module is
  installed and a store is configured;
* ``POST /v1/limits/release`` (:mod:`policylang.server.routes.limits`) when a store is
  configured: the store then also keeps the counters of the set's ``limit`` clauses.

Decisions run on the event loop: they take microseconds, and the engine's caches are then
only ever touched from one thread. Long batches and searches yield to the loop every few
hundred decisions. Requests that carry an approval id (the checker asks the store) and
audited decisions (a file write) run in the thread pool.

Every malformed body is answered 400 ``{"error": {"status": 400, "message": …}}`` with a
message that names the field; a body over ``max_body`` bytes 413. Every answer carries
``X-Request-ID`` (the caller's, or a generated one).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import threading
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..language.errors import PolicyError
from .authzen import BadRequest
from .metrics import Metrics
from .service import PolicyService, Reloader, ServiceConfig, build_service

log = logging.getLogger("policylang.server")

__all__ = ["create_app", "app_from_env", "CONFIG_ENV"]

#: the environment variable through which ``serve --workers N`` hands its configuration
#: to each worker process
CONFIG_ENV = "POLICYLANG_SERVE_CONFIG"

#: decisions between two yields to the event loop in long batches and searches
_YIELD_EVERY = 256


class Unavailable(Exception):
    """A dependency (audit log, store) failed: answered 503, nothing is decided."""


# --------------------------------------------------------------------------- JSON helpers

try:  # orjson (in the server extra) encodes an answer several times faster
    from orjson import dumps as _orjson_dumps
except ImportError:  # pragma: no cover
    _orjson_dumps = None


def _dumps(obj: Any) -> bytes:
    if _orjson_dumps is not None:
        try:
            return _orjson_dumps(obj)
        except TypeError:  # a lone surrogate or an integer beyond 64 bits, from a request's values
            pass
    # ensure_ascii keeps lone surrogates encodable
    return json.dumps(obj, separators=(",", ":")).encode("ascii")


def _json(obj: Any, status: int = 200) -> Response:
    return Response(_dumps(obj), status_code=status, media_type="application/json")


def error_response(status: int, message: str, headers: dict | None = None) -> Response:
    return Response(_dumps({"error": {"status": status, "message": message}}), status_code=status,
                    media_type="application/json", headers=headers)


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


#: one decoder for every body: NaN and Infinity are not JSON, nor is a number that overflows
_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def parse_json_body(content_type: str | None, raw: bytes) -> dict:
    """The body as a JSON object, or :class:`BadRequest` saying what is wrong with it."""
    if content_type is None:
        raise BadRequest("Content-Type is missing: expected application/json")
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise BadRequest(f"Content-Type must be application/json, got {content_type[:100]!r}")
    if not raw or not raw.strip():
        raise BadRequest("the body is empty: expected a JSON object")
    try:
        data = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except RecursionError:
        raise BadRequest("the body is not valid JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, an over-long integer
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    if data.__class__ is not dict:
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(data), "a number")
        raise BadRequest(f"the body must be a JSON object, got {kind}")
    return data


# ---------------------------------------------------------------------- ASGI middlewares

class RequestIdMiddleware:
    """Echo ``X-Request-ID`` on every answer, generating one when the request has none."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                rid = value
                break
        if not rid:
            rid = uuid.uuid4().hex.encode("ascii")
        scope["policylang.request_id"] = rid

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


#: the most a too-large body is read (and thrown away) before it is answered 413, so
#: that a client still sending sees the 413 rather than a connection reset
DISCARD_LIMIT = 64 << 20


class BodyLimitMiddleware:
    """Read a request's whole body up to ``max_body`` bytes, then hand it on; the
    endpoints read it from ``scope["policylang.body"]``.

    A larger body is read on (up to :data:`DISCARD_LIMIT` bytes) and discarded, then
    answered 413 with ``Connection: close``; one that declares more than that is answered
    at once. A body that has not arrived in full ``body_timeout`` seconds after the
    request head is answered 408 and the connection closed (slow-body attacks)."""

    def __init__(self, app, max_body: int, body_timeout: float | None = 30.0):
        self.app = app
        self.max_body = max_body
        self.body_timeout = body_timeout if body_timeout and body_timeout > 0 else None

    async def _answer(self, send, status: int, message: str) -> None:
        body = _dumps({"error": {"status": status, "message": message}})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def _too_large(self, send, length: str) -> None:
        await self._answer(send, 413, f"the body is larger than {self.max_body} bytes{length}")

    async def _discard(self, receive, size: int) -> bool:
        """Read and drop the rest of the body; False when the client went away."""
        while size <= DISCARD_LIMIT:
            message = await receive()
            if message["type"] != "http.request":
                return False
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                return True
        return True

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await self._read(scope, receive, send)
        except TimeoutError:
            return await self._answer(send, 408, f"the body did not arrive within {self.body_timeout:g} seconds")
        if body is None:
            return
        scope["policylang.body"] = body
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read(self, scope, receive, send) -> bytes | None:
        """The body, or None when it was answered (413) or the client went away."""
        limit = self.max_body
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    if declared <= DISCARD_LIMIT and not await self._discard(receive, 0):
                        return None
                    await self._too_large(send, f" (Content-Length: {declared})")
                    return None
                break
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            if chunk:
                size += len(chunk)
                if size > limit:
                    if more and not await self._discard(receive, size):
                        return None
                    await self._too_large(send, "")
                    return None
                chunks.append(chunk)
            if not more:
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class FastPathMiddleware:
    """Serve the decision endpoints straight from a ``(method, path)`` table, ahead of
    the framework's routing and exception layers (they cost as much as a decision).
    Everything else (the OpenAPI document, extension routes, 404s) goes on to the app.
    The same handlers are also mounted as documented routes, so behaviour is identical
    with or without this middleware."""

    def __init__(self, app, routes: dict):
        self.app = app
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is not None:
                response = await handler(Request(scope, receive))
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------ the app

class DecisionService(FastAPI):
    """The FastAPI app with the service's own ASGI layers in front of the framework's:
    ``X-Request-ID`` on every answer (500s included), the body limit, and the fast path
    for the decision endpoints. They run before FastAPI's middleware stack is entered."""

    _front = None

    def set_front(self, front) -> None:
        self._front = front

    async def __call__(self, scope, receive, send):
        front = self._front
        if front is None:
            return await super().__call__(scope, receive, send)
        await front(scope, receive, send)

    async def framework(self, scope, receive, send):
        """The app without the front layers (what they hand everything else to)."""
        await super().__call__(scope, receive, send)


class DirectRoute(APIRoute):
    """A route whose endpoint takes the ``Request`` and returns a ``Response`` itself.
    FastAPI still documents it (the body schemas come from ``openapi_extra``), but no
    dependency resolution or body parsing runs per request: the endpoints validate
    bodies by hand, which is faster and names the exact field."""

    def get_route_handler(self):
        return self.endpoint


def _lifespan(service: PolicyService, metrics: Metrics, state: dict, *, watch: bool, handle_sighup: bool):
    """The app's lifespan: the reloader thread (file polling, SIGHUP) while it serves."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        reloader = None
        hup_installed = False
        if watch:
            reloader = Reloader(service, tick=lambda: metrics.sync_cache(
                service.current.engine if service.current else None))
            reloader.start()
            state["reloader"] = reloader
            if handle_sighup and hasattr(signal, "SIGHUP") and threading.current_thread() is threading.main_thread():
                try:
                    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reloader.request_reload)
                    hup_installed = True
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
        try:
            yield
        finally:
            if hup_installed:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            if reloader is not None:
                reloader.stop()
                state["reloader"] = None

    return lifespan


async def _http_error(request: Request, exc: StarletteHTTPException):
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    if exc.status_code == 404:
        detail = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        detail = f"method {request.method} is not allowed on {request.url.path}"
    return error_response(exc.status_code, detail, headers=getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError):
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return error_response(400, "; ".join(parts) or "malformed request")


def _install_front(app: "DecisionService", config: ServiceConfig) -> None:
    """The front layers: request id, body limit, authentication, then the fast path over
    every ``DirectRoute`` mounted so far."""
    fast = {}
    for route in app.router.routes:
        if isinstance(route, DirectRoute):
            for method in route.methods:
                fast[(method, route.path)] = route.endpoint
    from .auth import AdminGuard, AuthMiddleware, Authenticator
    authenticator = guard = None
    if config.auth_configured:
        authenticator = Authenticator(jwks=config.jwks, issuer=config.jwt_issuer, audience=config.jwt_audience,
                                      algorithms=tuple(config.jwt_algorithms) or None,
                                      caller_claim=config.jwt_caller_claim, mtls=config.mtls)
        guard = AdminGuard(config.admin_policies)
    app.state.authenticator = authenticator
    inner = AuthMiddleware(FastPathMiddleware(app.framework, fast), authenticator, guard)
    app.set_front(RequestIdMiddleware(BodyLimitMiddleware(inner, max_body=config.max_body,
                                                          body_timeout=config.body_timeout)))


def create_app(config: ServiceConfig | str, *, service: PolicyService | None = None,
               extras: dict | None = None, watch: bool = True, handle_sighup: bool = True,
               aarp: dict | None = None, fast_path: bool | None = None) -> "DecisionService":
    """The decision service for ``config`` (a :class:`ServiceConfig` or a policy path).

    Loads the set now and raises :class:`PolicyError` (with every diagnostic) when it
    fails its checks. ``service``/``extras`` reuse an already built service (``serve``
    checks the set before it starts the server). ``watch``: start the reloader thread
    (file polling and SIGHUP) with the app's lifespan. ``aarp``: the Approvals over
    AuthZEN settings (``{"binding_keys": path, "binding_ttl": s}``; docs/server.md#aarp),
    which need a store. ``fast_path``: False turns the fast path of the decision routes off
    (default: on unless ``POLICYLANG_FAST_PATH=0``; docs/server.md#fast-path).
    """
    if isinstance(config, (str, os.PathLike)):
        config = ServiceConfig(path=os.fspath(config))
    metrics = Metrics()
    if service is None:
        service, extras = build_service(config)
    extras = extras or {}
    service.on_reload = metrics.reloaded
    if service.current is None:
        result = service.load("startup")
        if not result.ok:
            raise PolicyError(result.diagnostics)
    else:
        metrics.reloaded(service.last_reload)

    state: dict = {"reloader": None}
    lifespan = _lifespan(service, metrics, state, watch=watch, handle_sighup=handle_sighup)

    app = DecisionService(
        title="policylang decision service",
        version=_version(),
        description="OpenID AuthZEN Authorization API 1.0 and the policylang decision API (docs/server.md).",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.metrics = metrics
    app.state.config = config
    app.state.reloader = state

    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)

    # -- routes (policylang/server/routes/) ------------------------------------------------

    from .routes import RouteContext, register_all
    route_ctx = RouteContext(service, metrics, config)
    access_requests = None
    if aarp:  # Approvals over AuthZEN (docs/server.md#aarp)
        from .aarp import from_settings
        access_requests = from_settings(aarp, approvals=extras.get("approvals"), audit=service.audit,
                                        engine_getter=lambda: service.current.engine if service.current else None,
                                        public_url=config.public_url)
        route_ctx.aarp = access_requests
        route_ctx.use_threads = True
    app.state.access_requests = access_requests
    limit_store = extras.get("limits")
    if limit_store is not None:  # limits (docs/server.md#limits): store round trips off the loop, metrics
        from .routes.limits import limited_decide
        route_ctx.decide = limited_decide(route_ctx)
        route_ctx.limit_store = limit_store
    register_all(app, route_ctx)
    if limit_store is not None:
        from .routes import limits as limit_routes
        limit_routes.register(app, route_ctx, limit_store)

    approvals, issuer = extras.get("approvals"), extras.get("issuer")
    if approvals is not None or issuer is not None:
        from .zsp import make_router
        app.include_router(make_router(approvals=approvals, issuer=issuer,
                                       engine_getter=lambda: service.current.engine if service.current else None))

    if access_requests is not None:
        from .aarp import make_router as aarp_router
        app.include_router(aarp_router(access_requests, config))

    _install_front(app, config)
    from .fastpath import install as install_fast_path  # docs/server.md#fast-path
    install_fast_path(app, route_ctx, config, fast_path)
    return app


def _version() -> str:
    try:
        from .. import __version__
        return __version__
    except ImportError:  # pragma: no cover
        return "0"


def app_from_env() -> "DecisionService":
    """The app factory each ``serve --workers N`` worker calls (uvicorn ``factory=True``)."""
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise RuntimeError(f"{CONFIG_ENV} is not set: start the service with `policylang serve`")
    config = ServiceConfig.from_dict(json.loads(raw))
    from .aarp import AARP_ENV
    aarp = os.environ.get(AARP_ENV)
    return create_app(config, aarp=json.loads(aarp) if aarp else None)
