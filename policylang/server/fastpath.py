"""The fast path of the decision routes (docs/server.md#fast-path).

A raw ASGI layer in front of the service's own layers that answers exactly
``POST /access/v1/evaluation``, ``POST /access/v1/evaluations`` and ``POST /v1/decide``
itself, in one coroutine: it reads the body under the same cap and deadline as
:class:`~policylang.server.app.BodyLimitMiddleware` (the same code), parses it with
orjson, maps and decides with the same functions as the routes
(:mod:`policylang.server.routes.authzen`, :mod:`policylang.server.authzen`,
:meth:`RouteContext.decide_now <policylang.server.routes.RouteContext.decide_now>`),
counts the same metrics and answers with the same status, JSON and headers
(``Content-Length``, ``Content-Type``, ``X-Request-ID``). What it skips is the cost of the
layers in between: a ``Request`` and a ``Response`` object, a closure per layer, the
header parsing of Starlette, and the standard-library JSON decoder.

Everything else goes to the service's layers unchanged: other paths and methods, and
every request when the app has a feature the fast path does not implement (proven
workload identity, Approvals over AuthZEN, limits, an audit log or an approvals store:
:func:`eligible` says which). The decision routes are not guarded routes
(:data:`policylang.server.auth.GUARDED_PREFIXES`), so the authentication layer has
nothing to check on them; the fast path does not check anything either.

A body orjson does not take as it is (invalid JSON, a BOM, UTF-16, a lone surrogate, a
nesting deeper than orjson's limit, an integer orjson would read as a float) is parsed
again by :func:`~policylang.server.app.parse_json_body`, which gives the answer (the
same value, or the same 400 message) the service's layers give.

Under uvicorn's httptools protocol (what ``policylang serve`` runs) two more costs go,
with the same bytes on the wire: a body that has already arrived whole is read without
arming the body deadline (``receive()`` cannot wait, so the deadline cannot fire), and
the answer's head and body leave in one transport write instead of two (one syscall,
one TCP segment). Under any other server both steps are the ordinary ones.

``create_app(..., fast_path=False)`` or ``POLICYLANG_FAST_PATH=0`` in the environment
turns it off (tests compare both; debugging).
"""

from __future__ import annotations

import asyncio
import os
from time import perf_counter

from .app import BodyLimitMiddleware, _dumps, parse_json_body
from .authzen import decision_context, parse_batch, to_request
from .routes.authzen import _respond, _run_batch
from ..evaluation.cache import MAX_KEY_BYTES, RequestCache

try:
    from orjson import JSONDecodeError as _OrjsonError
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - orjson is in the server extra
    _orjson_loads = None
    _OrjsonError = ValueError

__all__ = ["ENV", "INLINE", "PATHS", "FastPath", "eligible", "enabled_by_env", "install", "request_headers"]

#: the environment variable that turns the fast path off (``0``, ``false``, ``off``, ``no``)
ENV = "POLICYLANG_FAST_PATH"

#: path -> handler (``FastPath._<name>``), also the metrics endpoint
PATHS = {
    "/access/v1/evaluation": "evaluation",
    "/access/v1/evaluations": "evaluations",
    "/v1/decide": "decide",
}

#: the handlers with no await in them (a single decision), which the protocol can run
#: inline (policylang/server/protocol.py); a batch yields to the loop as it goes
INLINE = ("evaluation", "decide")

#: 19 digits in a row (every digit mapped to 0 first: a regular expression costs more
#: than the parse): maybe an integer beyond 64 bits, which orjson reads as a float (the
#: standard decoder keeps it an integer); such bodies take the standard decoder
_DIGITS = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19

_JSON = b"application/json"
_START = "http.response.start"
_BODY = "http.response.body"


def request_id() -> bytes:
    """A new ``X-Request-ID``: what ``uuid.uuid4().hex`` gives (32 hex digits, version 4,
    RFC 4122 variant), without the ``UUID`` object."""
    v = int.from_bytes(os.urandom(16), "big")
    v = (v & ~(0xC000 << 48)) | (0x8000 << 48)
    v = (v & ~(0xF000 << 64)) | (4 << 76)
    return b"%032x" % v


def request_headers(headers) -> tuple[bytes, bytes | None]:
    """(``X-Request-ID``, ``Content-Type``) of a request's ASGI headers: the first of
    each; a request id that is absent or empty is made (:func:`request_id`)."""
    rid = ctype = None
    for key, value in headers:
        if key == b"x-request-id":
            if rid is None:
                rid = value
        elif key == b"content-type" and ctype is None:
            ctype = value
    return rid or request_id(), ctype


def _cycle_class():
    """uvicorn's request cycle (httptools), whose ``receive`` the fast path can look
    through: a body that has arrived whole is read without a deadline (nothing waits)."""
    try:
        from uvicorn.protocols.http.httptools_impl import RequestResponseCycle
    except ImportError:  # pragma: no cover
        return None
    return RequestResponseCycle


class _Coalesced:
    """A transport stand-in that keeps what is written until :meth:`flush`; everything
    else (``is_closing``, ``close`` after a flush, ...) is the real transport's."""

    __slots__ = ("_parts", "_transport")

    def __init__(self, transport):
        self._transport = transport
        self._parts: list = []

    def write(self, data) -> None:
        self._parts.append(data)

    def flush(self) -> None:
        parts = self._parts
        if parts:
            self._parts = []
            self._transport.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name):
        return getattr(self._transport, name)


def _whole(cycle, cap: int) -> bool:
    """Has uvicorn's cycle received the whole body, within ``cap`` bytes (so that its
    ``receive()`` returns at once)? False whenever it cannot tell (another version)."""
    event = getattr(cycle, "message_event", None)
    body = getattr(cycle, "body", None)
    return (getattr(cycle, "more_body", True) is False and getattr(cycle, "disconnected", True) is False
            and event is not None and event.is_set() and body is not None and len(body) <= cap)


def enabled_by_env() -> bool:
    """False when ``POLICYLANG_FAST_PATH`` says off."""
    return os.environ.get(ENV, "").strip().lower() not in ("0", "false", "off", "no")


def eligible(ctx, config) -> str | None:
    """None when the fast path can serve the decision routes of this app exactly as its
    routes do; else the feature it leaves to them."""
    if _orjson_loads is None:  # pragma: no cover
        return "orjson is not installed"
    if getattr(ctx, "aarp", None) is not None:
        return "Approvals over AuthZEN"
    if ctx.use_threads:
        return "an audit log or an approvals store (decisions in the thread pool)"
    from .routes import RouteContext
    if getattr(ctx.decide, "__func__", None) is not RouteContext.decide:
        return "limits (a store round trip per decision)"
    from .identity import verifier_for
    try:
        if verifier_for(config) is not None:
            return "proven workload identity"
    except Exception as e:  # noqa: BLE001 - a bundle that cannot be read: the routes answer (fail closed)
        return f"proven workload identity ({e})"
    return None


def _media(content_type: bytes) -> bytes:
    """The media type of a Content-Type, as ``parse_json_body`` reads it (ASCII
    whitespace and case only: anything else is left to it)."""
    return content_type.split(b";", 1)[0].strip().lower()


def parse_body(content_type: bytes | None, raw: bytes) -> dict:
    """:func:`~policylang.server.app.parse_json_body` for a body of
    ``Content-Type: application/json``, through orjson when it gives the same value."""
    if content_type is not None and (content_type == _JSON or _media(content_type) == _JSON) \
            and _LONG_DIGITS not in raw.translate(_DIGITS):
        try:
            data = _orjson_loads(raw)
        except _OrjsonError:
            data = None
        if data.__class__ is dict:
            return data
    return parse_json_body(None if content_type is None else content_type.decode("latin-1"), raw)


class FastPath:
    """The ASGI layer: the decision routes here, everything else to ``app``."""

    def __init__(self, app, ctx, config):
        self.app = app
        self.ctx = ctx
        self.service = ctx.service
        self.metrics = ctx.metrics
        self.decide_now = ctx.decide_now
        self.body = BodyLimitMiddleware(None, max_body=config.max_body, body_timeout=config.body_timeout)
        self.handlers = {path: getattr(self, "_" + name) for path, name in PATHS.items()}
        #: raw request target -> the synchronous handler, for the routes whose answer
        #: needs no await (single decisions): what the protocol answers inline
        self.inline = {path.encode("ascii"): getattr(self, name) for path, name in PATHS.items()
                       if name in INLINE}
        self.max_body = config.max_body
        #: (engine, {route: RequestCache}): the answer cache of the engine now serving
        self._answer_caches = None
        self._cycle = _cycle_class()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        handler = self.handlers.get(scope["path"])
        if handler is None:
            return await self.app(scope, receive, send)
        rid, ctype = request_headers(scope["headers"])
        scope["policylang.request_id"] = rid
        limit = self.body
        cycle = getattr(receive, "__self__", None)
        if cycle.__class__ is not self._cycle:
            cycle = None
        if cycle is not None and _whole(cycle, limit.max_body):
            # the whole body is in and within the cap: receive() returns it at once (no
            # deadline to keep) and the reader answers nothing
            raw = await limit._read(scope, receive, send)
        else:
            async def send_with_id(message):  # the body reader's own answers (413, 408)
                if message["type"] == _START:
                    message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid)]
                await send(message)

            try:
                async with asyncio.timeout(limit.body_timeout):
                    raw = await limit._read(scope, receive, send_with_id)
            except TimeoutError:
                return await limit._answer(send_with_id, 408,
                                           f"the body did not arrive within {limit.body_timeout:g} seconds")
        if raw is None:
            return
        status, body = await handler(ctype, raw)
        start = {"type": _START, "status": status,
                 "headers": [(b"content-length", b"%d" % len(body)), (b"content-type", _JSON),
                             (b"x-request-id", rid)]}
        if cycle is not None and getattr(send, "__self__", None) is cycle and hasattr(cycle, "transport"):
            # uvicorn writes the head and the body with one write each (two syscalls, two
            # segments): collect both, write them once; the bytes are the same
            transport = cycle.transport
            buffer = _Coalesced(transport)
            cycle.transport = buffer
            try:
                await send(start)
                await send({"type": _BODY, "body": body})
            finally:
                cycle.transport = transport
                buffer.flush()
            return
        await send(start)
        await send({"type": _BODY, "body": body})

    def _failure(self, endpoint: str, exc: Exception) -> tuple[int, bytes]:
        response = self.ctx.failure(endpoint, exc)
        return response.status_code, response.body

    # -- the routes (policylang/server/routes/authzen.py, decide.py): the same steps -----

    async def _evaluation(self, ctype, raw: bytes) -> tuple[int, bytes]:
        return self.evaluation(ctype, raw)

    def _answers(self, engine, route: str, ctype, raw: bytes):
        """The answer cache of ``route`` for ``engine`` (docs/server.md#answer-cache), or
        None when this body is not kept there: only an exact ``application/json`` body
        within the engine's key cap, on an engine that caches exact requests."""
        if ctype != _JSON or len(raw) > MAX_KEY_BYTES:
            return None
        cell = self._answer_caches
        if cell is None or cell[0] is not engine:  # a reload: a new engine, new caches
            terms = engine.exact_cache()
            cell = self._answer_caches = (engine, None if terms is None else
                                          {name: RequestCache(*terms) for name in INLINE})
        caches = cell[1]
        return None if caches is None else caches[route]

    def _kept(self, engine, route: str, ctype, raw: bytes, t0: float) -> tuple:
        """(the answer cache for this body or None, the answer it kept or None); a kept
        answer is counted as an answered decision and an engine cache hit."""
        cache = self._answers(engine, route, ctype, raw)
        hit = cache.get(raw) if cache is not None else None
        if hit is None:
            return cache, None
        engine.count_hit()  # the same bytes, the same engine: the same answer
        metrics = self.metrics
        metrics.decided(route, hit[1])
        metrics.observe(route, perf_counter() - t0)
        return cache, hit[0]

    def evaluation(self, ctype, raw: bytes) -> tuple[int, bytes]:
        """``POST /access/v1/evaluation``: (status, body) of the answer (no await inside:
        also what the protocol's inline answers call, :mod:`policylang.server.protocol`)."""
        t0 = perf_counter()
        metrics = self.metrics
        engine = self.service.current.engine
        cache, kept = self._kept(engine, "evaluation", ctype, raw, t0)
        if kept is not None:
            return 200, kept
        try:
            body = parse_body(ctype, raw)
            with_context = decision_context(body, True)
            request = to_request(body)
            d = self.decide_now(engine, request, "", False)
            answer = _respond(d, with_context)
        except Exception as e:  # noqa: BLE001 - failure() answers each (a bug: logged, 500)
            return self._failure("evaluation", e)
        metrics.decided("evaluation", d.decision)
        out = _dumps(answer)
        if cache is not None and _keepable(d, request):
            cache.put(raw, (out, d.decision))
        metrics.observe("evaluation", perf_counter() - t0)
        return 200, out

    async def _evaluations(self, ctype, raw: bytes) -> tuple[int, bytes]:
        t0 = perf_counter()
        counts: dict = {}
        metrics = self.metrics
        try:
            body = parse_body(ctype, raw)
            batch = parse_batch(body)
            engine = self.service.current.engine
            if batch.items is None:  # no array: a single evaluation
                with_context = decision_context(body, True)
                d = self.decide_now(engine, to_request(body), "", False)
                answer = _respond(d, with_context)
                metrics.decided("evaluations", d.decision)
                out = _dumps(answer)
                metrics.observe("evaluations", perf_counter() - t0)
                return 200, out
            with_context = decision_context(body, False)
            items = await _run_batch(batch, engine, counts, None, self.ctx.item_failure, direct=True,
                                     with_context=with_context)
        except Exception as e:  # noqa: BLE001 - failure() answers each (a bug: logged, 500)
            return self._failure("evaluations", e)
        for outcome, n in counts.items():
            metrics.decided("evaluations", outcome, n)
        out = _dumps({"evaluations": items})
        metrics.observe("evaluations", perf_counter() - t0)
        return 200, out

    async def _decide(self, ctype, raw: bytes) -> tuple[int, bytes]:
        return self.decide(ctype, raw)

    def decide(self, ctype, raw: bytes) -> tuple[int, bytes]:
        """``POST /v1/decide``: (status, body) of the answer (no await inside, as :meth:`evaluation`)."""
        t0 = perf_counter()
        metrics = self.metrics
        engine = self.service.current.engine
        cache, kept = self._kept(engine, "decide", ctype, raw, t0)
        if kept is not None:
            return 200, kept
        try:
            body = parse_body(ctype, raw)
            d = self.decide_now(engine, body, "", True)
        except Exception as e:  # noqa: BLE001 - failure() answers each (a bug: logged, 500)
            return self._failure("decide", e)
        metrics.decided("decide", d.decision)
        out = _dumps(d.to_dict())
        if cache is not None and _keepable(d, body):
            cache.put(raw, (out, d.decision))
        metrics.observe("decide", perf_counter() - t0)
        return 200, out


def _keepable(decision, request) -> bool:
    """May this answer be kept by its body's bytes? On the engine's own terms: no
    errors, no limits, no approval in the request (docs/engine.md#the-decision-cache)."""
    return (not decision.errors and not decision.limits and request.__class__ is dict
            and request.get("approval") is None)


def install(app, ctx, config, enabled: bool | None = None) -> str | None:
    """Put the fast path in front of ``app``'s layers when ``enabled`` (default: not
    turned off by ``POLICYLANG_FAST_PATH``) and :func:`eligible`. Returns None when
    installed, else why not (also kept as ``app.state.fast_path``)."""
    if enabled is None:
        enabled = enabled_by_env()
    why = eligible(ctx, config) if enabled else f"turned off ({ENV}=0 or fast_path=False)"
    app.state.fast_path = why or "on"
    if why is None:
        app.set_front(FastPath(app._front, ctx, config))
    return why

