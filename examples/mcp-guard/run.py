#!/usr/bin/env python3
"""The MCP guard end to end (examples/mcp-guard): starts a `policylang serve` (the AuthZEN
PDP, with approvals over AuthZEN) and the guarded MCP server, then shows, with a real MCP
client session over streamable HTTP: the filtered tool list, an allowed call, a denied
one, a gated transfer that runs after a finance approver approved it through the access
request endpoint, and the end of the task (its approval is spent). Stops both; exits 0.

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

from policylang.integrations.mcp import approval_meta

PDP_AUD = "policylang-pdp"


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


async def demo(mcp_url: str, pdp_url: str, idp: LocalIdP) -> None:
    alice = idp.token("alice@example.com", mcp_url)
    requester = idp.token(AGENT, PDP_AUD)  # the agent, at the PDP
    async with http_session(mcp_url, alice) as s:
        tools = [t.name for t in (await s.list_tools()).tools]
        print(f"alice's tools: {tools}")
        r = await s.call_tool("read_doc", {"doc": "handbook"})
        print(f"allow   read_doc -> {r.content[0].text!r}")
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
        try:
            await s.call_tool("transfer_funds", args, meta=approval_meta(approval))
            raise SystemExit("an approval is single use")
        except MCPError as e:
            print(f"single use: the approval is spent, the same call is gated again ({e.code})")
    async with http_session(mcp_url, idp.token("bob@example.com", mcp_url)) as s:
        tools = [t.name for t in (await s.list_tools()).tools]
        print(f"bob's tools: {tools}")
        assert tools == ["read_doc"], tools
        try:
            await s.call_tool("write_doc", {"doc": "handbook", "text": "x", "user": "alice@example.com"})
            raise SystemExit("bob may not write")
        except MCPError as e:
            print(f"deny    write_doc (bob, naming alice in an argument) -> {e.code} {e.message}")


def main() -> int:
    from policylang.credentials import KeySet
    with tempfile.TemporaryDirectory(prefix="mcp-guard-") as d:
        tmp = Path(d)
        idp = LocalIdP()
        jwks = idp.write_jwks(tmp / "jwks.json")
        KeySet.generate().save(tmp / "binding.json")
        pdp_port, mcp_port = free_port(), free_port()
        pdp_url, mcp_url = f"http://127.0.0.1:{pdp_port}", f"http://127.0.0.1:{mcp_port}/mcp"
        pdp = start([sys.executable, "-c", "from policylang.cli import main; main()", "serve", str(HERE / "policies"),
                     "--store", f"sqlite:///{tmp / 'state.db'}", "--create-store",
                     "--binding-keys", str(tmp / "binding.json"), "--jwks", str(jwks), "--jwt-audience", PDP_AUD,
                     "--jwt-issuer", idp.issuer, "--port", str(pdp_port)], pdp_url + "/healthz", tmp / "pdp.log")
        try:
            mcp = start([sys.executable, str(HERE / "server.py"), "--port", str(mcp_port), "--jwks", str(jwks),
                         "--pdp", pdp_url], f"http://127.0.0.1:{mcp_port}/", tmp / "mcp.log")
            try:
                asyncio.run(demo(mcp_url, pdp_url, idp))
            finally:
                stop(mcp)
        finally:
            stop(pdp)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
