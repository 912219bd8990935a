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
