"""AuthZEN 1.0 over real HTTP (docs/server.md): the public Todo interop vectors and the four
levels of the certification fixture (Basic, Batch, Search, Discovery), each against a
live `policylang serve` on loopback."""

from __future__ import annotations

import json

import pytest

try:
    from test_server_harness import CERT, DATA, TODO, LiveServer
except ImportError:  # tests/ as a package
    from tests.test_server_harness import CERT, DATA, TODO, LiveServer

VECTORS = DATA / "authzen"


def _load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


SINGLE = [(f"{f[-7:-5]}#{i}", c) for f in ("todo-decisions-authorization-api-1_0-01.json",
                                           "todo-decisions-authorization-api-1_0-02.json")
          for i, c in enumerate(_load(f)["evaluation"])]
BATCH = [(f"batch#{i}", c) for i, c in enumerate(_load("todo-decisions-authorization-api-1_0-02.json")["evaluations"])]


@pytest.fixture(scope="module")
def todo():
    # the scenario's set as a user serves it: policies/ holds the rules and the users
    with LiveServer(TODO / "policies", "--poll-interval", "0") as server:
        yield server.client


@pytest.fixture(scope="module")
def cert():
    with LiveServer(CERT, "--poll-interval", "0") as server:
        yield server


def test_vector_files_are_the_published_ones():
    assert len(SINGLE) == 80 and len(BATCH) == 3


@pytest.mark.parametrize("case", [c for _n, c in SINGLE], ids=[n for n, _c in SINGLE])
def test_todo_interop_single(todo, case):
    r = todo.post("/access/v1/evaluation", json=case["request"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decision"] is case["expected"]
    assert body["context"]["decision"] == ("allow" if case["expected"] else "deny")
    assert set(body["context"]) == {"decision", "rules", "reasons", "grants", "approvers", "errors",
                                    "delegation_path", "policy_version"}


@pytest.mark.parametrize("case", [c for _n, c in BATCH], ids=[n for n, _c in BATCH])
def test_todo_interop_batch(todo, case):
    r = todo.post("/access/v1/evaluations", json=case["request"])
    assert r.status_code == 200, r.text
    got = [{"decision": e["decision"]} for e in r.json()["evaluations"]]
    assert got == case["expected"]


def test_todo_users_are_looked_up_by_email_too(todo):
    req = {"subject": {"type": "user", "id": "morty@the-citadel.com"}, "action": {"name": "can_delete_todo"},
           "resource": {"type": "todo", "id": "t", "properties": {"ownerID": "morty@the-citadel.com"}}}
    body = todo.post("/access/v1/evaluation", json=req).json()
    assert body["decision"] is True
    assert body["context"]["rules"] == ["editors-delete-their-todos"]


# ------------------------------------------------------------------ certification: Basic

ALICE = {"type": "user", "id": "alice"}
BOB = {"type": "user", "id": "bob"}
REC1 = {"type": "record", "id": "record-1"}
REC2 = {"type": "record", "id": "record-2"}

CERT_DECISIONS = [
    ("alice read record-1", ALICE, {"name": "read"}, REC1, True),
    ("alice write record-1", ALICE, {"name": "write"}, REC1, True),
    ("bob read record-1", BOB, {"name": "read"}, REC1, True),
    ("bob write record-1", BOB, {"name": "write"}, REC1, False),
    ("alice write an archived record", ALICE, {"name": "write"},
     {"type": "record", "id": "record-1", "properties": {"status": "archived"}}, False),
    ("an admin writes an archived record", {"type": "user", "id": "carol", "properties": {"role": "admin"}},
     {"name": "write"}, {"type": "record", "id": "record-9", "properties": {"status": "archived"}}, True),
    ("alice soft-deletes record-1", ALICE, {"name": "delete", "properties": {"soft": True}}, REC1, True),
    ("alice hard-deletes record-1", ALICE, {"name": "delete", "properties": {"soft": False}}, REC1, False),
]


@pytest.mark.parametrize("with_context", [False, True], ids=["no-context", "context"])
@pytest.mark.parametrize("name,subject,action,resource,expected", CERT_DECISIONS,
                         ids=[c[0] for c in CERT_DECISIONS])
def test_cert_decisions(cert, name, subject, action, resource, expected, with_context):
    body = {"subject": subject, "action": action, "resource": resource}
    if with_context:
        body["context"] = {"time": "2025-10-26T01:22-07:00", "ip_address": "10.0.0.1"}
    r = cert.client.post("/access/v1/evaluation", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["decision"] is expected


def test_cert_unknown_fields_are_ignored(cert):
    body = {"subject": {**ALICE, "_note": "x", "email": "a@example.com"},
            "action": {"name": "write", "extra": [1, 2]},
            "resource": {**REC1, "owner_hint": None}, "context": {"anything": {"at": "all"}},
            "meta": {"trace": True}, "evaluations_semantic": "nonsense"}
    r = cert.client.post("/access/v1/evaluation", json=body)
    assert r.status_code == 200 and r.json()["decision"] is True


def test_cert_properties_are_merged_over_entity_data(cert):
    # bob is an admin in the entity data; a request may add attributes but the stored ones show
    r = cert.client.post("/access/v1/evaluation", json={"subject": BOB, "action": {"name": "write"}, "resource": REC2})
    assert r.json()["decision"] is True
    assert r.json()["context"]["rules"] == ["admins-write-archived-records"]


GOOD = {"subject": ALICE, "action": {"name": "read"}, "resource": REC1}

BAD_BODIES = [
    ("missing subject", {"action": {"name": "read"}, "resource": REC1}, "subject: required"),
    ("missing action", {"subject": ALICE, "resource": REC1}, "action: required"),
    ("missing resource", {"subject": ALICE, "action": {"name": "read"}}, "resource: required"),
    ("missing subject.type", {**GOOD, "subject": {"id": "alice"}}, "subject.type: required"),
    ("missing subject.id", {**GOOD, "subject": {"type": "user"}}, "subject.id: required"),
    ("missing action.name", {**GOOD, "action": {"properties": {}}}, "action.name: required"),
    ("missing resource.type", {**GOOD, "resource": {"id": "record-1"}}, "resource.type: required"),
    ("missing resource.id", {**GOOD, "resource": {"type": "record"}}, "resource.id: required"),
    ("null subject.id", {**GOOD, "subject": {"type": "user", "id": None}}, "subject.id: required"),
    ("subject is a string", {**GOOD, "subject": "alice"}, "subject: expected an object, got string"),
    ("subject.id is a number", {**GOOD, "subject": {"type": "user", "id": 7}}, "subject.id: expected a string"),
    ("subject.type is a list", {**GOOD, "subject": {"type": ["user"], "id": "a"}}, "subject.type: expected a string"),
    ("action.name is a bool", {**GOOD, "action": {"name": True}}, "action.name: expected a string"),
    ("action is a string", {**GOOD, "action": "read"}, "action: expected an object"),
    ("resource.id is an object", {**GOOD, "resource": {"type": "record", "id": {}}}, "resource.id: expected a string"),
    ("properties is a list", {**GOOD, "subject": {**ALICE, "properties": [1]}}, "subject.properties: expected an object"),
    ("action.properties is a string", {**GOOD, "action": {"name": "read", "properties": "x"}},
     "action.properties: expected an object"),
    ("context is an array", {**GOOD, "context": []}, "context: expected an object"),
    ("context.risk.score out of range", {**GOOD, "context": {"risk": {"score": 3}}}, "context.risk.score"),
    ("context.delegation entry lacks id", {**GOOD, "context": {"delegation": [{"type": "user"}]}},
     "context.delegation[0].id: required"),
    # (a number stays context.approval: tests/test_authzen_gaps.py; an object is an AARP
    # reference, which needs --binding-keys)
    ("context.approval is an object without AARP", {**GOOD, "context": {"approval": {"id": "apr_1"}}},
     "context.approval: expected a string"),
]


@pytest.mark.parametrize("name,body,message", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_cert_bad_bodies_are_400_naming_the_field(cert, name, body, message):
    r = cert.client.post("/access/v1/evaluation", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["status"] == 400
    assert message in err["message"]


RAW_BAD = [
    ("text/plain content type", b'{"subject": {}}', {"content-type": "text/plain"}, "Content-Type must be application/json"),
    ("form content type", json.dumps(GOOD).encode(), {"content-type": "application/x-www-form-urlencoded"},
     "Content-Type must be application/json"),
    ("no content type", json.dumps(GOOD).encode(), {}, "Content-Type is missing"),
    ("malformed JSON", b'{"subject": {"type": "user", "id": "alice"},', {"content-type": "application/json"},
     "not valid JSON"),
    ("empty body", b"", {"content-type": "application/json"}, "the body is empty"),
    ("whitespace body", b"  \n", {"content-type": "application/json"}, "the body is empty"),
    ("a JSON array", b"[1, 2]", {"content-type": "application/json"}, "must be a JSON object, got an array"),
    ("NaN", b'{"subject": NaN}', {"content-type": "application/json"}, "NaN is not valid JSON"),
    ("invalid UTF-8", b'{"subject": "\xff\xfe"}', {"content-type": "application/json"}, "not valid JSON"),
]


@pytest.mark.parametrize("endpoint", ["/access/v1/evaluation", "/access/v1/evaluations",
                                      "/access/v1/search/subject", "/v1/decide"])
@pytest.mark.parametrize("name,content,headers,message", RAW_BAD, ids=[b[0] for b in RAW_BAD])
def test_cert_unparseable_bodies_are_400(cert, endpoint, name, content, headers, message):
    r = cert.client.post(endpoint, content=content, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": {"status": 400, "message": r.json()["error"]["message"]}}
    assert message in r.json()["error"]["message"]


def test_cert_json_content_type_with_charset_is_accepted(cert):
    r = cert.client.post("/access/v1/evaluation", content=json.dumps(GOOD).encode(),
                         headers={"content-type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200 and r.json()["decision"] is True


def test_cert_request_id_is_echoed(cert):
    r = cert.client.post("/access/v1/evaluation", json=GOOD, headers={"X-Request-ID": "bfe9eb29-ab87-4ca3"})
    assert r.headers["x-request-id"] == "bfe9eb29-ab87-4ca3"
    r = cert.client.post("/access/v1/evaluation", json={}, headers={"X-Request-ID": "on-an-error"})
    assert r.status_code == 400 and r.headers["x-request-id"] == "on-an-error"
    r = cert.client.get("/healthz", headers={"x-request-id": "lower-case-too"})
    assert r.headers["x-request-id"] == "lower-case-too"


def test_cert_request_id_is_generated_when_absent(cert):
    a = cert.client.post("/access/v1/evaluation", json=GOOD).headers.get("x-request-id")
    b = cert.client.post("/access/v1/evaluation", json=GOOD).headers.get("x-request-id")
    assert a and b and a != b


# ------------------------------------------------------------------ certification: Batch

def _batch(cert, body, status=200):
    r = cert.client.post("/access/v1/evaluations", json=body)
    assert r.status_code == status, r.text
    return r.json()


def test_batch_top_level_fields_are_whole_object_defaults(cert):
    admin_alice = {"type": "user", "id": "alice", "properties": {"role": "admin"}}
    out = _batch(cert, {
        "subject": admin_alice, "action": {"name": "write"},
        "options": {"decision_context": True},  # batch items carry no context unless asked
        "evaluations": [
            {"resource": REC2},                                     # alice, with the default's role
            {"subject": {"type": "user", "id": "carol"}, "resource": REC2},  # carol: no role merged in
            {"resource": REC1, "action": {"name": "read"}},
        ]})
    assert [e["decision"] for e in out["evaluations"]] == [True, False, True]
    assert out["evaluations"][1]["context"]["delegation_path"] == ["carol"]


def test_batch_context_default_is_replaced_not_merged(cert):
    out = _batch(cert, {
        "subject": ALICE, "action": {"name": "read"}, "resource": REC1,
        "context": {"delegation": [{"type": "user", "id": "dana"}]},
        "options": {"decision_context": True},
        "evaluations": [{}, {"context": {"time": "now"}}]})
    paths = [e["context"]["delegation_path"] for e in out["evaluations"]]
    assert paths == [["dana", "alice"], ["alice"]]


def test_batch_keeps_order_and_length(cert):
    items = [{"subject": s, "action": {"name": a}, "resource": r}
             for s, a, r in [(ALICE, "write", REC1), (BOB, "write", REC1), (BOB, "read", REC2),
                             (ALICE, "write", REC2), (BOB, "write", REC2), (ALICE, "read", REC1)]]
    out = _batch(cert, {"evaluations": items})
    assert [e["decision"] for e in out["evaluations"]] == [True, False, True, False, True, True]


def test_batch_invalid_item_fails_alone_under_execute_all(cert):
    out = _batch(cert, {"subject": ALICE, "action": {"name": "read"}, "evaluations": [
        {"resource": REC1}, {"resource": {"type": "record"}}, "not-an-object", {"resource": REC2},
        {"resource": REC1, "context": {"risk": {"score": -1}}}]})
    ev = out["evaluations"]
    assert len(ev) == 5
    assert ev[0]["decision"] is True and ev[3]["decision"] is True
    assert ev[1] == {"decision": False, "context": {"error": {"status": 400,
                                                              "message": "evaluations[1].resource.id: required"}}}
    assert ev[2]["decision"] is False and "evaluations[2]: expected an object" in ev[2]["context"]["error"]["message"]
    assert ev[4]["decision"] is False and ev[4]["context"]["error"]["message"].startswith(
        "evaluations[4].context.risk.score:")


@pytest.mark.parametrize("evaluations", [None, []], ids=["absent", "empty"])
def test_batch_without_items_is_a_single_evaluation(cert, evaluations):
    body = {**GOOD, "action": {"name": "write"}}
    if evaluations is not None:
        body["evaluations"] = evaluations
    out = _batch(cert, body)
    assert out["decision"] is True and out["context"]["rules"] == ["owners-write-active-records"]
    assert "evaluations" not in out
    bad = {"action": {"name": "read"}, "resource": REC1}
    if evaluations is not None:
        bad["evaluations"] = evaluations
    err = _batch(cert, bad, status=400)
    assert err["error"]["message"] == "subject: required"


def _semantic(cert, semantic, decisions_wanted):
    # decisions_wanted: a list of booleans -> items that decide so
    allow = {"subject": ALICE, "action": {"name": "read"}, "resource": REC1}
    deny = {"subject": BOB, "action": {"name": "write"}, "resource": REC1}
    body = {"evaluations": [allow if d else deny for d in decisions_wanted]}
    if semantic:
        body["options"] = {"evaluations_semantic": semantic}
    return [e["decision"] for e in _batch(cert, body)["evaluations"]]


def test_batch_semantics(cert):
    assert _semantic(cert, None, [True, False, True]) == [True, False, True]
    assert _semantic(cert, "execute_all", [True, False, True]) == [True, False, True]
    assert _semantic(cert, "deny_on_first_deny", [True, False, True]) == [True, False]
    assert _semantic(cert, "deny_on_first_deny", [True, True]) == [True, True]
    assert _semantic(cert, "permit_on_first_permit", [False, True, False]) == [False, True]
    assert _semantic(cert, "permit_on_first_permit", [False, False]) == [False, False]


def test_batch_short_circuit_counts_an_invalid_item_as_a_deny(cert):
    body = {"subject": ALICE, "action": {"name": "read"}, "options": {"evaluations_semantic": "deny_on_first_deny"},
            "evaluations": [{"resource": REC1}, {"resource": {"type": "record"}}, {"resource": REC2}]}
    ev = _batch(cert, body)["evaluations"]
    assert len(ev) == 2 and "error" in ev[1]["context"]


@pytest.mark.parametrize("body,message", [
    ({"evaluations": {"a": 1}}, "evaluations: expected an array, got object"),
    ({"evaluations": [GOOD], "options": {"evaluations_semantic": "first_wins"}}, "options.evaluations_semantic: must be one of"),
    ({"evaluations": [GOOD], "options": {"evaluations_semantic": 1}}, "options.evaluations_semantic: expected a string"),
    ({"evaluations": [GOOD], "options": []}, "options: expected an object"),
    ({"evaluations": [GOOD], "subject": "alice"}, "subject: expected an object"),
])
def test_batch_malformed_wholes_are_400(cert, body, message):
    assert message in _batch(cert, body, status=400)["error"]["message"]


# ------------------------------------------------------------------ certification: Search

def _search(cert, what, body, status=200):
    r = cert.client.post(f"/access/v1/search/{what}", json=body)
    assert r.status_code == status, r.text
    return r.json()


def test_subject_search(cert):
    out = _search(cert, "subject", {"subject": {"type": "user"}, "action": {"name": "read"}, "resource": REC1})
    assert out == {"results": [{"type": "user", "id": "alice"}, {"type": "user", "id": "bob"}],
                   "page": {"next_token": ""}}
    out = _search(cert, "subject", {"subject": {"type": "user", "id": "bob"}, "action": {"name": "write"},
                                    "resource": REC1})
    assert out["results"] == [{"type": "user", "id": "alice"}]  # the searched id is ignored


def test_subject_search_properties_apply_to_every_candidate(cert):
    out = _search(cert, "subject", {"subject": {"type": "user", "properties": {"role": "admin"}},
                                    "action": {"name": "write"}, "resource": REC2})
    assert out["results"] == [{"type": "user", "id": "alice"}, {"type": "user", "id": "bob"}]


def test_resource_search(cert):
    def ids(subject, action):
        out = _search(cert, "resource", {"subject": subject, "action": {"name": action},
                                         "resource": {"type": "record", "id": "ignored"}})
        return [r["id"] for r in out["results"]]
    assert ids(ALICE, "write") == ["record-1"]
    assert ids(BOB, "write") == ["record-2"]
    assert ids(ALICE, "read") == ["record-1", "record-2"]
    assert ids({"type": "user", "id": "nobody"}, "write") == []


def test_action_search(cert):
    out = _search(cert, "action", {"subject": ALICE, "resource": REC1})
    assert out == {"results": [{"name": "read"}, {"name": "write"}], "page": {"next_token": ""}}
    out = _search(cert, "action", {"subject": BOB, "resource": REC2, "context": {"x": 1}})
    assert out["results"] == [{"name": "read"}, {"name": "write"}]


def test_search_pages_with_opaque_tokens(cert):
    body = {"subject": ALICE, "action": {"name": "read"}, "resource": {"type": "record"}, "page": {"limit": 1}}
    first = _search(cert, "resource", body)
    assert first["results"] == [{"type": "record", "id": "record-1"}]
    token = first["page"]["next_token"]
    assert token and "record-1" not in token  # opaque
    second = _search(cert, "resource", {**body, "page": {"limit": 1, "token": token}})
    assert second == {"results": [{"type": "record", "id": "record-2"}], "page": {"next_token": ""}}
    # the draft spelling of the request field is accepted too
    again = _search(cert, "resource", {**body, "page": {"limit": 1, "next_token": token}})
    assert again == second
    # a token is bound to its query
    other = {**body, "action": {"name": "write"}, "page": {"token": token}}
    assert "different search" in _search(cert, "resource", other, status=400)["error"]["message"]


@pytest.mark.parametrize("what,body,message", [
    ("subject", {"action": {"name": "read"}, "resource": REC1}, "subject: required"),
    ("subject", {"subject": {"id": "x"}, "action": {"name": "read"}, "resource": REC1}, "subject.type: required"),
    ("subject", {"subject": {"type": "user"}, "resource": REC1}, "action: required"),
    ("resource", {"subject": ALICE, "action": {"name": "read"}, "resource": {"type": "record"}, "page": {"limit": 0}},
     "page.limit: must be at least 1"),
    ("resource", {"subject": ALICE, "action": {"name": "read"}, "resource": {"type": "record"}, "page": {"limit": "2"}},
     "page.limit: expected an integer"),
    ("resource", {"subject": ALICE, "action": {"name": "read"}, "resource": {"type": "record"},
                  "page": {"token": "!!not-a-token"}}, "page.token: not a token"),
    ("resource", {"subject": {"type": "user"}, "action": {"name": "read"}, "resource": {"type": "record"}},
     "subject.id: required"),
    ("action", {"subject": ALICE}, "resource: required"),
    ("action", {"subject": ALICE, "resource": {"type": "record"}}, "resource.id: required"),
])
def test_search_bad_bodies(cert, what, body, message):
    assert message in _search(cert, what, body, status=400)["error"]["message"]


# --------------------------------------------------------------- certification: Discovery

def test_discovery(cert):
    r = cert.client.get("/.well-known/authzen-configuration")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["policy_decision_point"] == cert.url
    endpoints = {
        "access_evaluation_endpoint": "/access/v1/evaluation",
        "access_evaluations_endpoint": "/access/v1/evaluations",
        "search_subject_endpoint": "/access/v1/search/subject",
        "search_resource_endpoint": "/access/v1/search/resource",
        "search_action_endpoint": "/access/v1/search/action",
    }
    for key, path in endpoints.items():
        assert doc[key] == cert.url + path
    # the advertised URLs are the ones that answer
    assert cert.client.post(doc["access_evaluation_endpoint"], json=GOOD).json()["decision"] is True


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_discovery_uses_the_public_url():
    # behind a proxy the service names its public address (checked in-process: no port needed)
    from starlette.testclient import TestClient

    from policylang.server import ServiceConfig, create_app
    app = create_app(ServiceConfig(path=str(CERT), public_url="https://pdp.example.com/"), watch=False)
    with TestClient(app) as client:
        doc = client.get("/.well-known/authzen-configuration").json()
    assert doc["policy_decision_point"] == "https://pdp.example.com"
    assert doc["search_action_endpoint"] == "https://pdp.example.com/access/v1/search/action"


# ------------------------------------------------------------------------- /v1/decide

def test_decide_takes_spec_requests(cert):
    r = cert.client.post("/v1/decide", json={"principal": {"id": "alice", "kind": "user"}, "action": "write",
                                             "resource": {"type": "record", "id": "record-1"},
                                             "delegation": [{"id": "dana", "kind": "user"}]})
    assert r.status_code == 200
    d = r.json()
    assert d["decision"] == "allow" and d["rules"] == ["owners-write-active-records"]
    assert d["delegation_path"] == ["dana", "alice"]
    assert d["policy_version"].startswith("sha256:")
    r = cert.client.post("/v1/decide", json={"principal": {"id": "alice"}, "action": "read",
                                             "resource": {"type": "record"}})
    assert r.status_code == 400 and r.json()["error"]["message"] == "principal.kind: required"
