"""The AuthZEN mapping's interop gaps (docs/server.md#authzen-evaluation,
#decision-context, #batch), each over the app and, where the mapping alone decides,
on the pure functions of policylang/server/authzen.py:

1. the decision context is an option: batch items answer ``{"decision": …}`` alone unless
   asked, the single evaluation keeps it unless told not to; AARP answers keep theirs;
2. reserved context keys are lifted only in policylang's shape, else left in ``context``,
   and a key left there never stands in for the root (risk, approval, delegation, agent);
3. members beside ``type``/``id`` are attributes (``properties`` wins; never ``proven_by``);
4. a bad top-level default of a batch is a 400 naming the top-level field.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette suggests httpx2; the httpx client works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from policylang.server import ServiceConfig, authzen, create_app

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DATA = Path(__file__).resolve().parent / "data"
GAPS = DATA / "authzen" / "gaps"
CERT = DATA / "authzen-cert"

ANN = {"type": "user", "id": "ann"}
DOC = {"type": "doc", "id": "d1"}
FULL_CONTEXT = {"decision", "rules", "reasons", "grants", "approvers", "errors", "delegation_path", "policy_version"}


@pytest.fixture(scope="module")
def gaps():
    with TestClient(create_app(ServiceConfig(path=str(GAPS)), watch=False)) as c:
        yield c


@pytest.fixture(scope="module")
def cert():
    with TestClient(create_app(ServiceConfig(path=str(CERT)), watch=False)) as c:
        yield c


def _eval(client, body, status=200, path="/access/v1/evaluation"):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    return r.json()


def _req(action: str, context=None, **over) -> dict:
    body = {"subject": ANN, "action": {"name": action}, "resource": DOC}
    if context is not None:
        body["context"] = context
    body.update(over)
    return body


# ------------------------------------------------------------- 1. the decision context

def test_batch_items_are_exactly_the_decisions_by_default(gaps):
    body = {"subject": ANN, "resource": DOC,
            "evaluations": [{"action": {"name": "read"}}, {"action": {"name": "peek"}}, {"action": {"name": "read"}}]}
    r = gaps.post("/access/v1/evaluations", json=body)
    assert r.status_code == 200
    assert r.json() == {"evaluations": [{"decision": True}, {"decision": False}, {"decision": True}]}
    # byte for byte what an interop runner's JSON.stringify compares
    assert json.dumps(r.json()["evaluations"], separators=(",", ":")) == \
        '[{"decision":true},{"decision":false},{"decision":true}]'


def test_batch_items_carry_the_context_when_asked(gaps):
    body = {"subject": ANN, "resource": DOC, "options": {"decision_context": True},
            "evaluations": [{"action": {"name": "read"}}, {"action": {"name": "peek"}}]}
    ev = _eval(gaps, body, path="/access/v1/evaluations")["evaluations"]
    assert [set(e["context"]) for e in ev] == [FULL_CONTEXT, FULL_CONTEXT]
    assert ev[0]["context"]["rules"] == ["users-read"] and ev[1]["context"]["decision"] == "deny"
    # the option composes with the semantics
    body["options"]["evaluations_semantic"] = "deny_on_first_deny"
    body["evaluations"].append({"action": {"name": "read"}})
    assert len(_eval(gaps, body, path="/access/v1/evaluations")["evaluations"]) == 2


def test_single_evaluation_keeps_its_context_unless_told_not_to(gaps):
    a = _eval(gaps, _req("read"))
    assert a["decision"] is True and set(a["context"]) == FULL_CONTEXT
    assert _eval(gaps, _req("read", options={"decision_context": False})) == {"decision": True}
    assert _eval(gaps, _req("peek", options={"decision_context": False})) == {"decision": False}
    # the single-evaluation form of /access/v1/evaluations answers the same way
    assert set(_eval(gaps, _req("read"), path="/access/v1/evaluations")["context"]) == FULL_CONTEXT
    assert _eval(gaps, _req("read", options={"decision_context": False}),
                 path="/access/v1/evaluations") == {"decision": True}


def test_an_item_that_cannot_be_decided_keeps_its_error_context(gaps):
    body = {"subject": ANN, "action": {"name": "read"},
            "evaluations": [{"resource": DOC}, {"resource": {"type": "doc"}}]}
    ev = _eval(gaps, body, path="/access/v1/evaluations")["evaluations"]
    assert ev == [{"decision": True}, {"decision": False, "context": {"error": {
        "status": 400, "message": "evaluations[1].resource.id: required"}}}]


@pytest.mark.parametrize("path", ["/access/v1/evaluation", "/access/v1/evaluations"])
@pytest.mark.parametrize("options,message", [
    ({"decision_context": "yes"}, "options.decision_context: expected a boolean, got string"),
    ({"decision_context": 1}, "options.decision_context: expected a boolean, got number"),
    ("full", "options: expected an object, got string"),
])
def test_a_bad_context_option_is_400_naming_it(gaps, path, options, message):
    for body in (_req("read", options=options),
                 {"subject": ANN, "resource": DOC, "options": options, "evaluations": [{"action": {"name": "read"}}]}):
        assert _eval(gaps, body, 400, path)["error"]["message"] == message


def test_v1_decide_still_answers_the_whole_decision(gaps):
    d = _eval(gaps, {"principal": {"kind": "user", "id": "ann"}, "action": "read", "resource": {"type": "doc", "id": "d1"}},
              path="/v1/decide")
    assert set(d) >= FULL_CONTEXT and d["decision"] == "allow"


# -------------------------------------------------------- 2. free-form context keys

FREE_FORM = [
    ("risk as a string", {"risk": "high"}),
    ("risk.score as a string", {"risk": {"score": "0.3"}}),
    ("risk.signals as a string", {"risk": {"score": 0.1, "signals": "new_device"}}),
    ("intent as a string", {"intent": "fix the bug"}),
    ("approval true", {"approval": True}),
    ("approval a number", {"approval": 5}),
    ("delegation as a string", {"delegation": "alice"}),
    ("delegation as a list of ids", {"delegation": ["alice", "bob"]}),
]


@pytest.mark.parametrize("name,context", FREE_FORM, ids=[f[0] for f in FREE_FORM])
def test_a_reserved_key_of_another_shape_stays_in_context(gaps, name, context):
    req = authzen.to_request(_req("read", {**context, "ip": "10.0.0.1"}))
    assert req["context"] == {**context, "ip": "10.0.0.1"}
    assert not set(context) & set(req)  # no root made from it
    a = _eval(gaps, _req("read", {**context, "ip": "10.0.0.1"}))
    assert a["decision"] is True and a["context"]["delegation_path"] == ["ann"]
    # batch items too, and a top-level default of that shape is no 400 either
    body = {"subject": ANN, "resource": DOC, "context": context, "evaluations": [{"action": {"name": "read"}}]}
    assert _eval(gaps, body, path="/access/v1/evaluations") == {"evaluations": [{"decision": True}]}


def test_the_policy_reads_the_key_left_in_context(gaps):
    assert _eval(gaps, _req("peek", {"risk": "high"}))["decision"] is True
    assert _eval(gaps, _req("peek", {"risk": "low"}))["decision"] is False
    # a lifted risk is the risk root, not context.risk
    assert _eval(gaps, _req("peek", {"risk": {"score": 0.9}}))["decision"] is False


def test_a_risk_left_in_context_is_no_risk_and_fails_closed(gaps):
    # the forbid reads risk.score: without a risk root it raises, and a raising forbid denies
    for ctx in ({"risk": "low"}, {"risk": {"score": "0.1"}}, {}):
        a = _eval(gaps, _req("scored", ctx))
        assert a["decision"] is False and a["context"]["errors"][0]["rule"] == "no-risky-scored-reads", ctx
    assert _eval(gaps, _req("scored", {"risk": {"score": 0.1}}))["decision"] is True
    assert _eval(gaps, _req("scored", {"risk": {"score": 0.9}}))["decision"] is False


def test_approval_true_is_no_approval(gaps):
    mine = {"type": "doc", "id": "d1", "properties": {"owner": "ann"}}
    a = _eval(gaps, _req("refund", {"approval": True}, resource=mine))
    assert a["decision"] is False and a["context"]["decision"] == "require_approval"
    assert a["context"]["approvers"] == ["finance"]
    req = authzen.to_request(_req("refund", {"approval": True}, resource=mine))
    assert "approval" not in req and req["context"] == {"approval": True}
    # a ticket id is policylang's shape: lifted (and not confirmed here: no store)
    req = authzen.to_request(_req("refund", {"approval": "apr_1"}, resource=mine))
    assert req["approval"] == "apr_1" and req["context"] == {}
    assert _eval(gaps, _req("refund", {"approval": "apr_1"}, resource=mine))["context"]["decision"] == "require_approval"


def test_a_delegation_left_in_context_is_no_chain(gaps):
    a = _eval(gaps, _req("read", {"delegation": "alice"}))
    assert a["context"]["delegation_path"] == ["ann"]
    a = _eval(gaps, _req("read", {"delegation": [{"type": "user", "id": "alice"}]}))
    assert a["context"]["delegation_path"] == ["alice", "ann"]


STILL_STRICT = [
    # policylang's shape with a bad value: lifted, then checked as before
    ("risk.score out of range", {"risk": {"score": 3}}, "context.risk.score: must be between 0 and 1, got 3"),
    ("risk.signals entry", {"risk": {"signals": [1]}}, "context.risk.signals[0]: expected a string, got number"),
    ("delegation entry without id", {"delegation": [{"type": "user"}]}, "context.delegation[0].id: required"),
    ("delegation null entry", {"delegation": [{"type": "user", "id": "a"}, None]}, "context.delegation[1]: null entry"),
    # the COAZ agent is always a COAZ request: a wrong shape is never the user acting alone
    ("agent a number", {"agent": 5}, "context.agent: expected a string (the agent's id) or an object with id"),
    ("agent without id", {"agent": {"type": "agent"}}, "context.agent.id: required"),
    ("agent with a string delegation", {"agent": "bot", "delegation": "alice"}, "context.delegation: not allowed"),
]


@pytest.mark.parametrize("name,context,message", STILL_STRICT, ids=[s[0] for s in STILL_STRICT])
def test_policylang_shapes_and_the_agent_stay_strict(gaps, name, context, message):
    assert _eval(gaps, _req("read", context), 400)["error"]["message"].startswith(message)


@pytest.mark.parametrize("body,message", [
    ({"risk": "high"}, "risk: expected an object"),
    ({"risk": {"score": "0.3"}}, "risk.score: expected a number, got string"),
    ({"approval": True}, "approval: expected a string, got bool"),
    ({"delegation": "alice"}, "delegation: expected a list, got string"),
    ({"intent": "x"}, "intent: expected an object"),
])
def test_v1_decide_keeps_its_strict_checks(gaps, body, message):
    req = {"principal": {"kind": "user", "id": "ann"}, "action": "read", "resource": {"type": "doc", "id": "d1"}, **body}
    assert _eval(gaps, req, 400, "/v1/decide")["error"]["message"].startswith(message)


# ------------------------------------------------------ 3. attributes beside type/id

def test_members_beside_type_and_id_are_attributes(cert):
    # the draft-00 shape: the owner beside type/id
    req = authzen.to_request({"subject": {"type": "user", "id": "alice", "role": "admin"},
                              "action": {"name": "delete", "soft": True},
                              "resource": {"type": "record", "id": "r9", "owner": "alice", "status": "active"}})
    assert req["principal"]["attrs"] == {"role": "admin"}
    assert req["action"]["attrs"] == {"soft": True}
    assert req["resource"]["attrs"] == {"owner": "alice", "status": "active"}
    # over the app they decide: alice owns r9 only through the member beside type/id
    soft = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "delete", "soft": True},
            "resource": {"type": "record", "id": "r9", "owner": "alice"}}
    a = _eval(cert, soft)
    assert a["decision"] is True and a["context"]["rules"] == ["owners-soft-delete"]
    assert _eval(cert, {**soft, "resource": {"type": "record", "id": "r9"}})["decision"] is False


def test_properties_win_over_members_beside(cert):
    body = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "delete", "soft": True},
            "resource": {"type": "record", "id": "r9", "owner": "alice", "properties": {"owner": "bob"}}}
    assert authzen.to_request(body)["resource"]["attrs"] == {"owner": "bob"}
    assert _eval(cert, body)["decision"] is False
    body["action"] = {"name": "delete", "soft": True, "properties": {"soft": False}}
    body["resource"] = {"type": "record", "id": "r9", "owner": "bob", "properties": {"owner": "alice"}}
    assert authzen.to_request(body)["action"]["attrs"] == {"soft": False}
    assert _eval(cert, body)["decision"] is False


def test_null_members_and_the_entity_fields_are_not_attributes():
    req = authzen.to_request({"subject": {"type": "user", "id": "a", "note": None, "properties": None},
                              "action": {"name": "read", "properties": {}},
                              "resource": {"type": "doc", "id": "d"}})
    assert req["principal"]["attrs"] == {} and req["action"]["attrs"] == {} and req["resource"]["attrs"] == {}


def test_proven_by_beside_type_and_id_is_never_an_attribute():
    # only a verified proof sets proven_by (docs/server.md#workload-identity)
    body = {"subject": {"type": "agent", "id": "spiffe://example.org/a", "proven_by": "jwt-svid", "team": "x"},
            "action": {"name": "read"}, "resource": {"type": "doc", "id": "d", "proven_by": "x509-svid"},
            "context": {"delegation": [{"type": "user", "id": "u", "proven_by": "jwt-svid"}]}}
    req = authzen.to_request(body)
    assert req["principal"]["attrs"] == {"team": "x"}
    assert req["resource"]["attrs"] == {} and req["delegation"][0]["attrs"] == {}
    batch = authzen.parse_batch({"subject": body["subject"], "evaluations": [{"action": {"name": "read"},
                                                                              "resource": {"type": "doc", "id": "d"}}]})
    assert batch.items[0]["principal"]["attrs"] == {"team": "x"}


def test_members_beside_apply_to_batch_items_search_and_delegation(cert):
    ev = _eval(cert, {"subject": {"type": "user", "id": "alice"}, "action": {"name": "delete", "soft": True},
                      "evaluations": [{"resource": {"type": "record", "id": "r9", "owner": "alice"}},
                                      {"resource": {"type": "record", "id": "r9", "owner": "bob"}}]},
               path="/access/v1/evaluations")
    assert ev == {"evaluations": [{"decision": True}, {"decision": False}]}
    # search: a member beside type on the searched entity applies to every candidate
    r = cert.post("/access/v1/search/resource", json={"subject": {"type": "user", "id": "bob"},
                                                      "action": {"name": "write"},
                                                      "resource": {"type": "record", "status": "active", "owner": "bob"}})
    assert r.status_code == 200, r.text
    assert {x["id"] for x in r.json()["results"]} == {"record-1", "record-2"}
    req = authzen.to_request({"subject": ANN, "action": {"name": "read"}, "resource": DOC,
                              "context": {"delegation": [{"type": "user", "id": "root", "tier": "gold"}]}})
    assert req["delegation"] == [{"kind": "user", "id": "root", "attrs": {"tier": "gold"}}]


# ------------------------------------------------------ 4. top-level batch defaults

TOP_LEVEL = [
    ("subject without id", {"subject": {"type": "user"}}, "subject.id: required"),
    ("subject.properties a list", {"subject": {"type": "user", "id": "a", "properties": [1]}},
     "subject.properties: expected an object, got list"),
    ("action without name", {"action": {"properties": {}}}, "action.name: required"),
    ("resource.type a number", {"resource": {"type": 7, "id": "d"}}, "resource.type: expected a string, got number"),
    ("context.risk.score out of range", {"context": {"risk": {"score": 5}}},
     "context.risk.score: must be between 0 and 1, got 5"),
    ("context.delegation entry without id", {"context": {"delegation": [{"type": "user"}]}},
     "context.delegation[0].id: required"),
    ("context.agent a number", {"context": {"agent": 5}}, "context.agent: expected a string"),
    ("context a list", {"context": [1]}, "context: expected an object, got list"),
]
WHOLE_ITEM = {"subject": ANN, "action": {"name": "read"}, "resource": DOC, "context": {}}


@pytest.mark.parametrize("name,top,message", TOP_LEVEL, ids=[t[0] for t in TOP_LEVEL])
def test_a_bad_top_level_default_is_400_naming_it(gaps, name, top, message):
    # even when every item brings its own (the default would never be used) ...
    body = {**top, "evaluations": [WHOLE_ITEM, WHOLE_ITEM]}
    assert _eval(gaps, body, 400, "/access/v1/evaluations")["error"]["message"].startswith(message)
    # ... and when items would inherit it: one 400, not one error per item
    body = {**top, "evaluations": [{}, {}]}
    assert _eval(gaps, body, 400, "/access/v1/evaluations")["error"]["message"].startswith(message)
    with pytest.raises(authzen.BadRequest) as e:
        authzen.parse_batch({**top, "evaluations": [WHOLE_ITEM]})
    assert e.value.message.startswith(message) and not e.value.message.startswith("evaluations[")


def test_a_good_top_level_default_still_fills_items_in(gaps):
    body = {"subject": ANN, "resource": DOC, "context": {"risk": {"score": 0.9}},
            "evaluations": [{"action": {"name": "scored"}},
                            {"action": {"name": "scored"}, "context": {"risk": {"score": 0.1}}}]}
    assert _eval(gaps, body, path="/access/v1/evaluations") == {"evaluations": [{"decision": False}, {"decision": True}]}
    # an item's own bad part is still its own error, named under the item
    body["evaluations"].append({"action": {"name": "read"}, "resource": {"type": "doc"}})
    ev = _eval(gaps, body, path="/access/v1/evaluations")["evaluations"]
    assert ev[2]["context"]["error"]["message"] == "evaluations[2].resource.id: required"


# --------------------------------------------------------------- AARP and the option

@pytest.fixture(scope="module")
def aarp(tmp_path_factory):
    try:
        from test_aarp_http import Env, _setup
        from test_server_harness import LiveServer
    except ImportError:  # tests/ as a package
        from tests.test_aarp_http import Env, _setup
        from tests.test_server_harness import LiveServer
    tmp = tmp_path_factory.mktemp("aarp-gaps")
    args, key = _setup(tmp)
    with LiveServer(*args) as server:
        yield Env(server, key, tmp)


def test_a_requestable_denial_keeps_its_context_whatever_the_option(aarp):
    try:
        from test_aarp_http import EVAL
    except ImportError:
        from tests.test_aarp_http import EVAL
    for options in ({"decision_context": False}, None):
        body = {**EVAL, **({"options": options} if options else {})}
        a = aarp.evaluate(body)
        assert a["decision"] is False and a["context"]["access_request"]["binding_token"]
        batch = {"options": {"decision_context": False}, "evaluations": [EVAL]}
        r = aarp.c.post("/access/v1/evaluations", json=batch)
        assert r.status_code == 200
        (item,) = r.json()["evaluations"]
        assert item["context"]["decision"] == "require_approval" and item["context"]["access_request"]
    # approval: true is context, not an approval reference: still a requestable denial
    a = aarp.evaluate({**EVAL, "context": {**EVAL["context"], "approval": True}})
    assert a["decision"] is False and a["context"]["access_request"]
