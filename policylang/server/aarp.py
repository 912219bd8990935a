"""Approvals over AuthZEN: the OpenID AuthZEN Access Request and Approval Profile 1.0
(AARP; docs/server.md#aarp).

A ``require_approval`` decision is answered on the AuthZEN evaluation endpoints as a
*requestable denial*: ``decision: false`` with ``context.evaluation_id``,
``context.evaluated_at``, ``context.reason`` (``approval_required``) and
``context.access_request`` (``expires_at`` and a ``binding_token``: a JWS signed with the
service's binding key, bound to the SHA-256 digest of the canonical request, the
evaluation id, the expiry, issuer and audience).

=======  ====================================  =============================================
POST     /access/v1/requests                   submit an access request: the binding token is
                                               verified (signature, ``typ``, ``iss``, ``aud``,
                                               expiry, ``denial.expires_at``,
                                               ``denial.evaluation_id`` and the request
                                               digest); an approval ticket
                                               (:mod:`policylang.privilege.approvals`),
                                               single use, bound to the whole request, is
                                               opened: 202 with the task handle
GET      /access/v1/requests/{id}              the task: ``pending``, ``approved`` (with
                                               ``result.mode: reevaluate`` and the
                                               ``approval`` reference), ``denied``,
                                               ``cancelled`` or ``expired``
POST     /access/v1/requests/{id}/cancel       cancel a pending task (also ``DELETE``): 200,
                                               409 ``invalid_task_state`` when terminal
GET      /access/v1/jwks                       the binding keys' public JWK set
=======  ====================================  =============================================

Approvers act through the authenticated ``/v1/approvals/{id}/approve`` route
(:mod:`policylang.server.zsp`): the approval id is the ticket id. The PEP then
re-evaluates with the ``approval`` object at ``context.approval``; the reference is
verified (:meth:`AccessRequests.resolve`) and replaced by the ticket id, which the
engine's approval checker confirms only for the very request the ticket is bound to, once.

Errors on these routes are ``application/problem+json`` (RFC 9457) with the profile's
problem ``type`` URNs (or ``about:blank`` for a malformed body); the body also carries
the service's usual ``{"error": {"status", "message"}}`` member.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .auth import caller_of

log = logging.getLogger("policylang.server")

__all__ = ["AccessRequests", "Reference", "make_router", "CAPABILITY", "AARP_ENV", "MACHINERY",
           "NOT_REQUESTABLE", "EXPIRED_DENIAL", "INVALID_DENIAL_BINDING", "DUPLICATE_REQUEST",
           "UNKNOWN_TASK", "TASK_EXPIRED", "INVALID_TASK_STATE"]

#: the capability URN advertised in /.well-known/authzen-configuration
CAPABILITY = "urn:openid:authzen:capability:access-request"
#: the environment variable through which ``serve --workers N`` hands the AARP settings on
AARP_ENV = "POLICYLANG_SERVE_AARP"

_ERR = "urn:openid:authzen:access-request:error:"
NOT_REQUESTABLE = _ERR + "not_requestable"
EXPIRED_DENIAL = _ERR + "expired_denial"
INVALID_DENIAL_BINDING = _ERR + "invalid_denial_binding"
DUPLICATE_REQUEST = _ERR + "duplicate_request"
UNKNOWN_TASK = _ERR + "unknown_task"
TASK_EXPIRED = _ERR + "task_expired"
INVALID_TASK_STATE = _ERR + "invalid_task_state"

_TITLES = {NOT_REQUESTABLE: "Access is not requestable", EXPIRED_DENIAL: "The requestable denial has expired",
           INVALID_DENIAL_BINDING: "The access request cannot be bound to the denied decision",
           DUPLICATE_REQUEST: "Duplicate access request", UNKNOWN_TASK: "Unknown task",
           TASK_EXPIRED: "The task has expired", INVALID_TASK_STATE: "The task is not in a state that allows this"}

#: Decision Context members of the profile itself: never authorization input, never bound
MACHINERY = frozenset({"access_request", "evaluation_id", "evaluated_at", "reason", "approval",
                       "next_action", "retry_after"})

#: the JWS ``typ`` of the two artifacts, so that one cannot be passed off as the other
BINDING_TYP = "aarp-binding+jwt"
APPROVAL_TYP = "aarp-approval+jwt"
ALG = "EdDSA"

#: the ``reason`` of a requestable denial
APPROVAL_REQUIRED = "approval_required"
#: re-evaluation denial reasons (profile registry) and their next action
_NEXT = {"approval_expired": "request", "out_of_scope": "request", "grant_pending": "retry",
         "policy_denied": "none", "approval_unverifiable": "none"}


class Problem(Exception):
    """An RFC 9457 problem answer."""

    def __init__(self, status: int, type_: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status = status
        self.type = type_
        self.detail = detail
        self.headers = headers


def problem_response(status: int, type_: str, detail: str, headers: dict | None = None) -> Response:
    title = _TITLES.get(type_) or {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
                                   409: "Conflict", 501: "Not Implemented", 503: "Service Unavailable"}.get(
        status, "Error")
    body = {"type": type_, "title": title, "status": status, "detail": detail,
            "error": {"status": status, "message": detail}}
    return Response(json.dumps(body, ensure_ascii=True).encode("ascii"), status_code=status,
                    media_type="application/problem+json", headers=headers)


def _bad(field: str, message: str) -> Problem:
    return Problem(400, "about:blank", f"{field}: {message}")


def rfc3339(t: float) -> str:
    """Whole seconds, UTC, ``Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.floor(t)))


def parse_rfc3339(text: Any, field: str) -> float:
    if not isinstance(text, str) or not text:
        raise _bad(field, "expected an RFC 3339 timestamp (a string)")
    try:
        value = _dt.datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise _bad(field, f"not an RFC 3339 timestamp: {text[:40]!r}") from None
    if value.tzinfo is None:
        raise _bad(field, "an RFC 3339 timestamp needs a time zone offset (Z or +hh:mm)")
    return value.timestamp()


def _object(value: Any, field: str, required: bool = False) -> dict | None:
    if value is None:
        if required:
            raise _bad(field, "required")
        return None
    if value.__class__ is not dict:
        raise _bad(field, "expected an object")
    return value


def _string(value: Any, field: str, required: bool = False) -> str | None:
    if value is None:
        if required:
            raise _bad(field, "required")
        return None
    if value.__class__ is not str or not value:
        raise _bad(field, "expected a non-empty string")
    return value


def _body_digest(body: dict) -> str:
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Reference:
    """A verified (or refused) ``context.approval`` of a re-evaluation."""

    approval_id: str
    #: the ticket id the engine is asked about (None: the reference is not used)
    ticket: str | None
    #: why it is not used (a profile reason code), or None
    problem: str | None = None
    data: dict | None = None


class _Keys:
    """The binding key file (a :class:`~policylang.privilege.credentials.KeySet`),
    re-read when it changes (``policylang token rotate``); a file that cannot be read
    leaves the previous keys in use."""

    def __init__(self, keys: Any):
        from ..privilege.credentials import KeySet
        self._lock = threading.Lock()
        self.path = None
        self._sig = None
        if isinstance(keys, KeySet):
            self.keys = keys
        else:
            self.path = os.fspath(keys)
            self.keys = KeySet.load(self.path)
            self._sig = self._signature()
        if self.keys.kid is None:
            raise ValueError("the binding key set has no signing key (it holds public keys only)")

    def _signature(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def current(self):
        if self.path is not None:
            sig = self._signature()
            if sig != self._sig:
                with self._lock:
                    from ..privilege.credentials import KeySet
                    try:
                        self.keys = KeySet.load(self.path)
                        self._sig = sig
                    except (OSError, ValueError) as e:
                        log.warning("the binding key file %s could not be re-read (%s); keeping the old keys",
                                    self.path, e)
        return self.keys


class AccessRequests:
    """The access request service of one decision service.

    ``approvals``: the :class:`~policylang.privilege.approvals.Approvals` tickets live in.
    ``keys``: the binding key set (a KeySet or the path of a key file).
    ``issuer``: the ``iss`` and ``aud`` of the binding tokens and approval states (this
    service is both the PDP and the access request service).
    ``binding_ttl``: seconds a requestable denial can be submitted (``expires_at``).
    ``audit``: the audit log (``aarp_denial`` and ``aarp_reevaluation`` records; the
    tickets record ``approval_open``, ``approve``, ``deny``, ``approval_cancel``).
    ``engine_getter``: the current engine (the submission is decided again, now).
    """

    #: seconds retired keys stay in the JWK set after the last artifact they signed expired
    KEEP = 300

    def __init__(self, approvals: Any, keys: Any, *, issuer: str, binding_ttl: float = 600,
                 audit: Any = None, engine_getter: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.time):
        if isinstance(binding_ttl, bool) or not isinstance(binding_ttl, (int, float)) or not \
                math.isfinite(binding_ttl) or binding_ttl < 1:
            raise ValueError("binding_ttl must be at least 1 second")
        if not isinstance(issuer, str) or not issuer:
            raise ValueError("issuer must be a non-empty string")
        self.approvals = approvals
        self._keys = _Keys(keys)
        self.issuer = issuer
        self.binding_ttl = int(binding_ttl)
        self.audit = audit
        self.engine_getter = engine_getter
        self._clock = clock

    # -- signing ---------------------------------------------------------------------------

    def _sign(self, claims: dict, typ: str) -> str:
        import jwt as pyjwt
        keys = self._keys.current()
        key = keys._signing()
        if key is None:
            raise ValueError("the binding key set has no signing key")
        token = pyjwt.encode(claims, key.private, algorithm=ALG, headers={"kid": key.kid, "typ": typ})
        keys._note_signed(key.kid, float(claims["exp"]))
        return token

    def _verify(self, token: Any, typ: str) -> dict:
        """The claims of a JWS this service signed with ``typ``; ``_Invalid`` (message)
        or ``_Expired`` otherwise. Signature first, then the claims."""
        import jwt as pyjwt
        if not isinstance(token, str) or token.count(".") != 2:
            raise _Invalid("not a compact JWS")
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.PyJWTError as e:
            raise _Invalid(f"not a JWS: {e}") from None
        if header.get("alg") != ALG:
            raise _Invalid(f"algorithm {header.get('alg')!r} is not accepted")
        if header.get("typ") != typ:
            raise _Invalid(f"not a {typ} (typ {header.get('typ')!r})")
        kid = header.get("kid")
        pub = self._keys.current().verification_key(kid, self._clock(), self.KEEP) if isinstance(kid, str) else None
        if pub is None:
            raise _Invalid(f"unknown or retired key {kid!r}")
        try:
            claims = pyjwt.decode(token, key=pub, algorithms=[ALG], audience=self.issuer, issuer=self.issuer,
                                  options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_iat": False,
                                           "verify_exp": False})
        except pyjwt.InvalidSignatureError:
            raise _Invalid("the signature does not verify") from None
        except pyjwt.PyJWTError as e:
            raise _Invalid(str(e)) from None
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise _Invalid("exp must be a number")
        if self._clock() >= exp:
            raise _Expired(f"expired at {rfc3339(exp)}")
        return claims

    def jwks(self) -> dict:
        return self._keys.current().public_jwks(self._clock(), self.KEEP)

    # -- the requestable denial ------------------------------------------------------------

    def denial(self, decision: Any, request: dict, authzen_context: Any, base: str) -> dict:
        """The profile's members for the Decision Context of a ``require_approval``:
        ``evaluation_id``, ``evaluated_at``, ``reason`` and ``access_request``. Audited
        (``aarp_denial``) before it is returned: AuditError when that fails."""
        from ..privilege.approvals import request_digest
        now = self._clock()
        iat = int(math.floor(now))
        exp = iat + self.binding_ttl
        evaluation_id = "eval_" + secrets.token_hex(16)
        jti = secrets.token_hex(16)
        digest = request_digest(request)
        ctx = authzen_context if isinstance(authzen_context, dict) else {}
        members = sorted(k for k in ctx if k not in MACHINERY and ctx[k] is not None)
        claims = {"iss": self.issuer, "aud": self.issuer, "iat": iat, "exp": exp, "jti": jti,
                  "evaluation_id": evaluation_id, "denial_expires_at": rfc3339(exp),
                  "request_digest": digest, "binding_context_members": members,
                  "approvers": list(decision.approvers or ()), "rules": list(decision.rules or ()),
                  "policy_version": decision.policy_version}
        token = self._sign(claims, BINDING_TYP)
        if self.audit is not None:
            self.audit.record("aarp_denial", request=request, decision=decision, evaluation_id=evaluation_id,
                              digest=digest, binding_jti=jti, expires_at=rfc3339(exp))
        reasons = [r for r in (decision.reasons or ()) if isinstance(r, str)]
        access_request = {"endpoint": base + "/access/v1/requests", "expires_at": rfc3339(exp),
                          "binding_token": token}
        if decision.rules:
            access_request["template"] = decision.rules[0]
        access_request["display"] = {
            "title": "Approval required",
            "description": "; ".join(reasons) if reasons else "A person must approve this request.",
        }
        return {"evaluation_id": evaluation_id, "evaluated_at": rfc3339(now), "reason": APPROVAL_REQUIRED,
                "access_request": access_request}

    # -- the access request endpoint -------------------------------------------------------

    def _engine(self):
        engine = self.engine_getter() if self.engine_getter is not None else None
        if engine is None:
            raise Problem(503, "about:blank", "no policy loaded")
        return engine

    def submit(self, body: dict, caller, base: str, idempotency_key: str | None) -> tuple[int, dict, dict]:
        """``(status, payload, headers)`` of ``POST /access/v1/requests``; raises Problem.

        The profile's steps, one method each: read the body, verify the binding token,
        check that the submitted request is the denied one, then open (or find) the ticket."""
        sub = _read_submission(body)
        claims = self._verified_binding(sub)
        req = _bound_request(sub, claims)
        requester = caller.id if caller.authenticated else None
        jti = claims["jti"]
        ticket_id = "apr_" + jti
        fingerprint = _body_digest(body)
        existing = self.approvals.store.get_approval(ticket_id)
        if existing is not None:
            return self._resubmitted(existing, requester, fingerprint, base)
        return self._open_ticket(sub, claims, req, requester, fingerprint, idempotency_key, base)

    def _verified_binding(self, sub: dict) -> dict:
        """The binding token's claims, checked: signature, typ, iss, aud, expiry (steps 1-2),
        and the echoed expiry and evaluation id against the protected ones."""
        denial = sub["denial"]
        try:
            claims = self._verify(sub["token"], BINDING_TYP)
        except _Expired as e:
            raise Problem(410, EXPIRED_DENIAL, f"denial.binding_token: {e}") from None
        except _Invalid as e:
            raise Problem(400, INVALID_DENIAL_BINDING, f"denial.binding_token: {e}") from None
        protected = claims.get("denial_expires_at")
        members = claims.get("binding_context_members")
        jti, evaluation_id, digest = claims.get("jti"), claims.get("evaluation_id"), claims.get("request_digest")
        if not (isinstance(protected, str) and isinstance(members, list) and all(isinstance(m, str) for m in members)
                and isinstance(jti, str) and jti and isinstance(evaluation_id, str) and isinstance(digest, str)):
            raise Problem(400, INVALID_DENIAL_BINDING, "denial.binding_token: not a binding token of this service")
        # the echoed expiry must be the protected one; the earlier of it and exp is the deadline
        echoed_expiry = sub["expires_at"]
        if parse_rfc3339(protected, "binding_token.denial_expires_at") != echoed_expiry:
            raise Problem(400, INVALID_DENIAL_BINDING, "denial.expires_at: not the expiry of the denied evaluation")
        if self._clock() >= min(echoed_expiry, float(claims["exp"])):
            raise Problem(410, EXPIRED_DENIAL, f"denial.expires_at: the denial expired at {rfc3339(echoed_expiry)}")
        echoed_eval = _string(denial.get("evaluation_id"), "denial.evaluation_id")
        if echoed_eval is not None and echoed_eval != evaluation_id:
            raise Problem(400, INVALID_DENIAL_BINDING, "denial.evaluation_id: not the evaluation the token binds")
        return claims

    def _open_ticket(self, sub: dict, claims: dict, req: dict, requester: str | None, fingerprint: str,
                     idempotency_key: str | None, base: str) -> tuple[int, dict, dict]:
        from ..privilege.approvals import ApprovalError

        jti, evaluation_id = claims["jti"], claims["evaluation_id"]
        task_id, ticket_id = "arq_" + jti, "apr_" + jti
        engine = self._engine()
        d = engine.decide(req)
        if d.decision != "require_approval":
            raise Problem(400, NOT_REQUESTABLE, f"the request is decided {d.decision} now, not "
                                                "require_approval: there is nothing to approve")
        policies = getattr(engine, "policies", None)
        cap = self.approvals.ttl_cap(policies)
        now = self._clock()
        until = sub["until"]
        if until is not None and until <= now:
            raise _bad("requested_access.requested_until", "is in the past")
        ttl = None if until is None else min(until - now, cap)
        meta = {"evaluation_id": evaluation_id, "access_request": task_id, "binding_jti": jti,
                "body_sha256": fingerprint}
        if requester:
            meta["requester"] = requester
        denial = sub["denial"]
        for key, value in (("justification", sub["extra_context"]), ("requested_access", sub["requested"]),
                           ("client", sub["client"]), ("idempotency_key", idempotency_key),
                           ("reason", denial.get("reason")), ("template", denial.get("template"))):
            if value:
                meta[key] = value
        try:
            ticket = self.approvals.open(d, req, ttl=ttl, single_use=True, policies=policies,
                                         approval_id=ticket_id, meta=meta)
        except ApprovalError as e:
            if e.code == "exists":  # the same denial submitted concurrently
                again = self.approvals.store.get_approval(ticket_id)
                if again is not None:
                    return self._resubmitted(again, requester, fingerprint, base)
            raise Problem(400, "about:blank", str(e)) from None
        task = self._task(ticket.data, base)
        return 202, {"task": task}, {"Location": task["status_endpoint"]}

    def _resubmitted(self, data: dict, requester: str | None, fingerprint: str, base: str):
        """The same denial submitted again: the same task for the same requester and an
        equivalent body, else ``duplicate_request``."""
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
        if meta.get("requester") != requester or meta.get("body_sha256") != fingerprint:
            raise Problem(409, DUPLICATE_REQUEST, "this denial was submitted already, by another requester or "
                                                  "with a different body")
        payload = self._answer(data, base)
        status = 202 if payload["task"]["status"] == "pending" else 201
        return status, payload, {"Location": payload["task"]["status_endpoint"]}

    # -- tasks ----------------------------------------------------------------------------

    def _status(self, data: dict) -> str:
        status = data.get("status")
        if status == "cancelled":
            return "cancelled"
        if status == "denied":
            return "denied"
        if self.approvals.fully_approved(data):
            return "approved"  # terminal: it stays approved (its approval expires at approved_until)
        if self._clock() >= data["expires_at"]:
            return "expired"
        return "pending"

    def _task(self, data: dict, base: str) -> dict:
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
        task_id = meta.get("access_request") or "arq_" + data["id"][4:]
        status = self._status(data)
        endpoint = f"{base}/access/v1/requests/{task_id}"
        task = {"id": task_id, "status": status, "status_endpoint": endpoint,
                "expires_at": rfc3339(data["expires_at"])}
        if status == "pending":
            task["links"] = {"cancel": endpoint + "/cancel"}
            groups = [g for g in data.get("approvers") or () if isinstance(g, str)]
            task["display"] = {"title": "Access request submitted",
                               "description": "Waiting for an approver from: " + ", ".join(groups)}
        return task

    def _answer(self, data: dict, base: str) -> dict:
        task = self._task(data, base)
        out: dict = {"task": task}
        if task["status"] == "approved":
            out["result"] = {"mode": "reevaluate", "approval": self._approval(data)}
        return out

    def _approval(self, data: dict) -> dict:
        """The ``approval`` object of an approved task: id, approved_at, approved_until
        and ``state``, a JWS (``typ`` aarp-approval+jwt) binding the ticket, the task, the
        evaluation and the request digest. Deterministic for a given ticket and key."""
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
        times = [a.get("at") for a in data.get("approvals") or () if isinstance(a, dict)
                 and isinstance(a.get("at"), (int, float))]
        approved_at = max(times) if times else data["created_at"]
        until = int(math.floor(data["expires_at"]))
        claims = {"iss": self.issuer, "aud": self.issuer, "iat": int(math.floor(approved_at)), "exp": until,
                  "jti": data["id"], "approval_id": data["id"], "task": meta.get("access_request"),
                  "evaluation_id": meta.get("evaluation_id"), "request_digest": data.get("digest")}
        return {"id": data["id"], "approved_at": rfc3339(approved_at), "approved_until": rfc3339(until),
                "state": self._sign(claims, APPROVAL_TYP)}

    def _ticket_for_task(self, task_id: str, caller) -> dict:
        """The ticket of task ``task_id`` when the caller may act on it; unknown_task
        otherwise (a task the caller may not see is not told apart from none)."""
        if not isinstance(task_id, str) or not task_id.startswith("arq_") or len(task_id) > 200:
            raise Problem(404, UNKNOWN_TASK, f"no task {task_id[:80]}")
        data = self.approvals.store.get_approval("apr_" + task_id[4:])
        meta = data.get("meta") if isinstance(data, dict) and isinstance(data.get("meta"), dict) else None
        if meta is None or meta.get("access_request") != task_id:
            raise Problem(404, UNKNOWN_TASK, f"no task {task_id}")
        if caller.authenticated and caller.id not in (meta.get("requester"), data.get("principal")):
            raise Problem(404, UNKNOWN_TASK, f"no task {task_id}")
        return data

    def status(self, task_id: str, caller, base: str) -> dict:
        return self._answer(self._ticket_for_task(task_id, caller), base)

    def cancel(self, task_id: str, caller, base: str, body: dict | None) -> dict:
        from ..privilege.approvals import ApprovalError
        body = body or {}
        reason = _string(body.get("reason"), "reason")
        comment = _string(body.get("comment"), "comment")
        data = self._ticket_for_task(task_id, caller)
        if self._status(data) != "pending":
            raise Problem(409, INVALID_TASK_STATE, f"task {task_id} is {self._status(data)}: only a pending task "
                                                   "can be cancelled")
        by = caller.id if caller.authenticated else "anonymous"
        try:
            ticket = self.approvals.cancel(data["id"], by, reason=reason, comment=comment)
        except ApprovalError as e:
            if e.code == "not_found":
                raise Problem(404, UNKNOWN_TASK, f"no task {task_id}") from None
            raise Problem(409, INVALID_TASK_STATE, f"task {task_id}: {e}") from None
        return {"task": self._task(ticket.data, base)}

    # -- re-evaluation --------------------------------------------------------------------

    def resolve(self, approval: dict, request: dict, field: str = "context.approval") -> Reference:
        """Verify an ``approval`` reference of a re-evaluation. Raises Problem (400) for a
        malformed one; returns a Reference whose ``ticket`` is None when it cannot be used."""
        approval_id = _string(approval.get("id"), field + ".id", required=True)
        state = approval.get("state")
        if state is not None and state.__class__ is not str:
            raise _bad(field + ".state", "expected the string this service returned")
        for name in ("approved_at", "approved_until"):
            if approval.get(name) is not None and approval.get(name).__class__ is not str:
                raise _bad(f"{field}.{name}", "expected an RFC 3339 timestamp (a string)")
        if state is not None:
            try:
                claims = self._verify(state, APPROVAL_TYP)
            except _Expired:
                data = self.approvals.store.get_approval(approval_id)
                return Reference(approval_id, None, "approval_expired", data)
            except _Invalid:
                return Reference(approval_id, None, "approval_unverifiable")
            if claims.get("approval_id") != approval_id:
                return Reference(approval_id, None, "approval_unverifiable")
        data = self.approvals.store.get_approval(approval_id)
        if data is None:
            return Reference(approval_id, None, "approval_unverifiable")
        return Reference(approval_id, approval_id, None, data)

    def reevaluated(self, decision: Any, request: dict, ref: Reference) -> dict:
        """The Decision Context members after a re-evaluation with ``ref``: the
        ``approval`` (id, approved_until) on an allow; else ``reason`` and ``next_action``.
        Audited (``aarp_reevaluation``)."""
        from ..privilege.approvals import request_digest
        data = ref.data or {}
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
        out: dict = {}
        reason = None
        if decision.decision == "allow" and ref.ticket is not None:
            out["approval"] = {"id": ref.approval_id, "approved_until": rfc3339(data.get("expires_at", 0))}
        elif decision.decision == "deny":
            reason = "policy_denied"
        elif ref.problem is not None:
            reason = ref.problem
        else:
            status = data.get("status")
            try:
                same = hmac.compare_digest(str(data.get("digest")), request_digest(request))
            except Exception:
                same = False
            if status in ("cancelled", "denied") or data.get("uses") or self._clock() >= data.get("expires_at", 0):
                reason = "approval_expired"
            elif not same:
                reason = "out_of_scope"
            elif not self.approvals.fully_approved(data):
                reason = "grant_pending"
            else:
                reason = "approval_unverifiable"
        if reason is not None:
            out["reason"] = reason
            out["next_action"] = _NEXT[reason]
            if reason == "grant_pending":
                out["retry_after"] = 30
        if self.audit is not None:
            self.audit.record("aarp_reevaluation", request=request, decision=decision,
                              evaluation_id=meta.get("evaluation_id"), access_request=meta.get("access_request"),
                              approval=ref.approval_id, outcome=decision.decision, reevaluation_reason=reason)
        return out


class _Invalid(Exception):
    pass


class _Expired(Exception):
    pass


# ------------------------------------------------------------------------------- routes

def _base(config, request: Request) -> str:
    return (getattr(config, "public_url", None) or str(request.base_url)).rstrip("/")


def make_router(aarp: AccessRequests, config) -> APIRouter:
    """The access request, task status, cancellation and JWKS routes."""
    from .app import parse_json_body
    from .authzen import BadRequest
    from ..privilege.audit import AuditError
    from ..privilege.store import StoreError

    router = APIRouter()

    async def guarded(fn, *args) -> Response:
        try:
            status, payload, headers = await run_in_threadpool(fn, *args)
        except Problem as e:
            return problem_response(e.status, e.type, e.detail, e.headers)
        except (StoreError, AuditError) as e:
            return problem_response(503, "about:blank", f"unavailable: {e}")
        except ValueError as e:  # a RequestError or other bad input that got this far
            return problem_response(400, "about:blank", str(e))
        return Response(json.dumps(payload, ensure_ascii=True).encode("ascii"), status_code=status,
                        media_type="application/json", headers=headers)

    async def body_of(request: Request, optional: bool = False) -> dict | None:
        raw = request.scope.get("policylang.body")
        if raw is None:
            raw = await request.body()
        if optional and not (raw or b"").strip():
            return None
        try:
            return parse_json_body(request.headers.get("content-type"), raw)
        except BadRequest as e:
            raise Problem(400, "about:blank", e.message) from None

    @router.post("/access/v1/requests", status_code=202)
    async def submit(request: Request):
        caller = caller_of(request)
        try:
            body = await body_of(request)
            key = request.headers.get("idempotency-key")
            if key is not None and (not key or len(key) > 200):
                raise Problem(400, "about:blank", "Idempotency-Key: must be 1 to 200 characters")
        except Problem as e:
            return problem_response(e.status, e.type, e.detail)
        return await guarded(aarp.submit, body, caller, _base(config, request), key)

    @router.get("/access/v1/requests/{task_id}")
    async def task_status(task_id: str, request: Request):
        caller = caller_of(request)
        base = _base(config, request)
        return await guarded(lambda: (200, aarp.status(task_id, caller, base), {}))

    async def _cancel(task_id: str, request: Request):
        caller = caller_of(request)
        try:
            body = await body_of(request, optional=True)
        except Problem as e:
            return problem_response(e.status, e.type, e.detail)
        base = _base(config, request)
        return await guarded(lambda: (200, aarp.cancel(task_id, caller, base, body), {}))

    @router.post("/access/v1/requests/{task_id}/cancel")
    async def cancel(task_id: str, request: Request):
        return await _cancel(task_id, request)

    @router.delete("/access/v1/requests/{task_id}/cancel")
    async def cancel_delete(task_id: str, request: Request):
        return await _cancel(task_id, request)

    @router.get("/access/v1/jwks")
    async def jwks():
        return Response(json.dumps(aarp.jwks()).encode("ascii"), media_type="application/jwk-set+json",
                        headers={"Cache-Control": "max-age=60"})

    return router


def from_settings(settings: dict | None, *, approvals: Any, audit: Any, engine_getter, public_url: str | None):
    """The AccessRequests for ``serve``'s AARP settings (``{"binding_keys": path,
    "binding_ttl": s}``), or None when they name no binding keys."""
    if not settings or not settings.get("binding_keys"):
        return None
    if approvals is None:
        raise ValueError("--binding-keys needs --store (the approval tickets live there)")
    return AccessRequests(approvals, settings["binding_keys"], issuer=settings.get("issuer") or public_url or
                          "policylang", binding_ttl=settings.get("binding_ttl") or 600, audit=audit,
                          engine_getter=engine_getter)


def _read_submission(body: dict) -> dict:
    """The access request body's members, each checked for its shape (400 naming it)."""
    subject = _object(body.get("subject"), "subject", True)
    if body.get("items") is not None:
        raise _bad("items", "bulk access requests are not supported here: submit one request per denial")
    resource = _object(body.get("resource"), "resource", True)
    action = _object(body.get("action"), "action", True)
    context = _object(body.get("context"), "context") or {}
    denial = _object(body.get("denial"), "denial", True)
    requested = _object(body.get("requested_access"), "requested_access") or {}
    client = _object(body.get("client"), "client")
    if body.get("callback") is not None:
        raise _bad("callback", "completion callbacks are not supported here: poll task.status_endpoint")
    token = denial.get("binding_token")
    if token is None:
        raise Problem(400, INVALID_DENIAL_BINDING, "denial.binding_token: required (this service keeps no "
                                                   "evaluation records: denials are bound by the token)")
    if token.__class__ is not str:
        raise Problem(400, INVALID_DENIAL_BINDING, "denial.binding_token: expected a string")
    expires_at = parse_rfc3339(denial.get("expires_at"), "denial.expires_at")
    _string(denial.get("evaluation_id"), "denial.evaluation_id")
    until = requested.get("requested_until")
    until = None if until is None else parse_rfc3339(until, "requested_access.requested_until")
    return {"subject": subject, "resource": resource, "action": action, "context": context, "denial": denial,
            "requested": requested, "client": client, "token": token, "expires_at": expires_at, "until": until}


def _bound_request(sub: dict, claims: dict) -> dict:
    """Step 4: the submitted request must be the one denied (subject, resource, action and
    the bound context members): its digest equals the token's. Returns the request."""
    from .authzen import BadRequest, request_error, to_request
    from ..language.errors import RequestError
    from ..privilege.approvals import request_digest

    members = claims["binding_context_members"]
    context = sub["context"]
    bound_context = {k: v for k, v in context.items() if k in members}
    sub["extra_context"] = {k: v for k, v in context.items() if k not in members and k not in MACHINERY}
    try:
        req = to_request({"subject": sub["subject"], "resource": sub["resource"], "action": sub["action"],
                          "context": bound_context})
        submitted = request_digest(req)
    except BadRequest as e:
        raise Problem(400, "about:blank", e.message) from None
    except RequestError as e:
        raise Problem(400, "about:blank", request_error(e).message) from None
    if not hmac.compare_digest(submitted, claims["request_digest"]):
        raise Problem(400, INVALID_DENIAL_BINDING,
                      "the submitted subject, resource, action and context are not those of the denied "
                      "evaluation (the request digest differs)")
    return req
