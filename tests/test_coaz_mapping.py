"""The COAZ-MCP mapping engine (policylang/integrations/coaz_mapping.py) against every
example the binding publishes (tests/data/coaz_mapping/, tests/data/coaz/): the produced
AuthZEN request equals the one the binding shows; plus its rules — pass-through, unknown
methods, the subject anchor, envelopes, absent values, `$$`, bounds, mapping errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

pytest.importorskip("celpy")

from policylang.integrations.coaz_mapping import (
    DEFAULT_MAPPINGS,
    EXTRA_MAPPINGS,
    MAPPING_KEY,
    Mapper,
    MappingError,
    UnknownMethod,
    check_mapping,
    resolve_value,
)

DATA = Path(__file__).resolve().parent / "data" / "coaz_mapping"
COAZ = Path(__file__).resolve().parent / "data" / "coaz"


def fig(name: str):
    doc = json.loads((DATA / f"{name}.json").read_text())
    assert doc["source"]["commit"] == "e287920"
    return doc["value"]


def derived(name: str) -> dict:
    return json.loads((COAZ / f"{name}.json").read_text())


TOKEN = fig("fig-token-claims")
CALL = fig("fig-tools-call")
TOOLS = {t["name"]: t for t in fig("fig-tools-list")["tools"]}


def mapper(**kw) -> Mapper:
    return Mapper(**kw)


# ------------------------------------------------------------------ the published examples

def test_expression_resolution_table():
    variables = {"params": CALL["params"], "token": TOKEN}
    rows = fig("fig-cel-resolution")
    assert len(rows) == 5
    for expression, value in rows:
        assert resolve_value(expression, variables) == value, expression


def test_single_evaluation_example():
    declared = TOOLS["get_customer"]["inputSchema"][MAPPING_KEY]
    built = mapper().build(CALL["method"], CALL["params"], TOKEN, declared=declared)
    assert built.api == "evaluation" and built.declared
    assert built.body == fig("fig-authzen-single")
    assert built.body == derived("single-evaluation")["request"]


def test_multi_evaluation_example():
    tool = fig("fig-coaz-multi")
    params = {"name": "copy_object",
              "arguments": {"source": "/bucket/reports/q1.pdf", "destination": "/bucket/archive/q1.pdf"}}
    built = mapper().build("tools/call", params, TOKEN, declared=tool["inputSchema"][MAPPING_KEY])
    assert built.api == "evaluations"
    assert built.body == fig("fig-authzen-multi")
    assert built.body == derived("multi-evaluation")["request"]
    # the decisions the envelope asks for: one per entry, the top-level defaults applied
    assert [d["action"]["name"] for d in built.decisions()] == ["read", "write"]
    assert all(d["subject"]["id"] == "alice@example.com" for d in built.decisions())


@pytest.mark.parametrize("branch", ["conditional-treasury", "conditional-standard"])
def test_conditional_expression_example_both_branches(branch):
    tool = fig("fig-coaz-conditions")
    case = derived(branch)
    token = {**TOKEN, **case["inputs"]["token"]}
    built = mapper().build("tools/call", case["inputs"]["params"], token, declared=tool["inputSchema"][MAPPING_KEY])
    assert built.body == case["request"]


def test_conditional_example_on_the_published_token_is_a_mapping_error():
    # fig-token-claims has no roles claim: plain selection of a missing key is an error
    tool = fig("fig-coaz-conditions")
    params = {"name": "transfer_funds",
              "arguments": {"from_account": "a", "to_account": "b", "amount": 1, "currency": "USD"}}
    with pytest.raises(MappingError) as e:
        mapper().build("tools/call", params, TOKEN, declared=tool["inputSchema"][MAPPING_KEY])
    assert e.value.message.startswith("COAZ mapping error: expression '$token.roles")


def test_the_default_mappings_are_the_published_ones():
    published = fig("default-mappings.json".removesuffix(".json"))
    for method, mapping in published.items():
        assert DEFAULT_MAPPINGS[method] == mapping, method
    # "resources/subscribe and resources/unsubscribe use the same shape; only action.name differs"
    for method, like in [("resources/subscribe", "resources/read"), ("resources/unsubscribe", "resources/read"),
                         ("tasks/result", "tasks/get"), ("tasks/cancel", "tasks/get")]:
        shape = copy.deepcopy(published[like])
        shape["evaluation"]["action"]["name"] = method
        assert DEFAULT_MAPPINGS[method] == shape
    envelope = fig("fig-default-envelope")["evaluation"]
    for method, mapping in DEFAULT_MAPPINGS.items():
        assert mapping["evaluation"]["subject"] == envelope["subject"], method
        assert mapping["evaluation"]["context"]["agent"] == envelope["context"]["agent"], method


@pytest.mark.parametrize("name,method", [("default-tools-list", "tools/list"),
                                         ("default-resources-list", "resources/list"),
                                         ("default-prompts-list", "prompts/list"),
                                         ("default-tasks-list", "tasks/list")])
def test_default_mapping_on_the_published_token(name, method):
    built = mapper().build(method, {}, TOKEN)
    assert built.api == "evaluation" and not built.declared
    assert built.body == derived(name)["request"]


def test_default_tools_call_for_the_tool_without_a_declared_mapping():
    # fig-tools-list: get_local_weather declares none, so the default tools/call mapping applies
    assert MAPPING_KEY not in TOOLS["get_local_weather"]["inputSchema"]
    built = mapper().build("tools/call", {"name": "get_local_weather", "arguments": {"zip": "94110"}}, TOKEN)
    assert built.body == derived("default-tools-call")["request"]


def test_default_tools_call_on_the_published_call_without_its_mapping():
    # the published tools/call, with get_customer's declaration ignored: the default shape
    built = mapper().build(CALL["method"], CALL["params"], TOKEN)
    assert built.body == {"subject": {"type": "identity", "id": "alice@example.com"},
                          "context": {"agent": "http://agentprovider.com/agent-app-id"},
                          "action": {"name": "tools/call"}, "resource": {"type": "tool", "id": "get_customer"}}


# ------------------------------------------------ defaults whose params the binding never shows

@pytest.mark.parametrize("method,params,resource,context", [
    ("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}},
     {"type": "mcp_server", "id": "https://mcp.example.com"}, {"protocol_version": "2025-06-18"}),
    ("resources/read", {"uri": "file:///r.txt"}, {"type": "resource", "id": "file:///r.txt"}, {}),
    ("resources/subscribe", {"uri": "file:///r.txt"}, {"type": "resource", "id": "file:///r.txt"}, {}),
    ("prompts/get", {"name": "greet"}, {"type": "prompt", "id": "greet"}, {}),
    ("completion/complete", {"ref": {"type": "ref/prompt", "name": "greet"}, "argument": {"name": "a", "value": "x"}},
     {"type": "prompt", "id": "greet"}, {}),
    ("completion/complete", {"ref": {"type": "ref/resource", "uri": "file:///{x}"}, "argument": {"name": "x", "value": "1"}},
     {"type": "resource", "id": "file:///{x}"}, {}),
    ("logging/setLevel", {"level": "debug"}, {"type": "mcp_server", "id": "https://mcp.example.com"}, {"level": "debug"}),
    ("tasks/get", {"taskId": "t-1"}, {"type": "task", "id": "t-1"}, {}),
    ("tasks/cancel", {"taskId": "t-1"}, {"type": "task", "id": "t-1"}, {}),
])
def test_defaults_on_stated_params(method, params, resource, context):
    built = mapper().build(method, params, TOKEN)
    assert built.body == {"subject": {"type": "identity", "id": "alice@example.com"},
                          "context": {"agent": "http://agentprovider.com/agent-app-id", **context},
                          "action": {"name": method}, "resource": resource}


# ------------------------------------------------------------------------------------ the rules

def test_pass_through_and_unknown_and_server_initiated():
    m = mapper()
    assert m.build("ping", None, None) is None
    assert m.build("notifications/initialized", None, None) is None
    assert m.build("notifications/cancelled", {"requestId": 1}, None) is None
    for method in ("frobnicate", "resources/templates/list", "sampling/createMessage", "roots/list",
                   "elicitation/create"):
        with pytest.raises(UnknownMethod) as e:
            m.build(method, {}, TOKEN)
        assert e.value.code == -32001
    # a deployment may configure a mapping for a further method
    extra = {"evaluation": {"action": {"name": "resources/templates/list"},
                            "resource": {"type": "mcp_server", "id": "$token.aud"},
                            "context": {"agent": "$token.?client_id"}}}
    built = Mapper(methods={"resources/templates/list": extra}).build("resources/templates/list", {}, TOKEN)
    assert built.body["subject"] == {"type": "identity", "id": "alice@example.com"}
    assert built.body["resource"]["id"] == "https://mcp.example.com"


def test_extra_mappings_decide_the_methods_the_binding_leaves_unmapped():
    """docs/agents.md#methods-the-binding-does-not-map: opt-in, the shape of the binding's
    initialize and resources/list under each method's own action name; nothing else changes."""
    assert set(EXTRA_MAPPINGS) == {"server/discover", "resources/templates/list"}
    assert not set(EXTRA_MAPPINGS) & set(DEFAULT_MAPPINGS)  # the binding's own stay as published
    for method in EXTRA_MAPPINGS:
        with pytest.raises(UnknownMethod):
            mapper().build(method, {}, TOKEN)  # denied by default, as the binding says
        built = mapper(methods=EXTRA_MAPPINGS).build(method, {}, TOKEN)
        assert built.api == "evaluation"
        assert built.body == {"subject": {"type": "identity", "id": "alice@example.com"},
                              "action": {"name": method},
                              "resource": {"type": "mcp_server", "id": "https://mcp.example.com"},
                              "context": {"agent": TOKEN["client_id"]}}
    m = mapper(methods=EXTRA_MAPPINGS)
    assert m.build("tools/list", {}, TOKEN).body == mapper().build("tools/list", {}, TOKEN).body
    with pytest.raises(UnknownMethod):
        m.build("subscriptions/listen", {}, TOKEN)


def test_absent_client_id_omits_the_agent():
    token = {k: v for k, v in TOKEN.items() if k != "client_id"}
    built = mapper().build("tools/list", {}, token)
    assert built.body["context"] == {}


def test_no_token_is_a_mapping_error():
    with pytest.raises(MappingError, match="no validated access token"):
        mapper().build("tools/list", {}, None)


def test_missing_param_is_a_mapping_error():
    with pytest.raises(MappingError) as e:
        mapper().build("resources/read", {}, TOKEN)
    assert e.value.code == -32602 and "no such key 'uri'" in e.value.message
    declared = {"evaluation": {"action": {"name": "x"},
                               "resource": {"type": "r", "id": "$params.arguments.region"}}}
    with pytest.raises(MappingError) as e:
        mapper().build("tools/call", {"name": "t", "arguments": {}}, TOKEN, declared=declared)
    assert e.value.message == "COAZ mapping error: expression '$params.arguments.region' failed: no such key 'region'"


def test_subject_anchor():
    # a declared mapping naming another subject is a mapping error, not a PDP call
    declared = {"evaluation": {"subject": {"type": "identity", "id": "$params.arguments.user"},
                               "action": {"name": "x"}, "resource": {"type": "r", "id": "1"}}}
    params = {"name": "t", "arguments": {"user": "bob@example.com"}}
    with pytest.raises(MappingError, match="not the validated token's 'sub' claim"):
        mapper().build("tools/call", params, TOKEN, declared=declared)
    # the same value as the claim passes the verification
    ok = mapper().build("tools/call", {"name": "t", "arguments": {"user": "alice@example.com"}}, TOKEN,
                        declared=declared)
    assert ok.body["subject"]["id"] == "alice@example.com" and not ok.subject_override
    # an explicit override, when the deployment allows it, is flagged
    over = Mapper(allow_subject_override=True).build("tools/call", params, TOKEN, declared=declared)
    assert over.body["subject"]["id"] == "bob@example.com" and over.subject_override
    # an omitted subject gets the claim and type identity
    bare = {"evaluation": {"action": {"name": "x"}, "resource": {"type": "r", "id": "1"}}}
    assert mapper().build("tools/call", {"name": "t"}, TOKEN, declared=bare).body["subject"] == \
        {"type": "identity", "id": "alice@example.com"}
    # the on-behalf-of claim
    token = {**TOKEN, "sub": "agent-7", "obo": "alice@example.com"}
    # "every use of $token.sub as subject.id ... is read as $token.C"
    assert Mapper(subject_claim="obo").build("tools/list", {}, token).body["subject"]["id"] == "alice@example.com"
    sub = {"evaluation": {"subject": {"id": "$token.sub"}, "action": {"name": "x"}, "resource": {"type": "r", "id": "1"}}}
    assert Mapper(subject_claim="obo").build("tools/call", {"name": "t"}, token, declared=sub).body["subject"]["id"] \
        == "alice@example.com"
    obo = {"evaluation": {"subject": {"id": "$token.obo"}, "action": {"name": "x"}, "resource": {"type": "r", "id": "1"}}}
    assert Mapper(subject_claim="obo").build("tools/call", {"name": "t"}, token, declared=obo).body["subject"]["id"] \
        == "alice@example.com"


def test_per_entry_subject_is_a_mapping_error():
    declared = copy.deepcopy(fig("fig-coaz-multi")["inputSchema"][MAPPING_KEY])
    declared["evaluations"]["evaluations"][1]["subject"] = {"type": "identity", "id": "$token.sub"}
    with pytest.raises(MappingError, match=r"evaluations\[1\] sets its own subject"):
        mapper().build("tools/call", {"name": "copy_object", "arguments": {"source": "a", "destination": "b"}},
                       TOKEN, declared=declared)


@pytest.mark.parametrize("mapping", [
    {}, {"evaluation": {}, "evaluations": {}}, {"decision": {}}, {"evaluation": []},
    {"evaluation": {"subject": {}, "action": {}, "resource": {}, "extra": 1}},
    {"evaluations": {"evaluations": []}}, {"evaluations": {"evaluations": [1]}},
])
def test_malformed_envelopes(mapping):
    with pytest.raises(MappingError):
        check_mapping(mapping)


def test_required_fields_and_types():
    for declared, msg in [
        ({"evaluation": {"resource": {"type": "r", "id": "1"}}}, "action is absent"),
        ({"evaluation": {"action": {"name": "x"}, "resource": {"type": "r", "id": "$params.?arguments.?id"}}},
         "resource.id must resolve"),
        ({"evaluation": {"action": {"name": "$params.arguments.n"}, "resource": {"type": "r", "id": "1"}}},
         "action.name must resolve"),
        ({"evaluation": {"action": {"name": "x"}, "resource": {"type": "r", "id": "1"}, "context": "$params.name"}},
         "context did not resolve"),
    ]:
        with pytest.raises(MappingError, match=msg):
            mapper().build("tools/call", {"name": "t", "arguments": {"n": 5}}, TOKEN, declared=declared)


def test_audience_rules():
    token = {**TOKEN, "aud": ["https://other.example.com", "https://mcp.example.com"]}
    assert Mapper(server_id="https://mcp.example.com").build("tools/list", {}, token).body["resource"]["id"] == \
        "https://mcp.example.com"
    with pytest.raises(MappingError, match="aud is a list"):
        Mapper().build("tools/list", {}, token)
    with pytest.raises(MappingError, match="aud"):
        Mapper().build("tools/list", {}, {"sub": "alice@example.com"})
    assert Mapper(server_id="urn:me", use_server_id=True).build("tools/list", {}, token).body["resource"]["id"] == \
        "urn:me"


def test_literals_escape_and_values():
    variables = {"params": {"arguments": {"amount": 12000, "tags": ["a", "b"], "n": None}}, "token": TOKEN}
    assert resolve_value("$$50", variables) == "$50"
    assert resolve_value("customer", variables) == "customer"
    assert resolve_value(10, variables) == 10 and resolve_value(True, variables) is True
    assert resolve_value("$params.arguments.tags", variables) == ["a", "b"]  # a list is one value
    assert resolve_value("$params.arguments.n", variables) is None
    assert resolve_value("$params.arguments.amount * 2", variables) == 24000
    assert resolve_value("$params.arguments.amount / 1000.0", variables) == 12.0
    assert resolve_value("$size(params.arguments.tags) > 1", variables) is True
    assert resolve_value("$token[\"sub\"]", variables) == "alice@example.com"
    assert resolve_value("$token.?nope", variables).__class__ is object  # absent


def test_cel_errors_and_bounds_fail_closed():
    variables = {"params": {"arguments": {"a": 1}}, "token": TOKEN}
    for expr, msg in [("$1/0", "failed"), ("$params.arguments.a +", "does not compile"),
                      ("$__import__('os')", "failed|does not compile"),
                      ("$token.?client_id == ''", "optional selection"),
                      ("$" + "1+" * 600 + "1", "longer than"),
                      ("$[1].all(x, [1].all(y, [1].all(z, [1].all(w, [1].exists(v, true)))))", "macros"),
                      ("$timestamp('2024-01-01T00:00:00Z')", "not a JSON value")]:
        with pytest.raises(MappingError, match=msg):
            resolve_value(expr, variables)
    with pytest.raises(MappingError, match="larger than"):
        Mapper().build("tools/call", {"name": "t", "arguments": {"x": "y" * 300_000}}, TOKEN)
