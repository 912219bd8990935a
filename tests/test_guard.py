"""The tool-call guard (policylang/integrations/guard.py, docs/agents.md): plain sync and
async functions, the task scope and its revocation, context isolation, fail-closed
handling, approval-then-retry."""

from __future__ import annotations

import asyncio
import contextvars
import os
import pickle
import threading

import pytest

pytest.importorskip("jwt")

import policylang
from policylang.approvals import Approvals
from policylang.credentials import Issuer, KeySet, Revoked
from policylang.integrations.guard import (
    ApprovalRequired,
    Denied,
    Guard,
    RevocationError,
    ToolSpec,
    arg,
    current_task,
    current_token,
    outcome_message,
)
from policylang.store import open_store

HERE = os.path.dirname(os.path.abspath(__file__))
POLICIES = os.path.join(HERE, "..", "examples", "agent-guard", "policies")

CODER = {"id": "agent:coder", "kind": "agent"}
ALICE = {"id": "user:alice", "kind": "human"}


class World:
    def __init__(self, tmp_path, *, approvals=True):
        self.policies = policylang.load(POLICIES)
        self.store = open_store(f"sqlite:///{tmp_path}/state.db")
        self.approvals = Approvals(self.store, entities=self.policies) if approvals else None
        self.engine = policylang.Engine(self.policies,
                                        approvals=self.approvals.checker if approvals else None)
        self.issuer = Issuer(KeySet.generate(), self.store, issuer="https://pdp.test")
        self.guard = Guard(self.engine, issuer=self.issuer, approvals=self.approvals)
        self.calls: list = []
        g = self.guard

        @g.tool(resource={"type": "repo", "id": arg("repo")})
        def read(repo: str) -> str:
            self.calls.append(("read", repo, current_token()))
            return f"contents of {repo}"

        @g.tool(resource=lambda a: {"type": "repo", "id": a["repo"]}, inject="token")
        def push(repo: str, branch: str = "main", *, token=None) -> str:
            self.calls.append(("push", repo, token, current_token()))
            return f"pushed {branch} to {repo}"

        @g.tool(resource={"type": "service", "id": arg("service")}, context={"version": arg("version")})
        async def deploy(service: str, version: str) -> str:
            await asyncio.sleep(0)
            self.calls.append(("deploy", service, version, current_token()))
            return f"deployed {service}@{version}"

        @g.tool(name="delete", resource={"type": "repo", "id": arg("repo")})
        async def remove(repo: str) -> str:
            self.calls.append(("delete", repo))
            return "gone"

        self.read, self.push, self.deploy, self.remove = read, push, deploy, remove

    def task(self, **kw):
        kw.setdefault("principal", CODER)
        kw.setdefault("delegation", [ALICE])
        return self.guard.task(**kw)


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


# -- sync and async ---------------------------------------------------------------------------


def test_sync_allow_runs_the_function_without_a_token_when_nothing_is_granted(world):
    with world.task():
        assert world.read("acme/api") == "contents of acme/api"
    assert world.calls == [("read", "acme/api", None)]


def test_sync_deny_raises_denied_with_the_reasons_and_does_not_run(world):
    with world.task(), pytest.raises(Denied) as info:
        world.read("globex/billing")
    err = info.value
    assert world.calls == []
    assert err.decision.decision == "deny" and err.tool == "read"
    assert err.request["resource"] == {"type": "repo", "id": "globex/billing"}
    assert outcome_message(err).startswith("denied by policy:")


def test_forbid_reason_reaches_the_caller(world):
    with world.guard.task(principal=CODER, delegation=[{"id": "svc:cron", "kind": "service"}]):
        with pytest.raises(Denied) as info:
            world.read("acme/api")
    assert info.value.reasons == ["every agent action must trace back to a person"]
    assert "every agent action must trace back to a person" in outcome_message(info.value)


def test_a_grant_mints_a_task_token_visible_to_the_tool_by_injection_and_context_variable(world):
    with world.task(task_id="T-push") as task:
        assert world.push("acme/api", branch="fix") == "pushed fix to acme/api"
        _, _, injected, ambient = world.calls[-1]
        assert injected is ambient and injected is not None
        claims = world.issuer.verify(injected.jwt, scope="repo:push:acme/api", audience="acme/api")
        assert claims["task"] == "T-push" and claims["sub"] == "user:alice"
        assert claims["act"] == {"sub": "agent:coder"}
        assert task.tokens == [injected.jti]
    assert current_token() is None  # only while the tool runs


def test_async_tool_allow_and_deny(world):
    async def main():
        async with world.task():
            out = await world.deploy("payments-staging", "1.2")
            with pytest.raises(Denied):
                await world.remove("acme/api")  # no rule permits delete
            return out

    assert asyncio.run(main()) == "deployed payments-staging@1.2"
    assert world.calls[0][:3] == ("deploy", "payments-staging", "1.2")
    assert world.calls[0][3].scopes == ("deploy:payments-staging",)
    assert all(c[0] != "delete" for c in world.calls)


# -- the task scope ---------------------------------------------------------------------------


def test_leaving_the_task_revokes_its_tokens(world):
    with world.task() as task:
        world.push("acme/api")
        token = world.calls[-1][2]
        world.issuer.verify(token.jwt)
    assert task.revoked == [token.jti]
    with pytest.raises(Revoked):
        world.issuer.verify(token.jwt)


def test_an_exception_in_the_task_still_revokes_its_tokens(world):
    with pytest.raises(ZeroDivisionError), world.task() as task:
        world.push("acme/api")
        1 / 0
    token = world.calls[-1][2]
    assert task.revoked == [token.jti]
    with pytest.raises(Revoked):
        world.issuer.verify(token.jwt)


def test_async_with_revokes_on_exit_and_on_exception(world):
    async def main():
        async with world.task() as ok:
            await world.deploy("payments-staging", "1")
        with pytest.raises(RuntimeError):
            async with world.task() as failed:
                await world.deploy("payments-staging", "2")
                raise RuntimeError("agent crashed")
        return ok, failed

    ok, failed = asyncio.run(main())
    for scope, call in ((ok, world.calls[0]), (failed, world.calls[1])):
        assert scope.revoked == [call[3].jti]
        with pytest.raises(Revoked):
            world.issuer.verify(call[3].jwt)


def test_a_task_that_ended_gets_no_more_calls(world):
    with world.task() as task:
        pass
    with pytest.raises(Denied):  # the scope is over: outside any task, no default principal
        world.push("acme/api")
    # nor does a reused task id: the store refuses to issue for a revoked task
    with world.task(task_id=task.task_id), pytest.raises(Denied) as info:
        world.push("acme/api")
    assert "could not be issued" in info.value.message
    assert not [c for c in world.calls if c[0] == "push"]


def test_a_failed_revocation_is_raised_not_swallowed(world, monkeypatch):
    def broken(task_id):
        raise OSError("store is gone")
    monkeypatch.setattr(world.issuer, "revoke_task", broken)
    with pytest.raises(RevocationError), world.task():
        world.read("acme/api")


def test_outside_any_task_without_a_default_principal_is_denied(world):
    with pytest.raises(Denied) as info:
        world.read("acme/api")
    assert world.calls == [] and info.value.decision is None
    assert current_task() is None


def test_a_default_principal_serves_calls_outside_a_task(tmp_path):
    w = World(tmp_path)
    g = Guard(w.engine, issuer=w.issuer, principal=CODER, delegation=[ALICE])
    read = g.tool(lambda repo: repo, name="read", resource={"type": "repo", "id": arg("repo")})
    assert read("acme/api") == "acme/api"
    with pytest.raises(Denied):
        read("globex/billing")


# -- context isolation ---------------------------------------------------------------------------


def test_concurrent_asyncio_tasks_keep_their_own_scope_and_token(world):
    seen = {}

    @world.guard.tool(name="push", resource={"type": "repo", "id": arg("repo")})
    async def push(repo: str) -> str:
        scope = current_task()
        first = current_token()
        await asyncio.sleep(0.01)  # the other task runs in between
        assert current_token() is first and current_task() is scope
        seen[scope.task_id] = (scope.principal["id"], world.issuer.verify(first.jwt))
        return repo

    async def one(task_id, repo):
        async with world.task(task_id=task_id):
            return await push(repo)

    async def main():
        return await asyncio.gather(one("T-a", "acme/api"), one("T-b", "acme/web"))

    assert asyncio.run(main()) == ["acme/api", "acme/web"]
    assert seen["T-a"][1]["task"] == "T-a" and seen["T-a"][1]["aud"] == "acme/api"
    assert seen["T-b"][1]["task"] == "T-b" and seen["T-b"][1]["aud"] == "acme/web"


def test_asyncio_tasks_started_inside_a_scope_inherit_it(world):
    async def main():
        async with world.task(task_id="T-parent"):
            return await asyncio.gather(*(asyncio.create_task(world.deploy("payments-staging", str(i)))
                                          for i in range(3)))

    asyncio.run(main())
    assert len(world.calls) == 3
    assert {c[3].claims["task"] for c in world.calls} == {"T-parent"}


def test_threads_are_isolated_and_copy_context_hands_a_scope_over(world):
    results = {}
    barrier = threading.Barrier(2)

    def worker(task_id, principal, delegation):
        with world.guard.task(principal=principal, delegation=delegation, task_id=task_id):
            barrier.wait()
            try:
                results[task_id] = world.read("acme/api")
            except Denied as e:
                results[task_id] = e
            results[task_id + ":scope"] = current_task().task_id

    t1 = threading.Thread(target=worker, args=("T-1", CODER, [ALICE]))
    t2 = threading.Thread(target=worker, args=("T-2", CODER, [{"id": "svc:cron", "kind": "service"}]))
    t1.start(); t2.start(); t1.join(); t2.join()
    assert results["T-1"] == "contents of acme/api" and results["T-1:scope"] == "T-1"
    assert isinstance(results["T-2"], Denied) and results["T-2:scope"] == "T-2"

    with world.task(task_id="T-3"):
        plain, copied = {}, {}
        th = threading.Thread(target=lambda: plain.update(scope=current_task()))
        th.start(); th.join()
        ctx = contextvars.copy_context()
        th = threading.Thread(target=lambda: ctx.run(lambda: copied.update(out=world.read("acme/web"),
                                                                          scope=current_task())))
        th.start(); th.join()
    assert plain["scope"] is None  # a new thread starts outside any scope
    assert copied["out"] == "contents of acme/web" and copied["scope"].task_id == "T-3"


# -- fail closed ---------------------------------------------------------------------------


def test_an_engine_error_denies_and_never_runs_the_tool(world, monkeypatch):
    def boom(request):
        raise RuntimeError("engine exploded")
    monkeypatch.setattr(world.engine, "decide", boom)
    with world.task(), pytest.raises(Denied) as info:
        world.read("acme/api")
    assert world.calls == []
    assert isinstance(info.value.cause, RuntimeError) and info.value.decision is None
    assert outcome_message(info.value).startswith("tool call refused:")


def test_a_request_the_engine_rejects_denies(world):
    @world.guard.tool(name="read", resource={"type": "repo", "id": arg("repo")},
                      context={"blob": arg("blob")})
    def read_blob(repo, blob):
        world.calls.append("ran")

    with world.task(), pytest.raises(Denied) as info:
        read_blob("acme/api", b"\x00bytes")  # not a JSON value: RequestError
    assert isinstance(info.value.cause, policylang.RequestError)
    assert world.calls == []


@pytest.mark.parametrize("mapping", [
    lambda a: {"type": "repo", "id": a["nope"]},           # raises KeyError
    lambda a: "acme/api",                                    # not an object
    lambda a: {"id": "acme/api"},                            # no type
    lambda a: {"type": "repo", "id": 42},                    # id not a string
    {"type": "repo", "id": arg("missing")},                  # declarative, argument missing
])
def test_a_bad_mapping_denies_and_never_runs_the_tool(world, mapping):
    @world.guard.tool(name="read", resource=mapping)
    def read(repo: str):
        world.calls.append("ran")

    with world.task(), pytest.raises(Denied) as info:
        read("acme/api")
    assert world.calls == [] and info.value.cause is not None and info.value.decision is None


def test_bad_arguments_deny_before_deciding(world):
    with world.task(), pytest.raises(Denied):
        world.read("acme/api", "extra")
    assert world.calls == []


def test_a_token_that_cannot_be_issued_denies(world, monkeypatch):
    def refuse(decision, request):
        raise OSError("store down")
    monkeypatch.setattr(world.issuer, "issue", refuse)
    with world.task(), pytest.raises(Denied) as info:
        world.push("acme/api")
    assert world.calls == [] and info.value.decision.decision == "allow"


def test_require_token_denies_an_allow_without_a_grant(world):
    @world.guard.tool(name="read", resource={"type": "repo", "id": arg("repo")}, require_token=True)
    def read(repo):
        world.calls.append("ran")

    with world.task(), pytest.raises(Denied) as info:
        read("acme/api")
    assert world.calls == [] and "needs a just-in-time token" in info.value.reasons[0]


def test_an_unknown_verdict_denies(world, monkeypatch):
    class Odd:
        decision, reasons, grants, approvers = "maybe", [], [], []
    monkeypatch.setattr(world.engine, "decide", lambda r: Odd())
    with world.task(), pytest.raises(Denied):
        world.read("acme/api")
    assert world.calls == []


def test_errors_pickle_with_their_fields(world):
    with world.task(), pytest.raises(Denied) as info:
        world.read("globex/billing")
    again = pickle.loads(pickle.dumps(Denied(info.value.message, tool="read", reasons=["x"])))
    assert isinstance(again, Denied) and again.reasons == ["x"] and again.tool == "read"


# -- approval, then retry ---------------------------------------------------------------------


def test_approval_then_retry_runs_the_same_call_and_only_that_call(world):
    async def main():
        async with world.task(task_id="T-deploy") as task:
            with pytest.raises(ApprovalRequired) as first:
                await world.deploy("payments", "2.0")
            ticket = first.value.ticket
            assert first.value.approvers == ["sre-oncall"] and ticket.status == "pending"
            assert "ticket " + ticket.id in outcome_message(first.value)

            with pytest.raises(ApprovalRequired) as again:   # not approved yet: same ticket
                await world.deploy("payments", "2.0")
            assert again.value.ticket_id == ticket.id

            world.approvals.approve(ticket.id, approver="user:bob")
            out = await world.deploy("payments", "2.0")       # the approved call runs

            with pytest.raises(ApprovalRequired) as other:    # another version: gated anew
                await world.deploy("payments", "3.0")
            assert other.value.ticket_id != ticket.id
            return out, task

    out, task = asyncio.run(main())
    assert out == "deployed payments@2.0"
    assert [c[:3] for c in world.calls] == [("deploy", "payments", "2.0")]
    assert world.calls[0][3].claims["task"] == "T-deploy"
    assert len(task.tickets) == 2  # one ticket per distinct request


def test_an_approval_does_not_carry_over_to_another_task(world):
    async def main():
        async with world.task(task_id="T-x"):
            with pytest.raises(ApprovalRequired) as first:
                await world.deploy("payments", "2.0")
            world.approvals.approve(first.value.ticket_id, approver="user:bob")
            await world.deploy("payments", "2.0")
        async with world.task(task_id="T-y"):
            with pytest.raises(ApprovalRequired) as second:
                await world.deploy("payments", "2.0")
        return first.value, second.value

    a, b = asyncio.run(main())
    assert a.ticket_id != b.ticket_id and len(world.calls) == 1


def test_a_denied_approval_denies_the_retry(world):
    async def main():
        async with world.task():
            with pytest.raises(ApprovalRequired) as first:
                await world.deploy("payments", "2.0")
            world.approvals.deny(first.value.ticket_id, approver="user:bob")
            with pytest.raises(Denied) as denied:
                await world.deploy("payments", "2.0")
            return denied.value

    err = asyncio.run(main())
    assert "was denied by user:bob" in err.reasons[-1] and world.calls == []


def test_without_approvals_a_gate_raises_approval_required_without_a_ticket(tmp_path):
    w = World(tmp_path, approvals=False)

    async def main():
        async with w.task():
            await w.deploy("payments", "2.0")

    with pytest.raises(ApprovalRequired) as info:
        asyncio.run(main())
    assert info.value.ticket is None and info.value.approvers == ["sre-oncall"] and w.calls == []


def test_a_ticket_that_cannot_be_opened_denies(world, monkeypatch):
    def broken(*a, **k):
        raise OSError("store down")
    monkeypatch.setattr(world.approvals, "open", broken)

    async def main():
        async with world.task():
            await world.deploy("payments", "2.0")

    with pytest.raises(Denied) as info:
        asyncio.run(main())
    assert isinstance(info.value.cause, OSError) and world.calls == []


# -- the spec ---------------------------------------------------------------------------------


def test_toolspec_defaults_and_validation():
    spec = ToolSpec("lookup")
    assert spec.request_parts({}) == ({"name": "lookup", "attrs": {}}, {"type": "tool", "id": "lookup"}, {})
    spec = ToolSpec("t", action="read", resource={"type": "repo", "id": arg("r.name"), "attrs": {"x": 1}},
                    action_attrs={"n": arg("n", default=0)})
    assert spec.request_parts({"r": {"name": "a/b"}}) == (
        {"name": "read", "attrs": {"n": 0}}, {"type": "repo", "id": "a/b", "attrs": {"x": 1}}, {})
    with pytest.raises(ValueError):
        ToolSpec("")
    with pytest.raises(TypeError):
        Guard(object())


def test_inject_must_name_a_parameter(world):
    with pytest.raises(TypeError):
        world.guard.tool(lambda repo: repo, name="read", inject="token")


def test_the_guard_module_imports_no_framework():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys, policylang; print([m for m in sys.modules "
                          "if m.startswith(('policylang.integrations','langchain','agents'))])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
    out = subprocess.run([sys.executable, "-c", "import sys, policylang.integrations.guard; print([m for m in "
                          "('langchain_core','agents','jwt') if m in sys.modules])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
