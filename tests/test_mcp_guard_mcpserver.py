"""The MCP guard on the SDK's high-level server, ``MCPServer`` (FastMCP), as
docs/agents.md#mcp-guard says it is used: ``MCPServer(..., middleware=[guard])`` with the
declared mappings given as ``McpGuard(pdp, mappings=...)``. A real SDK client
(``mcp.Client``, in-memory transport) talks to decorated tools deciding with the engine
in process (examples/mcp-guard's policies): allowed calls run, a refused call is the
binding's -32001 and its tool never runs, ``tools/list`` is filtered per caller and
carries the declared mapping, the declared mapping (not the default one) decides its tool,
and a gated call is a denial without an access request service. A modern client (the
SDK's default ``mode="auto"``) starts with ``server/discover``, which the binding leaves
unmapped and so denies: it gets through only with ``methods=EXTRA_MAPPINGS``
(docs/agents.md#methods-the-binding-does-not-map), and without them the connection
fails closed while a legacy-handshake client still works."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("mcp")
pytest.importorskip("celpy")

from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

import policylang
from policylang.integrations.coaz_mapping import EXTRA_MAPPINGS
from policylang.integrations.mcp import MAPPING_KEY, EmbeddedPDP, McpGuard

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mcp-guard"
POLICIES = EXAMPLE / "policies"
AGENT = "https://agents.example/assistant"
ALICE, BOB = "alice@example.com", "bob@example.com"


def _example_server():
    """examples/mcp-guard/server.py as a module of its own name (its main() is not run)."""
    spec = importlib.util.spec_from_file_location("mcp_guard_example_server", EXAMPLE / "server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: the example's declared mapping of transfer_funds (the account and the amount)
TRANSFER_MAPPING = _example_server().TRANSFER_MAPPING


class RecordingPDP(EmbeddedPDP):
    """The in-process PDP, keeping every body it was asked to decide."""

    def __init__(self, engine):
        super().__init__(engine, offload=False)
        self.bodies: list = []

    async def evaluation(self, body):
        self.bodies.append(body)
        return await super().evaluation(body)

    async def evaluations(self, body):
        self.bodies.append(body)
        return await super().evaluations(body)


def build(caller: str, methods=EXTRA_MAPPINGS):
    """An MCPServer with three tools and the guard as its middleware; the caller's claims
    stand for the validated token (what the SDK's bearer middleware gives over HTTP)."""
    pdp = RecordingPDP(policylang.Engine(policylang.load(POLICIES)))
    claims = {"sub": caller, "client_id": AGENT, "aud": "urn:mcp"}
    guard = McpGuard(pdp, identity=lambda ctx: claims, server_id="urn:mcp", methods=methods,
                     mappings={"transfer_funds": TRANSFER_MAPPING})
    server = MCPServer("docs", middleware=[guard])
    ran: list = []

    @server.tool()
    def read_doc(doc: str) -> str:
        """Read a document."""
        ran.append(("read_doc", doc))
        return "Be kind. Ship small changes."

    @server.tool()
    def write_doc(doc: str, text: str) -> str:
        """Write a document."""
        ran.append(("write_doc", doc))
        return f"wrote {doc}"

    @server.tool()
    def transfer_funds(from_account: str, to_account: str, amount: float) -> str:
        """Transfer funds between accounts (high impact)."""
        ran.append(("transfer_funds", amount))
        return f"transferred {amount:g} from {from_account} to {to_account}"

    return server, pdp, ran


def text(result) -> str:
    return result.content[0].text


def leaves(e: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups."""
    if isinstance(e, BaseExceptionGroup):
        return [x for sub in e.exceptions for x in leaves(sub)]
    return [e]


def test_allowed_calls_run_and_the_list_carries_the_declared_mapping():
    server, pdp, ran = build(ALICE)

    async def go():
        async with Client(server) as c:
            tools = await c.list_tools()
            assert [t.name for t in tools.tools] == ["read_doc", "write_doc", "transfer_funds"]
            transfer = next(t for t in tools.tools if t.name == "transfer_funds")
            assert transfer.input_schema[MAPPING_KEY] == TRANSFER_MAPPING
            assert text(await c.call_tool("read_doc", {"doc": "handbook"})) == "Be kind. Ship small changes."
            assert text(await c.call_tool("write_doc", {"doc": "d", "text": "x"})) == "wrote d"
            r = await c.call_tool("transfer_funds", {"from_account": "a-1", "to_account": "a-2", "amount": 10})
            assert text(r) == "transferred 10 from a-1 to a-2"
    asyncio.run(go())
    assert ran == [("read_doc", "handbook"), ("write_doc", "d"), ("transfer_funds", 10)]
    # the transfer was decided by its declared mapping: the account and the amount, not the tool
    transfer = [b for b in pdp.bodies if b.get("action") == {"name": "transfer"}]
    assert len(transfer) == 1
    assert transfer[0]["resource"] == {"type": "account", "id": "a-1"}
    assert transfer[0]["context"]["amount"] == 10 and transfer[0]["context"]["agent"] == AGENT
    assert transfer[0]["subject"]["id"] == ALICE
    # the modern client's first request was decided by EXTRA_MAPPINGS' server/discover
    assert pdp.bodies[0]["action"] == {"name": "server/discover"}
    assert pdp.bodies[0]["resource"] == {"type": "mcp_server", "id": "urn:mcp"}


def test_a_refused_call_never_runs_and_the_list_is_filtered():
    server, _pdp, ran = build(BOB)  # a reader: no writers or payers group

    async def go():
        async with Client(server) as c:
            assert [t.name for t in (await c.list_tools()).tools] == ["read_doc"]
            with pytest.raises(MCPError) as e:
                await c.call_tool("write_doc", {"doc": "handbook", "text": "defaced"})
            assert e.value.code == -32001 and e.value.message.startswith("Access denied")
            with pytest.raises(MCPError) as e:
                await c.call_tool("transfer_funds", {"from_account": "a-1", "to_account": "a-2", "amount": 5})
            assert e.value.code == -32001
            assert text(await c.call_tool("read_doc", {"doc": "handbook"})) == "Be kind. Ship small changes."
    asyncio.run(go())
    assert ran == [("read_doc", "handbook")]


def test_a_gated_call_is_a_denial_without_an_access_request_service():
    server, _pdp, ran = build(ALICE)

    async def go():
        async with Client(server) as c:
            with pytest.raises(MCPError) as e:
                await c.call_tool("transfer_funds", {"from_account": "a-1", "to_account": "a-2", "amount": 5000})
            assert e.value.code == -32001
            assert "approval required" in e.value.message
    asyncio.run(go())
    assert ran == []


def test_without_the_extra_mappings_a_modern_client_fails_closed_and_a_legacy_one_works(caplog):
    server, pdp, ran = build(ALICE, methods=None)

    async def modern():
        async with Client(server) as c:
            await c.call_tool("read_doc", {"doc": "handbook"})

    with pytest.raises(BaseException) as e:  # the SDK's connect raises (in a task group)
        asyncio.run(modern())
    errors = leaves(e.value)
    assert errors and all(isinstance(x, MCPError) for x in errors), errors
    assert ran == []
    # server/discover was refused by the guard itself (an unknown method: no PDP call),
    # and the operator is told, once, how to decide it
    assert all(b.get("action") != {"name": "server/discover"} for b in pdp.bodies)
    hints = [r for r in caplog.records if "methods=EXTRA_MAPPINGS" in r.getMessage()]
    assert len(hints) == 1 and "'server/discover'" in hints[0].getMessage()

    async def legacy():
        async with Client(server, mode="legacy") as c:
            return text(await c.call_tool("read_doc", {"doc": "handbook"}))
    assert asyncio.run(legacy()) == "Be kind. Ship small changes."
    assert ran == [("read_doc", "handbook")]
    assert pdp.bodies[0]["action"] == {"name": "initialize"}


def test_a_discover_the_policy_does_not_permit_is_refused():
    server, pdp, ran = build("mallory@example.com")  # no entity record: not staff

    async def go():
        async with Client(server) as c:
            await c.list_tools()

    with pytest.raises(BaseException) as e:
        asyncio.run(go())
    assert all(isinstance(x, MCPError) for x in leaves(e.value)), e.value
    assert pdp.bodies and pdp.bodies[0]["action"] == {"name": "server/discover"}
    assert ran == []
