"""The playground web app (docs/playground.md): a page and a JSON API over one policy set.

``create_app(path)`` returns the ASGI app; ``mount_ui(service_app, path, auth=...)``
mounts it read-only at ``/ui`` of the decision service (``serve --ui``). Every asset the
page needs is in ``static/`` (shipped in the wheel): no CDN, no external fonts.

Read-only unless ``read_only=False`` (``policylang playground --allow-write``); edited texts
are checked and decided in memory. With ``auth`` (a configured
:class:`policylang.server.auth.Authenticator`) every API call must authenticate; without it
the API answers only requests whose ``Host`` is a loopback name (no DNS rebinding), and a
state-changing call from another ``Origin`` is refused (docs/playground.md#security).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from importlib import resources
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from .workspace import (
    MAX_FILE_CHARS,
    MAX_FILES,
    FieldError,
    Workspace,
    WriteRefused,
    approval_checker,
    diagnostic_json,
    safe_relative,
)

#: the largest API body, in bytes
MAX_BODY = 8 << 20

STATIC = {
    "playground.css": "text/css; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "highlight.js": "text/javascript; charset=utf-8",
    "path.js": "text/javascript; charset=utf-8",
    "audit.js": "text/javascript; charset=utf-8",
    "audit.css": "text/css; charset=utf-8",
    "audit.html": "text/html; charset=utf-8",
    "index.html": "text/html; charset=utf-8",
}

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "127.0.0.1", "::1", "[::1]")


def _error(status: int, field: str | None, message: str, **extra) -> JSONResponse:
    body: dict = {"error": {"status": status, "message": message}}
    if field is not None:
        body["error"]["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status)


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


async def _body(request: Request) -> dict:
    ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise FieldError("content-type", "must be application/json")
    size = request.headers.get("content-length")
    if size is not None and (not size.isdigit() or int(size) > MAX_BODY):
        raise FieldError("body", f"larger than {MAX_BODY} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise FieldError("body", f"larger than {MAX_BODY} bytes")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise FieldError("body", "not UTF-8") from None
    except json.JSONDecodeError as e:
        raise FieldError("body", f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (ValueError, RecursionError) as e:
        raise FieldError("body", f"not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise FieldError("body", "must be a JSON object")
    return data


def _files_field(data: Mapping, key: str = "files") -> dict[str, str] | None:
    files = data.get(key)
    if files is None:
        return None
    if not isinstance(files, dict):
        raise FieldError(key, "must be an object {relative path: text}")
    if len(files) > MAX_FILES:
        raise FieldError(key, f"more than {MAX_FILES} files")
    out = {}
    for name, text in files.items():
        rel = safe_relative(name, f"{key}.{name}")
        if not isinstance(text, str):
            raise FieldError(f"{key}.{name}", "the text must be a string")
        if len(text) > MAX_FILE_CHARS:
            raise FieldError(f"{key}.{name}", f"longer than {MAX_FILE_CHARS} characters")
        out[rel] = text
    return out


class Playground:
    """The handlers, over one :class:`Workspace`."""

    def __init__(self, path: str, *, read_only: bool = True, audit_path: str | None = None):
        self.ws = Workspace(path)
        self.read_only = read_only
        self.audit_path = audit_path
        #: the engines over the set on disk, by entity data and approvals (api/changes)
        self._base_engines: tuple = (None, {})
        self._lock = threading.Lock()

    # -- helpers

    async def _off_loop(self, fn, data) -> Response:
        """Run a handler's work in a worker thread, one at a time: checking and deciding
        are CPU work, and under ``serve --ui`` the event loop is the decision service's."""
        from starlette.concurrency import run_in_threadpool

        def locked():
            with self._lock:
                return fn(data)
        return await run_in_threadpool(locked)

    def _edited(self, data: Mapping):
        files = self.ws.merged(_files_field(data))
        policy_set, diags = self.ws.build(files)
        return files, policy_set, diags

    def _engine(self, policy_set, entities=None, approved=None):
        from ..evaluation.engine import Engine

        return Engine(policy_set, entities=entities, approvals=approval_checker(approved), cache_size=0, strict=True)

    def _decider(self, policy_set, engines: dict):
        """``decide(example)`` over ``policy_set``: one engine per entity data and approvals
        (kept in ``engines``); a request the engine refuses is an ``error`` outcome."""
        from ..language.errors import RequestError

        def decide(ex):
            key = (id(ex.entities), ex.approved)
            engine = engines.get(key)
            if engine is None:
                engine = engines[key] = self._engine(policy_set, ex.entities, ex.approved)
            try:
                return engine.decide(ex.request)
            except RequestError as e:
                return {"decision": "error", "rules": [], "reasons": [f"bad request: {e}"]}
        return decide

    @staticmethod
    def _broken(diags) -> JSONResponse:
        errors = [d for d in diags if d.severity == "error"]
        first = errors[0] if errors else None
        where = f" (first: {first.path}:{first.line}:{first.column}: {first.message})" if first else ""
        return _error(400, "files", f"the edited policy set has {len(errors)} error{'s' if len(errors) != 1 else ''}"
                      f"{where}", diagnostics=[diagnostic_json(d) for d in diags])

    def _decide(self, policy_set, request: Any, entities=None, approved=None) -> dict:
        from .present import present

        decision = self._engine(policy_set, entities, approved).decide(request)
        return present(policy_set, request, decision, entities=entities)

    # -- endpoints

    async def info(self, request: Request) -> Response:
        return JSONResponse({"path": self.ws.given, "read_only": self.read_only,
                             "single_file": self.ws.single, "audit": self.audit_path is not None})

    async def files(self, request: Request) -> Response:
        return await self._off_loop(self._files, None)

    def _files(self, _data) -> Response:
        files = self.ws.disk_files()
        return JSONResponse({
            "path": self.ws.given, "read_only": self.read_only,
            "files": [{"path": rel, "kind": "policy" if rel.endswith(".policy") else "entities", "text": text}
                      for rel, text in sorted(files.items())],
            "diagnostics": [diagnostic_json(d) for d in self.ws.read_problems()],
        })

    async def check(self, request: Request) -> Response:
        return await self._off_loop(self._check, await _body(request))

    def _check(self, data: dict) -> Response:
        _files, policy_set, diags = self._edited(data)
        return JSONResponse({"ok": policy_set is not None, "rules": len(policy_set.rules) if policy_set else None,
                             "diagnostics": [diagnostic_json(d) for d in diags]})

    async def examples(self, request: Request) -> Response:
        return await self._off_loop(self._examples, None)

    def _examples(self, _data) -> Response:
        return JSONResponse({"examples": [e.public() for e in self.ws.examples()]})

    async def decide(self, request: Request) -> Response:
        return await self._off_loop(self._decide_body, await _body(request))

    def _decide_body(self, data: dict) -> Response:
        from ..language.errors import RequestError
        from ..language.loader import entities_shape_error

        if "request" not in data:
            raise FieldError("request", "missing: the request to decide (docs/requests.md#request)")
        entities = data.get("entities")
        approved = None
        example_id = data.get("example")
        if example_id is not None:
            if not isinstance(example_id, str):
                raise FieldError("example", "must be the id of an example (a string)")
            ex = self.ws.example(example_id)
            if ex is None:
                raise FieldError("example", f"no example {example_id!r}")
            if entities is None:
                entities = ex.entities
            approved = ex.approved
        if entities is not None:
            problem = entities_shape_error(entities)
            if problem:
                raise FieldError("entities", problem)
        if data.get("approvals") is not None:
            a = data["approvals"]
            if not isinstance(a, list) or not all(isinstance(x, str) for x in a):
                raise FieldError("approvals", "must be a list of approval ids (strings)")
            approved = frozenset(a)
        _files, policy_set, diags = self._edited(data)
        if policy_set is None:
            return self._broken(diags)
        try:
            presented = self._decide(policy_set, data["request"], entities, approved)
        except RequestError as e:
            field = "request" + (f".{e.field}" if e.field else "")
            return _error(400, field, f"bad request: {e}")
        return JSONResponse({"decision": presented,
                             "diagnostics": [diagnostic_json(d) for d in diags]})

    async def changes(self, request: Request) -> Response:
        return await self._off_loop(self._changes, await _body(request))

    def _changes(self, data: dict) -> Response:
        from .present import summary

        _files, edited, diags = self._edited(data)
        if edited is None:
            return self._broken(diags)
        base, _base_diags = self.ws.baseline()
        if self._base_engines[0] is not base:
            self._base_engines = (base, {})
        decide_after = self._decider(edited, {})
        decide_before = self._decider(base, self._base_engines[1]) if base is not None else None
        out = []
        compared = 0
        for ex in self.ws.examples():
            after = summary(decide_after(ex))
            if decide_before is None:
                before = {"decision": None, "rules": [], "reasons": ["the set on disk does not load"]}
            else:
                before = summary(decide_before(ex))
            compared += 1
            if (before["decision"], before["rules"]) != (after["decision"], after["rules"]):
                out.append({"example": ex.id, "name": ex.name, "source": ex.source, "request": ex.request,
                            "before": before, "after": after})
        return JSONResponse({"compared": compared, "changed": out})

    async def save(self, request: Request) -> Response:
        if self.read_only:
            return _error(403, None, "this playground is read-only: start it with --allow-write to save files")
        return await self._off_loop(self._save, await _body(request))

    def _save(self, data: dict) -> Response:
        try:
            rel = self.ws.write(data.get("path"), data.get("text"))
        except WriteRefused as e:
            return _error(403, "path", str(e))
        except OSError as e:
            return _error(400, "path", f"cannot write: {e.strerror or e}")
        return JSONResponse({"written": rel})

    async def page(self, request: Request) -> Response:
        return _static("index.html")

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return _error(404, None, "no such file")
        return _static(name)


def _static(name: str) -> Response:
    try:
        data = resources.files(__package__).joinpath("static", name).read_bytes()
    except (FileNotFoundError, OSError):
        return _error(404, None, "no such file")
    return Response(data, media_type=STATIC[name])


class _Front:
    """Security headers on every answer; bad input as 400; the API's authentication, the
    loopback ``Host`` check and the same-origin check (docs/playground.md#security)."""

    def __init__(self, app, auth, check_host: bool):
        self.app = app
        self.auth = auth if auth is not None and getattr(auth, "configured", True) else None
        self.check_host = check_host and self.auth is None

    async def _deny(self, send, status: int, message: str, extra=()):
        body = json.dumps({"error": {"status": status, "message": message}}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()] + list(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host", "")
        if self.check_host and _host_name(host) not in LOOPBACK_NAMES:
            return await self._deny(send, 403, f"this playground answers only loopback host names, not {host!r} "
                                               "(a page elsewhere cannot read it through DNS rebinding)")
        origin = headers.get("origin")
        cross = origin is not None and (origin == "null" or origin.split("://", 1)[-1] != host)
        if cross and scope.get("method") not in ("GET", "HEAD", "OPTIONS"):
            return await self._deny(send, 403, f"cross-origin request from {origin!r} refused")
        path = scope.get("path", "")
        if self.auth is not None and "/api/" in path:
            from ..server.auth import AuthError
            try:
                if getattr(self.auth, "blocking", False):
                    from starlette.concurrency import run_in_threadpool
                    caller = await run_in_threadpool(self.auth.authenticate, scope)
                else:
                    caller = self.auth.authenticate(scope)
            except AuthError as e:
                return await self._deny(send, 401, str(e), [(b"www-authenticate", b'Bearer realm="policylang"')])
            except Exception as e:  # noqa: BLE001 - a key set that cannot be fetched: fail closed
                return await self._deny(send, 401, f"the credentials could not be verified: {e}",
                                        [(b"www-authenticate", b'Bearer realm="policylang"')])
            scope["policylang.caller"] = caller

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                have = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items() if k.encode() not in have]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _host_name(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _field_error(request: Request, exc: FieldError) -> Response:
    return _error(400, exc.field, str(exc))


async def _server_error(request: Request, exc: Exception) -> Response:
    # never a traceback: a bug of ours still answers JSON, and fails closed (no decision)
    return _error(500, None, f"internal error: {type(exc).__name__} (please report this)")


def create_app(path: str | os.PathLike, *, read_only: bool = True, audit_path: str | None = None,
               auth: Any = None, check_host: bool = True):
    """The playground for the set at ``path`` (an ASGI app: FastAPI behind the checks of
    docs/playground.md#security).

    ``read_only``: refuse ``POST api/save`` (403); ``False`` only for ``--allow-write``.
    ``audit_path``: the audit log the audit viewer opens (docs/audit-viewer.md; ``static/audit.html``).
    ``auth``: a :class:`policylang.server.auth.Authenticator` every API call must pass;
    ``None`` only on loopback, where ``check_host`` refuses non-loopback ``Host`` headers.
    """
    pg = Playground(os.fspath(path), read_only=read_only, audit_path=audit_path)
    routes = [
        Route("/", pg.page, methods=["GET"]),
        Route("/static/{name}", pg.static, methods=["GET"]),
        Route("/api/info", pg.info, methods=["GET"]),
        Route("/api/files", pg.files, methods=["GET"]),
        Route("/api/examples", pg.examples, methods=["GET"]),
        Route("/api/check", pg.check, methods=["POST"]),
        Route("/api/decide", pg.decide, methods=["POST"]),
        Route("/api/changes", pg.changes, methods=["POST"]),
        Route("/api/save", pg.save, methods=["POST"]),
    ]
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None,
                  exception_handlers={FieldError: _field_error, Exception: _server_error})
    app.router.routes.extend(routes)
    app.state.playground = pg
    try:  # the audit viewer (docs/audit-viewer.md), when its module is installed
        from .audit_view import add_audit_routes
    except ImportError:
        add_audit_routes = None
    if add_audit_routes is not None:
        add_audit_routes(app, audit_path=audit_path, read_only=read_only)
    return _Front(app, auth, check_host)


def mount_ui(service_app, path: str | os.PathLike, *, auth: Any = None, prefix: str = "/ui") -> None:
    """Mount the playground read-only at ``prefix`` of the decision service (``serve --ui``),
    behind the service's authentication (``auth``: its Authenticator, or ``None`` on loopback)."""
    from starlette.routing import Mount

    ui = create_app(path, read_only=True, auth=auth)

    async def to_slash(request: Request) -> Response:
        return RedirectResponse(prefix + "/", status_code=307)

    service_app.router.routes.insert(0, Route(prefix, to_slash, methods=["GET"]))
    service_app.router.routes.insert(1, Mount(prefix, app=ui))
