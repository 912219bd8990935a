"""A documents-and-payments MCP server guarded by policylang (examples/mcp-guard).

Three tools: ``read_doc`` (read), ``write_doc`` (write) and ``transfer_funds`` (high
impact: over 1000 it waits for a finance approver). ``transfer_funds`` declares a COAZ
mapping in its ``inputSchema`` (``x-authzen-mapping``); the other two are authorized by
the default ``tools/call`` mapping. Every MCP request goes through
:class:`policylang.integrations.mcp.McpGuard` before it runs.

    python server.py --transport http --port 8765 --jwks jwks.json --issuer https://idp.example \\
        --pdp http://127.0.0.1:8181            # a remote AuthZEN PDP (policylang serve)
    python server.py --transport http ... --policies policies   # the engine in process
    POLICYLANG_MCP_TOKEN=<jwt> python server.py --transport stdio --jwks jwks.json ...

The caller is the validated access token (HTTP: the Authorization header, verified by
the SDK's bearer middleware with :class:`JwtVerifier`; stdio: ``POLICYLANG_MCP_TOKEN``,
verified at start and at every request). Tool arguments never name the caller.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from mcp import types
from mcp.server.lowlevel import Server

from policylang.integrations.mcp import (
    EmbeddedPDP,
    JwtVerifier,
    McpGuard,
    RemotePDP,
    StaticIdentity,
)

HERE = Path(__file__).resolve().parent

TRANSFER_MAPPING = {
    "evaluation": {
        "subject": {"type": "identity", "id": "$token.sub"},
        "action": {"name": "transfer"},
        "resource": {"type": "account", "id": "$params.arguments.from_account"},
        "context": {"agent": "$token.?client_id", "amount": "$params.arguments.amount",
                    "to_account": "$params.arguments.to_account"},
    }
}

TOOLS = [
    types.Tool(name="read_doc", description="Read a document",
               input_schema={"type": "object", "properties": {"doc": {"type": "string"}}, "required": ["doc"]}),
    types.Tool(name="write_doc", description="Write a document",
               input_schema={"type": "object", "properties": {"doc": {"type": "string"}, "text": {"type": "string"},
                                                              "user": {"type": "string"}},
                             "required": ["doc", "text"]}),
    types.Tool(name="transfer_funds", description="Transfer funds between accounts (high impact)",
               input_schema={"type": "object",
                             "properties": {"from_account": {"type": "string"}, "to_account": {"type": "string"},
                                            "amount": {"type": "number"}},
                             "required": ["from_account", "to_account", "amount"],
                             "x-authzen-mapping": TRANSFER_MAPPING}),
]

DOCS: dict[str, str] = {"handbook": "Be kind. Ship small changes."}
LEDGER: list[dict] = []


async def list_tools(ctx, params) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    if params.name == "read_doc":
        text = DOCS.get(args["doc"], "")
    elif params.name == "write_doc":
        DOCS[args["doc"]] = args["text"]
        text = f"wrote {args['doc']}"
    elif params.name == "transfer_funds":
        LEDGER.append(dict(args))
        text = f"transferred {args['amount']} from {args['from_account']} to {args['to_account']}"
    else:
        return types.CallToolResult(content=[types.TextContent(type="text", text="unknown tool")], is_error=True)
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


def build(pdp, *, server_id: str | None, identity=None) -> tuple[Server, McpGuard]:
    server = Server("policylang-mcp-guard-example", on_list_tools=list_tools, on_call_tool=call_tool)
    guard = McpGuard(pdp, server_id=server_id, identity=identity)
    guard.install(server)
    return server, guard


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--transport", choices=["http", "stdio"], default="http")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--jwks", required=True, help="the IdP's JWK set (verifies access tokens)")
    p.add_argument("--issuer", default="https://idp.example")
    p.add_argument("--audience", help="this server's resource identifier (default: its /mcp URL)")
    pdp = p.add_mutually_exclusive_group(required=True)
    pdp.add_argument("--pdp", help="a remote AuthZEN PDP's base URL")
    pdp.add_argument("--policies", help="decide in process with these policies")
    p.add_argument("--pdp-timeout", type=float, default=5.0)
    a = p.parse_args(argv)

    audience = a.audience or f"http://{a.host}:{a.port}/mcp"
    verifier = JwtVerifier(json.loads(Path(a.jwks).read_text()), issuer=a.issuer, audience=audience)
    if a.pdp:
        decider = RemotePDP(a.pdp, timeout=a.pdp_timeout)
    else:
        import policylang
        decider = EmbeddedPDP(policylang.Engine(policylang.load(a.policies)))

    if a.transport == "stdio":
        token = os.environ.get("POLICYLANG_MCP_TOKEN")
        if not token:
            print("stdio needs POLICYLANG_MCP_TOKEN (the caller's access token)", file=sys.stderr)
            return 2
        server, _ = build(decider, server_id=audience, identity=StaticIdentity(token, verifier))
        from mcp.server.stdio import stdio_server

        async def run() -> None:
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())
        asyncio.run(run())
        return 0

    import uvicorn
    from mcp.server.auth.settings import AuthSettings
    server, _ = build(decider, server_id=audience)
    app = server.streamable_http_app(
        auth=AuthSettings(issuer_url=a.issuer, resource_server_url=audience, validate_token_resource=False),
        token_verifier=verifier, host=a.host)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
