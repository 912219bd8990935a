"""What an MCP client of the guarded server does (examples/mcp-guard): connect with its
access token (streamable HTTP or stdio, the mcp SDK's client), and turn a requestable
denial into an access request at the PDP, wait for the approval and retry the call."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import httpx
import httpx2
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from policylang.integrations.mcp import approval_meta  # noqa: F401  (re-exported for the scripts)

HERE = Path(__file__).resolve().parent


@contextlib.asynccontextmanager
async def http_session(url: str, token: str):
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as hc, \
            streamable_http_client(url, http_client=hc) as streams, \
            ClientSession(streams[0], streams[1]) as session:
        await session.initialize()
        yield session


@contextlib.asynccontextmanager
async def stdio_session(token: str, *server_args: str):
    params = StdioServerParameters(command=sys.executable, args=[str(HERE / "server.py"), "--transport", "stdio",
                                                                 *server_args],
                                   env={**os.environ, "POLICYLANG_MCP_TOKEN": token}, cwd=str(HERE))
    async with stdio_client(params) as streams, ClientSession(streams[0], streams[1]) as session:
        await session.initialize()
        yield session


def submit_access_request(denial: dict, requester_token: str, justification: str) -> dict:
    """POST the requestable denial (the -32001 error's data) to its access request
    endpoint; the task (202)."""
    req = denial["request"]
    ar = denial["access_request"]
    body = {"subject": req["subject"], "resource": req["resource"], "action": req["action"],
            "context": {**req.get("context", {}), "business_justification": justification},
            "denial": {"evaluation_id": denial["evaluation_id"], "expires_at": ar["expires_at"],
                       "reason": "approval_required", "binding_token": ar["binding_token"]}}
    r = httpx.post(ar["endpoint"], json=body, headers={"Authorization": f"Bearer {requester_token}"}, timeout=10)
    r.raise_for_status()
    return r.json()["task"]


async def wait_approved(task: dict, requester_token: str, timeout: float = 30) -> dict:
    """Poll the task until it is approved: its ``result.approval``."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {requester_token}"}, timeout=10) as c:
        while True:
            r = await c.get(task["status_endpoint"])
            r.raise_for_status()
            data = r.json()
            status = data["task"]["status"]
            if status == "approved":
                return data["result"]["approval"]
            if status != "pending":
                raise RuntimeError(f"the access request ended {status}")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("no approval in time")
            await asyncio.sleep(0.2)
