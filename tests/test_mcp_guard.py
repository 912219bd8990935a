"""The MCP guard (policylang/integrations/mcp.py, docs/agents.md#mcp-guard) with a real MCP
client session (the mcp SDK's client) against the example server (examples/mcp-guard),
over streamable HTTP and over stdio, deciding with a live `policylang serve` (AARP on) or
the engine in process: allowed calls run, denied ones get the binding's -32001, a gated
call gets the requestable denial and runs after an approval through the access request
endpoint, tools/list is filtered, an unreachable PDP and a mapping error fail closed, and
the caller is the token, never an argument."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mcp")
pytest.importorskip("celpy")

import httpx
from mcp.shared.exceptions import MCPError

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "mcp-guard"
sys.path.insert(0, str(EXAMPLE))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from client import http_session, stdio_session, submit_access_request, wait_approved
from idp import AGENT, LocalIdP
from test_server_harness import LiveServer, free_port

from policylang.integrations.mcp import approval_meta

PDP_AUD = "policylang-pdp"
ALICE, BOB, FIN = "alice@example.com", "bob@example.com", "fin@example.com"


class McpServer:
    """examples/mcp-guard/server.py over streamable HTTP on loopback, stopped at the end."""

    def __init__(self, jwks: Path, *pdp_args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.proc = subprocess.Popen([sys.executable, str(EXAMPLE / "server.py"), "--port", str(self.port),
                                      "--jwks", str(jwks), *pdp_args], cwd=EXAMPLE)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the MCP server exited"
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/", timeout=0.5)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the MCP server did not start")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from policylang.credentials import KeySet
    tmp = tmp_path_factory.mktemp("mcp-guard")
    idp = LocalIdP()
    jwks = idp.write_jwks(tmp / "jwks.json")
    KeySet.generate().save(tmp / "binding.json")
    with LiveServer(EXAMPLE / "policies", "--store", f"sqlite:///{tmp / 'state.db'}", "--create-store",
                    "--binding-keys", tmp / "binding.json", "--jwks", jwks, "--jwt-audience", PDP_AUD,
                    "--jwt-issuer", idp.issuer) as pdp:
        remote = McpServer(jwks, "--pdp", pdp.url)
        embedded = McpServer(jwks, "--policies", str(EXAMPLE / "policies"))
        try:
            yield {"idp": idp, "jwks": jwks, "pdp": pdp, "remote": remote, "embedded": embedded}
        finally:
            remote.stop()
            embedded.stop()


def run(coro):
    return asyncio.run(coro)


def names(result) -> list[str]:
    return [t.name for t in result.tools]


async def _session_checks(session):
    tools = await session.list_tools()
    assert names(tools) == ["read_doc", "write_doc", "transfer_funds"]
    # the declared mapping travels in tools/list
    transfer = next(t for t in tools.tools if t.name == "transfer_funds")
    assert transfer.input_schema["x-authzen-mapping"]["evaluation"]["action"] == {"name": "transfer"}
    r = await session.call_tool("read_doc", {"doc": "handbook"})
    assert not r.is_error and r.content[0].text == "Be kind. Ship small changes."
    r = await session.call_tool("transfer_funds", {"from_account": "a-1", "to_account": "a-2", "amount": 10})
    assert r.content[0].text == "transferred 10 from a-1 to a-2"


@pytest.mark.parametrize("which", ["remote", "embedded"])
def test_http_allowed_calls_run_and_the_list_is_filtered(env, which):
    server = env[which]
    tok = env["idp"].token(ALICE, server.url)

    async def go():
        async with http_session(server.url, tok) as s:
            await _session_checks(s)
        async with http_session(server.url, env["idp"].token(BOB, server.url)) as s:
            assert names(await s.list_tools()) == ["read_doc"]
            with pytest.raises(MCPError) as e:
                await s.call_tool("write_doc", {"doc": "handbook", "text": "x"})
            assert e.value.code == -32001 and e.value.message.startswith("Access denied")
    run(go())


def test_identity_comes_from_the_token_not_the_arguments(env):
    server = env["remote"]

    async def go():
        # bob names alice in an argument: still bob, still denied, nothing written
        async with http_session(server.url, env["idp"].token(BOB, server.url)) as s:
            with pytest.raises(MCPError) as e:
                await s.call_tool("write_doc", {"doc": "handbook", "text": "pwned", "user": ALICE})
            assert e.value.code == -32001
            r = await s.call_tool("read_doc", {"doc": "handbook"})
            assert r.content[0].text == "Be kind. Ship small changes."
    run(go())


def test_no_or_bad_token_is_refused_before_mcp(env):
    server = env["remote"]
    r = httpx.post(server.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 401
    other = LocalIdP()  # a token signed by another key
    r = httpx.post(server.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={"Accept": "application/json, text/event-stream",
                            "Authorization": f"Bearer {other.token(ALICE, server.url)}"})
    assert r.status_code == 401
    # a token for another audience
    r = httpx.post(server.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={"Accept": "application/json, text/event-stream",
                            "Authorization": f"Bearer {env['idp'].token(ALICE, 'https://elsewhere')}"})
    assert r.status_code == 401


def test_gated_call_requestable_denial_then_approval_then_runs_once(env):
    server, idp, pdp = env["remote"], env["idp"], env["pdp"]
    args = {"from_account": "acct-1", "to_account": "acct-9", "amount": 5000}
    requester = idp.token(AGENT, PDP_AUD)

    async def go():
        async with http_session(server.url, idp.token(ALICE, server.url)) as s:
            with pytest.raises(MCPError) as e:
                await s.call_tool("transfer_funds", args)
            err = e.value
            assert err.code == -32001 and err.message.startswith("Approval required")
            data = err.data
            assert data["reason"] == "approval_required" and data["evaluation_id"].startswith("eval_")
            assert data["access_request"]["endpoint"] == pdp.url + "/access/v1/requests"
            assert set(data["access_request"]) >= {"expires_at", "binding_token"}
            assert data["request"] == {
                "subject": {"type": "identity", "id": ALICE}, "action": {"name": "transfer"},
                "resource": {"type": "account", "id": "acct-1"},
                "context": {"agent": AGENT, "amount": 5000, "to_account": "acct-9"}}
            # the client asks for approval through the access request endpoint
            task = submit_access_request(data, requester, "quarterly supplier payment")
            assert task["status"] == "pending"
            # not approved yet: the retry without an approval is gated again
            with pytest.raises(MCPError) as again:
                await s.call_tool("transfer_funds", args)
            assert again.value.data["reason"] == "approval_required"
            # a finance approver approves, authenticated at the PDP
            ticket = "apr_" + task["id"][4:]
            r = await asyncio.to_thread(httpx.post, f"{pdp.url}/v1/approvals/{ticket}/approve", json={},
                                        headers={"Authorization": f"Bearer {idp.token(FIN, PDP_AUD)}"})
            assert r.status_code == 200, r.text
            approval = await wait_approved(task, requester)
            # an approval for this call does not cover another amount
            with pytest.raises(MCPError) as other:
                await s.call_tool("transfer_funds", {**args, "amount": 6000}, meta=approval_meta(approval))
            assert other.value.code == -32001
            # the same call, retried with the approval, runs
            r = await s.call_tool("transfer_funds", args, meta=approval_meta(approval))
            assert r.content[0].text == "transferred 5000 from acct-1 to acct-9"
            # single use
            with pytest.raises(MCPError) as used:
                await s.call_tool("transfer_funds", args, meta=approval_meta(approval))
            assert used.value.code == -32001
    run(go())


def test_gated_call_with_the_embedded_engine_is_a_denial(env):
    server = env["embedded"]

    async def go():
        async with http_session(server.url, env["idp"].token(ALICE, server.url)) as s:
            with pytest.raises(MCPError) as e:
                await s.call_tool("transfer_funds", {"from_account": "a", "to_account": "b", "amount": 5000})
            assert e.value.code == -32001 and "approval required" in e.value.message
            assert e.value.data is None
    run(go())


def test_mapping_error_fails_closed(env):
    server = env["remote"]

    async def go():
        async with http_session(server.url, env["idp"].token(ALICE, server.url)) as s:
            # the declared mapping reads $params.arguments.from_account: absent -> -32602, nothing ran
            with pytest.raises(MCPError) as e:
                await s.call_tool("transfer_funds", {"to_account": "b", "amount": 5})
            assert e.value.code == -32602
            assert e.value.message == ("COAZ mapping error: expression '$params.arguments.from_account' failed: "
                                       "no such key 'from_account'")
            # an approval object that is not one
            with pytest.raises(MCPError) as e:
                await s.call_tool("read_doc", {"doc": "handbook"}, meta={"io.policylang/approval": "apr_x"})
            assert e.value.code == -32602
            # a method with no mapping is denied (resources/templates/list is not in the binding's table)
            with pytest.raises(MCPError) as e:
                await s.list_resource_templates()
            assert e.value.code == -32001
            # ping passes through
            await s.send_ping()
    run(go())


def test_unreachable_remote_pdp_fails_closed(env):
    dead = f"http://127.0.0.1:{free_port()}"
    server = McpServer(env["jwks"], "--pdp", dead, "--pdp-timeout", "1")
    try:
        async def go():
            from mcp.client.session import ClientSession  # noqa: F401
            with pytest.raises(Exception) as e:
                async with http_session(server.url, env["idp"].token(ALICE, server.url)):
                    pass
            # initialize itself is authorized: the handshake is refused with -32603
            err = e.value
            while not isinstance(err, MCPError) and getattr(err, "exceptions", None):
                err = err.exceptions[0]
            assert isinstance(err, MCPError), repr(e.value)
            assert err.code == -32603 and err.message == "Authorization service unavailable"
        run(go())
    finally:
        server.stop()


def test_stdio_session(env):
    idp, pdp = env["idp"], env["pdp"]
    aud = "urn:example:mcp-guard:stdio"

    async def go():
        async with stdio_session(idp.token(ALICE, aud), "--jwks", str(env["jwks"]), "--audience", aud,
                                 "--pdp", pdp.url) as s:
            await _session_checks(s)
            with pytest.raises(MCPError) as e:
                await s.call_tool("transfer_funds", {"from_account": "a", "to_account": "b", "amount": 5000})
            assert e.value.data["reason"] == "approval_required"
        async with stdio_session(idp.token(BOB, aud), "--jwks", str(env["jwks"]), "--audience", aud,
                                 "--pdp", pdp.url) as s:
            assert names(await s.list_tools()) == ["read_doc"]
            with pytest.raises(MCPError) as e:
                await s.call_tool("write_doc", {"doc": "d", "text": "t", "user": ALICE})
            assert e.value.code == -32001
    run(go())


# ------------------------------------------------------------------ in process: the parts

def test_remote_pdp_invalid_answers_fail_closed():
    from policylang.integrations.mcp import PdpError, RemotePDP

    def pdp_answering(status, body):
        transport = httpx.MockTransport(lambda req: httpx.Response(status, content=body))
        return RemotePDP("http://pdp.test", client=httpx.AsyncClient(transport=transport))

    ok = {"subject": {"type": "identity", "id": "a"}, "action": {"name": "x"}, "resource": {"type": "t", "id": "1"}}
    for status, body in [(500, b'{"decision": true}'), (200, b"not json"), (200, b'{"decision": "true"}'),
                         (200, b'{"decision": true, "context": []}'), (401, b"")]:
        with pytest.raises(PdpError):
            run(pdp_answering(status, body).evaluation(ok))
    # an evaluations answer with the wrong number of decisions
    batch = {"subject": ok["subject"], "evaluations": [{"action": ok["action"], "resource": ok["resource"]}] * 2}
    with pytest.raises(PdpError):
        run(pdp_answering(200, b'{"evaluations": [{"decision": true}]}').evaluations(batch))
    assert run(pdp_answering(200, b'{"evaluations": [{"decision": true}, {"decision": false}]}')
               .evaluations(batch))["evaluations"][1]["decision"] is False


def test_act_chain_and_the_verifier():
    from policylang.integrations.coaz_mapping import MappingError
    from policylang.integrations.mcp import JwtVerifier, act_chain
    assert act_chain({"sub": "u"}) is None
    # RFC 8693: the outermost act is the current actor; root first means earliest actor first
    assert act_chain({"act": {"sub": "agent-b", "act": {"sub": "agent-a"}}}) == ["agent-a", "agent-b"]
    with pytest.raises(MappingError):
        act_chain({"act": {"act": {"sub": "x"}}})
    idp = LocalIdP()
    v = JwtVerifier(idp.jwks(), issuer=idp.issuer, audience="urn:mcp")
    tok = idp.token(ALICE, "urn:mcp", act={"sub": AGENT})
    at = run(v.verify_token(tok))
    assert at.subject == ALICE and at.client_id == AGENT and at.claims["act"] == {"sub": AGENT}
    assert run(v.verify_token(idp.token(ALICE, "urn:other"))) is None          # audience
    assert run(v.verify_token(idp.token(ALICE, "urn:mcp", ttl=-10))) is None    # expired
    assert run(v.verify_token(LocalIdP().token(ALICE, "urn:mcp"))) is None     # another key
    assert run(v.verify_token(tok[:-4] + "AAAA")) is None                      # signature


def test_guard_adds_the_act_chain_and_refuses_a_mapping_that_sets_it():
    from policylang.integrations.coaz_mapping import Built, MappingError
    from policylang.integrations.mcp import McpGuard

    class Recorder:
        def __init__(self):
            self.bodies = []

        async def evaluation(self, body):
            self.bodies.append(body)
            return {"decision": True}

        async def evaluations(self, body):
            return {"evaluations": [{"decision": True} for _ in body["evaluations"]]}

    pdp = Recorder()
    guard = McpGuard(pdp)
    claims = {"sub": ALICE, "client_id": AGENT, "aud": "urn:mcp", "act": {"sub": AGENT, "act": {"sub": "orchestrator"}}}
    built = guard.mapper.build("tools/call", {"name": "read_doc"}, claims)
    guard._add_identity(built, claims)
    assert built.body["context"] == {"agent": AGENT, "act_chain": ["orchestrator", AGENT]}
    sneaky = {"evaluation": {"action": {"name": "x"}, "resource": {"type": "t", "id": "1"},
                             "context": {"act_chain": "$params.arguments.chain"}}}
    built = guard.mapper.build("tools/call", {"name": "t", "arguments": {"chain": ["x"]}}, claims, declared=sneaky)
    with pytest.raises(MappingError):
        guard._add_identity(built, claims)
    assert isinstance(built, Built)


# ------------------------------------------- just-in-time tokens: one task per MCP connection

TOKEN_ISSUER = "urn:example:mcp-guard"
ECHO = "example.policylang/jit_token"


@pytest.fixture(scope="module")
def jit(env, tmp_path_factory):
    """The example server with --token-keys/--token-store (both PDPs) and --echo-tokens, and
    an Issuer on the same keys and store: what a downstream API verifies tokens with."""
    from policylang.credentials import Issuer, KeySet
    tmp = tmp_path_factory.mktemp("mcp-jit")
    KeySet.generate().save(tmp / "keys.json")
    store = f"sqlite:///{tmp / 'tokens.db'}"
    flags = ("--token-keys", str(tmp / "keys.json"), "--token-store", store, "--token-issuer", TOKEN_ISSUER,
             "--echo-tokens")
    remote = McpServer(env["jwks"], "--pdp", env["pdp"].url, *flags)
    embedded = McpServer(env["jwks"], "--policies", str(EXAMPLE / "policies"), *flags)
    try:
        yield {"remote": remote, "embedded": embedded, "flags": flags,
               "issuer": Issuer(tmp / "keys.json", store, issuer=TOKEN_ISSUER)}
    finally:
        remote.stop()
        embedded.stop()


def echoed(result) -> dict:
    return result.meta[ECHO]


async def _until_revoked(issuer, tokens, timeout=10.0):
    """The session's end is handled by the server right after the client's DELETE (or
    the stdio pipe closing): poll until every token is refused, and return the errors."""
    from policylang.credentials import TokenError
    deadline = time.monotonic() + timeout
    while True:
        errors = []
        for t in tokens:
            try:
                issuer.verify(t["jwt"])
            except TokenError as e:
                errors.append(e)
        if len(errors) == len(tokens):
            return errors
        assert time.monotonic() < deadline, "tokens still verify after their session ended"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("which", ["remote", "embedded"])
def test_http_tokens_for_grants_are_revoked_when_the_session_ends(env, jit, which):
    from policylang.credentials import Revoked, ScopeNotGranted
    server, issuer, idp = jit[which], jit["issuer"], env["idp"]

    async def go():
        async with http_session(server.url, idp.token(ALICE, server.url)) as s:
            r = await s.call_tool("read_doc", {"doc": "handbook"})
            assert r.content[0].text == "Be kind. Ship small changes."
            read = echoed(r)
            r = await s.call_tool("transfer_funds", {"from_account": "a-1", "to_account": "a-2", "amount": 10})
            transfer = echoed(r)
            # a token per call, scoped to the call's grant, both of the session's one task
            assert read["scopes"] == ["tools:call:read_doc"] and transfer["scopes"] == ["payments:transfer:a-1"]
            assert read["task"] == transfer["task"] and read["task"].startswith("mcp-")
            assert read["jti"] != transfer["jti"]
            claims = issuer.verify(read["jwt"], scope="tools:call:read_doc", audience="read_doc")
            assert claims["sub"] == ALICE and claims["act"] == {"sub": AGENT}
            assert claims["rules"] == ["agents-call-their-tools"] and claims["exp"] - claims["iat"] == 300
            issuer.verify(transfer["jwt"], scope="payments:transfer:a-1", audience="a-1")
            with pytest.raises(ScopeNotGranted):
                issuer.verify(read["jwt"], scope="payments:transfer:a-1")
            # another session runs in another task, untouched by the end of this one
            async with http_session(server.url, idp.token(ALICE, server.url)) as other:
                kept = echoed(await other.call_tool("read_doc", {"doc": "handbook"}))
            assert kept["task"] != read["task"]
            await _until_revoked(issuer, [kept])
            issuer.verify(read["jwt"])  # still live: its session is still open
        errors = await _until_revoked(issuer, [read, transfer])
        assert all(isinstance(e, Revoked) for e in errors)
    run(go())


def test_http_end_task_meta_revokes_at_once_and_the_next_call_starts_a_new_task(env, jit):
    from policylang.credentials import Revoked
    from policylang.integrations.mcp import END_TASK_META, end_task_meta
    server, issuer, idp = jit["embedded"], jit["issuer"], env["idp"]
    assert end_task_meta() == {END_TASK_META: True}

    async def go():
        async with http_session(server.url, idp.token(ALICE, server.url)) as s:
            first = echoed(await s.call_tool("read_doc", {"doc": "handbook"}))
            last = echoed(await s.call_tool("read_doc", {"doc": "handbook"}, meta=end_task_meta()))
            assert first["task"] == last["task"]
            # revoked before the response came back: no polling
            for t in (first, last):
                with pytest.raises(Revoked):
                    issuer.verify(t["jwt"])
            nxt = echoed(await s.call_tool("read_doc", {"doc": "handbook"}))
            assert nxt["task"] != last["task"]
            issuer.verify(nxt["jwt"])
            # end_task on a call that is denied still ends the task
            with pytest.raises(MCPError) as e:
                await s.call_tool("transfer_funds", {"from_account": "a", "to_account": "b", "amount": 5000},
                                  meta=end_task_meta())
            assert e.value.code == -32001
            with pytest.raises(Revoked):
                issuer.verify(nxt["jwt"])
            # a malformed end_task is a mapping error and nothing runs
            with pytest.raises(MCPError) as e:
                await s.call_tool("read_doc", {"doc": "handbook"}, meta={END_TASK_META: "yes"})
            assert e.value.code == -32602
    run(go())


def test_http_a_tool_argument_cannot_choose_the_task(env, jit):
    server, idp = jit["embedded"], env["idp"]

    async def go():
        async with http_session(server.url, idp.token(ALICE, server.url)) as s:
            # task_id in arguments or in a made-up _meta is ignored: the guard's id is used
            r = await s.call_tool("read_doc", {"doc": "handbook", "task_id": "mcp-victim"},
                                  meta={"io.policylang/task": "mcp-victim"})
            assert echoed(r)["task"] != "mcp-victim" and echoed(r)["task"].startswith("mcp-")
    run(go())


def test_stdio_tokens_are_revoked_when_the_session_ends(env, jit):
    from policylang.credentials import Revoked
    idp, issuer = env["idp"], jit["issuer"]
    aud = "urn:example:mcp-guard:stdio"

    async def go():
        async with stdio_session(idp.token(ALICE, aud), "--jwks", str(env["jwks"]), "--audience", aud,
                                 "--policies", str(EXAMPLE / "policies"), *jit["flags"]) as s:
            tok = echoed(await s.call_tool("read_doc", {"doc": "handbook"}))
            issuer.verify(tok["jwt"], scope="tools:call:read_doc")
        errors = await _until_revoked(issuer, [tok])
        assert isinstance(errors[0], Revoked)
    run(go())


def test_http_tokens_are_revoked_when_the_server_shuts_down(env, jit):
    from policylang.credentials import Revoked
    idp, issuer = env["idp"], jit["issuer"]
    server = McpServer(env["jwks"], "--policies", str(EXAMPLE / "policies"), *jit["flags"])
    seen: dict = {}
    try:
        async def go():
            async with http_session(server.url, idp.token(ALICE, server.url)) as s:
                tok = seen["token"] = echoed(await s.call_tool("read_doc", {"doc": "handbook"}))
                issuer.verify(tok["jwt"])
                seen["live"] = True
                server.stop()  # SIGTERM while the session is open
                with pytest.raises(Revoked):
                    issuer.verify(tok["jwt"])
                seen["revoked"] = True
        try:
            run(go())
        except Exception:  # noqa: BLE001, S110  (closing the session fails: the server is gone)
            pass
        assert seen.get("live") and seen.get("revoked"), seen
    finally:
        server.stop()


# ---------------------------------------------- the task machinery, in process, with a real Issuer

class FakePDP:
    """Answers with ``answer`` (a dict, or a callable of the body) and records the bodies."""

    def __init__(self, answer):
        self.answer = answer
        self.bodies: list = []

    async def evaluation(self, body):
        self.bodies.append(body)
        return self.answer(body) if callable(self.answer) else self.answer

    async def evaluations(self, body):
        return {"evaluations": [{"decision": True} for _ in body["evaluations"]]}


def _allow(rules=("r1",), grants=({"rule": "r1", "scopes": ["tools:call:t"], "ttl": 60},), path=None):
    return {"decision": True, "context": {
        "decision": "allow", "rules": list(rules), "reasons": [], "grants": [dict(g) for g in grants],
        "approvers": [], "errors": [], "delegation_path": path or [ALICE, AGENT], "policy_version": "sha256:x"}}


class Harness:
    """A guard with a real Issuer (sqlite), driven as the SDK drives a middleware: a
    ``ServerRequestContext``-like object whose session holds a real ``Connection``."""

    def __init__(self, tmp_path, answer, **kw):
        from mcp.server.connection import Connection

        from policylang.credentials import Issuer, KeySet
        from policylang.integrations.mcp import McpGuard
        self.issuer = Issuer(KeySet.generate(), f"sqlite:///{tmp_path}/t.db", issuer="urn:test")
        self.pdp = FakePDP(answer)
        self.claims = {"sub": ALICE, "client_id": AGENT, "aud": "urn:mcp"}
        self.guard = McpGuard(self.pdp, identity=lambda ctx: self.claims, issuer=kw.pop("issuer", self.issuer), **kw)
        self.conn = Connection(None, protocol_version="2025-11-25")
        self.seen: list = []

    def ctx(self, name="t", meta=None, arguments=None, conn=True):
        from types import SimpleNamespace
        params = {"name": name, "arguments": arguments or {}}
        if meta is not None:
            params["_meta"] = meta
        session = SimpleNamespace(_connection=self.conn) if conn else SimpleNamespace()
        return SimpleNamespace(method="tools/call", params=params, request_id=1, session=session)

    async def call(self, ctx, fail: BaseException | None = None):
        from policylang.integrations.mcp import current_token

        async def handler(c):
            self.seen.append(current_token())
            if fail is not None:
                raise fail
            return {"content": []}
        return await self.guard(ctx, handler)


def test_guard_mints_for_grants_hands_the_token_to_the_handler_and_revokes_at_connection_close(tmp_path):
    from policylang.credentials import Revoked
    from policylang.integrations.mcp import current_token
    h = Harness(tmp_path, _allow())

    async def go():
        await h.call(h.ctx())
        await h.call(h.ctx())
        assert current_token() is None  # only inside the handler
        t1, t2 = h.seen
        assert t1.scopes == ("tools:call:t",) and t1.claims["task"] == t2.claims["task"]
        # the PDP was asked with the connection's task id at context.intent.task_id
        task_id = t1.claims["task"]
        assert [b["context"]["intent"] for b in h.pdp.bodies] == [{"task_id": task_id}] * 2
        assert h.issuer.verify(t1.jwt, scope="tools:call:t", audience="t")["sub"] == ALICE
        tasks = h.conn.state["io.policylang/tasks"]
        assert tasks.current.tokens == [t1.jti, t2.jti]
        await h.conn.exit_stack.aclose()  # what the SDK does when the client goes
        for t in (t1, t2):
            with pytest.raises(Revoked):
                h.issuer.verify(t.jwt)
        assert tasks.closed and tasks.current is None
        assert tasks.ended[0].why == "connection closed" and set(tasks.ended[0].revoked) == {t1.jti, t2.jti}
        # a late call on a closed connection is refused
        with pytest.raises(MCPError) as e:
            await h.call(h.ctx())
        assert e.value.code == -32001
    run(go())


def test_guard_no_grants_no_token_and_require_token_denies(tmp_path):
    no_grants = _allow(grants=())
    h = Harness(tmp_path, no_grants)

    async def go():
        await h.call(h.ctx())
        assert h.seen == [None]
        # a remote PDP answering without a decision context: no grants, no token
        h.pdp.answer = {"decision": True}
        await h.call(h.ctx())
        assert h.seen == [None, None]
        # nothing was minted: the connection's end revokes nothing (no store write for the task)
        await h.conn.exit_stack.aclose()
        assert h.conn.state["io.policylang/tasks"].ended[0].revoked == []

        strict = Harness(tmp_path / "s", no_grants, require_token={"t"})
        with pytest.raises(MCPError) as e:
            await strict.call(strict.ctx("t"))
        assert e.value.code == -32001 and "needs a just-in-time token" in e.value.message
        assert strict.seen == []  # the handler did not run
        await strict.call(strict.ctx("other"))  # a tool not in require_token runs without one
        assert strict.seen == [None]
    (tmp_path / "s").mkdir()
    run(go())


def test_guard_a_grant_that_cannot_be_minted_is_a_denial(tmp_path):
    # a decision made for another delegation path than the request's: the issuer refuses
    h = Harness(tmp_path, _allow(path=["mallory@example.com", AGENT]))

    async def go():
        with pytest.raises(MCPError) as e:
            await h.call(h.ctx())
        assert e.value.code == -32001 and "could not be issued" in e.value.message
        assert h.seen == []
        # a broken store: the same
        h.pdp.answer = _allow()

        def broken(*a, **k):
            raise OSError("disk gone")
        h.issuer.issue = broken
        with pytest.raises(MCPError) as e:
            await h.call(h.ctx())
        assert e.value.code == -32001 and "OSError" in e.value.message and h.seen == []
    run(go())


def test_guard_a_handler_that_raises_has_its_token_revoked(tmp_path):
    from policylang.credentials import Revoked
    h = Harness(tmp_path, _allow())

    async def go():
        await h.call(h.ctx())
        with pytest.raises(RuntimeError):
            await h.call(h.ctx(), fail=RuntimeError("tool crashed"))
        ok, crashed = h.seen
        with pytest.raises(Revoked):
            h.issuer.verify(crashed.jwt)
        h.issuer.verify(ok.jwt)  # the task goes on: the others' tokens stay
    run(go())


def test_guard_the_task_id_is_the_peps_not_a_mappings(tmp_path):
    h = Harness(tmp_path, _allow(), mappings={"t": {"evaluation": {
        "action": {"name": "tools/call"}, "resource": {"type": "tool", "id": "t"},
        "context": {"agent": "$token.?client_id", "intent": {"task_id": "$params.arguments.task"}}}}})

    async def go():
        with pytest.raises(MCPError) as e:
            await h.call(h.ctx(arguments={"task": "mcp-victim"}))
        assert e.value.code == -32602 and "intent.task_id is set by the PEP" in e.value.message
        assert h.pdp.bodies == [] and h.seen == []
    run(go())


def test_guard_end_task_meta_and_a_failed_revocation(tmp_path):
    from policylang.credentials import Revoked
    from policylang.integrations.mcp import end_task_meta
    h = Harness(tmp_path, _allow())

    async def go():
        await h.call(h.ctx(meta=end_task_meta()))
        tasks = h.conn.state["io.policylang/tasks"]
        first = tasks.ended[0]
        assert first.why == "end_task" and first.revoked == [h.seen[0].jti] and tasks.current is None
        with pytest.raises(Revoked):
            h.issuer.verify(h.seen[0].jwt)
        # revoking fails: the client is told (-32603), not left believing the task ended cleanly
        real = h.issuer.revoke_task

        def broken(task_id):
            raise OSError("store down")
        h.issuer.revoke_task = broken
        with pytest.raises(MCPError) as e:
            await h.call(h.ctx(meta=end_task_meta()))
        assert e.value.code == -32603 and "could not be revoked" in e.value.message
        second = tasks.ended[1]
        assert second.ended and second.revoked is None
        h.issuer.verify(h.seen[1].jwt)  # not revoked yet
        # the connection's end retries it
        h.issuer.revoke_task = real
        await h.conn.exit_stack.aclose()
        assert second.revoked == [h.seen[1].jti]
        with pytest.raises(Revoked):
            h.issuer.verify(h.seen[1].jwt)
    run(go())


def test_guard_without_a_connection_mints_nothing_and_denies(tmp_path):
    h = Harness(tmp_path, _allow())

    async def go():
        with pytest.raises(MCPError) as e:
            await h.call(h.ctx(conn=False))
        assert e.value.code == -32001 and h.seen == [] and h.pdp.bodies == []
    run(go())


def test_guard_issuer_options_are_checked():
    from policylang.integrations.mcp import McpGuard
    with pytest.raises(TypeError):
        McpGuard(FakePDP({"decision": True}), issuer=object())
    with pytest.raises(ValueError):
        McpGuard(FakePDP({"decision": True}), require_token=True)
    with pytest.raises(TypeError):
        McpGuard(FakePDP({"decision": True}), issuer=None, require_token="t")


@pytest.mark.parametrize("which", ["remote", "embedded"])
def test_http_a_modern_client_discovers_then_calls(env, which):
    """The SDK's ``Client`` in its default mode starts with ``server/discover`` over
    streamable HTTP; the example guard decides it (``methods=EXTRA_MAPPINGS``, the policy
    names it: docs/agents.md#methods-the-binding-does-not-map), so the client stays on the
    new protocol (refused, it would fall back to the 2025-11-25 handshake), then filters
    and decides as for a handshake client."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    server = env[which]

    async def go(who, write: bool):
        tok = env["idp"].token(who, server.url)
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {tok}"}, timeout=30) as hc:
            async with Client(streamable_http_client(server.url, http_client=hc)) as c:
                # the discover was allowed: the client adopted the new protocol instead of
                # falling back to the handshake (which over HTTP would also have worked)
                assert c.protocol_version == "2026-07-28"
                listed = names(await c.list_tools())
                read = (await c.call_tool("read_doc", {"doc": "handbook"})).content[0].text
                refused = None
                if write:
                    try:
                        await c.call_tool("write_doc", {"doc": "handbook", "text": "defaced"})
                    except MCPError as e:
                        refused = e.code
                return listed, read, refused
    listed, read, refused = run(go(BOB, write=True))
    assert listed == ["read_doc"] and read == "Be kind. Ship small changes." and refused == -32001
    listed, read, _ = run(go(ALICE, write=False))
    assert listed == ["read_doc", "write_doc", "transfer_funds"] and read == "Be kind. Ship small changes."


def test_stdio_a_modern_client_discovers_then_calls(env):
    """The same over stdio (``mcp.Client`` with ``StdioServerParameters``): the example
    guard decides the client's ``server/discover``, so it connects on the new protocol."""
    import os

    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    idp, pdp = env["idp"], env["pdp"]
    aud = "urn:example:mcp-guard:stdio"
    params = StdioServerParameters(
        command=sys.executable, cwd=str(EXAMPLE),
        args=[str(EXAMPLE / "server.py"), "--transport", "stdio", "--jwks", str(env["jwks"]), "--audience", aud,
              "--pdp", pdp.url],
        env={**os.environ, "POLICYLANG_MCP_TOKEN": idp.token(BOB, aud)})

    async def go():
        async with Client(params) as c:
            assert c.protocol_version == "2026-07-28"
            assert names(await c.list_tools()) == ["read_doc"]
            assert (await c.call_tool("read_doc", {"doc": "handbook"})).content[0].text == \
                "Be kind. Ship small changes."
            with pytest.raises(MCPError) as e:
                await c.call_tool("write_doc", {"doc": "d", "text": "t"})
            assert e.value.code == -32001
    run(go())


def test_http_a_modern_clients_call_is_its_own_task_revoked_after_it(env, jit):
    """On 2026-07-28 every request is a single exchange, its own connection in the SDK, so
    the guard gives each call its own task and revokes its token once it was answered
    (docs/agents.md, step 4); the token was valid while the tool ran (the document store
    verified it)."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    from policylang.credentials import Revoked
    server, issuer, idp = jit["embedded"], jit["issuer"], env["idp"]

    async def go():
        tok = idp.token(ALICE, server.url)
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {tok}"}, timeout=30) as hc:
            async with Client(streamable_http_client(server.url, http_client=hc)) as c:
                assert c.protocol_version == "2026-07-28"
                first = await c.call_tool("read_doc", {"doc": "handbook"})
                assert first.content[0].text == "Be kind. Ship small changes."
                second = echoed(await c.call_tool("read_doc", {"doc": "handbook"}))
                first = echoed(first)
                assert first["task"] != second["task"]  # a task per exchange, not per client
                errors = await _until_revoked(issuer, [first, second])
                assert all(isinstance(e, Revoked) for e in errors)
    run(go())


def _rpc(client, url: str, body: dict, session: str | None = None) -> tuple[dict | None, str | None]:
    """One JSON-RPC POST of streamable HTTP, raw: (the answer or None, the session id)."""
    import json as _json
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": "2025-11-25"}
    if session:
        headers["Mcp-Session-Id"] = session
    r = client.post(url, json=body, headers=headers)
    assert r.status_code in (200, 202), (r.status_code, r.text)
    answer = None
    if "id" in body:
        text = r.text
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            text = next(ln[5:] for ln in text.splitlines() if ln.startswith("data:"))
        answer = _json.loads(text)
    return answer, r.headers.get("mcp-session-id", session)


def test_http_an_idle_session_the_sdk_reaps_ends_its_task(env, jit):
    """A client that opens a session, calls a tool and vanishes (no DELETE, no stream left
    open): the SDK closes the session once it was idle for ``session_idle_timeout``, and
    the guard's hook on the connection's ``exit_stack`` revokes the task's tokens
    (docs/agents.md, step 4)."""
    from policylang.credentials import Revoked
    server = McpServer(env["jwks"], "--policies", str(EXAMPLE / "policies"), *jit["flags"],
                       "--session-idle-timeout", "1")
    issuer, idp = jit["issuer"], env["idp"]
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {idp.token(ALICE, server.url)}"}, timeout=30) as c:
            _, sid = _rpc(c, server.url, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "vanishing", "version": "0"}}})
            assert sid
            _rpc(c, server.url, {"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
            answer, _ = _rpc(c, server.url, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                             "params": {"name": "read_doc", "arguments": {"doc": "handbook"}}}, sid)
        token = answer["result"]["_meta"][ECHO]
        issuer.verify(token["jwt"], scope="tools:call:read_doc", audience="read_doc")  # live after the call
        errors = run(_until_revoked(issuer, [token], timeout=15.0))  # idle: reaped after about 1 s
        assert isinstance(errors[0], Revoked)
    finally:
        server.stop()
