#!/usr/bin/env python3
"""The MCP guard end to end (examples/mcp-guard): starts a `policylang serve` (the AuthZEN
PDP, with approvals over AuthZEN) and the guarded MCP server, then shows, with a real MCP
client session over streamable HTTP: the filtered tool list, an allowed call that runs
with the just-in-time token minted for its grant, a denied one, a gated transfer that
runs (with its own token) after a finance approver approved it through the access
request endpoint, the approval spent, and the end of the task: every token of the
session's task revoked when the session ends, and at an explicit end of task (the
tokens no longer verify). Stops both; exits 0.

    python examples/mcp-guard/run.py
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from client import http_session, submit_access_request, wait_approved
from idp import AGENT, LocalIdP
from mcp.shared.exceptions import MCPError
from server import ECHO_META

from policylang.credentials import Issuer, TokenError
from policylang.integrations.mcp import approval_meta, end_task_meta

PDP_AUD = "policylang-pdp"
TOKEN_ISSUER = "urn:example:mcp-guard"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], health: str, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=HERE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{cmd[1]} exited:\n{log.read_text()}")
        try:
            httpx.get(health, timeout=0.5)
            return proc
        except httpx.HTTPError:
            time.sleep(0.05)
    proc.terminate()
    raise SystemExit(f"{cmd[1]} did not start:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def jit(result) -> dict:
    """The token the tool ran with (the server runs with --echo-tokens for this demo)."""
    return (result.meta or {})[ECHO_META]


def why_not(issuer: Issuer, jwt: str) -> str | None:
    """``None`` while the token verifies, else the reason it does not."""
    try:
        issuer.verify(jwt)
        return None
    except TokenError as e:
        return f"{type(e).__name__}: {e}"


async def revoked(issuer: Issuer, tokens: list[dict], timeout: float = 10) -> list[str]:
    """Wait until none of ``tokens`` verifies (the server ends the task as the session
    closes, right after the client's DELETE): the reasons."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        reasons = [why_not(issuer, t["jwt"]) for t in tokens]
        if all(reasons):
            return reasons
        if asyncio.get_running_loop().time() > deadline:
            raise SystemExit(f"tokens still verify after the task ended: {tokens}")
        await asyncio.sleep(0.05)


async def demo(mcp_url: str, pdp_url: str, idp: LocalIdP, issuer: Issuer) -> None:
    alice = idp.token("alice@example.com", mcp_url)
    requester = idp.token(AGENT, PDP_AUD)  # the agent, at the PDP
    minted: list[dict] = []
    async with http_session(mcp_url, alice) as s:
        tools = [t.name for t in (await s.list_tools()).tools]
        print(f"alice's tools: {tools}")
        r = await s.call_tool("read_doc", {"doc": "handbook"})
        print(f"allow   read_doc -> {r.content[0].text!r}")
        tok = jit(r)
        minted.append(tok)
        claims = issuer.verify(tok["jwt"], scope="tools:call:read_doc", audience="read_doc")
        print(f"jit     read_doc ran with its token: scope {claims['scope']}, sub {claims['sub']}, "
              f"act {claims['act']['sub']}, task {claims['task']}, expires in {claims['exp'] - claims['iat']}s")
        task_id = claims["task"]
        args = {"from_account": "acct-1", "to_account": "acct-9", "amount": 5000}
        try:
            await s.call_tool("transfer_funds", args)
            raise SystemExit("the transfer should have needed an approval")
        except MCPError as e:
            assert e.code == -32001 and e.data and e.data["reason"] == "approval_required", e
            denial = e.data
            print(f"gated   transfer_funds -> {e.code} {e.message} (evaluation {denial['evaluation_id']})")
        task = submit_access_request(denial, requester, "quarterly supplier payment")
        print(f"access request {task['id']}: {task['status']}")
        ticket = "apr_" + task["id"][4:]
        r = await asyncio.to_thread(httpx.post, f"{pdp_url}/v1/approvals/{ticket}/approve", json={},
                                    headers={"Authorization": f"Bearer {idp.token('fin@example.com', PDP_AUD)}"})
        r.raise_for_status()
        approval = await wait_approved(task, requester)
        print(f"approved by fin@example.com until {approval['approved_until']}")
        r = await s.call_tool("transfer_funds", args, meta=approval_meta(approval))
        print(f"allow   transfer_funds (approved) -> {r.content[0].text!r}")
        tok = jit(r)
        minted.append(tok)
        assert tok["task"] == task_id and tok["scopes"] == ["payments:transfer:acct-1"], tok
        print(f"jit     transfer_funds ran with its token: scope {tok['scopes'][0]}, the same task")
        try:
            await s.call_tool("transfer_funds", args, meta=approval_meta(approval))
            raise SystemExit("an approval is single use")
        except MCPError as e:
            print(f"single use: the approval is spent, the same call is gated again ({e.code})")
        assert all(why_not(issuer, t["jwt"]) is None for t in minted)
        print(f"live    {len(minted)} tokens of task {task_id} verify while the session is open")
    # leaving the block closed the session (DELETE): the server ended its task
    reasons = await revoked(issuer, minted)
    print(f"revoked the session ended: its {len(minted)} tokens no longer verify ({reasons[0].split(':')[0]})")
    async with http_session(mcp_url, idp.token("bob@example.com", mcp_url)) as s:
        tools = [t.name for t in (await s.list_tools()).tools]
        print(f"bob's tools: {tools}")
        assert tools == ["read_doc"], tools
        try:
            await s.call_tool("write_doc", {"doc": "handbook", "text": "x", "user": "alice@example.com"})
            raise SystemExit("bob may not write")
        except MCPError as e:
            print(f"deny    write_doc (bob, naming alice in an argument) -> {e.code} {e.message}")
        # bob's task ends explicitly with its last call: its tokens are revoked at once
        first = jit(await s.call_tool("read_doc", {"doc": "handbook"}))
        last = jit(await s.call_tool("read_doc", {"doc": "handbook"}, meta=end_task_meta()))
        assert first["task"] == last["task"]
        gone = [why_not(issuer, t["jwt"]) for t in (first, last)]
        assert all(gone), gone
        print(f"end     read_doc with _meta end_task: task {last['task']} ended, its 2 tokens no longer verify "
              f"({gone[0].split(':')[0]})")
        nxt = jit(await s.call_tool("read_doc", {"doc": "handbook"}))
        assert nxt["task"] != last["task"] and why_not(issuer, nxt["jwt"]) is None
        print(f"next    the session's next call runs in a new task ({nxt['task']})")


def main() -> int:
    from policylang.credentials import KeySet
    with tempfile.TemporaryDirectory(prefix="mcp-guard-") as d:
        tmp = Path(d)
        idp = LocalIdP()
        jwks = idp.write_jwks(tmp / "jwks.json")
        KeySet.generate().save(tmp / "binding.json")
        KeySet.generate().save(tmp / "token-keys.json")  # the MCP server's just-in-time token keys
        token_store = f"sqlite:///{tmp / 'tokens.db'}"
        issuer = Issuer(tmp / "token-keys.json", token_store, issuer=TOKEN_ISSUER)  # to verify, as an API would
        pdp_port, mcp_port = free_port(), free_port()
        pdp_url, mcp_url = f"http://127.0.0.1:{pdp_port}", f"http://127.0.0.1:{mcp_port}/mcp"
        pdp = start([sys.executable, "-c", "from policylang.cli import main; main()", "serve", str(HERE / "policies"),
                     "--store", f"sqlite:///{tmp / 'state.db'}", "--create-store",
                     "--binding-keys", str(tmp / "binding.json"), "--jwks", str(jwks), "--jwt-audience", PDP_AUD,
                     "--jwt-issuer", idp.issuer, "--port", str(pdp_port)], pdp_url + "/healthz", tmp / "pdp.log")
        try:
            mcp = start([sys.executable, str(HERE / "server.py"), "--port", str(mcp_port), "--jwks", str(jwks),
                         "--pdp", pdp_url, "--token-keys", str(tmp / "token-keys.json"), "--token-store", token_store,
                         "--token-issuer", TOKEN_ISSUER, "--echo-tokens"],
                        f"http://127.0.0.1:{mcp_port}/", tmp / "mcp.log")
            try:
                asyncio.run(demo(mcp_url, pdp_url, idp, issuer))
            finally:
                stop(mcp)
        finally:
            stop(pdp)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
