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

With ``--token-keys KEYS.json --token-store sqlite:///tokens.db`` the guard mints a
just-in-time token for each allowed call's grants (policies/mcp.policy grants
``tools:call:<tool>`` and ``payments:transfer:<account>``), bound to the MCP session's
task, and every tool then *needs* it: the document store and the ledger below check it
with ``issuer.verify(jwt, scope=…, audience=…)`` before they act, as a downstream API
would. The session's tokens are revoked when it ends. ``--echo-tokens`` (demo only: a
real tool never hands its credential back) puts the token in the result's ``_meta`` so
that run.py can show it failing to verify after the task ended.
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

from policylang.integrations.coaz_mapping import EXTRA_MAPPINGS
from policylang.integrations.mcp import (
    EmbeddedPDP,
    JwtVerifier,
    McpGuard,
    RemotePDP,
    StaticIdentity,
    current_token,
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

#: the issuer of just-in-time tokens (``--token-keys``/``--token-store``), None without
ISSUER = None
#: the demo flag ``--echo-tokens``
ECHO_TOKENS = False
#: where the result's ``_meta`` carries the token with --echo-tokens
ECHO_META = "example.policylang/jit_token"


def present(scope: str, audience: str) -> None:
    """What the document store and the ledger do before they act: check the caller's
    just-in-time token (raises ``policylang.credentials.TokenError``: the tool fails)."""
    if ISSUER is None:
        return  # run without tokens: the guard's decision alone
    tok = current_token()
    if tok is None:
        raise PermissionError("no just-in-time token for this call")
    ISSUER.verify(tok.jwt, scope=scope, audience=audience)


async def list_tools(ctx, params) -> types.ListToolsResult:
    return types.ListToolsResult(tools=TOOLS)


async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    if params.name == "read_doc":
        present("tools:call:read_doc", "read_doc")
        text = DOCS.get(args["doc"], "")
    elif params.name == "write_doc":
        present("tools:call:write_doc", "write_doc")
        DOCS[args["doc"]] = args["text"]
        text = f"wrote {args['doc']}"
    elif params.name == "transfer_funds":
        present(f"payments:transfer:{args['from_account']}", args["from_account"])
        LEDGER.append(dict(args))
        text = f"transferred {args['amount']} from {args['from_account']} to {args['to_account']}"
    else:
        return types.CallToolResult(content=[types.TextContent(type="text", text="unknown tool")], is_error=True)
    meta = None
    tok = current_token()
    if ECHO_TOKENS and tok is not None:
        meta = {ECHO_META: {"jwt": tok.jwt, "jti": tok.jti, "task": tok.claims.get("task"),
                            "scopes": list(tok.scopes), "expires_at": tok.expires_at}}
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], _meta=meta)


def build(pdp, *, server_id: str | None, identity=None, issuer=None) -> tuple[Server, McpGuard]:
    server = Server("policylang-mcp-guard-example", on_list_tools=list_tools, on_call_tool=call_tool)
    # methods=EXTRA_MAPPINGS: decide a modern client's server/discover (and
    # resources/templates/list), which the binding leaves unmapped and so denies
    guard = McpGuard(pdp, server_id=server_id, identity=identity, issuer=issuer,
                     require_token=issuer is not None, methods=EXTRA_MAPPINGS)
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
    p.add_argument("--token-keys", help="a policylang key set (policylang token keygen): mint just-in-time tokens")
    p.add_argument("--token-store", help="the token store URL (sqlite:///tokens.db), with --token-keys")
    p.add_argument("--token-issuer", default="urn:example:mcp-guard", help="the iss of the tokens it mints")
    p.add_argument("--echo-tokens", action="store_true",
                   help="demo only: return each call's token in the result's _meta")
    p.add_argument("--session-idle-timeout", type=float, default=None,
                   help="seconds after which the SDK closes an idle HTTP session (its task ends; default: the SDK's)")
    a = p.parse_args(argv)
    global ISSUER, ECHO_TOKENS
    if bool(a.token_keys) != bool(a.token_store):
        p.error("--token-keys and --token-store go together")
    if a.token_keys:
        from policylang.credentials import Issuer
        ISSUER = Issuer(a.token_keys, a.token_store, issuer=a.token_issuer)
    ECHO_TOKENS = a.echo_tokens

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
        server, _ = build(decider, server_id=audience, identity=StaticIdentity(token, verifier), issuer=ISSUER)
        from mcp.server.stdio import stdio_server

        async def run() -> None:
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())
        asyncio.run(run())
        return 0

    import uvicorn
    from mcp.server.auth.settings import AuthSettings
    server, _ = build(decider, server_id=audience, issuer=ISSUER)
    idle = {} if a.session_idle_timeout is None else {"session_idle_timeout": a.session_idle_timeout}
    app = server.streamable_http_app(
        auth=AuthSettings(issuer_url=a.issuer, resource_server_url=audience, validate_token_resource=False),
        token_verifier=verifier, host=a.host, **idle)
    uvicorn.run(app, host=a.host, port=a.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
