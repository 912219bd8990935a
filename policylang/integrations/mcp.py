"""An MCP tool-call guard for the official ``mcp`` Python SDK (docs/agents.md#mcp-guard):
every MCP request is authorized by an AuthZEN PDP *before* it runs, as the OpenID COAZ-MCP
binding says (:mod:`policylang.integrations.coaz_mapping` builds the requests).

::

    from mcp.server.lowlevel import Server
    from policylang.integrations.mcp import McpGuard, EmbeddedPDP, RemotePDP, JwtVerifier

    server = Server("docs", on_list_tools=..., on_call_tool=...)
    guard = McpGuard(RemotePDP("https://pdp.example"), server_id="https://mcp.example.com")
    guard.install(server)                               # server.middleware.append(guard)
    verifier = JwtVerifier(jwks, issuer="https://idp.example", audience="https://mcp.example.com")
    app = server.streamable_http_app(auth=AuthSettings(...), token_verifier=verifier)

``MCPServer`` (the SDK's FastMCP) takes the same object: ``MCPServer(..., middleware=[guard],
token_verifier=verifier, auth=...)``, declared mappings given as ``McpGuard(mappings={tool: …})``
(they are then added to the tools' ``inputSchema`` in ``tools/list``).

What it does, per inbound message (a ``ServerMiddleware`` of the SDK: it wraps every request
and notification, ``initialize`` included, before params validation and the handler):

* ``ping`` and ``notifications/*`` pass; any method without a mapping is denied (``-32001``).
* the caller is the **validated access token** (the SDK's token verifier, e.g.
  :class:`JwtVerifier`; on stdio :class:`StaticIdentity`): ``sub`` is the subject,
  ``client_id`` the agent (``context.agent``), an RFC 8693 ``act`` chain is added as
  ``context.act_chain`` (root first: the earliest actor first, the current actor last).
  Nothing of the caller's identity is read from the tool's arguments.
* ``tools/call`` of a tool with a declared ``x-authzen-mapping`` (from ``mappings=``, or
  looked up in the server's own ``tools/list`` handler) uses it; everything else the default
  mapping of its method.
* ``tools/list`` is itself authorized, then filtered: a tool is listed only when the default
  ``tools/call`` decision for it (action ``tools/call`` on ``tool <name>``) is a permit.
* a mapping error answers ``-32602``, a deny ``-32001``, an unreachable PDP or an invalid
  answer ``-32603`` "Authorization service unavailable"; the handler never runs.
* a ``require_approval`` answered by an AARP PDP (``policylang serve --binding-keys``) is a
  ``-32001`` whose ``data`` is the requestable denial (``reason: approval_required``,
  ``evaluation_id``, ``access_request`` with ``endpoint``, ``expires_at`` and
  ``binding_token``) and the AuthZEN ``request`` that was denied, so the client can submit
  the access request itself; the same call retried with the task's ``result.approval`` at
  ``params._meta["io.policylang/approval"]`` is evaluated with it at ``context.approval``
  and runs once approved (see :func:`approval_meta`).
* with ``issuer=`` (a :class:`policylang.credentials.Issuer`), every MCP connection is a
  *task* (a fresh random id, ``mcp-…``; never from the client or a tool argument): a
  ``tools/call`` is decided with ``context.intent.task_id`` = that id, and an allow whose
  answer carries ``grants`` (the embedded engine always; a remote PDP when its answer's
  ``context`` has them, as ``policylang serve`` does for a single evaluation) mints a
  token for the call (``issuer.issue``: the grants' scopes, the smallest ttl, ``task`` the
  task id), visible to the tool handler as :func:`current_token` (the one of
  :mod:`policylang.integrations.guard`). The task ends — ``issuer.revoke_task`` — when
  the connection closes (a streamable HTTP ``DELETE``, the stdio pipe closed, the server
  shutting down, an idle session reaped; a 2026-07-28 single-exchange request is its own
  connection, so its token is revoked after it), or after a ``tools/call`` whose ``params._meta`` carries
  ``{"io.policylang/end_task": true}`` (:func:`end_task_meta`; the next call starts a new
  task). A handler that raises has its call's token revoked at once. A grant that
  cannot be minted is a denial; ``require_token`` denies an allow that minted nothing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from .coaz_mapping import (
    DENIED,
    EXTRA_MAPPINGS,
    MAPPING_ERROR,
    MAPPING_KEY,
    PDP_ERROR,
    Built,
    Mapper,
    MappingError,
    UnknownMethod,
    check_mapping,
)
from .guard import _Active, current_token

log = logging.getLogger("policylang.integrations.mcp")

__all__ = ["APPROVAL_META", "END_TASK_META", "EmbeddedPDP", "JwtVerifier", "McpGuard", "McpTask", "PdpError",
           "RemotePDP", "StaticIdentity", "act_chain", "approval_meta", "current_token", "end_task_meta",
           "token_claims"]

#: where a retried call carries the approval (``params._meta``)
APPROVAL_META = "io.policylang/approval"
#: a ``tools/call`` that ends its task once it has run (``params._meta``, the value ``true``)
END_TASK_META = "io.policylang/end_task"
#: where the guard keeps a connection's tasks (``Connection.state``)
TASK_STATE = "io.policylang/tasks"
PDP_UNAVAILABLE = "Authorization service unavailable"


def approval_meta(approval: Mapping) -> dict:
    """The ``_meta`` of a retried call: ``session.call_tool(name, args, meta=approval_meta(a))``
    where ``a`` is the access request task's ``result.approval``."""
    return {APPROVAL_META: dict(approval)}


def end_task_meta() -> dict:
    """The ``_meta`` of a task's last call: ``session.call_tool(name, args,
    meta=end_task_meta())`` runs the call, then revokes every token of the connection's
    task; the connection's next call starts a new task."""
    return {END_TASK_META: True}


class PdpError(Exception):
    """The PDP could not be reached or gave an invalid answer (the binding's ``-32603``)."""


# -- PDPs --------------------------------------------------------------------------------------


def _check_answer(answer: Any) -> dict:
    if not isinstance(answer, Mapping) or not isinstance(answer.get("decision"), bool):
        raise PdpError("the PDP's answer has no boolean decision")
    ctx = answer.get("context")
    if ctx is not None and not isinstance(ctx, Mapping):
        raise PdpError("the PDP's answer has a context that is not an object")
    return dict(answer)


class EmbeddedPDP:
    """An in-process AuthZEN PDP over a :class:`policylang.Engine`: the body is read as the
    service reads it (:func:`policylang.server.authzen.to_request`, COAZ mapping included:
    ``context.agent`` is the principal, the subject the root of the delegation), decided,
    and answered as ``{"decision", "context"}``. A ``require_approval`` is a plain denial
    here (no access request service in process: use ``policylang serve --binding-keys`` and
    :class:`RemotePDP` for approvals). ``offload``: decide in a worker thread."""

    def __init__(self, engine: Any, *, offload: bool = True):
        if not hasattr(engine, "decide"):
            raise TypeError("EmbeddedPDP needs a policylang Engine (anything with decide(request))")
        self.engine = engine
        self.offload = offload

    def _decide(self, body: Mapping) -> dict:
        from ..server.authzen import BadRequest, decision_response, to_request
        try:
            request = to_request(body)
        except BadRequest as e:
            return {"decision": False, "context": {"error": {"status": 400, "message": str(e)}}}
        decision = self.engine.decide(request)
        return decision_response(decision)

    async def evaluation(self, body: Mapping) -> dict:
        try:
            if self.offload:
                return _check_answer(await asyncio.to_thread(self._decide, body))
            return _check_answer(self._decide(body))
        except PdpError:
            raise
        except Exception as e:
            raise PdpError(f"the engine failed: {type(e).__name__}: {e}") from e

    async def evaluations(self, body: Mapping) -> dict:
        built = Built("evaluations", dict(body))
        return {"evaluations": [await self.evaluation(d) for d in built.decisions()]}

    async def aclose(self) -> None:
        return None


class RemotePDP:
    """An AuthZEN PDP over HTTP (``POST {base}/access/v1/evaluation`` and
    ``/access/v1/evaluations``): one ``httpx.AsyncClient`` with keep-alive, a timeout on
    every call, and fail closed — a connection error, a timeout, a status other than 200,
    a body that is not an AuthZEN answer are each a :class:`PdpError`. ``token``: a bearer
    token string, or a callable returning one, sent as ``Authorization``. ``batch=False``:
    send one evaluation per entry of an ``evaluations`` request (for a PDP without the
    Access Evaluations API), allowed only if every one permits."""

    def __init__(self, base_url: str, *, token: str | Callable[[], str] | None = None, timeout: float = 5.0,
                 batch: bool = True, client: Any = None, headers: Mapping[str, str] | None = None,
                 max_connections: int = 20):
        import httpx
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.batch = batch
        self._own = client is None
        self.client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), headers=dict(headers or {}), follow_redirects=False,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections))

    async def _post(self, path: str, body: Mapping) -> Any:
        import httpx
        headers = {}
        if self.token is not None:
            tok = self.token() if callable(self.token) else self.token
            headers["Authorization"] = f"Bearer {tok}"
        try:
            r = await self.client.post(self.base_url + path, json=body, headers=headers)
        except httpx.HTTPError as e:
            raise PdpError(f"the PDP is unreachable: {type(e).__name__}: {e}") from e
        if r.status_code != 200:
            raise PdpError(f"the PDP answered {r.status_code}")
        try:
            return r.json()
        except ValueError as e:
            raise PdpError("the PDP's answer is not JSON") from e

    async def evaluation(self, body: Mapping) -> dict:
        return _check_answer(await self._post("/access/v1/evaluation", body))

    async def evaluations(self, body: Mapping) -> dict:
        if not self.batch:
            built = Built("evaluations", dict(body))
            return {"evaluations": [await self.evaluation(d) for d in built.decisions()]}
        answer = await self._post("/access/v1/evaluations", body)
        items = answer.get("evaluations") if isinstance(answer, Mapping) else None
        if not isinstance(items, list) or len(items) != len(body.get("evaluations") or ()):
            raise PdpError("the PDP's evaluations answer does not have one decision per evaluation")
        return {"evaluations": [_check_answer(i) for i in items]}

    async def aclose(self) -> None:
        if self._own:
            await self.client.aclose()


# -- identity -----------------------------------------------------------------------------------


class JwtVerifier:
    """The SDK's ``TokenVerifier`` for JWT access tokens: signature (``key``: a public key,
    a PEM string, a JWK dict or a JWK set ``{"keys": [...]}`` chosen by ``kid``), ``iss``,
    ``aud``, ``exp`` (required) and ``nbf`` are verified with PyJWT; the returned
    ``AccessToken`` carries every claim (``claims``), ``subject`` (``sub``) and
    ``client_id`` (the ``client_id`` claim, else ``azp``). An invalid token is ``None``
    (the SDK answers 401)."""

    def __init__(self, key: Any, *, issuer: str, audience: str | list[str],
                 algorithms: Iterable[str] = ("ES256", "RS256", "EdDSA", "PS256"), leeway: float = 0):
        import jwt
        self._jwt = jwt
        self.issuer = issuer
        self.audience = audience
        self.algorithms = list(algorithms)
        self.leeway = leeway
        self.keys: dict[str | None, Any] = {}
        if isinstance(key, Mapping) and "keys" in key:
            for k in key["keys"]:
                self.keys[k.get("kid")] = jwt.PyJWK(k).key
        elif isinstance(key, Mapping):
            self.keys[key.get("kid")] = jwt.PyJWK(dict(key)).key
        else:
            self.keys[None] = key

    def verify(self, token: str) -> dict:
        """The claims of a valid token; raises ``jwt.InvalidTokenError`` otherwise."""
        jwt = self._jwt
        header = jwt.get_unverified_header(token)
        key = self.keys.get(header.get("kid"))
        if key is None and len(self.keys) == 1:
            key = next(iter(self.keys.values())) if None in self.keys else None
        if key is None:
            raise jwt.InvalidTokenError("unknown kid")
        return jwt.decode(token, key, algorithms=self.algorithms, audience=self.audience, issuer=self.issuer,
                          leeway=self.leeway, options={"require": ["exp", "iss", "aud", "sub"]})

    def access_token(self, token: str, claims: Mapping) -> Any:
        from mcp.server.auth.provider import AccessToken
        scope = claims.get("scope")
        aud = claims.get("aud")
        client_id = claims.get("client_id") or claims.get("azp") or ""
        return AccessToken(token=token, client_id=str(client_id),
                           scopes=scope.split() if isinstance(scope, str) else [],
                           expires_at=int(claims["exp"]) if isinstance(claims.get("exp"), (int, float)) else None,
                           resource=aud if isinstance(aud, str) else None,
                           subject=claims.get("sub") if isinstance(claims.get("sub"), str) else None,
                           claims=dict(claims))

    async def verify_token(self, token: str) -> Any:
        try:
            claims = self.verify(token)
        except Exception as e:  # noqa: BLE001  (any verification failure rejects the token)
            log.info("rejected an access token: %s: %s", type(e).__name__, e)
            return None
        return self.access_token(token, claims)


class StaticIdentity:
    """The caller of a stdio server: one access token handed to the process (an
    environment variable, say), verified now and again at every request (it expires like
    any token). ``guard = McpGuard(pdp, identity=StaticIdentity(jwt, verifier))``."""

    def __init__(self, token: str, verifier: JwtVerifier):
        self.token = token
        self.verifier = verifier
        verifier.verify(token)

    def __call__(self, ctx: Any) -> dict | None:
        try:
            return self.verifier.verify(self.token)
        except Exception as e:  # noqa: BLE001  (an invalid token is no identity: fail closed)
            log.warning("the stdio access token is no longer valid: %s", e)
            return None


def token_claims(ctx: Any) -> dict | None:
    """The validated token's claims for this request: the ``AccessToken`` the SDK's bearer
    middleware put in its auth context (HTTP transports). ``None`` without one."""
    from mcp.server.auth.middleware.auth_context import get_access_token
    tok = get_access_token()
    if tok is None:
        request = getattr(ctx, "request", None)
        user = getattr(request, "scope", {}).get("user") if request is not None else None
        tok = getattr(user, "access_token", None)
    if tok is None:
        return None
    if tok.claims:
        return dict(tok.claims)
    # a verifier that keeps no claims: what the AccessToken itself says
    claims: dict = {"client_id": tok.client_id}
    if tok.subject:
        claims["sub"] = tok.subject
    if tok.resource:
        claims["aud"] = tok.resource
    return claims


def act_chain(claims: Mapping) -> list[str] | None:
    """The RFC 8693 ``act`` chain of a token, root first (the earliest actor first, the
    current actor — the outermost ``act`` — last); ``None`` without ``act``. A malformed
    ``act`` is a mapping error."""
    act = claims.get("act")
    if act is None:
        return None
    chain: list[str] = []
    while act is not None:
        if not isinstance(act, Mapping) or not isinstance(act.get("sub"), str) or not act["sub"]:
            raise MappingError("the token's act claim is not an RFC 8693 actor ({sub, act?})")
        chain.append(act["sub"])
        if len(chain) > 16:
            raise MappingError("the token's act chain is longer than 16 actors")
        act = act.get("act")
    return list(reversed(chain))


# -- tasks ----------------------------------------------------------------------------------------


class McpTask:
    """One task of an MCP connection: ``id`` (``mcp-`` and 24 random hex digits, made by
    the guard), ``tokens`` (the jtis minted in it), ``ended`` and, once ended,
    ``revoked`` (the jtis ``issuer.revoke_task`` reported) and ``why`` (``"end_task"``
    or ``"connection closed"``)."""

    def __init__(self) -> None:
        self.id = "mcp-" + secrets.token_hex(12)
        self.tokens: list[str] = []
        self.used = False  # a mint was attempted: the task id may be known to the store
        self.ended = False
        self.revoked: list[str] | None = None
        self.why: str | None = None

    def __repr__(self) -> str:
        return f"McpTask({self.id!r}, tokens={len(self.tokens)}, ended={self.ended})"


class _Tasks:
    """A connection's tasks: the current one (``None`` until a call needs one, and after
    an ``end_task``) and those that ended (the recent ones, and any whose revocation
    failed: the connection's close retries them)."""

    def __init__(self) -> None:
        self.current: McpTask | None = None
        self.ended: list[McpTask] = []
        self.closed = False

    def task(self) -> McpTask:
        if self.current is None:
            self.current = McpTask()
        return self.current


def _connection(ctx: Any) -> Any:
    """The SDK's per-client ``Connection`` of a request (its ``state`` and ``exit_stack``
    outlive the request and are unwound when the client goes), or ``None``."""
    conn = getattr(ctx, "connection", None)
    if conn is None:
        conn = getattr(getattr(ctx, "session", None), "_connection", None)
    if conn is None or not isinstance(getattr(conn, "state", None), dict) or not hasattr(conn, "exit_stack"):
        return None
    return conn


# -- the guard ------------------------------------------------------------------------------------


def _reason(answer: Mapping) -> str | None:
    ctx = answer.get("context") if isinstance(answer, Mapping) else None
    if not isinstance(ctx, Mapping):
        return None
    for key in ("reason_user", "reason", "reasons", "message"):
        v = ctx.get(key)
        if isinstance(v, Mapping):
            v = next((x for x in v.values() if isinstance(x, str)), None)
        if isinstance(v, list):
            v = "; ".join(x for x in v if isinstance(x, str))
        if isinstance(v, str) and v and v not in ("approval_required", "policy_denied"):
            return v
    return None


class McpGuard:
    """The PEP (see the module doc). ``pdp``: :class:`EmbeddedPDP`, :class:`RemotePDP` or
    anything with ``async evaluation(body)`` / ``evaluations(body)``. ``mapper``: a
    :class:`~policylang.integrations.coaz_mapping.Mapper` (else one is built from
    ``server_id``, ``subject_claim``, ``methods``). ``mappings``: declared mappings by tool
    name (checked now; they win over what the server's ``tools/list`` says and are added
    to it). ``identity``: ``ctx -> claims | None`` (default :func:`token_claims`).
    ``filter_tools``: filter ``tools/list`` (default True). ``issuer``: a
    :class:`policylang.credentials.Issuer`: mint just-in-time tokens for the grants of a
    ``tools/call`` allow, per connection task, revoked when the task ends (module doc).
    ``require_token``: ``True`` (every tool) or tool names whose allow must mint a token
    (else the call is denied)."""

    def __init__(self, pdp: Any, *, mapper: Mapper | None = None, mappings: Mapping[str, Mapping] | None = None,
                 identity: Callable[[Any], Mapping | None] | None = None, filter_tools: bool = True,
                 server_id: str | None = None, subject_claim: str = "sub", methods: Mapping | None = None,
                 lookup_declared: bool = True, issuer: Any = None, require_token: bool | Iterable[str] = False):
        if issuer is not None and not (hasattr(issuer, "issue") and hasattr(issuer, "revoke_task")):
            raise TypeError("issuer must be a policylang.credentials.Issuer (issue, revoke, revoke_task)")
        if isinstance(require_token, str):
            raise TypeError("require_token: True, False or a collection of tool names")
        self.require_token: bool | frozenset[str] = require_token if isinstance(require_token, bool) \
            else frozenset(require_token)
        if self.require_token and issuer is None:
            raise ValueError("require_token needs an issuer: without one no call gets a token")
        self.issuer = issuer
        self.pdp = pdp
        self.mapper = mapper or Mapper(server_id=server_id, subject_claim=subject_claim, methods=methods)
        self.mappings: dict[str, dict] = {}
        for name, mapping in (mappings or {}).items():
            check_mapping(mapping)
            self.mappings[name] = dict(mapping)
        self.identity = identity or token_claims
        self.filter_tools = filter_tools
        self.lookup_declared = lookup_declared
        self.server: Any = None
        self._hinted = False  # the EXTRA_MAPPINGS hint was logged (UnknownMethod in _build)

    def install(self, server: Any) -> Any:
        """Append the guard to ``server.middleware`` (a lowlevel ``Server`` or an
        ``MCPServer``) and remember the server to look up declared mappings in its
        ``tools/list`` handler. Returns the server."""
        self.server = server
        server.middleware.append(self)
        return server

    # -- the middleware
    async def __call__(self, ctx: Any, call_next: Callable) -> Any:
        method = ctx.method
        if self.mapper.is_pass_through(method):
            return await call_next(ctx)
        if ctx.request_id is None:  # a notification that is not notifications/*: no response to deny with
            log.warning("dropped the notification %r: it has no COAZ mapping", method)
            return None
        from mcp.shared.exceptions import MCPError
        params = dict(ctx.params or {})
        if method == "tools/call" and self.issuer is not None:
            return await self._call_in_task(ctx, call_next, params, MCPError)
        built, claims = await self._build(ctx, method, params, MCPError)
        await self._enforce(built, MCPError)
        result = await call_next(ctx)
        if method == "tools/list":
            result = await self._filter(result, claims, MCPError)
        return result

    async def _build(self, ctx: Any, method: str, params: Mapping, MCPError: type,
                     task: McpTask | None = None) -> tuple[Built, Mapping | None]:
        try:
            claims = self.identity(ctx)
            declared = await self._declared(ctx, params) if method == "tools/call" else None
            built = self.mapper.build(method, params, claims, declared=declared)
            assert built is not None
            self._add_identity(built, claims)
            self._add_approval(built, params)
            if task is not None:
                self._add_task(built, task.id)
        except MappingError as e:
            raise MCPError(code=MAPPING_ERROR, message=e.message) from None
        except UnknownMethod as e:
            if e.method in EXTRA_MAPPINGS and not self._hinted:
                self._hinted = True  # once per guard: the operator's hint, not the client's
                log.warning("denied %r: the COAZ-MCP binding does not map it; McpGuard(methods=EXTRA_MAPPINGS) "
                            "decides it (docs/agents.md#methods-the-binding-does-not-map)", e.method)
            raise MCPError(code=DENIED, message=e.message) from None
        return built, claims

    # -- tasks and tokens
    async def _call_in_task(self, ctx: Any, call_next: Callable, params: Mapping, MCPError: type) -> Any:
        """A ``tools/call`` with an issuer: decided in the connection's task, run with the
        token of its grants, the task ended after it if the call says so."""
        meta = params.get("_meta")
        end = meta.get(END_TASK_META) if isinstance(meta, Mapping) else None
        if end is not None and not isinstance(end, bool):
            raise MCPError(code=MAPPING_ERROR, message=f"_meta[{END_TASK_META!r}] must be true or false")
        conn = _connection(ctx)
        if conn is None:  # nowhere to hang the revocation at the connection's end: mint nothing
            raise MCPError(code=DENIED, message="Access denied: this transport gives no connection to bind a "
                                                "task's tokens to")
        tasks = conn.state.get(TASK_STATE)
        if not isinstance(tasks, _Tasks):
            tasks = conn.state[TASK_STATE] = _Tasks()
            conn.exit_stack.push_async_callback(self._connection_closed, tasks)
        if tasks.closed:
            raise MCPError(code=DENIED, message="Access denied: the connection has ended")
        task = tasks.task()
        try:
            built, _claims = await self._build(ctx, "tools/call", params, MCPError, task)
            answers = await self._enforce(built, MCPError)
            token = await self._mint(built, answers, task, params.get("name"), MCPError)
            with _Active(token):
                try:
                    return await call_next(ctx)
                except BaseException:
                    if token is not None:
                        await self._revoke_token(token, task)
                    raise
        finally:
            if end:
                await self._end_task(tasks, task, "end_task", MCPError)

    def _add_task(self, built: Built, task_id: str) -> None:
        if built.api != "evaluation":
            return  # tokens are minted for single-evaluation mappings only (the default tools/call one)
        ctx = built.body.setdefault("context", {})
        intent = ctx.get("intent")
        if intent is None:
            intent = {}
        if not isinstance(intent, Mapping):
            raise MappingError("context.intent must be an object")
        if "task_id" in intent:
            raise MappingError("context.intent.task_id is set by the PEP (the connection's task), not by a mapping")
        ctx["intent"] = {**intent, "task_id": task_id}

    def _needs_token(self, tool: Any) -> bool:
        if isinstance(self.require_token, bool):
            return self.require_token
        return tool in self.require_token

    async def _mint(self, built: Built, answers: list[dict], task: McpTask, tool: Any, MCPError: type) -> Any:
        """The token for the grants of an allow (``None`` without grants): the answer's
        context is the decision (``decision``, ``rules``, ``grants``, ``delegation_path``,
        ``policy_version``), the request is the body as policylang reads it. Any failure
        is a denial: the call does not run."""
        decision = answers[0].get("context") if built.api == "evaluation" and len(answers) == 1 else None
        grants = decision.get("grants") if isinstance(decision, Mapping) else None
        token = None
        if grants:
            if task.ended:
                raise MCPError(code=DENIED, message=f"Access denied: task {task.id} has ended")
            import anyio

            from ..server.authzen import to_request
            task.used = True
            try:
                request = to_request(built.body)
                token = await anyio.to_thread.run_sync(self.issuer.issue, dict(decision), request)
            except Exception as e:  # noqa: BLE001  (no token, no call: fail closed)
                log.warning("COAZ tools/call %r: the granted token could not be issued: %s: %s",
                            tool, type(e).__name__, e)
                raise MCPError(code=DENIED, message=f"Access denied: the granted token could not be issued "
                                                    f"({type(e).__name__}: {e})") from None
            task.tokens.append(token.jti)
        if token is None and self._needs_token(tool):
            raise MCPError(code=DENIED, message="Access denied: the tool needs a just-in-time token and the "
                                                "decision granted none")
        return token

    async def _revoke_token(self, token: Any, task: McpTask) -> None:
        import anyio
        try:
            await anyio.to_thread.run_sync(self.issuer.revoke, token.jti)
            log.info("revoked token %s of task %s: its call raised", token.jti, task.id)
        except Exception as e:  # noqa: BLE001  (the handler's exception is what the client sees)
            log.error("could not revoke token %s of task %s after its call raised: %s", token.jti, task.id, e)

    async def _end_task(self, tasks: _Tasks, task: McpTask, why: str, MCPError: type | None) -> None:
        if task.ended and task.revoked is not None:
            return
        if not task.ended:
            task.ended = True
            task.why = why
            if tasks.current is task:
                tasks.current = None
            tasks.ended.append(task)
        if not task.used:
            task.revoked = []
            return
        import anyio
        try:
            task.revoked = list(await anyio.to_thread.run_sync(self.issuer.revoke_task, task.id))
        except Exception as e:
            log.error("could not revoke the tokens of task %s (%s): %s: %s", task.id, why, type(e).__name__, e)
            if MCPError is None:
                raise
            raise MCPError(code=PDP_ERROR, message=f"The task's tokens could not be revoked ({type(e).__name__})") \
                from None
        log.info("task %s ended (%s): revoked %d token(s)", task.id, why, len(task.revoked))
        if len(tasks.ended) > 32:  # a long connection with many tasks: keep the recent and the unrevoked
            tasks.ended = [t for t in tasks.ended[:-16] if t.revoked is None] + tasks.ended[-16:]

    async def _connection_closed(self, tasks: _Tasks) -> None:
        """The connection's exit stack: end its current task, and retry the revocation of
        any ended task whose revocation failed. Raises (the SDK logs it) if one fails."""
        tasks.closed = True
        pending = [t for t in tasks.ended if t.revoked is None]
        if tasks.current is not None:
            pending.append(tasks.current)
        failed = None
        for task in pending:
            try:
                await self._end_task(tasks, task, "connection closed", None)
            except Exception as e:  # noqa: BLE001  (try every task, then raise)
                failed = e
        if failed is not None:
            raise failed

    # -- building
    async def _declared(self, ctx: Any, params: Mapping) -> dict | None:
        name = params.get("name")
        if not isinstance(name, str):
            return None  # the default mapping reads $params.name and fails on it
        if name in self.mappings:
            return self.mappings[name]
        if not self.lookup_declared or self.server is None:
            return None
        schema = await self._server_schema(ctx, name)
        if schema is None:
            return None
        mapping = schema.get(MAPPING_KEY)
        if mapping is None:
            return None
        check_mapping(mapping)
        return mapping

    async def _server_schema(self, ctx: Any, name: str) -> dict | None:
        """The tool's ``inputSchema`` as the server's own ``tools/list`` handler lists it."""
        low = getattr(self.server, "_lowlevel_server", self.server)
        entry = low.get_request_handler("tools/list") if hasattr(low, "get_request_handler") else None
        if entry is None:
            return None
        cursor = None
        try:
            for _page in range(100):
                params = entry.params_type.model_validate({} if cursor is None else {"cursor": cursor})
                result = await entry.handler(replace(ctx, method="tools/list", params={}), params)
                data = result.model_dump(by_alias=True, mode="json", exclude_none=True) \
                    if hasattr(result, "model_dump") else dict(result)
                for tool in data.get("tools") or ():
                    if tool.get("name") == name:
                        return tool.get("inputSchema") or {}
                cursor = data.get("nextCursor")
                if not cursor:
                    return None
        except Exception as e:  # noqa: BLE001  (an unreadable tools/list is a mapping error: fail closed)
            raise MappingError(f"the declared mapping of {name!r} could not be read from tools/list: "
                               f"{type(e).__name__}") from None
        raise MappingError("tools/list has more than 100 pages")

    def _add_identity(self, built: Built, claims: Mapping | None) -> None:
        chain = act_chain(claims or {})
        if chain is None:
            return
        for ctx in self._contexts(built):
            if "act_chain" in ctx:
                raise MappingError("context.act_chain is set by the PEP from the token, not by a mapping")
            ctx["act_chain"] = chain

    @staticmethod
    def _contexts(built: Built):
        body = built.body
        if built.api == "evaluation":
            yield body.setdefault("context", {})
            return
        yield body.setdefault("context", {})
        for entry in body["evaluations"]:
            if "context" in entry:
                yield entry["context"]

    def _add_approval(self, built: Built, params: Mapping) -> None:
        meta = params.get("_meta")
        approval = meta.get(APPROVAL_META) if isinstance(meta, Mapping) else None
        if approval is None:
            return
        if not isinstance(approval, Mapping) or not isinstance(approval.get("id"), str):
            raise MappingError(f"_meta[{APPROVAL_META!r}] must be the approval object of an access request task")
        if built.api != "evaluation":
            raise MappingError("an approval can be carried only by a single-evaluation mapping")
        built.body.setdefault("context", {})["approval"] = dict(approval)

    # -- deciding
    async def decide(self, built: Built) -> list[dict]:
        """The PDP's answers, one per decision of ``built`` (raises :class:`PdpError`)."""
        try:
            if built.api == "evaluation":
                return [await self.pdp.evaluation(built.body)]
            answer = await self.pdp.evaluations(built.body)
            items = answer.get("evaluations") if isinstance(answer, Mapping) else None
            if not isinstance(items, list) or len(items) != len(built.body["evaluations"]):
                raise PdpError("the PDP's evaluations answer does not have one decision per evaluation")
            return [_check_answer(i) for i in items]
        except PdpError:
            raise
        except Exception as e:
            raise PdpError(f"{type(e).__name__}: {e}") from e

    async def _enforce(self, built: Built, MCPError: type) -> list[dict]:
        started = time.perf_counter()
        try:
            answers = await self.decide(built)
        except PdpError as e:
            log.warning("COAZ %s: %s", built.method, e)
            raise MCPError(code=PDP_ERROR, message=PDP_UNAVAILABLE) from None
        log.debug("COAZ %s decided in %.1f ms", built.method, (time.perf_counter() - started) * 1000)
        for i, answer in enumerate(answers):
            if answer["decision"] is True:
                continue
            ctx = answer.get("context") or {}
            ar = ctx.get("access_request") if isinstance(ctx, Mapping) else None
            if isinstance(ar, Mapping) and isinstance(ar.get("binding_token"), str):
                request = built.decisions()[i]
                request = {**request, "context": {k: v for k, v in (request.get("context") or {}).items()
                                                  if k != "approval"}}
                data = {"reason": "approval_required", "evaluation_id": ctx.get("evaluation_id"),
                        "access_request": dict(ar), "request": request, "approval_meta": APPROVAL_META}
                for key in ("approvers", "next_action", "retry_after"):
                    if key in ctx:
                        data[key] = ctx[key]
                if ctx.get("reason") and ctx.get("reason") != "approval_required":
                    data["reevaluation_reason"] = ctx["reason"]
                why = _reason(answer)
                raise MCPError(code=DENIED, message="Approval required" + (f": {why}" if why else ""), data=data)
            why = _reason(answer)
            if isinstance(ctx, Mapping) and ctx.get("decision") == "require_approval":
                # a PDP without an access request service: nothing to request, a denial
                raise MCPError(code=DENIED, message="Access denied: approval required, and this PDP takes no "
                                                    "access requests" + (f" ({why})" if why else ""))
            raise MCPError(code=DENIED, message="Access denied" + (f": {why}" if why else ""))
        return answers

    async def _filter(self, result: Any, claims: Mapping | None, MCPError: type) -> Any:
        data = result.model_dump(by_alias=True, mode="json", exclude_none=True) \
            if hasattr(result, "model_dump") else dict(result or {})
        tools = list(data.get("tools") or [])
        for tool in tools:
            name = tool.get("name")
            if name in self.mappings:
                tool.setdefault("inputSchema", {"type": "object"})[MAPPING_KEY] = self.mappings[name]
        if not self.filter_tools or not tools:
            data["tools"] = tools
            return data
        try:
            entries = []
            for tool in tools:
                one = self.mapper.build("tools/call", {"name": tool.get("name")}, claims)
                entries.append({k: v for k, v in one.body.items() if k != "subject"})
            body = {"subject": one.body["subject"], "evaluations": entries}
            built = Built("evaluations", body, method="tools/list")
            self._add_identity(built, claims)
            answers = await self.decide(built)
        except MappingError as e:
            raise MCPError(code=MAPPING_ERROR, message=e.message) from None
        except PdpError as e:
            log.warning("COAZ tools/list filter: %s", e)
            raise MCPError(code=PDP_ERROR, message=PDP_UNAVAILABLE) from None
        data["tools"] = [t for t, a in zip(tools, answers) if a["decision"] is True]
        return data
