"""LangChain tools behind the policy guard (docs/agents.md#langchain).

``pip install 'policylang[langchain]'`` (``langchain-core``)::

    from langchain_core.tools import tool
    from policylang.integrations.guard import Guard, arg
    from policylang.integrations.langchain import guard_tool

    @tool
    def push(repo: str, branch: str) -> str:
        "Push a branch."
        ...

    guarded = guard_tool(guard, push, resource={"type": "repo", "id": arg("repo")})
    with guard.task(principal=..., delegation=[...]):
        guarded.invoke({"repo": "acme/api", "branch": "main"})

The wrapped tool is a copy of the original (same name, description, argument schema,
response format, callbacks) whose ``_run``/``_arun`` first ask the guard, with the
arguments LangChain validated against the schema. A refusal is raised as a
:class:`~langchain_core.tools.ToolException`, LangChain's tool error:
:class:`ToolDenied` (also a :class:`~policylang.integrations.guard.Denied`) or
:class:`ToolApprovalRequired` (also an
:class:`~policylang.integrations.guard.ApprovalRequired`), whose message is
:func:`~policylang.integrations.guard.outcome_message`. As for any ToolException,
``handle_tool_error`` decides what happens: unset, the exception reaches the caller of
``invoke``; ``True`` (or ``handle_errors=True`` here), the message becomes the tool's
output — with a ``ToolCall`` input a ``ToolMessage`` with ``status="error"`` — so the
model reads why. A minted token is visible inside the tool as
:func:`~policylang.integrations.guard.current_token`.
"""

from __future__ import annotations

import contextvars
import functools
from typing import Any

from langchain_core.tools import BaseTool, ToolException

from .guard import (
    ApprovalRequired,
    Denied,
    Guard,
    GuardError,
    ToolSpec,
    outcome_message,
)

__all__ = ["PolicyToolException", "ToolApprovalRequired", "ToolDenied", "guard_tool"]

#: keyword arguments LangChain adds to ``_run`` that are not the tool's arguments
_NOT_ARGUMENTS = frozenset({"config", "run_manager", "callbacks"})
#: the tool whose call is already authorized in this context (``_arun`` falling back to
#: ``_run`` in a worker thread must not decide a second time)
_authorized: contextvars.ContextVar[Any] = contextvars.ContextVar("policylang_langchain_authorized", default=None)


class PolicyToolException(ToolException):
    """A tool call the guard refused; ``error`` is the guard's exception."""

    error: GuardError


class ToolDenied(PolicyToolException, Denied):
    """The call was denied (or failed closed)."""


class ToolApprovalRequired(PolicyToolException, ApprovalRequired):
    """The call waits for a person: ``ticket`` / ``ticket_id`` / ``approvers``."""


def _as_tool_exception(err: GuardError) -> PolicyToolException:
    cls = ToolApprovalRequired if isinstance(err, ApprovalRequired) else ToolDenied
    out = cls.__new__(cls)
    Exception.__init__(out, outcome_message(err))
    out.__dict__.update(err.__dict__)
    out.error = err
    return out


def _arguments(args: tuple, kwargs: dict) -> dict:
    out = {k: v for k, v in kwargs.items() if k not in _NOT_ARGUMENTS}
    if len(args) == 1:
        out.setdefault("input", args[0])  # a single-input Tool
    elif args:
        out.setdefault("input", list(args))
    return out


def guard_tool(guard: Guard, tool: BaseTool, *, resource: Any = None, action: str | None = None,
               action_attrs: Any = None, context: Any = None, require_token: bool = False,
               handle_errors: Any = None) -> BaseTool:
    """A copy of the LangChain ``tool`` whose calls go through ``guard``.

    ``resource``, ``action``, ``action_attrs``, ``context``, ``require_token``: the
    :class:`~policylang.integrations.guard.ToolSpec` mapping, over the tool's validated
    arguments (a single-input ``Tool``'s string is ``"input"``); the action defaults to
    the tool's name. ``handle_errors``: when not ``None``, the copy's
    ``handle_tool_error`` (``True``: the refusal's message becomes the tool's output)."""
    if not isinstance(tool, BaseTool):
        raise TypeError(f"guard_tool wraps a langchain_core BaseTool, not {type(tool).__name__}")
    spec = ToolSpec(tool.name, action, resource, action_attrs, context, require_token)
    base = type(tool)

    def _run(self, *args, **kwargs):
        if _authorized.get() is self:
            return base._run(self, *args, **kwargs)
        try:
            permit = guard.authorize(spec, _arguments(args, kwargs))
        except GuardError as e:
            raise _as_tool_exception(e) from e
        mark = _authorized.set(self)
        try:
            with permit.active():
                return base._run(self, *args, **kwargs)
        finally:
            _authorized.reset(mark)

    async def _arun(self, *args, **kwargs):
        if _authorized.get() is self:
            return await base._arun(self, *args, **kwargs)
        try:
            permit = await guard.aauthorize(spec, _arguments(args, kwargs))
        except GuardError as e:
            raise _as_tool_exception(e) from e
        mark = _authorized.set(self)
        try:
            with permit.active():
                return await base._arun(self, *args, **kwargs)
        finally:
            _authorized.reset(mark)

    # LangChain reads _run's signature to decide whether to pass config / run_manager
    _run = functools.wraps(base._run)(_run)
    _arun = functools.wraps(base._arun)(_arun)
    guarded_cls = type(f"Guarded{base.__name__}", (base,), {
        "_run": _run, "_arun": _arun, "__module__": __name__,
        "__doc__": f"{base.__name__} {tool.name!r} behind a policylang guard."})
    values = {name: getattr(tool, name) for name in type(tool).model_fields}
    if handle_errors is not None:
        values["handle_tool_error"] = handle_errors
    guarded = guarded_cls.model_construct(_fields_set=set(tool.model_fields_set) | set(values), **values)
    return guarded
