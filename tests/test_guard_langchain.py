"""LangChain tools behind the guard (policylang/integrations/langchain.py), driven the
way LangChain drives a tool: invoke / ainvoke with a dict or a ToolCall. No model."""

from __future__ import annotations

import asyncio
import os

import pytest

pytest.importorskip("jwt")
pytest.importorskip("langchain_core")

from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, Tool, ToolException, tool

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
from policylang.integrations.langchain import (
    ToolApprovalRequired,
    ToolDenied,
    guard_tool,
)
from policylang.store import open_store

POLICIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "agent-guard", "policies")
CODER = {"id": "agent:coder", "kind": "agent"}
ALICE = {"id": "user:alice", "kind": "human"}
REPO = {"type": "repo", "id": arg("repo")}


@pytest.fixture
def env(tmp_path):
    policies = policylang.load(POLICIES)
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    approvals = Approvals(store, entities=policies)
    engine = policylang.Engine(policies, approvals=approvals.checker)
    issuer = Issuer(KeySet.generate(), store, issuer="https://pdp.test")
    guard = Guard(engine, issuer=issuer, approvals=approvals)
    seen: list = []

    @tool
    def read(repo: str) -> str:
        """Read a repository."""
        seen.append(("read", repo))
        return f"contents of {repo}"

    @tool
    def push(repo: str, branch: str) -> str:
        """Push a branch."""
        seen.append(("push", repo, current_token(), current_task().task_id))
        return f"pushed {branch} to {repo}"

    @tool
    async def deploy(service: str, version: str) -> str:
        """Deploy a service."""
        seen.append(("deploy", service, version, current_token()))
        return f"deployed {service}@{version}"

    tools = {
        "read": guard_tool(guard, read, resource=REPO),
        "push": guard_tool(guard, push, resource=REPO),
        "deploy": guard_tool(guard, deploy, resource={"type": "service", "id": arg("service")},
                             context={"version": arg("version")}),
    }
    return guard, issuer, approvals, engine, seen, tools


def test_the_copy_keeps_the_tool_and_is_guarded(env):
    guard, _, _, _, seen, tools = env
    assert isinstance(tools["read"], BaseTool) and tools["read"].name == "read"
    assert tools["read"].args == {"repo": {"title": "Repo", "type": "string"}}
    assert tools["read"].description == "Read a repository."
    with pytest.raises(ToolDenied):              # the copy is guarded (no task here) ...
        tools["read"].invoke({"repo": "acme/api"})
    assert type(tools["read"]).__mro__[1].__name__ == "StructuredTool"
    assert seen == []


def test_invoke_allow_deny_and_token(env):
    guard, issuer, _, _, seen, tools = env
    with guard.task(principal=CODER, delegation=[ALICE], task_id="T-lc") as task:
        assert tools["read"].invoke({"repo": "acme/api"}) == "contents of acme/api"
        with pytest.raises(ToolDenied) as info:
            tools["read"].invoke({"repo": "globex/billing"})
        assert tools["push"].invoke({"repo": "acme/api", "branch": "fix"}) == "pushed fix to acme/api"
    err = info.value
    assert isinstance(err, ToolException) and isinstance(err, Denied)
    assert err.decision.decision == "deny" and str(err).startswith("denied by policy:")
    assert seen[0] == ("read", "acme/api") and len(seen) == 2
    _, _, token, task_id = seen[1]
    assert task_id == "T-lc" and token.claims["scope"] == "repo:push:acme/api"
    assert task.revoked == [token.jti]
    with pytest.raises(Revoked):
        issuer.verify(token.jwt)


def test_a_tool_call_with_handled_errors_gives_the_model_an_error_message(env):
    guard, *_ , seen, tools = env
    handled = guard_tool(guard, tools["read"], resource=REPO, handle_errors=True)
    call = {"name": "read", "args": {"repo": "globex/billing"}, "id": "call-1", "type": "tool_call"}
    with guard.task(principal=CODER, delegation=[ALICE]):
        msg = handled.invoke(call)
    assert isinstance(msg, ToolMessage) and msg.status == "error" and msg.tool_call_id == "call-1"
    assert msg.content.startswith("denied by policy:")
    assert seen == []


def test_ainvoke_of_async_and_sync_tools(env):
    guard, _, _, _, seen, tools = env

    async def main():
        async with guard.task(principal=CODER, delegation=[ALICE], task_id="T-async"):
            a = await tools["deploy"].ainvoke({"service": "payments-staging", "version": "1"})
            b = await tools["push"].ainvoke({"repo": "acme/web", "branch": "x"})  # sync tool in a thread
            with pytest.raises(ToolDenied):
                await tools["push"].ainvoke({"repo": "globex/billing", "branch": "x"})
            return a, b

    assert asyncio.run(main()) == ("deployed payments-staging@1", "pushed x to acme/web")
    assert seen[0][3].claims["scope"] == "deploy:payments-staging"
    assert seen[1][3] == "T-async" and seen[1][2].claims["aud"] == "acme/web"
    assert len(seen) == 2


def test_approval_then_retry(env):
    guard, _, approvals, _, seen, tools = env
    args = {"service": "payments", "version": "2.0"}

    async def main():
        async with guard.task(principal=CODER, delegation=[ALICE]):
            with pytest.raises(ToolApprovalRequired) as first:
                await tools["deploy"].ainvoke(args)
            assert isinstance(first.value, ApprovalRequired) and first.value.approvers == ["sre-oncall"]
            assert first.value.ticket_id in str(first.value)
            approvals.approve(first.value.ticket_id, approver="user:bob")
            out = await tools["deploy"].ainvoke(args)
            with pytest.raises(ToolApprovalRequired):
                await tools["deploy"].ainvoke({**args, "version": "9.9"})
            return out

    assert asyncio.run(main()) == "deployed payments@2.0"
    assert [s[:3] for s in seen] == [("deploy", "payments", "2.0")]


def test_single_input_tool_maps_its_input(env):
    guard, *_ = env
    plain = Tool(name="read", func=lambda s: f"read {s}", description="Read a repository by name.")
    guarded = guard_tool(guard, plain, resource={"type": "repo", "id": arg("input")})
    with guard.task(principal=CODER, delegation=[ALICE]):
        assert guarded.invoke("acme/api") == "read acme/api"
        with pytest.raises(ToolDenied):
            guarded.invoke("globex/billing")


def test_fail_closed_on_engine_error_and_outside_a_task(env, monkeypatch):
    guard, _, _, engine, seen, tools = env
    with pytest.raises(ToolDenied):  # no task, no default principal
        tools["read"].invoke({"repo": "acme/api"})
    monkeypatch.setattr(engine, "decide", lambda r: 1 / 0)
    with guard.task(principal=CODER, delegation=[ALICE]):
        with pytest.raises(ToolDenied) as info:
            tools["read"].invoke({"repo": "acme/api"})
    assert isinstance(info.value.cause, ZeroDivisionError) and seen == []


def test_only_base_tools_are_wrapped(env):
    with pytest.raises(TypeError):
        guard_tool(env[0], lambda: None)
