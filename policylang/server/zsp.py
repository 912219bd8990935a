"""HTTP routes for credentials and approvals (docs/zero-standing-privilege.md), mounted by the decision service.

``make_router(approvals=…, issuer=…, engine_getter=…)`` returns a FastAPI router; only
the routes whose component is given are added. All bodies are JSON; every error is
``{"error": {"status": N, "message": …}}``:

=======  ================================  ==================================================
POST     /v1/approvals                     ``{"request": {…}, "ttl": 3600, "single_use": false}``:
                                           decide; open a ticket bound to the request's digest
                                           from a require_approval (201), else 409; a ttl over
                                           ``option max_approval_ttl`` (24 h) is a 400
GET      /v1/approvals                     ``?approver=ID&all=true``: ``{"approvals": […]}``, each
                                           with ``digest``, ``summary`` and ``request``
GET      /v1/approvals/{id}                one ticket (404 when unknown)
POST     /v1/approvals/{id}/approve        the approver is ``caller_of(request)`` when the
                                           service authenticates; else ``{"approver": ID}``
                                           (403 not allowed to, 404, 409
POST     /v1/approvals/{id}/deny           expired, denied or used; 503 when the audit log
                                           cannot be written: nothing was approved)
POST     /v1/tokens                        ``{"request": {…}}``: decide; mint from an allow with
                                           grants (201), else 403 with the decision
POST     /v1/tokens/refresh                ``{"token": JWT, "request": {…}}``: decide again (200/403)
POST     /v1/tokens/verify                 ``{"token", "scope"?, "audience"?, "leeway"?}``: 200
                                           ``{"valid": true, "claims"}`` or ``{"valid": false,
                                           "reason", "message"}``
POST     /v1/tokens/revoke                 ``{"jti": …}`` or ``{"task": …}``: ``{"revoked": […]}``
POST     /v1/tasks                         ``{"task": ID, "principal": AGENT, "root"?: ID,
                                           "ttl"?: s}``: open a task bound to the agent and the
                                           delegation root (201); the opener is
                                           ``caller_of(request)`` when the service authenticates,
                                           else ``{"opened_by": ID}``; 409 for a task id ever
                                           used, 403 when the agent opens its own task
GET      /v1/tasks/{id}                    the task's state (404 when unknown)
POST     /v1/tasks/{id}/revoke             revoke the task and its tokens (also ``DELETE
                                           /v1/tasks/{id}``): ``{"task", "revoked": […]}``
GET      /.well-known/jwks.json            the public keys
=======  ================================  ==================================================

400 for a body that is not JSON, not ``application/json`` or malformed; 503 when the
store (or the audit log) cannot be used, so nothing is accepted unchecked. These routes
approve and revoke: put them behind the service's authentication.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from .auth import caller_of

__all__ = ["make_router"]

_APPROVAL_STATUS = {"not_found": 404, "expired": 409, "denied": 409, "used": 409, "forbidden": 403,
                    "invalid": 400, "cancelled": 409, "exists": 409}


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}, **extra}, status_code=status)


async def _body(request: Request) -> dict:
    """The body as a JSON object through the service's one decoder
    (:func:`policylang.server.app.parse_json_body`: NaN, Infinity and numbers that
    overflow, such as ``1e999``, are refused like on every other route)."""
    from .app import parse_json_body
    from .authzen import BadRequest
    raw = request.scope.get("policylang.body")
    if raw is None:
        raw = await request.body()
    try:
        return parse_json_body(request.headers.get("content-type"), raw)
    except BadRequest as e:
        raise _HTTPError(400, e.message) from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _field(body: dict, name: str, kind: type | tuple, required: bool = True, what: str = "") -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise _HTTPError(400, f"{name}: required")
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise _HTTPError(400, f"{name}: must be {what or getattr(kind, '__name__', 'valid')}")
    return value


def make_router(*, approvals: Any = None, issuer: Any = None,
                engine_getter: Callable[[], Any] | None = None) -> APIRouter:
    from ..privilege.approvals import ApprovalError
    from ..privilege.audit import AuditError
    from ..privilege.credentials import NotAllowed, TaskIdInUse, TokenError
    from ..privilege.store import StoreError

    router = APIRouter()

    async def guarded(fn, *args) -> JSONResponse:
        """Run blocking work off the event loop and map failures to statuses."""
        try:
            status, payload = await run_in_threadpool(fn, *args)
            return JSONResponse(payload, status_code=status)
        except _HTTPError as e:
            return _error(e.status, e.message, **e.extra)
        except (StoreError, AuditError) as e:
            return _error(503, f"unavailable: {e}")
        except ApprovalError as e:
            return _error(_APPROVAL_STATUS.get(e.code, 400), str(e))
        except TaskIdInUse as e:
            return _error(409, str(e))
        except NotAllowed as e:
            return _error(403, str(e))
        except ValueError as e:  # RequestError and other bad input
            return _error(400, str(e))

    def get_engine():
        if engine_getter is None:
            raise _HTTPError(501, "no decision engine is configured for this route")
        try:
            engine = engine_getter()
        except Exception as e:
            raise _HTTPError(503, f"no policy loaded: {e}") from None
        if engine is None:
            raise _HTTPError(503, "no policy loaded")
        return engine

    def decide(request_obj: dict):
        return get_engine().decide(request_obj)

    # -- approvals -------------------------------------------------------------------------

    if approvals is not None:

        @router.post("/v1/approvals")
        async def open_approval(request: Request):
            try:
                body = await _body(request)
                req = _field(body, "request", dict, what="an object")
                ttl = body.get("ttl")
                if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))
                                        or not math.isfinite(ttl) or ttl <= 0):
                    raise _HTTPError(400, "ttl: must be a positive number of seconds")
                single_use = body.get("single_use", False)
                if not isinstance(single_use, bool):
                    raise _HTTPError(400, "single_use: must be true or false")
            except _HTTPError as e:
                return _error(e.status, e.message)

            def work():
                engine = get_engine()
                d = engine.decide(req)
                dd = d.to_dict()
                if dd["decision"] != "require_approval":
                    raise _HTTPError(409, f"the decision is {dd['decision']}, not require_approval: "
                                          "nothing to approve", decision=dd)
                ticket = approvals.open(d, req, ttl=ttl, single_use=single_use,
                                        policies=getattr(engine, "policies", None))
                return 201, {"approval": ticket.to_dict(), "decision": dd}

            return await guarded(work)

        @router.get("/v1/approvals")
        async def list_approvals(request: Request):
            q = request.query_params
            approver = q.get("approver") or None
            flag = q.get("all", "false").lower()
            if flag not in ("true", "false", "1", "0", "yes", "no"):
                return _error(400, "all: must be true or false")

            def work():
                tickets = approvals.list(approver=approver, include_closed=flag in ("true", "1", "yes"))
                return 200, {"approvals": [t.to_dict() for t in tickets]}

            return await guarded(work)

        @router.get("/v1/approvals/{approval_id}")
        async def get_approval(approval_id: str):
            return await guarded(lambda: (200, {"approval": approvals.get(approval_id).to_dict()}))

        async def _verdict(request: Request, approval_id: str, verb: str):
            caller = caller_of(request)
            try:
                body = await _body(request)
                if caller.authenticated:  # the approver is who authenticated, never a body field
                    who = caller.id
                else:  # no authentication configured (loopback only): the body names the approver
                    who = _field(body, "approver", str, what="a string")
            except _HTTPError as e:
                return _error(e.status, e.message)

            def work():
                act = approvals.approve if verb == "approve" else approvals.deny
                return 200, {"approval": act(approval_id, approver=who).to_dict()}

            return await guarded(work)

        @router.post("/v1/approvals/{approval_id}/approve")
        async def approve(approval_id: str, request: Request):
            return await _verdict(request, approval_id, "approve")

        @router.post("/v1/approvals/{approval_id}/deny")
        async def deny(approval_id: str, request: Request):
            return await _verdict(request, approval_id, "deny")

    # -- tokens ------------------------------------------------------------------------------

    if issuer is not None:

        @router.post("/v1/tokens")
        async def issue_token(request: Request):
            try:
                body = await _body(request)
                req = _field(body, "request", dict, what="an object")
            except _HTTPError as e:
                return _error(e.status, e.message)

            def work():
                d = decide(req)
                dd = d.to_dict()
                try:
                    token = issuer.issue(d, req)
                except NotAllowed as e:
                    raise _HTTPError(403, str(e), decision=dd) from None
                return 201, {**token.to_dict(), "decision": dd}

            return await guarded(work)

        @router.post("/v1/tokens/refresh")
        async def refresh_token(request: Request):
            try:
                body = await _body(request)
                tok = _field(body, "token", str, what="a string")
                req = _field(body, "request", dict, what="an object")
            except _HTTPError as e:
                return _error(e.status, e.message)

            def work():
                return 200, issuer.refresh(tok, get_engine(), req).to_dict()

            return await guarded(work)

        @router.post("/v1/tokens/verify")
        async def verify_token(request: Request):
            try:
                body = await _body(request)
                tok = _field(body, "token", str, what="a string")
                scope = _field(body, "scope", str, required=False, what="a string")
                audience = _field(body, "audience", str, required=False, what="a string")
                leeway = body.get("leeway", 0)
                if isinstance(leeway, bool) or not isinstance(leeway, (int, float)):
                    raise _HTTPError(400, "leeway: must be a number of seconds")
            except _HTTPError as e:
                return _error(e.status, e.message)

            def work():
                try:
                    claims = issuer.verify(tok, scope=scope, audience=audience, leeway=leeway)
                except TokenError as e:
                    return 200, {"valid": False, "reason": e.reason, "message": str(e)}
                return 200, {"valid": True, "claims": claims}

            return await guarded(work)

        @router.post("/v1/tokens/revoke")
        async def revoke_token(request: Request):
            try:
                body = await _body(request)
                jti = _field(body, "jti", str, required=False, what="a string")
                task = _field(body, "task", str, required=False, what="a string")
                if (jti is None) == (task is None):
                    raise _HTTPError(400, "give exactly one of jti or task")
            except _HTTPError as e:
                return _error(e.status, e.message)

            def work():
                if jti is not None:
                    issuer.revoke(jti)
                    return 200, {"revoked": [jti]}
                return 200, {"task": task, "revoked": issuer.revoke_task(task)}

            return await guarded(work)

        # -- tasks (issue 11 finding 13) ------------------------------------------------------

        def _task_dict(state) -> dict:
            return {"task": state.task_id, "principal": state.principal, "root": state.root,
                    "opened_by": state.opened_by, "started_at": state.started_at, "ends_at": state.ends_at,
                    "revoked_at": state.revoked_at, "revoked": state.revoked}

        @router.post("/v1/tasks")
        async def open_task(request: Request):
            caller = caller_of(request)
            try:
                body = await _body(request)
                task = _field(body, "task", str, what="a string")
                principal = _field(body, "principal", str, what="a string")
                root = _field(body, "root", str, required=False, what="a string")
                ttl = body.get("ttl")
                if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (int, float))
                                        or not math.isfinite(ttl) or ttl <= 0):
                    raise _HTTPError(400, "ttl: must be a positive number of seconds")
                if caller.authenticated:  # the opener is who authenticated, never a body field
                    opened_by = caller.id
                else:  # no authentication configured (loopback only): the body names the opener
                    opened_by = _field(body, "opened_by", str, what="a string")
                for name, value in (("task", task), ("principal", principal), ("root", root),
                                    ("opened_by", opened_by)):
                    if value is not None and not value:
                        raise _HTTPError(400, f"{name}: must be a non-empty string")
            except _HTTPError as e:
                return _error(e.status, e.message)

            def work():
                state = issuer.open_task(task, principal, root, opened_by=opened_by, ttl=ttl)
                return 201, {"task": _task_dict(state)}

            return await guarded(work)

        @router.get("/v1/tasks/{task_id}")
        async def get_task(task_id: str):
            def work():
                state = issuer._need_store().get_task(task_id)
                if state is None:
                    raise _HTTPError(404, f"no task {task_id}")
                return 200, {"task": _task_dict(state)}

            return await guarded(work)

        async def _revoke_task(task_id: str):
            return await guarded(lambda: (200, {"task": task_id, "revoked": issuer.revoke_task(task_id)}))

        @router.post("/v1/tasks/{task_id}/revoke")
        async def revoke_task_route(task_id: str):
            return await _revoke_task(task_id)

        @router.delete("/v1/tasks/{task_id}")
        async def delete_task(task_id: str):
            return await _revoke_task(task_id)

        @router.get("/.well-known/jwks.json")
        async def jwks():
            return JSONResponse(issuer.jwks(), headers={"Cache-Control": "max-age=60"})

    return router
