"""Authentication and authorization of the service's own routes (approvals, tokens, tasks).

Who is calling is proved by one of:

* a bearer **JWT** (``Authorization: Bearer …``) verified with PyJWT against a JWKS: a
  file (re-read when it changes, or when a token names a key id it does not hold) or an
  HTTPS URL (``PyJWKClient``: keys cached, fetched again when a token names an unknown
  key id, so key rotation needs no restart). ``exp``, ``aud`` (always) and ``iss`` (when
  configured) are checked, only the configured asymmetric algorithms are accepted, and
  the caller is the ``sub`` claim (or ``--jwt-caller-claim``). OIDC ID tokens and SPIFFE
  JWT-SVIDs are both such JWTs.
* **mutual TLS**: uvicorn's TLS with ``--client-ca`` requires a client certificate that
  chains to that CA (a handshake without one is refused); the caller is the
  certificate's one URI SAN (a SPIFFE id such as ``spiffe://example.org/ns/ops/sa/alice``),
  read from the ASGI TLS extension (:mod:`policylang.server.protocol`) and parsed with
  ``cryptography``.

:class:`AuthMiddleware` runs in front of every route. On a *guarded* route (everything
under ``/v1/approvals``, ``/v1/tokens``, ``/v1/tasks`` and ``/v1/limits``) it authenticates the caller
(401 without valid credentials, when authentication is configured), asks the operator's
admin policy set whether that caller may use the route (403 otherwise) and stores the
caller where every handler reads it:

    from policylang.server.auth import caller_of
    caller = caller_of(request)      # a Caller; never None inside a guarded route
    if caller.authenticated: who = caller.id

``caller_of`` returns :data:`ANONYMOUS` when the service runs without authentication
(allowed on loopback only: ``serve`` refuses to start otherwise). Handlers must take the
acting identity (an approver, the revoker) from ``caller_of(request).id`` and never from
the body whenever ``caller.authenticated`` is true.

The admin policy set (``serve --admin-policies DIR``) is ordinary policylang. Each guarded
request is decided as::

    {"principal": {"kind": "caller", "id": <caller id>, "attrs": {"auth": "jwt"|"mtls", <claims>}},
     "action": {"name": <action>},  "resource": {"type": "approval"|"token"|"task", "id": <id or "">}}

with the action names of :data:`ROUTE_ACTIONS`. Only ``allow`` lets the request through.
Without ``--admin-policies`` every authenticated caller may use every guarded route (see
:data:`DEFAULT_ADMIN_POLICY`); approve and deny are then still limited by the approvals
rules: the caller must be a known human in one of the ticket's approver groups and not
the requester.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

log = logging.getLogger("policylang.server")

__all__ = ["Caller", "ANONYMOUS", "caller_of", "AuthError", "Authenticator", "AdminGuard",
           "AuthMiddleware", "ROUTE_ACTIONS", "DEFAULT_ADMIN_POLICY", "GUARDED_PREFIXES",
           "DEFAULT_ALGORITHMS", "is_loopback_host", "route_action"]

#: the asymmetric JWS algorithms accepted unless ``--jwt-algorithm`` says otherwise
DEFAULT_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")

#: the paths whose routes need an authenticated, authorized caller
GUARDED_PREFIXES = ("/v1/approvals", "/v1/tokens", "/v1/tasks", "/v1/limits", "/access/v1/requests")

#: (method, path pattern) -> (action name, resource type); ``{id}`` is the resource id
ROUTE_ACTIONS: list[tuple[str, str, str, str]] = [
    ("POST", "/v1/approvals", "open_approval", "approval"),
    ("GET", "/v1/approvals", "list_approvals", "approval"),
    ("GET", "/v1/approvals/{id}", "get_approval", "approval"),
    ("POST", "/v1/approvals/{id}/approve", "approve", "approval"),
    ("POST", "/v1/approvals/{id}/deny", "deny", "approval"),
    ("POST", "/v1/tokens", "issue_token", "token"),
    ("POST", "/v1/tokens/refresh", "refresh_token", "token"),
    ("POST", "/v1/tokens/verify", "verify_token", "token"),
    ("POST", "/v1/tokens/revoke", "revoke_token", "token"),  # revoke_task when the body names a task
    ("POST", "/v1/tasks", "open_task", "task"),
    ("GET", "/v1/tasks", "list_tasks", "task"),
    ("GET", "/v1/tasks/{id}", "get_task", "task"),
    ("POST", "/v1/tasks/{id}/revoke", "revoke_task", "task"),
    ("DELETE", "/v1/tasks/{id}", "revoke_task", "task"),
    # limits (docs/server.md#limits): give a reservation back; the id is the body's reservation
    ("POST", "/v1/limits/release", "release_limit", "limit_reservation"),
    # Approvals over AuthZEN (docs/server.md#aarp): the PEP's access requests
    ("POST", "/access/v1/requests", "submit_access_request", "access_request"),
    ("GET", "/access/v1/requests/{id}", "get_access_request", "access_request"),
    ("POST", "/access/v1/requests/{id}/cancel", "cancel_access_request", "access_request"),
    ("DELETE", "/access/v1/requests/{id}/cancel", "cancel_access_request", "access_request"),
]

#: what the service does without ``--admin-policies``, written as a policy set
DEFAULT_ADMIN_POLICY = '''\
@id("authenticated-callers-use-approvals")
permit caller to open_approval, list_approvals, get_approval, approve, deny on approval
  because "any authenticated caller may use the approval routes"

@id("authenticated-callers-use-tokens")
permit caller to issue_token, refresh_token, verify_token, revoke_token, revoke_task on token
  because "any authenticated caller may use the token routes"

@id("authenticated-callers-use-tasks")
permit caller to open_task, list_tasks, get_task, revoke_task on task
  because "any authenticated caller may use the task routes"

@id("authenticated-callers-release-limits")
permit caller to release_limit on limit_reservation
  because "any authenticated caller may give a limit reservation back"

@id("authenticated-callers-request-access")
permit caller to submit_access_request, get_access_request, cancel_access_request on access_request
  because "any authenticated caller may submit access requests and follow its own"
'''

_COMPILED = [(m, re.compile("^" + re.escape(p).replace(re.escape("{id}"), "(?P<id>[^/]+)") + "/?$"), a, t)
             for m, p, a, t in ROUTE_ACTIONS]


def route_action(method: str, path: str, body: bytes | None = None) -> tuple[str, str, str]:
    """``(action, resource type, resource id)`` of a guarded request. A guarded path that
    no entry of :data:`ROUTE_ACTIONS` names is ``("other", <first path segment after /v1>, "")``
    (the default policy does not allow it: name it in an admin policy to allow it)."""
    for m, rx, action, rtype in _COMPILED:
        if m == method:
            hit = rx.match(path)
            if hit:
                rid = hit.groupdict().get("id") or ""
                if action == "release_limit" and body:
                    try:
                        data = json.loads(body)
                        if isinstance(data, dict) and isinstance(data.get("reservation"), str):
                            rid = data["reservation"]
                    except ValueError:
                        pass  # the handler answers 400
                if action == "revoke_token" and body:
                    try:
                        data = json.loads(body)
                        if isinstance(data, dict) and isinstance(data.get("task"), str):
                            return "revoke_task", "task", data["task"]
                        if isinstance(data, dict) and isinstance(data.get("jti"), str):
                            rid = data["jti"]
                    except ValueError:
                        pass  # the handler answers 400
                return action, rtype, rid
    parts = path.strip("/").split("/")
    return "other", parts[1] if len(parts) > 1 else "", ""


def is_guarded(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in GUARDED_PREFIXES)


def is_loopback_host(host: str) -> bool:
    """Is ``host`` (a ``--host`` value) a loopback address only?"""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------------ callers

@dataclass(frozen=True)
class Caller:
    """Who made a request. ``method`` is ``"jwt"``, ``"mtls"`` or ``"anonymous"`` (the
    service has no authentication configured: loopback only). ``claims``: the verified
    JWT claims, or ``{"uri_san": …, "subject": …}`` of the client certificate."""

    id: str
    method: str
    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        return self.method != "anonymous"

    def to_dict(self) -> dict:
        return {"id": self.id, "method": self.method}


#: the caller of a service that runs without authentication
ANONYMOUS = Caller(id="", method="anonymous")

#: where the middleware keeps the caller in the ASGI scope
SCOPE_KEY = "policylang.caller"


def caller_of(request_or_scope: Any) -> Caller:
    """The caller of a request (a Starlette ``Request`` or an ASGI scope), as set by
    :class:`AuthMiddleware`; :data:`ANONYMOUS` when nothing authenticated it. Also
    available as ``request.state.caller``."""
    scope = getattr(request_or_scope, "scope", request_or_scope)
    caller = scope.get(SCOPE_KEY) if isinstance(scope, Mapping) else None
    return caller if isinstance(caller, Caller) else ANONYMOUS


class AuthError(Exception):
    """Credentials missing or invalid: answered 401 with ``WWW-Authenticate``."""


# ------------------------------------------------------------------------- JWT keys

class _FileJWKS:
    """A JWKS file; re-read when its (mtime, size) changes or a token names an unknown kid."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._sig: tuple | None = None
        self._keys: dict = {}
        self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        from jwt import PyJWKSet
        try:
            st = os.stat(self.path)
        except OSError as e:
            if force:
                raise ValueError(f"cannot read the JWKS file {self.path}: {e.strerror or e}") from None
            return
        sig = (st.st_mtime_ns, st.st_size)
        if not force and sig == self._sig:
            return
        with open(self.path, "rb") as f:
            text = f.read(1 << 20).decode("utf-8", "replace")
        try:
            keyset = PyJWKSet.from_json(text)
        except Exception as e:  # PyJWKSetError, ValueError
            if force:
                raise ValueError(f"the JWKS file {self.path} holds no usable key: {e}") from None
            log.warning("the JWKS file %s could not be re-read (%s); keeping the old keys", self.path, e)
            return
        self._keys = {k.key_id: k for k in keyset.keys}
        self._sig = sig

    def key_for(self, kid: str | None):
        with self._lock:
            self._reload()
            if kid not in self._keys:
                self._reload(force=False)
            keys = self._keys
        if kid is None:
            if len(keys) == 1:
                return next(iter(keys.values()))
            raise AuthError("the token has no kid and the key set holds several keys")
        key = keys.get(kid)
        if key is None:
            raise AuthError(f"no key {kid!r} in the key set")
        return key


class _URLJWKS:
    """A JWKS URL through PyJWT's PyJWKClient (cached; refetched for an unknown kid)."""

    def __init__(self, url: str, timeout: float = 5.0):
        from jwt import PyJWKClient
        self.client = PyJWKClient(url, cache_keys=True, lifespan=300, timeout=timeout)

    def key_for_token(self, token: str):
        from jwt import PyJWKClientError
        try:
            return self.client.get_signing_key_from_jwt(token)
        except PyJWKClientError as e:
            raise AuthError(f"no verifying key for the token: {e}") from None


# ------------------------------------------------------------------------ authenticator

class Authenticator:
    """Turns a request's credentials into a :class:`Caller`.

    ``jwks``: a JWKS file path or an ``https://`` URL (``http://`` only for a loopback
    host); ``audience`` is then required. ``mtls``: client certificates are verified by
    the TLS layer (``--client-ca``) and name the caller by their URI SAN.
    """

    def __init__(self, *, jwks: str | None = None, issuer: str | None = None,
                 audience: str | None = None, algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS,
                 caller_claim: str = "sub", mtls: bool = False, leeway: float = 30.0):
        self.mtls = mtls
        self.issuer = issuer
        self.audience = audience
        self.caller_claim = caller_claim or "sub"
        self.leeway = leeway
        algorithms = tuple(algorithms or DEFAULT_ALGORITHMS)
        bad = [a for a in algorithms if a.lower() == "none" or a.upper().startswith("HS")]
        if bad:
            raise ValueError(f"JWT algorithm {bad[0]} is not accepted: use asymmetric algorithms "
                             f"({', '.join(DEFAULT_ALGORITHMS)})")
        self.algorithms = algorithms
        self._file = self._url = None
        if jwks:
            if not audience:
                raise ValueError("--jwks needs --jwt-audience (the aud every token must carry)")
            if jwks.startswith("https://"):
                self._url = _URLJWKS(jwks)
            elif jwks.startswith("http://"):
                from urllib.parse import urlsplit
                if not is_loopback_host(urlsplit(jwks).hostname or ""):
                    raise ValueError("a JWKS URL must be https:// (http:// only on a loopback host)")
                self._url = _URLJWKS(jwks)
            else:
                self._file = _FileJWKS(jwks)

    @property
    def configured(self) -> bool:
        return self.mtls or self._file is not None or self._url is not None

    @property
    def blocking(self) -> bool:
        """Verification may fetch keys over the network (run it off the event loop)."""
        return self._url is not None

    def authenticate(self, scope: Mapping) -> Caller:
        """The caller of this request; :class:`AuthError` when it proves nobody."""
        token = None
        for key, value in scope.get("headers", ()):
            if key == b"authorization":
                scheme, _, rest = value.decode("latin-1").partition(" ")
                if scheme.lower() != "bearer" or not rest.strip():
                    raise AuthError("Authorization must be 'Bearer <JWT>'")
                token = rest.strip()
                break
        if token is not None:
            if self._file is None and self._url is None:
                raise AuthError("bearer tokens are not accepted here (no --jwks is configured)")
            return self._from_jwt(token)
        if self.mtls:
            return self._from_certificate(scope)
        raise AuthError("authentication required: send 'Authorization: Bearer <JWT>'")

    def _from_jwt(self, token: str) -> Caller:
        import jwt
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as e:
            raise AuthError(f"the bearer token is not a JWT: {e}") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise AuthError(f"JWT algorithm {alg!r} is not accepted")
        if self._url is not None:
            key = self._url.key_for_token(token)
        else:
            key = self._file.key_for(header.get("kid"))
        required = ["exp", "aud", self.caller_claim] + (["iss"] if self.issuer else [])
        try:
            claims = jwt.decode(token, key=key, algorithms=list(self.algorithms), audience=self.audience,
                                issuer=self.issuer, leeway=self.leeway, options={"require": required})
        except jwt.PyJWTError as e:
            raise AuthError(f"the bearer token is not valid: {e}") from None
        who = claims.get(self.caller_claim)
        if not isinstance(who, str) or not who:
            raise AuthError(f"the token's {self.caller_claim} claim must be a non-empty string")
        return Caller(id=who, method="jwt", claims=claims)

    def _from_certificate(self, scope: Mapping) -> Caller:
        tls = (scope.get("extensions") or {}).get("tls") or {}
        chain = tls.get("client_cert_chain") or []
        if not chain:
            raise AuthError("a client certificate is required (mutual TLS)")
        from cryptography import x509
        try:
            cert = x509.load_pem_x509_certificate(chain[0].encode("ascii"))
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        except ValueError as e:
            raise AuthError(f"the client certificate cannot be read: {e}") from None
        if len(uris) != 1:
            raise AuthError(f"the client certificate must carry exactly one URI SAN (it has {len(uris)})")
        return Caller(id=uris[0], method="mtls", claims={"uri_san": uris[0], "subject": cert.subject.rfc4514_string()})


# ------------------------------------------------------------------------- admin guard

def _claim_attrs(caller: Caller) -> dict:
    """The caller's claims as request attributes (scalars and lists of scalars)."""
    attrs: dict = {}
    for k, v in caller.claims.items():
        if not isinstance(k, str):
            continue
        if isinstance(v, (str, bool)) or (isinstance(v, int) and -(2 ** 53) < v < 2 ** 53):
            attrs[k] = v
        elif isinstance(v, list) and all(isinstance(x, str) for x in v):
            attrs[k] = list(v)
    attrs["auth"] = caller.method
    return attrs


class AdminGuard:
    """Which caller may use which guarded route: the operator's policy set, or
    :data:`DEFAULT_ADMIN_POLICY` when none is given."""

    def __init__(self, path: str | None = None):
        import policylang
        from ..language.errors import PolicyError
        from ..language.loader import check_path
        self.path = path
        if path is None:
            policies = policylang.loads(DEFAULT_ADMIN_POLICY)
        else:
            policies, diags = check_path(path)
            errors = [d for d in diags if d.severity == "error"]
            if policies is None or errors:
                raise PolicyError(list(diags))
        self.engine = policylang.Engine(policies)

    def request_for(self, caller: Caller, action: str, rtype: str, rid: str) -> dict:
        return {"principal": {"kind": "caller", "id": caller.id or "anonymous", "attrs": _claim_attrs(caller)},
                "action": {"name": action}, "resource": {"type": rtype or "service", "id": rid or ""}}

    def check(self, caller: Caller, action: str, rtype: str, rid: str) -> tuple[bool, str]:
        """``(allowed, why)``; any failure to decide denies."""
        try:
            d = self.engine.decide(self.request_for(caller, action, rtype, rid))
        except Exception as e:
            return False, f"the admin policy could not decide: {e}"
        if d.decision == "allow":
            return True, ""
        why = "; ".join(d.reasons) if d.reasons else "no admin policy permits it"
        return False, f"{caller.id or 'the caller'} may not {action} ({d.decision}: {why})"


# -------------------------------------------------------------------------- middleware

def _error(status: int, message: str, extra_headers: list | None = None):
    body = json.dumps({"error": {"status": status, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return status, headers + (extra_headers or []), body


class AuthMiddleware:
    """Authenticate and authorize the guarded routes; put the caller in the scope
    (``scope["policylang.caller"]`` and ``request.state.caller``) for every request.

    ``authenticator`` None (or not configured): every caller is :data:`ANONYMOUS` and the
    guard is not consulted (``serve`` allows this on loopback only)."""

    def __init__(self, app, authenticator: Authenticator | None, guard: AdminGuard | None):
        self.app = app
        self.authenticator = authenticator if authenticator is not None and authenticator.configured else None
        self.guard = guard or (AdminGuard() if self.authenticator is not None else None)

    async def _send(self, send, status: int, message: str, extra=None) -> None:
        status, headers, body = _error(status, message, extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        caller = ANONYMOUS
        if self.authenticator is not None and is_guarded(path):
            try:
                if self.authenticator.blocking:
                    from starlette.concurrency import run_in_threadpool
                    caller = await run_in_threadpool(self.authenticator.authenticate, scope)
                else:
                    caller = self.authenticator.authenticate(scope)
            except AuthError as e:
                return await self._send(send, 401, str(e), [(b"www-authenticate", b'Bearer realm="policylang"')])
            except Exception as e:  # a key set that cannot be fetched: fail closed
                log.warning("authentication failed: %s", e)
                return await self._send(send, 401, f"the credentials could not be verified: {e}",
                                        [(b"www-authenticate", b'Bearer realm="policylang"')])
            action, rtype, rid = route_action(scope["method"], path, scope.get("policylang.body"))
            allowed, why = self.guard.check(caller, action, rtype, rid)
            if not allowed:
                return await self._send(send, 403, why)
        scope[SCOPE_KEY] = caller
        state = scope.setdefault("state", {})
        if isinstance(state, dict):
            state["caller"] = caller
        await self.app(scope, receive, send)
