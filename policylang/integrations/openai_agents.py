"""OpenAI Agents SDK function tools behind the policy guard (docs/agents.md#openai-agents-sdk).

``pip install 'policylang[openai-agents]'`` (import name ``agents``)::

    from agents import function_tool
    from policylang.integrations.guard import Guard, arg
    from policylang.integrations.openai_agents import guard_function_tool

    @function_tool
    def push(repo: str, branch: str) -> str:
        "Push a branch."
        ...

    push = guard_function_tool(guard, push, resource={"type": "repo", "id": arg("repo")})
    agent = Agent(name="coder", tools=[push])
    async with guard.task(principal=..., delegation=[...]):
        await Runner.run(agent, "...")

The wrapped tool is a copy of the :class:`agents.FunctionTool` (same name, schema,
settings) whose ``on_invoke_tool(ctx, json_args)`` first asks the guard with the
model's JSON arguments, then calls the original invoker with the token active
(:func:`~policylang.integrations.guard.current_token`; the SDK runs a sync function in
a worker thread with the caller's context, so the token and the task reach it).

Refusals surface the way the SDK surfaces tool errors, as the tool's output that the
model reads: with ``on_refusal="message"`` (the default) a denial, a pending approval
(naming the ticket and the approvers) or a failure closed returns
:func:`~policylang.integrations.guard.outcome_message`; the original function does not
run. ``on_refusal="raise"`` raises the guard's
:class:`~policylang.integrations.guard.Denied` /
:class:`~policylang.integrations.guard.ApprovalRequired` out of ``on_invoke_tool``
instead (it is raised outside the SDK's own failure handler, so it ends the run and
reaches the caller of ``Runner.run``). Arguments that are not a JSON object are refused
the same way.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from agents import FunctionTool

from .guard import Denied, Guard, GuardError, ToolSpec, outcome_message

__all__ = ["guard_function_tool"]

_REFUSALS = ("message", "raise")


def guard_function_tool(guard: Guard, tool: FunctionTool, *, resource: Any = None, action: str | None = None,
                        action_attrs: Any = None, context: Any = None, require_token: bool = False,
                        on_refusal: str = "message") -> FunctionTool:
    """A copy of ``tool`` whose invocations go through ``guard``.

    ``resource``, ``action``, ``action_attrs``, ``context``, ``require_token``: the
    :class:`~policylang.integrations.guard.ToolSpec` mapping over the decoded JSON
    arguments; the action defaults to the tool's name. ``on_refusal``: ``"message"``
    (return the refusal as the tool's output) or ``"raise"``."""
    if not isinstance(tool, FunctionTool):
        raise TypeError(f"guard_function_tool wraps an agents.FunctionTool, not {type(tool).__name__}")
    if on_refusal not in _REFUSALS:
        raise ValueError(f"on_refusal must be one of {', '.join(_REFUSALS)}")
    spec = ToolSpec(tool.name, action, resource, action_attrs, context, require_token)
    inner = tool.on_invoke_tool

    async def on_invoke_tool(ctx: Any, input_json: str) -> Any:
        try:
            try:
                arguments = json.loads(input_json) if input_json else {}
            except (TypeError, ValueError) as e:
                raise Denied(f"{spec.name}: the arguments are not JSON: {e}", tool=spec.name,
                             reasons=["the tool's arguments are not JSON"], cause=e) from e
            if not isinstance(arguments, dict):
                raise Denied(f"{spec.name}: the arguments are not a JSON object", tool=spec.name,
                             reasons=["the tool's arguments are not a JSON object"])
            permit = await guard.aauthorize(spec, arguments)
        except GuardError as e:
            if on_refusal == "raise":
                raise
            return outcome_message(e)
        with permit.active():
            return await inner(ctx, input_json)

    guarded = copy.copy(tool)
    guarded.on_invoke_tool = on_invoke_tool
    return guarded
