"""COAZ-shaped AuthZEN requests (docs/server.md#coaz): every COAZ-MCP example in
tests/data/coaz/ is mapped as the documented mapping says and decided, over the app, by a
policy set written for policylang's own guard; the same set gives the same decision for
the equivalent request our own guard sends; bad shapes are 400s naming the field."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():  # starlette suggests httpx2; the httpx client works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

import policylang
from policylang.language.errors import RequestError
from policylang.server import ServiceConfig, authzen, coaz, create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DATA = Path(__file__).resolve().parent / "data" / "coaz"
POLICIES = DATA / "policies"

AGENT_ID = "http://agentprovider.com/agent-app-id"
AGENT = {"id": AGENT_ID, "kind": "agent", "attrs": {}}
ALICE = {"id": "alice@example.com", "kind": "human", "attrs": {}}


def _example(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


def _mapped(action: str, resource: dict, context: dict | None = None, subject_type: str = "identity") -> dict:
    """What the mapping says a COAZ request of alice's agent becomes."""
    return {"principal": AGENT, "action": {"name": action, "attrs": {}},
            "resource": {"attrs": {}, **resource},
            "context": {**(context or {}), "subject_type": subject_type},
            "delegation": [ALICE]}


SERVER = {"type": "mcp_server", "id": "https://mcp.example.com"}

#: example -> (the policylang request(s) it maps to, the decisions: (decision, rules))
EXPECTED = {
    "single-evaluation": (
        [_mapped("get_customer", {"type": "customer", "id": "cust-12345"}, {"case": "case-67890"})],
        [("allow", ["agents-read-customers-for-a-case"])]),
    "multi-evaluation": (
        [_mapped("read", {"type": "storage_object", "id": "/bucket/reports/q1.pdf"}),
         _mapped("write", {"type": "storage_object", "id": "/bucket/archive/q1.pdf"})],
        # alice may read the reports but not write the archive: her agent's storage scope
        # cannot widen that (attenuation: no rules, the reason names her)
        [("allow", ["agents-use-storage"]), ("deny", [])]),
    "conditional-treasury": (
        [_mapped("international_transfer",
                 {"type": "account", "id": "acct-001", "attrs": {"sensitivity": "high"}},
                 {"target_account": "acct-777"}, subject_type="treasury_user")],
        [("require_approval", ["transfers-over-the-limit-need-a-manager"])]),
    "conditional-standard": (
        [_mapped("domestic_transfer",
                 {"type": "account", "id": "acct-001", "attrs": {"sensitivity": "standard"}},
                 {"target_account": "acct-777"}, subject_type="standard_user")],
        [("allow", ["agents-move-money"])]),
    "default-tools-list": ([_mapped("tools/list", SERVER)], [("allow", ["agents-list-the-server"])]),
    "default-tools-call": ([_mapped("tools/call", {"type": "tool", "id": "get_local_weather"})],
                           [("allow", ["agents-call-their-tools"])]),
    "default-resources-list": ([_mapped("resources/list", SERVER)], [("allow", ["agents-list-the-server"])]),
    "default-prompts-list": ([_mapped("prompts/list", SERVER)], [("allow", ["agents-list-the-server"])]),
    # alice may list tasks herself; no rule lets an agent: denied by default
    "default-tasks-list": ([_mapped("tasks/list", SERVER)], [("deny", [])]),
}


@pytest.fixture(scope="module")
def client():
    app = create_app(ServiceConfig(path=str(POLICIES)), watch=False)
    with TestClient(app) as c:
        yield c


def _answers(response) -> list[dict]:
    assert response.status_code == 200, response.text
    body = response.json()
    return body.get("evaluations", [body])


def _native(req: dict) -> dict:
    """The AuthZEN request policylang's own guard sends for the same call: the agent as
    the subject, the person in context.delegation, no trace of COAZ."""
    ctx = {k: v for k, v in req["context"].items() if k != "subject_type"}
    ctx["delegation"] = [{"type": e["kind"], "id": e["id"], "properties": e["attrs"]} for e in req["delegation"]]
    p, r = req["principal"], req["resource"]
    return {"subject": {"type": p["kind"], "id": p["id"], "properties": p["attrs"]},
            "action": {"name": req["action"]["name"], "properties": req["action"]["attrs"]},
            "resource": {"type": r["type"], "id": r["id"], "properties": r["attrs"]},
            "context": ctx}


def test_every_example_file_is_tested_and_says_where_it_comes_from():
    names = sorted(p.stem for p in DATA.glob("*.json"))
    assert names == sorted(EXPECTED)
    for name in names:
        ex = _example(name)
        src = ex["source"]
        assert (src["repository"], src["commit"], src["file"]) == (
            "openid/authzen", "e287920", "authzen-coaz-mcp-binding-1_0.md"), name
        assert src["section"] and ex["note"] and isinstance(ex["derived"], bool)
        assert coaz.is_coaz(ex["request"]), name
    # the two resolved requests the binding itself prints are taken as they are
    assert [n for n in names if not _example(n)["derived"]] == ["multi-evaluation", "single-evaluation"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_published_example_is_mapped_and_decided_as_the_mapping_says(client, name):
    ex = _example(name)
    mapped, decisions = EXPECTED[name]
    body = ex["request"]
    # the mapping: the agent acts, the user is the root of its chain
    if ex["endpoint"] == "/access/v1/evaluations":
        got = authzen.parse_batch(body).items
    else:
        got = [authzen.to_request(body)]
    assert got == mapped
    # the decision over the app
    # (batch items carry their decision context only when asked: docs/server.md#decision-context)
    answers = _answers(client.post(ex["endpoint"], json={**body, "options": {"decision_context": True}}))
    assert [(a["context"]["decision"], a["context"]["rules"]) for a in answers] == decisions
    for a, (decision, _rules) in zip(answers, decisions):
        assert a["decision"] is (decision == "allow")
        assert a["context"]["delegation_path"] == ["alice@example.com", AGENT_ID]
    # one policy set behind both PEPs: our guard's request for the same call, over
    # AuthZEN and over /v1/decide, is decided the same way, rules and reasons included
    for req, a in zip(mapped, answers):
        native = _answers(client.post("/access/v1/evaluation", json=_native(req)))[0]
        assert native == a
        direct = client.post("/v1/decide", json={**req, "context": {
            k: v for k, v in req["context"].items() if k != "subject_type"}})
        assert direct.status_code == 200, direct.text
        assert direct.json() == a["context"]


def test_the_multi_evaluation_denial_names_the_user_who_lacks_the_authority(client):
    body = {**_example("multi-evaluation")["request"], "options": {"decision_context": True}}
    answers = _answers(client.post("/access/v1/evaluations", json=body))
    assert answers[1]["context"]["reasons"] == [
        "delegator alice@example.com is not allowed to write this resource (attenuate_delegation)"]
    # deny_on_first_deny stops there, as for any batch
    body = {**_example("multi-evaluation")["request"], "options": {"evaluations_semantic": "deny_on_first_deny"}}
    body["evaluations"] = list(reversed(body["evaluations"]))
    assert [a["decision"] for a in _answers(client.post("/access/v1/evaluations", json=body))] == [False]


@pytest.mark.parametrize("subject_type", ["identity", "treasury_user", "standard_user", "admin"])
def test_the_declared_subject_type_never_changes_the_decision(client, subject_type):
    """COAZ-MCP, Untrusted Declared-Mapping Attributes: subject.type is set by the MCP
    server's mapping. The user is always kind human, so the type can pick neither rules
    nor entity data; it is kept only as context.subject_type."""
    for name in ("conditional-treasury", "conditional-standard"):
        body = copy.deepcopy(_example(name)["request"])
        want = _answers(client.post("/access/v1/evaluation", json=body))[0]
        body["subject"]["type"] = subject_type
        got = _answers(client.post("/access/v1/evaluation", json=body))[0]
        assert got == want
        assert authzen.to_request(body)["delegation"] == [ALICE]


def test_subject_properties_cannot_assert_groups(client):
    """The subject's properties are untrusted too: for a person on record (human is
    authoritative in this set) they are ignored, so bob cannot claim alice's groups."""
    body = copy.deepcopy(_example("single-evaluation")["request"])
    body["subject"] = {"type": "identity", "id": "bob@example.com",
                       "properties": {"groups": ["support", "treasury"]}}
    a = _answers(client.post("/access/v1/evaluation", json=body))[0]
    assert a["decision"] is False
    assert a["context"]["reasons"] == [
        "delegator bob@example.com is not allowed to get_customer this resource (attenuate_delegation)"]


def test_an_agent_object_maps_like_an_authzen_entity(client):
    body = copy.deepcopy(_example("default-tools-call")["request"])
    body["context"]["agent"] = {"type": "agent", "id": AGENT_ID, "properties": {"tools": ["get_local_weather"]},
                                "vendor": "ignored, like any unknown field"}
    req = authzen.to_request(body)
    assert req["principal"] == {"id": AGENT_ID, "kind": "agent", "attrs": {"tools": ["get_local_weather"]}}
    assert "agent" not in req["context"]
    assert _answers(client.post("/access/v1/evaluation", json=body))[0]["context"]["rules"] == [
        "agents-call-their-tools"]
    # its type may be left out; the agent's stored record still wins over its properties
    body["context"]["agent"] = {"id": AGENT_ID, "properties": {"tools": []}}
    assert _answers(client.post("/access/v1/evaluation", json=body))[0]["decision"] is True


def test_risk_intent_and_approval_are_lifted_as_for_any_authzen_request():
    body = copy.deepcopy(_example("default-tools-list")["request"])
    body["context"].update(risk={"score": 0.2}, intent={"task_id": "T-1"}, approval="apr_1", ip="10.0.0.1")
    req = authzen.to_request(body)
    assert (req["risk"], req["intent"], req["approval"]) == ({"score": 0.2}, {"task_id": "T-1"}, "apr_1")
    assert req["context"] == {"ip": "10.0.0.1", "subject_type": "identity"}
    assert req["principal"] == AGENT and req["delegation"] == [ALICE]


def test_without_an_agent_the_request_is_not_coaz_shaped(client):
    """$token.?client_id absent (or null) leaves no context.agent: the user acts
    directly, mapped like any AuthZEN request, and this set has no rule for kind identity."""
    for ctx in ({}, {"agent": None}):
        body = {"subject": {"type": "identity", "id": "alice@example.com"}, "context": ctx,
                "action": {"name": "tools/list"}, "resource": SERVER}
        assert not coaz.is_coaz(body)
        req = authzen.to_request(body)
        assert req["principal"] == {"id": "alice@example.com", "kind": "identity", "attrs": {}}
        assert "delegation" not in req and "agent" not in req["context"]
        a = _answers(client.post("/access/v1/evaluation", json=body))[0]
        assert (a["decision"], a["context"]["delegation_path"]) == (False, ["alice@example.com"])


def test_action_search_takes_a_coaz_request_and_matches_our_guard(client):
    body = copy.deepcopy(_example("multi-evaluation")["request"])
    query = {"subject": body["subject"], "context": body["context"],
             "resource": {"type": "storage_object", "id": "/bucket/reports/q1.pdf"}}
    r = client.post("/access/v1/search/action", json=query)
    assert r.status_code == 200, r.text
    assert r.json()["results"] == [{"name": "read"}]
    native = _native(authzen.to_request({**query, "action": {"name": "read"}}))
    del native["action"]
    assert client.post("/access/v1/search/action", json=native).json()["results"] == [{"name": "read"}]


def _deep(levels: int) -> dict:
    v: dict = {}
    for _ in range(levels):
        v = {"a": v}
    return v


DEEP_FIELD = "." + ".".join(["a"] * 64)

BAD = [
    ("agent-number", {"agent": 42}, "context.agent: expected a string (the agent's id) or an object with id, got number"),
    ("agent-list", {"agent": ["x"]}, "context.agent: expected a string (the agent's id) or an object with id, got list"),
    ("agent-empty", {"agent": ""}, "context.agent: must not be empty"),
    ("agent-no-id", {"agent": {"type": "agent"}}, "context.agent.id: required"),
    ("agent-id-number", {"agent": {"id": 7}}, "context.agent.id: expected a string, got number"),
    ("agent-id-empty", {"agent": {"id": ""}}, "context.agent.id: must not be empty"),
    ("agent-type-human", {"agent": {"type": "human", "id": "x"}},
     "context.agent.type: must be 'agent' (the agent's kind is fixed), got 'human'"),
    ("agent-type-number", {"agent": {"type": 1, "id": "x"}}, "context.agent.type: expected a string, got number"),
    ("agent-properties-list", {"agent": {"id": "x", "properties": [1]}},
     "context.agent.properties: expected an object, got list"),
    ("agent-properties-deep", {"agent": {"id": "x", "properties": _deep(70)}},
     "context.agent.properties" + DEEP_FIELD + ": nested deeper than 64 levels"),
    ("agent-with-delegation", {"agent": AGENT_ID, "delegation": [{"type": "human", "id": "alice@example.com"}]},
     "context.delegation: not allowed with context.agent (a COAZ request: the subject delegates to the agent)"),
    ("agent-with-empty-delegation", {"agent": AGENT_ID, "delegation": []},
     "context.delegation: not allowed with context.agent (a COAZ request: the subject delegates to the agent)"),
    ("agent-with-subject-type", {"agent": AGENT_ID, "subject_type": "admin"},
     "context.subject_type: not allowed with context.agent (a COAZ request: it carries subject.type)"),
]


@pytest.mark.parametrize("name,context,message", BAD, ids=[b[0] for b in BAD])
def test_bad_coaz_shapes_are_400_naming_the_field(client, name, context, message):
    body = {"subject": {"type": "identity", "id": "alice@example.com"}, "action": {"name": "tools/list"},
            "resource": SERVER, "context": context}
    with pytest.raises(authzen.BadRequest) as info:
        authzen.to_request(body)
    assert info.value.message == message
    for endpoint in ("/access/v1/evaluation", "/access/v1/evaluations"):
        r = client.post(endpoint, json=body)
        assert r.status_code == 400, r.text
        assert r.json() == {"error": {"status": 400, "message": message}}
    # in a batch, only the bad entry fails, named by its place
    batch = {"evaluations": [{**body, "context": {"agent": AGENT_ID}}, body]}
    answers = _answers(client.post("/access/v1/evaluations", json=batch))
    assert answers[0]["decision"] is True
    assert answers[1] == {"decision": False, "context": {"error": {"status": 400,
                                                                   "message": "evaluations[1]." + message}}}


def test_deep_subject_properties_are_named_as_the_subject_s(client):
    body = copy.deepcopy(_example("default-tools-list")["request"])
    body["subject"]["properties"] = _deep(70)
    r = client.post("/access/v1/evaluation", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "subject.properties" + DEEP_FIELD + ": nested deeper than 64 levels"


def test_a_missing_subject_id_is_named_as_the_subject_s(client):
    body = copy.deepcopy(_example("default-tools-list")["request"])
    del body["subject"]["id"]
    r = client.post("/access/v1/evaluation", json=body)
    assert (r.status_code, r.json()["error"]["message"]) == (400, "subject.id: required")


def test_an_evaluations_entry_may_not_bring_its_own_subject_under_a_coaz_context(client):
    """COAZ-MCP, Declared Mappings: 'to close off identity smuggling' the one top-level
    subject is the user of every evaluation; an entry with its own is refused, alone."""
    body = copy.deepcopy(_example("multi-evaluation")["request"])
    body["evaluations"][1]["subject"] = {"type": "identity", "id": "mallory@example.com"}
    answers = _answers(client.post("/access/v1/evaluations", json=body))
    assert answers[0]["decision"] is True
    assert answers[1] == {"decision": False, "context": {"error": {"status": 400, "message": (
        "evaluations[1].subject: not allowed under a COAZ context.agent: the top-level subject is "
        "the user of every evaluation")}}}
    # an entry with its own context (no agent) is an ordinary AuthZEN entry again
    body["evaluations"][1]["context"] = {}
    assert authzen.parse_batch(body).items[1]["principal"]["id"] == "mallory@example.com"
    # a batch without a top-level subject may carry a whole COAZ request per entry
    whole = {"evaluations": [_example("default-tools-list")["request"], _example("default-tasks-list")["request"]]}
    assert [a["decision"] for a in _answers(client.post("/access/v1/evaluations", json=whole))] == [True, False]


def test_a_subject_search_with_a_coaz_agent_is_refused(client):
    body = {"subject": {"type": "identity"}, "context": {"agent": AGENT_ID},
            "action": {"name": "tools/list"}, "resource": SERVER}
    r = client.post("/access/v1/search/subject", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == ("context.agent: a subject search cannot take a COAZ agent: "
                                            "its candidates would stand for the agent, not the user")


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=10)
_agents = _values | st.fixed_dictionaries({}, optional={"type": _values | st.just("agent"),
                                                        "id": _values | st.just(AGENT_ID),
                                                        "properties": _values})
_ENGINE = policylang.Engine(policylang.load(POLICIES))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(agent=_agents, delegation=st.none() | _values, subject_type=st.none() | _values,
       subject=st.fixed_dictionaries({"type": st.just("identity")}, optional={"id": _values, "properties": _values}),
       per_entry=st.booleans())
def test_any_coaz_shape_maps_or_is_a_400(agent, delegation, subject_type, subject, per_entry):
    """Whatever context.agent and its neighbours hold, the mapping yields requests the
    engine decides (or names in the request's own terms) or a BadRequest naming a field."""
    ctx = {"agent": agent}
    if delegation is not None:
        ctx["delegation"] = delegation
    if subject_type is not None:
        ctx["subject_type"] = subject_type
    body = {"subject": subject, "action": {"name": "tools/list"}, "resource": SERVER, "context": ctx}
    batch = {"subject": subject, "context": ctx,
             "evaluations": [{"action": {"name": "read"}, "resource": {"type": "storage_object", "id": "/x"},
                              **({"subject": subject} if per_entry else {})}]}
    for parse in (lambda: [authzen.to_request(body)], lambda: authzen.parse_batch(batch).items,
                  lambda: [authzen.parse_search(body, "action").request]):
        try:
            reqs = parse()
        except authzen.BadRequest as e:
            assert ": " in e.message
            continue
        for req in reqs:
            if isinstance(req, authzen.BadRequest):
                assert req.message.startswith("evaluations[0].")
                continue
            if agent is not None:  # mapped: the agent acts for the subject
                assert req["principal"]["kind"] == "agent" and req["delegation"][0]["kind"] == "human"
            try:
                _ENGINE.decide(req)
            except RequestError as e:
                assert authzen.request_error(e).message
