"""A policy guard for tool calls (docs/agents.md): every call becomes a request, is
decided, and then runs, is refused, waits for a person, or runs with a just-in-time
token for this task only.

::

    from policylang.integrations.guard import Guard, arg, current_token

    guard = Guard(engine, issuer=issuer, approvals=approvals)

    @guard.tool(resource={"type": "repo", "id": arg("repo")})
    def push(repo: str, branch: str) -> str:
        jwt = current_token().jwt          # the token minted for this call's grant
        ...

    with guard.task(principal={"id": "agent:coder", "kind": "agent"},
                    delegation=[{"id": "user:alice", "kind": "human"}]) as task:
        push("acme/api", "main")           # decided, then run (or Denied / ApprovalRequired)
    # leaving the block revoked every token of the task (also on an exception)

The core is framework-neutral so that every adapter (plain functions, LangChain,
the OpenAI Agents SDK, an MCP server) shares it:

* :class:`ToolSpec` says how a call maps to a request (action, resource, action
  attributes, context), written once per tool;
* :meth:`Guard.authorize` builds the request, decides, and handles the outcome: it
  returns a :class:`Permit` (the decision, the request, the token if one was minted)
  or raises :class:`Denied` / :class:`ApprovalRequired`;
* :meth:`Permit.active` makes the token visible to the tool through
  :func:`current_token` while it runs;
* :func:`outcome_message` is the one text for a refusal that adapters hand a model.

Fail closed: a mapping that raises or yields a malformed value, a request the engine
rejects, an engine (or audit) error, a failure to mint a granted token or to open an
approval ticket, a call outside any task with no default principal: each raises
:class:`Denied`, and the tool does not run.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ApprovalRequired",
    "Denied",
    "Guard",
    "GuardError",
    "Permit",
    "RevocationError",
    "TaskScope",
    "ToolSpec",
    "arg",
    "current_task",
    "current_token",
    "outcome_message",
]

_MISSING = object()

#: the task scope the current call runs in (set by ``with guard.task(...)``)
_task: contextvars.ContextVar[TaskScope | None] = contextvars.ContextVar("policylang_guard_task", default=None)
#: the token minted for the guarded call that is running now
_token: contextvars.ContextVar[Any] = contextvars.ContextVar("policylang_guard_token", default=None)


def current_token() -> Any:
    """The :class:`policylang.credentials.Token` minted for the guarded call running in
    this context (``.jwt`` is the string to present), or ``None`` when the call's
    decision granted nothing or the guard has no issuer. Outside a guarded call: ``None``."""
    return _token.get()


def current_task() -> TaskScope | None:
    """The :class:`TaskScope` of this context, or ``None`` outside ``guard.task(...)``."""
    return _task.get()


# -- errors -------------------------------------------------------------------------------------


class GuardError(Exception):
    """A guarded call that did not run. ``tool``: the tool's name; ``request``: the request
    that was decided (``None`` when none could be built); ``decision``: the
    :class:`~policylang.Decision` (``None`` when no decision was made); ``reasons``: why,
    as readable strings; ``cause``: the exception behind a failure, if any."""

    kind = "error"

    def __init__(self, message: str, *, tool: str | None = None, request: dict | None = None,
                 decision: Any = None, reasons: list[str] | None = None, cause: BaseException | None = None):
        super().__init__(message)
        self.message = message
        self.tool = tool
        self.request = request
        self.decision = decision
        self.reasons = list(reasons or [])
        self.cause = cause

    def __reduce__(self):  # picklable across processes, as exceptions should be
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls, state):
    err = cls.__new__(cls)
    Exception.__init__(err, state.get("message", ""))
    err.__dict__.update(state)
    return err


class Denied(GuardError):
    """The call was refused: a ``deny`` decision, or a failure on the way to a decision
    (``cause`` set, ``decision`` usually ``None``). Never retried into an allow by itself."""

    kind = "denied"


class ApprovalRequired(GuardError):
    """The decision is ``require_approval``. ``ticket``: the
    :class:`policylang.approvals.Approval` opened for this very request (``None`` when the
    guard has no approvals component), ``approvers``: who may approve (the decision's
    ``approvers``). Once a person approved ``ticket.id``, the same call in the same task
    runs; any other call is gated on its own."""

    kind = "approval_required"

    def __init__(self, message: str, *, ticket: Any = None, approvers: list[str] | None = None, **kw):
        super().__init__(message, **kw)
        self.ticket = ticket
        self.approvers = list(approvers or [])

    @property
    def ticket_id(self) -> str | None:
        return getattr(self.ticket, "id", None)


class RevocationError(GuardError):
    """Revoking a task's tokens at the end of its scope failed (the store could not be
    used). Raised from the ``with`` block, never swallowed."""

    kind = "revocation_failed"


def outcome_message(err: GuardError) -> str:
    """One readable line for a refused call, what adapters hand a model as the tool's
    error output: ``denied by policy: …``, ``approval required: …`` (with the ticket id and
    approvers), or ``tool call refused: …`` for a failure."""
    reasons = "; ".join(err.reasons) if err.reasons else ""
    if isinstance(err, ApprovalRequired):
        parts = [f"approval required for {err.tool or 'this call'}"]
        if reasons:
            parts.append(reasons)
        if err.ticket_id:
            parts.append(f"ticket {err.ticket_id}")
        if err.approvers:
            parts.append("approvers: " + ", ".join(err.approvers))
        return "; ".join(parts)
    if isinstance(err, Denied) and err.decision is not None:
        return f"denied by policy: {reasons or 'no rule permits ' + (err.tool or 'this call')}"
    return f"tool call refused: {err.message}"


# -- mappings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class arg:
    """In a declarative mapping, the value of the call's argument ``name`` (a dotted
    ``name`` reads inside a mapping argument: ``arg("target.repo")``). A missing argument
    is a mapping error (the call is denied) unless ``default`` is given."""

    name: str
    default: Any = _MISSING

    def read(self, arguments: Mapping) -> Any:
        cur: Any = arguments
        for part in self.name.split("."):
            if isinstance(cur, Mapping) and part in cur:
                cur = cur[part]
            elif self.default is not _MISSING:
                return self.default
            else:
                raise KeyError(f"argument {self.name!r} is missing")
        return cur


def _fill(template: Any, arguments: Mapping) -> Any:
    """A declarative mapping with every :class:`arg` replaced by the argument's value."""
    if isinstance(template, arg):
        return template.read(arguments)
    if isinstance(template, Mapping):
        return {k: _fill(v, arguments) for k, v in template.items()}
    if isinstance(template, (list, tuple)):
        return [_fill(v, arguments) for v in template]
    return template


def _apply(mapping: Any, arguments: Mapping, what: str) -> Any:
    if mapping is None:
        return None
    value = mapping(dict(arguments)) if callable(mapping) and not isinstance(mapping, arg) else _fill(mapping, arguments)
    return value


@dataclass(frozen=True)
class ToolSpec:
    """How calls of one tool become requests (docs/agents.md#mapping).

    ``name``: the tool's name; ``action``: the action name (default: ``name``);
    ``resource``: a callable ``arguments -> {"type", "id"?, "attrs"?}`` or a declarative
    mapping of that shape whose values may be :class:`arg` markers (default:
    ``{"type": "tool", "id": name}``); ``action_attrs`` and ``context``: the same, for the
    action's attributes and the call's context (merged over the task's context);
    ``require_token``: deny a call whose allow did not yield a token (no grant, or no
    issuer); ``inject``: the keyword argument that receives the token (plain functions
    only; ``None``: use :func:`current_token`)."""

    name: str
    action: str | None = None
    resource: Any = None
    action_attrs: Any = None
    context: Any = None
    require_token: bool = False
    inject: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a guarded tool needs a non-empty name")
        if self.action is not None and (not isinstance(self.action, str) or not self.action):
            raise ValueError("action must be a non-empty string")

    @property
    def action_name(self) -> str:
        return self.action or self.name

    def request_parts(self, arguments: Mapping) -> tuple[dict, dict, dict]:
        """``(action, resource, context)`` of a call with ``arguments``. Raises
        ``ValueError`` (or whatever a callable mapping raises) for a bad mapping."""
        if self.resource is None:
            resource: Any = {"type": "tool", "id": self.name}
        else:
            resource = _apply(self.resource, arguments, "resource")
        if not isinstance(resource, Mapping):
            raise ValueError(f"the resource mapping gave {type(resource).__name__}, not an object")
        resource = dict(resource)
        if not isinstance(resource.get("type"), str) or not resource["type"]:
            raise ValueError("the resource mapping gave no resource type")
        if "id" in resource and resource["id"] is not None and not isinstance(resource["id"], str):
            raise ValueError(f"the resource id must be a string, got {type(resource['id']).__name__}")
        attrs = _apply(self.action_attrs, arguments, "action_attrs") if self.action_attrs is not None else {}
        if not isinstance(attrs, Mapping):
            raise ValueError("the action_attrs mapping must give an object")
        context = _apply(self.context, arguments, "context") if self.context is not None else {}
        if not isinstance(context, Mapping):
            raise ValueError("the context mapping must give an object")
        return {"name": self.action_name, "attrs": dict(attrs)}, resource, dict(context)


# -- task scope -------------------------------------------------------------------------------------


def _entity(value: Any, what: str, default_kind: str | None) -> dict:
    if isinstance(value, str) and value and default_kind:
        return {"id": value, "kind": default_kind, "attrs": {}}
    if not isinstance(value, Mapping) or not isinstance(value.get("id"), str) or not value["id"] \
            or not isinstance(value.get("kind"), str) or not value["kind"]:
        raise ValueError(f"{what} must be {{'id': str, 'kind': str, 'attrs'?: {{}}}}")
    return {"id": value["id"], "kind": value["kind"], "attrs": dict(value.get("attrs") or {})}


class TaskScope:
    """One task: the principal, its delegation chain (root first), the task id and the
    intent, context and risk every call inside carries. Use it through
    :meth:`Guard.task` as ``with`` or ``async with``. On leaving, every token of the task
    is revoked (``issuer.revoke_task``), on an exception too; ``revoked`` then lists their
    jtis. ``tokens`` lists the jtis minted inside; ``tickets`` maps a request digest to the
    approval ticket id opened for it."""

    def __init__(self, guard: Guard, principal: Any, delegation: Any = (), task_id: str | None = None, *,
                 intent: Mapping | None = None, context: Mapping | None = None, risk: Mapping | None = None,
                 revoke: bool = True, opened_by: str | None = None, ttl: float | None = None):
        self.guard = guard
        self.principal = _entity(principal, "principal", "agent")
        if delegation is None:
            delegation = ()
        if isinstance(delegation, (str, bytes, Mapping)) or not isinstance(delegation, (list, tuple)):
            raise ValueError("delegation must be a list of entities, root first")
        self.delegation = [_entity(d, f"delegation[{i}]", None) for i, d in enumerate(delegation)]
        if task_id is None:
            task_id = "task-" + secrets.token_hex(8)
        if not isinstance(task_id, str) or not task_id:
            raise ValueError("task_id must be a non-empty string")
        self.task_id = task_id
        self.intent = dict(intent or {})
        self.context = dict(context or {})
        self.risk = dict(risk) if risk is not None else None
        self.revoke_on_exit = revoke
        self.opened_by = opened_by
        self.ttl = ttl
        self.tokens: list[str] = []
        self.revoked: list[str] | None = None
        self.tickets: dict[str, str] = {}
        self.lock = threading.Lock()
        self._reset: list = []
        self.closed = False

    def base_request(self) -> dict:
        req: dict = {"principal": self.principal, "delegation": self.delegation,
                     "intent": {**self.intent, "task_id": self.task_id}, "context": dict(self.context)}
        if self.risk is not None:
            req["risk"] = self.risk
        return req

    # -- lifecycle
    def _open(self) -> None:
        if self.closed:
            raise RuntimeError(f"task {self.task_id} has ended; a task id is never reused")
        if self.opened_by is not None:
            issuer = self.guard.issuer
            if issuer is None:
                raise ValueError("opened_by needs a guard with an issuer")
            root = self.delegation[0]["id"] if self.delegation else None
            issuer.open_task(self.task_id, self.principal["id"], root, opened_by=self.opened_by, ttl=self.ttl)

    def _enter(self) -> TaskScope:
        self._open()
        self._reset.append(_task.set(self))
        return self

    def _exit(self) -> None:
        try:
            _task.reset(self._reset.pop())
        except ValueError:
            # left in another context than it was entered (a scope handed to another
            # task): the variable is that context's; still end the task
            pass
        self.closed = True
        self.close()

    def close(self) -> list[str]:
        """End the task: revoke its tokens now (also what leaving the block does)."""
        self.closed = True
        issuer = self.guard.issuer
        if not self.revoke_on_exit or issuer is None:
            self.revoked = []
            return []
        try:
            self.revoked = list(issuer.revoke_task(self.task_id))
        except Exception as e:
            raise RevocationError(f"could not revoke the tokens of task {self.task_id}: {e}", cause=e) from e
        return self.revoked

    def __enter__(self) -> TaskScope:
        return self._enter()

    def __exit__(self, *exc) -> None:
        self._exit()

    async def __aenter__(self) -> TaskScope:
        await asyncio.to_thread(self._open)  # open_task writes the store: off the event loop
        self._reset.append(_task.set(self))
        return self

    async def __aexit__(self, *exc) -> None:
        try:
            _task.reset(self._reset.pop())
        except ValueError:
            pass
        self.closed = True
        await asyncio.to_thread(self.close)

    def __repr__(self) -> str:
        return f"TaskScope({self.task_id!r}, principal={self.principal['id']!r})"


# -- the guard ------------------------------------------------------------------------------------


@dataclass
class Permit:
    """An authorized call: the decision, the request it was made for, and the token
    minted for its grants (``None`` without one). ``with permit.active():`` exposes the
    token through :func:`current_token` while the tool runs."""

    spec: ToolSpec
    request: dict
    decision: Any
    token: Any = None
    task: TaskScope | None = None
    arguments: dict = field(default_factory=dict)

    def active(self) -> _Active:
        return _Active(self.token)


class _Active:
    def __init__(self, token: Any):
        self.token = token
        self._reset: list = []

    def __enter__(self):
        self._reset.append(_token.set(self.token))
        return self.token

    def __exit__(self, *exc):
        _token.reset(self._reset.pop())


class Guard:
    """Decides every guarded call with ``engine`` (a :class:`policylang.Engine`).

    ``issuer``: a :class:`policylang.credentials.Issuer`; with it an ``allow`` that
    carries grants mints a token bound to the task (exposed as :func:`current_token`),
    and a task's tokens are revoked when its scope ends. ``approvals``: a
    :class:`policylang.approvals.Approvals` (the engine should be built with
    ``approvals=approvals.checker``); with it a ``require_approval`` opens a ticket for
    that very request, remembered by the task, and a retry of the same call carries it.
    ``principal``/``delegation``: defaults for calls outside any task scope (``None``:
    such a call is denied). ``approval_ttl``: the lifetime of the tickets it opens.
    ``offload``: run the decision of an ``async`` tool in a worker thread (issuing a
    token writes the store, which may block for milliseconds)."""

    def __init__(self, engine: Any, *, issuer: Any = None, approvals: Any = None, principal: Any = None,
                 delegation: Any = (), approval_ttl: float | None = None, offload: bool = True):
        if not hasattr(engine, "decide"):
            raise TypeError("Guard needs an engine (policylang.Engine, or anything with decide(request))")
        self.engine = engine
        self.issuer = issuer
        self.approvals = approvals
        self.approval_ttl = approval_ttl
        self.offload = offload
        self._default = None
        if principal is not None:
            self._default = TaskScope(self, principal, delegation, task_id="-", revoke=False)

    # -- scopes
    def task(self, principal: Any, delegation: Any = (), task_id: str | None = None, **kw) -> TaskScope:
        """A task scope (``with`` / ``async with``) carrying ``principal`` (an entity
        ``{"id", "kind", "attrs"?}``, or an id string for an ``agent``), ``delegation``
        (entities, root first) and ``task_id`` (default: a fresh random id) to every
        guarded call inside, through a context variable: asyncio tasks started inside
        inherit it, concurrent tasks and threads with scopes of their own stay apart (a
        new thread starts outside any scope; hand it one with ``contextvars.copy_context()``
        or ``asyncio.to_thread``). Keywords: ``intent``, ``context``, ``risk`` (carried on
        every request), ``revoke`` (default True), ``opened_by`` (open the task with
        ``issuer.open_task`` on entry, for issuers that require open tasks), ``ttl``."""
        return TaskScope(self, principal, delegation, task_id, **kw)

    def _scope(self, spec: ToolSpec) -> TaskScope:
        scope = _task.get()
        if scope is None:
            scope = self._default
        if scope is None:
            raise Denied(f"{spec.name}: called outside any task scope and the guard has no default principal",
                         tool=spec.name, reasons=["no principal: call the tool inside guard.task(...)"])
        if scope.closed and scope is not self._default:
            raise Denied(f"{spec.name}: task {scope.task_id} has ended", tool=spec.name,
                         reasons=[f"task {scope.task_id} has ended"])
        return scope

    # -- the shared core
    def build_request(self, spec: ToolSpec, arguments: Mapping, scope: TaskScope | None = None) -> dict:
        """The request for a call of ``spec`` with ``arguments`` in ``scope`` (default: the
        current one). Raises :class:`Denied` for a mapping that fails."""
        scope = scope or self._scope(spec)
        try:
            action, resource, context = spec.request_parts(arguments)
        except Exception as e:
            raise Denied(f"{spec.name}: the request mapping failed: {type(e).__name__}: {e}", tool=spec.name,
                         reasons=[f"the tool's request mapping failed ({type(e).__name__})"], cause=e) from e
        req = scope.base_request()
        req["action"] = action
        req["resource"] = resource
        req["context"] = {**req["context"], **context}
        if scope is self._default:
            req["intent"] = dict(scope.intent)
        return req

    def authorize(self, spec: ToolSpec, arguments: Mapping) -> Permit:
        """Decide a call and handle the outcome: a :class:`Permit` for an ``allow`` (with a
        token when its grants could be minted), else :class:`Denied` or
        :class:`ApprovalRequired`. Every failure on the way is a :class:`Denied`."""
        scope = self._scope(spec)
        request = self.build_request(spec, arguments, scope)
        ticket_id = None
        digest = None
        if self.approvals is not None:
            digest = self._digest(spec, request)
            with scope.lock:
                ticket_id = scope.tickets.get(digest)
            if ticket_id is not None:
                request["approval"] = ticket_id
        try:
            decision = self.engine.decide(request)
        except Exception as e:
            raise Denied(f"{spec.name}: the decision failed: {type(e).__name__}: {e}", tool=spec.name,
                         request=request, reasons=[f"the decision failed ({type(e).__name__})"], cause=e) from e
        verdict = getattr(decision, "decision", None)
        reasons = list(getattr(decision, "reasons", None) or [])
        if verdict == "allow":
            return self._permit(spec, request, decision, scope, dict(arguments))
        if verdict == "require_approval":
            raise self._approval_required(spec, request, decision, scope, digest, ticket_id, reasons)
        if verdict != "deny":
            reasons = [f"unknown decision {verdict!r}"]
        raise Denied(f"{spec.name}: denied: {'; '.join(reasons) or 'no rule permits it'}", tool=spec.name,
                     request=request, decision=decision, reasons=reasons)

    def _digest(self, spec: ToolSpec, request: dict) -> str:
        from ..privilege.approvals import request_digest
        try:
            return request_digest(request)
        except Exception as e:
            raise Denied(f"{spec.name}: the request cannot be bound to an approval: {e}", tool=spec.name,
                         request=request, reasons=["the request cannot be approved"], cause=e) from e

    def _permit(self, spec, request, decision, scope, arguments) -> Permit:
        token = None
        if self.issuer is not None and getattr(decision, "grants", None):
            try:
                token = self.issuer.issue(decision, request)
            except Exception as e:
                raise Denied(f"{spec.name}: the granted token could not be issued: {type(e).__name__}: {e}",
                             tool=spec.name, request=request, decision=decision,
                             reasons=[f"the granted token could not be issued ({type(e).__name__}: {e})"],
                             cause=e) from e
            with scope.lock:
                scope.tokens.append(token.jti)
        if spec.require_token and token is None:
            raise Denied(f"{spec.name}: the tool needs a token and the allow granted none", tool=spec.name,
                         request=request, decision=decision,
                         reasons=["the tool needs a just-in-time token and the decision granted none"])
        return Permit(spec, request, decision, token, scope, arguments)

    def _approval_required(self, spec, request, decision, scope, digest, ticket_id, reasons) -> GuardError:
        approvers = list(getattr(decision, "approvers", None) or [])
        base = {k: v for k, v in request.items() if k != "approval"}
        if self.approvals is None:
            return ApprovalRequired(f"{spec.name}: approval required", tool=spec.name, request=base,
                                    decision=decision, reasons=reasons, approvers=approvers)
        try:
            ticket = self.approvals.get(ticket_id) if ticket_id is not None else None
            if ticket is not None and ticket.status == "denied":
                with scope.lock:
                    scope.tickets.pop(digest, None)
                return Denied(f"{spec.name}: the approval was denied by {ticket.denied_by}", tool=spec.name,
                              request=base, decision=decision,
                              reasons=[*reasons, f"approval {ticket.id} was denied by {ticket.denied_by}"])
            if ticket is None or ticket.status not in ("pending", "approved"):
                # none yet, or expired / used: open one for this very request
                ticket = self.approvals.open(decision, base, ttl=self.approval_ttl)
                with scope.lock:
                    scope.tickets[digest] = ticket.id
        except Exception as e:
            return Denied(f"{spec.name}: approval required, and no ticket could be opened: {type(e).__name__}: {e}",
                          tool=spec.name, request=base, decision=decision,
                          reasons=[*reasons, f"no approval ticket could be opened ({type(e).__name__})"], cause=e)
        return ApprovalRequired(f"{spec.name}: approval required (ticket {ticket.id}, approvers "
                                f"{', '.join(approvers)})", tool=spec.name, request=base, decision=decision,
                                reasons=reasons, approvers=approvers, ticket=ticket)

    async def aauthorize(self, spec: ToolSpec, arguments: Mapping) -> Permit:
        """:meth:`authorize` for async callers (in a worker thread with ``offload``, in the
        caller's context either way)."""
        if self.offload:
            return await asyncio.to_thread(self.authorize, spec, arguments)
        return self.authorize(spec, arguments)

    # -- running
    def call(self, spec: ToolSpec, fn: Callable, arguments: Mapping, *args, **kwargs) -> Any:
        """Authorize ``arguments`` and run ``fn(*args, **kwargs)`` with the token active."""
        permit = self.authorize(spec, arguments)
        if spec.inject:
            kwargs[spec.inject] = permit.token
        with permit.active():
            return fn(*args, **kwargs)

    async def acall(self, spec: ToolSpec, fn: Callable, arguments: Mapping, *args, **kwargs) -> Any:
        permit = await self.aauthorize(spec, arguments)
        if spec.inject:
            kwargs[spec.inject] = permit.token
        with permit.active():
            return await fn(*args, **kwargs)

    def tool(self, fn: Callable | None = None, *, name: str | None = None, action: str | None = None,
             resource: Any = None, action_attrs: Any = None, context: Any = None,
             require_token: bool = False, inject: str | None = None) -> Any:
        """Decorate a plain function (sync or ``async``) so each call is guarded.

        The call's arguments (bound to the signature, defaults applied; the ``inject``
        parameter left out) feed the mappings of :class:`ToolSpec`. ``name`` defaults to
        the function's ``__name__``. ``inject="token"``: pass the minted token (or
        ``None``) as that keyword argument; the function must accept it."""

        def wrap(f: Callable) -> Callable:
            spec = ToolSpec(name or f.__name__, action, resource, action_attrs, context, require_token, inject)
            sig = inspect.signature(f)
            if inject and inject not in sig.parameters and not any(
                    p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
                raise TypeError(f"{spec.name}: inject={inject!r} names no parameter of the function")

            def arguments_of(args, kwargs) -> dict:
                kwargs = {k: v for k, v in kwargs.items() if k != inject}
                if inject and inject in sig.parameters:
                    kwargs[inject] = None  # filled with the token after the decision
                try:
                    bound = sig.bind(*args, **kwargs)
                except TypeError as e:
                    raise Denied(f"{spec.name}: bad arguments: {e}", tool=spec.name,
                                 reasons=[f"bad arguments: {e}"], cause=e) from e
                bound.apply_defaults()
                out = dict(bound.arguments)
                for pname, p in sig.parameters.items():
                    if p.kind is p.VAR_KEYWORD and pname in out:
                        out.update(out.pop(pname))
                out.pop(inject, None)
                return out

            if inspect.iscoroutinefunction(f):
                @functools.wraps(f)
                async def aguarded(*args, **kwargs):
                    return await self.acall(spec, f, arguments_of(args, kwargs), *args, **kwargs)
                aguarded.policy_spec = spec  # type: ignore[attr-defined]
                return aguarded

            @functools.wraps(f)
            def guarded(*args, **kwargs):
                return self.call(spec, f, arguments_of(args, kwargs), *args, **kwargs)
            guarded.policy_spec = spec  # type: ignore[attr-defined]
            return guarded

        return wrap(fn) if fn is not None else wrap
