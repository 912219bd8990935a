"""OpenAI Agents SDK function tools behind the guard (policylang/integrations/openai_agents.py),
driven the way the SDK drives them: on_invoke_tool(ToolContext, json_args), and the
SDK's own invoke_function_tool. No model."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

pytest.importorskip("jwt")
pytest.importorskip("agents")

from agents import FunctionTool, function_tool
from agents.tool import invoke_function_tool
from agents.tool_context import ToolContext

import policylang
from policylang.approvals import Approvals
from policylang.credentials import Issuer, KeySet, Revoked
from policylang.integrations.guard import (
    ApprovalRequired,
    Denied,
    Guard,
    arg,
    current_task,
    current_token,
)
from policylang.integrations.openai_agents import guard_function_tool
from policylang.store import open_store

POLICIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "agent-guard", "policies")
CODER = {"id": "agent:coder", "kind": "agent"}
ALICE = {"id": "user:alice", "kind": "human"}
REPO = {"type": "repo", "id": arg("repo")}


def ctx(name: str, args: str, call_id: str = "call-1") -> ToolContext:
    return ToolContext(context=None, tool_name=name, tool_call_id=call_id, tool_arguments=args)


async def call(tool: FunctionTool, **args):
    text = json.dumps(args)
    return await tool.on_invoke_tool(ctx(tool.name, text), text)


@pytest.fixture
def env(tmp_path):
    policies = policylang.load(POLICIES)
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    approvals = Approvals(store, entities=policies)
    engine = policylang.Engine(policies, approvals=approvals.checker)
    issuer = Issuer(KeySet.generate(), store, issuer="https://pdp.test")
    guard = Guard(engine, issuer=issuer, approvals=approvals)
    seen: list = []

    @function_tool
    def read(repo: str) -> str:
        """Read a repository."""
        seen.append(("read", repo))
        return f"contents of {repo}"

    @function_tool
    def push(repo: str, branch: str) -> str:
        """Push a branch (sync: the SDK runs it in a worker thread)."""
        seen.append(("push", repo, current_token(), current_task().task_id))
        return f"pushed {branch} to {repo}"

    @function_tool
    async def deploy(service: str, version: str) -> str:
        """Deploy a service."""
        seen.append(("deploy", service, version, current_token()))
        return f"deployed {service}@{version}"

    tools = {
        "read": guard_function_tool(guard, read, resource=REPO),
        "push": guard_function_tool(guard, push, resource=REPO),
        "deploy": guard_function_tool(guard, deploy, resource={"type": "service", "id": arg("service")},
                                      context={"version": arg("version")}),
        "read_raising": guard_function_tool(guard, read, resource=REPO, on_refusal="raise"),
    }
    return guard, issuer, approvals, engine, seen, tools


def test_the_copy_keeps_name_and_schema(env):
    tools = env[-1]
    assert isinstance(tools["read"], FunctionTool) and tools["read"].name == "read"
    assert tools["read"].params_json_schema["required"] == ["repo"]


def test_allow_deny_token_and_revocation(env):
    guard, issuer, _, _, seen, tools = env

    async def main():
        async with guard.task(principal=CODER, delegation=[ALICE], task_id="T-oa") as task:
            ok = await call(tools["read"], repo="acme/api")
            refused = await call(tools["read"], repo="globex/billing")
            pushed = await call(tools["push"], repo="acme/api", branch="fix")
            return task, ok, refused, pushed

    task, ok, refused, pushed = asyncio.run(main())
    assert ok == "contents of acme/api" and pushed == "pushed fix to acme/api"
    assert refused.startswith("denied by policy:")
    assert [s[0] for s in seen] == ["read", "push"]
    _, _, token, task_id = seen[1]
    assert task_id == "T-oa" and token.claims["scope"] == "repo:push:acme/api"
    assert task.revoked == [token.jti]
    with pytest.raises(Revoked):
        issuer.verify(token.jwt)


def test_through_the_sdk_invoke_path(env):
    guard, _, _, _, seen, tools = env

    async def main():
        async with guard.task(principal=CODER, delegation=[ALICE]):
            args = json.dumps({"repo": "globex/billing"})
            denied = await invoke_function_tool(function_tool=tools["read"], context=ctx("read", args),
                                                arguments=args)
            args = json.dumps({"service": "payments-staging", "version": "3"})
            ran = await invoke_function_tool(function_tool=tools["deploy"], context=ctx("deploy", args),
                                             arguments=args)
            return denied, ran

    denied, ran = asyncio.run(main())
    assert denied.startswith("denied by policy:") and ran == "deployed payments-staging@3"
    assert [s[0] for s in seen] == ["deploy"]


def test_on_refusal_raise(env):
    guard, *_, seen, tools = env

    async def main():
        async with guard.task(principal=CODER, delegation=[ALICE]):
            await call(tools["read_raising"], repo="globex/billing")

    with pytest.raises(Denied):
        asyncio.run(main())
    assert seen == []
    with pytest.raises(ValueError):
        guard_function_tool(guard, tools["read"], on_refusal="ignore")


def test_approval_then_retry(env):
    guard, _, approvals, _, seen, tools = env

    async def main():
        async with guard.task(principal=CODER, delegation=[ALICE]) as task:
            first = await call(tools["deploy"], service="payments", version="2.0")
            ticket_id = next(iter(task.tickets.values()))
            approvals.approve(ticket_id, approver="user:bob")
            ran = await call(tools["deploy"], service="payments", version="2.0")
            other = await call(tools["deploy"], service="payments", version="2.1")
            return first, ticket_id, ran, other

    first, ticket_id, ran, other = asyncio.run(main())
    assert first.startswith("approval required") and ticket_id in first and "sre-oncall" in first
    assert ran == "deployed payments@2.0"
    assert other.startswith("approval required") and ticket_id not in other
    assert [s[:3] for s in seen] == [("deploy", "payments", "2.0")]


def test_approval_required_raises_with_its_ticket(env):
    guard, _, _, _, seen, _ = env

    @function_tool
    async def deploy(service: str) -> str:
        """Deploy."""
        seen.append(service)
        return "no"

    raising = guard_function_tool(guard, deploy, resource={"type": "service", "id": arg("service")},
                                  on_refusal="raise")

    async def main():
        async with guard.task(principal=CODER, delegation=[ALICE]):
            await call(raising, service="payments")

    with pytest.raises(ApprovalRequired) as info:
        asyncio.run(main())
    assert info.value.ticket.status == "pending" and seen == []


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"acme/api"'])
def test_arguments_that_are_not_a_json_object_are_refused(env, raw):
    guard, *_, seen, tools = env

    async def main():
        async with guard.task(principal=CODER, delegation=[ALICE]):
            return await tools["read"].on_invoke_tool(ctx("read", raw), raw)

    assert asyncio.run(main()).startswith("tool call refused:") and seen == []


def test_engine_error_fails_closed(env, monkeypatch):
    guard, _, _, engine, seen, tools = env
    monkeypatch.setattr(engine, "decide", lambda r: 1 / 0)

    async def main():
        async with guard.task(principal=CODER, delegation=[ALICE]):
            return await call(tools["read"], repo="acme/api")

    assert asyncio.run(main()).startswith("tool call refused:") and seen == []
