"""Limits in the decision service (docs/server.md#limits): the service's engine keeps its
counters in ``--store``, ``POST /v1/limits/release`` gives a reservation back (guarded like
the task routes), AuthZEN answers carry ``context.limits``, a search never consumes a
limit, and ``/metrics`` counts refusals and reservations. The app runs in process
(FastAPI's TestClient) over a real SQLite store; the replicas test is
tests/test_limits_replicas.py."""

from __future__ import annotations

import json
import time

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from policylang.server.app import create_app  # noqa: E402
from policylang.server.auth import route_action  # noqa: E402
from policylang.server.service import ServiceConfig  # noqa: E402

try:
    from redis_fixture import closed_port_url  # noqa: E402
except ImportError:  # tests/ as a package
    from tests.redis_fixture import closed_port_url  # noqa: E402

POLICY = '''
@id("refund-budget")
permit agent to refund on order
  when action.amount > 0
  limit sum(action.amount) <= 500 per intent.task_id
  limit count <= 3 per principal.id per 1h
  because "agents refund within a budget"

@id("readers-read")
permit agent to read on order
  because "agents read orders"
'''
ENTITIES = {"order": {"o-1": {}, "o-2": {}, "o-3": {}}}


def refund(amount=100, task="T-1", agent="agent:a", **extra) -> dict:
    return {"principal": {"id": agent, "kind": "agent"}, "action": {"name": "refund", "attrs": {"amount": amount}},
            "resource": {"type": "order", "id": "o-1"}, "intent": {"task_id": task}, **extra}


def authzen_refund(amount=100, task="T-1", agent="agent:a", **body) -> dict:
    return {"subject": {"type": "agent", "id": agent}, "action": {"name": "refund", "properties": {"amount": amount}},
            "resource": {"type": "order", "id": "o-1"}, "context": {"intent": {"task_id": task}}, **body}


def _policies(tmp_path, text=POLICY):
    d = tmp_path / "policies"
    d.mkdir()
    (d / "p.policy").write_text(text)
    (d / "orders.entities.json").write_text(json.dumps(ENTITIES))
    return d


@pytest.fixture
def app(tmp_path):
    return create_app(ServiceConfig(path=str(_policies(tmp_path)), store=f"sqlite:///{tmp_path / 'state.db'}"),
                      watch=False)


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


def test_the_service_engine_keeps_limits_in_the_store(client, app):
    r = client.post("/v1/decide", json=refund(300))
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["decision"] == "allow" and d["rules"] == ["refund-budget"]
    budget, rate = d["limits"]
    assert (budget["key"], budget["max"], budget["used"], budget["left"], budget["outcome"]) == \
        ("T-1", 500, 300, 200, "reserved")
    assert (rate["key"], rate["used"], rate["left"], rate["outcome"]) == ("agent:a", 1, 2, "reserved")
    assert budget["reservation"] == rate["reservation"] and len(budget["reservation"]) == 32
    r = client.post("/v1/decide", json=refund(250)).json()
    assert r["decision"] == "deny"
    assert [e["outcome"] for e in r["limits"]] == ["refused", "not_consumed"]
    assert r["limits"][0]["used"] == 300 and r["limits"][0]["needed"] == 250
    assert r["reasons"][0].startswith("limit reached (refund-budget)")
    # the store is the one the service was given: a second app over it sees the same counter
    assert client.post("/v1/decide", json=refund(200)).json()["limits"][0]["used"] == 500


def test_a_set_without_a_store_fails_limited_permits_closed(tmp_path):
    app = create_app(ServiceConfig(path=str(_policies(tmp_path))), watch=False)
    with TestClient(app) as c:
        d = c.post("/v1/decide", json=refund(10)).json()
        assert d["decision"] == "deny" and d["rules"] == []
        assert "no limit store" in d["errors"][0]["message"]
        assert [e["outcome"] for e in d["limits"]] == ["error", "error"]
        r = c.post("/v1/limits/release", json={"reservation": "x" * 32})
        assert r.status_code == 404, "no store: no release route"


def test_release_gives_the_budget_back(client):
    d = client.post("/v1/decide", json=refund(400)).json()
    rid = d["limits"][0]["reservation"]
    assert client.post("/v1/decide", json=refund(200)).json()["decision"] == "deny"
    r = client.post("/v1/limits/release", json={"reservation": rid})
    assert r.status_code == 200 and r.json() == {"released": True}
    again = client.post("/v1/decide", json=refund(200)).json()
    assert again["decision"] == "allow" and again["limits"][0]["used"] == 200
    assert again["limits"][1]["used"] == 1, "the released reservation gave its count back too (the refused one took none)"
    r = client.post("/v1/limits/release", json={"reservation": rid})
    assert r.status_code == 200 and r.json() == {"released": False}, "released once only"
    r = client.post("/v1/limits/release", json={"reservation": "0" * 32})
    assert r.status_code == 200 and r.json() == {"released": False}, "an unknown reservation"


@pytest.mark.parametrize("body,words", [
    ({}, "reservation: required"),
    ({"reservation": None}, "reservation: required"),
    ({"reservation": 12}, "reservation: must be a string"),
    ({"reservation": ""}, "reservation: must be a string of 1 to 200"),
    ({"reservation": "x" * 201}, "reservation: must be a string of 1 to 200"),
    ({"reservation": ["a"]}, "reservation: must be a string"),
])
def test_release_bad_bodies_are_400_naming_the_field(client, body, words):
    r = client.post("/v1/limits/release", json=body)
    assert r.status_code == 400 and words in r.json()["error"]["message"]


@pytest.mark.parametrize("raw,ctype,words", [
    (b"{", "application/json", "not valid JSON"),
    (b"[]", "application/json", "must be a JSON object"),
    (b'{"reservation": "a"}', "text/plain", "Content-Type"),
    (b'{"reservation": NaN}', "application/json", "not valid JSON"),
])
def test_release_malformed_bodies_are_400(client, raw, ctype, words):
    r = client.post("/v1/limits/release", content=raw, headers={"content-type": ctype})
    assert r.status_code == 400 and words in r.json()["error"]["message"]


def test_an_unreachable_store_is_503_on_release_and_fails_decisions_closed(tmp_path):
    config = ServiceConfig(path=str(_policies(tmp_path)), store=closed_port_url())
    with TestClient(create_app(config, watch=False)) as c:
        r = c.post("/v1/limits/release", json={"reservation": "a" * 32})
        assert r.status_code == 503 and "limit store" in r.json()["error"]["message"]
        d = c.post("/v1/decide", json=refund(10)).json()
        assert d["decision"] == "deny" and "limit store error" in d["errors"][0]["message"]
        assert [e["outcome"] for e in d["limits"]] == ["error", "error"]
        # a decision that touches no limit does not need the store
        read = {"principal": {"id": "agent:a", "kind": "agent"}, "action": "read",
                "resource": {"type": "order", "id": "o-1"}}
        assert c.post("/v1/decide", json=read).json()["decision"] == "allow"


def test_authzen_evaluation_carries_context_limits(client):
    r = client.post("/access/v1/evaluation", json=authzen_refund(120))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["decision"] is True
    limits = body["context"]["limits"]
    assert [(e["rule"], e["used"], e["outcome"]) for e in limits] == \
        [("refund-budget", 120, "reserved"), ("refund-budget", 1, "reserved")]
    assert set(limits[0]) >= {"rule", "limit", "key", "max", "used", "left", "window_end", "outcome", "reservation"}
    # asked without the context: just the decision (and the reservation still counts)
    r = client.post("/access/v1/evaluation", json=authzen_refund(120, options={"decision_context": False}))
    assert r.json() == {"decision": True}
    refused = client.post("/access/v1/evaluation", json=authzen_refund(400)).json()
    assert refused["decision"] is False and refused["context"]["limits"][0]["used"] == 240
    assert refused["context"]["limits"][0]["outcome"] == "refused"
    # a decision that touched no limit has no context.limits
    read = {"subject": {"type": "agent", "id": "agent:a"}, "action": {"name": "read"},
            "resource": {"type": "order", "id": "o-1"}}
    assert "limits" not in client.post("/access/v1/evaluation", json=read).json()["context"]


def test_authzen_evaluations_items_carry_limits_when_the_context_is_asked_for(client):
    items = [{"action": {"name": "refund", "properties": {"amount": 100}}},
             {"action": {"name": "refund", "properties": {"amount": 500}}}]
    base = {"subject": {"type": "agent", "id": "agent:a"}, "resource": {"type": "order", "id": "o-1"},
            "context": {"intent": {"task_id": "T-9"}}}
    r = client.post("/access/v1/evaluations", json={**base, "evaluations": items})
    assert r.json() == {"evaluations": [{"decision": True}, {"decision": False}]}, "no context unless asked"
    r = client.post("/access/v1/evaluations", json={**base, "evaluations": items[:1],
                                                     "options": {"decision_context": True}})
    (item,) = r.json()["evaluations"]
    assert item["decision"] is True and item["context"]["limits"][0]["used"] == 200
    # a single evaluation on the batch endpoint answers with its context by default
    r = client.post("/access/v1/evaluations", json=authzen_refund(50, task="T-9"))
    assert r.json()["context"]["limits"][0]["used"] == 250


def test_a_search_never_consumes_a_limit(client):
    body = {"subject": {"type": "agent", "id": "agent:a"}, "action": {"name": "refund", "properties": {"amount": 200}},
            "resource": {"type": "order"}, "context": {"intent": {"task_id": "T-S"}}}
    r = client.post("/access/v1/search/resource", json=body)
    assert r.status_code == 200, r.text
    assert [x["id"] for x in r.json()["results"]] == ["o-1", "o-2", "o-3"], "each fits the budget alone"
    d = client.post("/v1/decide", json=refund(200, task="T-S")).json()
    assert d["decision"] == "allow" and d["limits"][0]["used"] == 200 and d["limits"][1]["used"] == 1


def test_metrics_count_refusals_by_rule_and_reservations(client):
    outcomes = [client.post("/v1/decide", json=refund(amount)).json()["decision"] for amount in (300, 200, 100)]
    assert outcomes == ["allow", "allow", "deny"], "the third is over the task's budget"
    assert client.post("/access/v1/evaluation", json=authzen_refund(5, task="T-2")).json()["decision"] is True
    # the fourth refund of agent:a this hour: refused by the rate limit
    assert client.post("/access/v1/evaluation", json=authzen_refund(5, task="T-3")).json()["decision"] is False
    text = client.get("/metrics").text
    assert 'policylang_limit_reservations_total{rule="refund-budget"} 3.0' in text
    assert 'policylang_limit_refusals_total{rule="refund-budget"} 2.0' in text


def test_the_release_route_is_guarded_like_the_task_routes(tmp_path):
    jwt = pytest.importorskip("jwt")
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="ES256", use="sig")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    admin = tmp_path / "admin"
    admin.mkdir()
    (admin / "admin.policy").write_text(
        '@id("the-pep-releases")\npermit caller to release_limit on limit_reservation\n'
        '  when principal.id == "spiffe://shop/pep"\n  because "only the PEP gives budgets back"\n')

    def token(sub):
        now = int(time.time())
        return jwt.encode({"sub": sub, "aud": "pdp", "iat": now, "exp": now + 300}, key, algorithm="ES256",
                          headers={"kid": "k1"})

    config = ServiceConfig(path=str(_policies(tmp_path)), store=f"sqlite:///{tmp_path / 'state.db'}",
                           jwks=str(tmp_path / "jwks.json"), jwt_audience="pdp", admin_policies=str(admin))
    with TestClient(create_app(config, watch=False)) as c:
        rid = c.post("/v1/decide", json=refund(100)).json()["limits"][0]["reservation"]
        r = c.post("/v1/limits/release", json={"reservation": rid})
        assert r.status_code == 401
        r = c.post("/v1/limits/release", json={"reservation": rid},
                   headers={"Authorization": f"Bearer {token('spiffe://shop/agent')}"})
        assert r.status_code == 403, "the agent itself may not refill its budget"
        r = c.post("/v1/limits/release", json={"reservation": rid},
                   headers={"Authorization": f"Bearer {token('spiffe://shop/pep')}"})
        assert r.status_code == 200 and r.json() == {"released": True}


def test_release_route_action_names_the_reservation():
    assert route_action("POST", "/v1/limits/release", b'{"reservation": "abc"}') == \
        ("release_limit", "limit_reservation", "abc")
    assert route_action("POST", "/v1/limits/release", b"not json") == ("release_limit", "limit_reservation", "")
    assert route_action("POST", "/v1/limits/other", b"{}")[0] == "other"


def test_the_default_admin_policy_lets_any_authenticated_caller_release():
    import policylang
    from policylang.server.auth import DEFAULT_ADMIN_POLICY

    engine = policylang.Engine(policylang.loads(DEFAULT_ADMIN_POLICY))
    d = engine.decide({"principal": {"id": "pep", "kind": "caller"}, "action": "release_limit",
                       "resource": {"type": "limit_reservation", "id": "abc"}})
    assert d.decision == "allow" and d.rules == ["authenticated-callers-release-limits"]


def test_decisions_with_limits_survive_a_reload_keeping_the_counters(tmp_path):
    policies = _policies(tmp_path)
    app = create_app(ServiceConfig(path=str(policies), store=f"sqlite:///{tmp_path / 'state.db'}"), watch=False)
    with TestClient(app) as c:
        assert c.post("/v1/decide", json=refund(450)).json()["decision"] == "allow"
        (policies / "p.policy").write_text(POLICY.replace('because "agents read orders"', 'because "agents read"'))
        assert app.state.service.load("signal").changed
        d = c.post("/v1/decide", json=refund(100)).json()
        assert d["decision"] == "deny" and d["limits"][0]["used"] == 450, "the counter is per rule id"


def _used(answer: dict) -> list:
    return [(e["used"], e["outcome"]) for e in answer["context"]["limits"]]


def test_an_authzen_retry_with_the_same_idempotency_key_consumes_once(client):
    """docs/server.md#limits: the ``Idempotency-Key`` header is the evaluation's
    idempotency_key. Three sends of one refund with one key reserve once (each answer is
    that reservation); another key, or none, reserves again."""
    body = authzen_refund(100, task="T-IK")
    first = client.post("/access/v1/evaluation", json=body, headers={"Idempotency-Key": "pep-7f3a"}).json()
    assert first["decision"] is True and _used(first) == [(100, "reserved"), (1, "reserved")]
    for _ in range(2):  # the PEP timed out and sent it again
        again = client.post("/access/v1/evaluation", json=body, headers={"Idempotency-Key": "pep-7f3a"}).json()
        assert again["decision"] is True
        assert again["context"]["limits"][0]["reservation"] == first["context"]["limits"][0]["reservation"]
    other = client.post("/access/v1/evaluation", json=body, headers={"Idempotency-Key": "pep-7f3b"}).json()
    assert _used(other) == [(200, "reserved"), (2, "reserved")]
    plain = client.post("/access/v1/evaluation", json=body).json()
    assert _used(plain) == [(300, "reserved"), (3, "reserved")]
    # the task's budget (500) and the agent's count (3 an hour) saw three refunds, not five
    d = client.post("/v1/decide", json=refund(100, task="T-IK")).json()
    assert d["decision"] == "deny" and d["limits"][1]["outcome"] == "refused"  # the fourth of the hour


def test_an_authzen_batch_retry_with_the_same_key_consumes_each_item_once(client):
    items = [{"action": {"name": "refund", "properties": {"amount": 100}}},
             {"action": {"name": "refund", "properties": {"amount": 150}}}]
    body = {"subject": {"type": "agent", "id": "agent:b"}, "resource": {"type": "order", "id": "o-1"},
            "context": {"intent": {"task_id": "T-IKB"}}, "evaluations": items, "options": {"decision_context": True}}
    rounds = []
    for _ in range(3):
        r = client.post("/access/v1/evaluations", json=body, headers={"Idempotency-Key": "batch-1"})
        assert r.status_code == 200, r.text
        answers = r.json()["evaluations"]
        assert [a["decision"] for a in answers] == [True, True]
        rounds.append([a["context"]["limits"][0] for a in answers])
    # item 0 and item 1 each reserved once: 100, then 250 in all; a retry finds each
    # item's own reservation and the budget stays at 250 (a retry reports the counter)
    assert [e["used"] for e in rounds[0]] == [100, 250]
    for later in rounds[1:]:
        assert [e["reservation"] for e in later] == [e["reservation"] for e in rounds[0]]
        assert [e["used"] for e in later] == [250, 250]
    # the single evaluation endpoint's body on the batch route takes the key as it is
    single = client.post("/access/v1/evaluations", json=authzen_refund(10, task="T-IKB", agent="agent:b"),
                         headers={"Idempotency-Key": "batch-1#0"}).json()
    assert single["context"]["limits"][0]["reservation"] == rounds[0][0]["reservation"], \
        "the same key as item 0: its reservation"


@pytest.mark.parametrize("key, route, words", [
    ("", "/access/v1/evaluation", "Idempotency-Key: must be 1 to 200 characters"),
    ("k" * 201, "/access/v1/evaluation", "Idempotency-Key: must be 1 to 200 characters"),
    ("k" * 199, "/access/v1/evaluations", "with '#' and the index of one of 2 evaluations appended"),
])
def test_a_bad_idempotency_key_is_400_naming_the_header(client, key, route, words):
    body = authzen_refund(100, task="T-BAD")
    if route.endswith("evaluations"):
        body = {**body, "evaluations": [{}, {}]}
    r = client.post(route, json=body, headers={"Idempotency-Key": key})
    assert r.status_code == 400 and words in r.json()["error"]["message"]
    assert _used(client.post("/access/v1/evaluation", json=body if "evaluations" not in body
                             else authzen_refund(100, task="T-BAD")).json())[0] == (100, "reserved"), \
        "nothing was reserved by the refused request"


def test_without_a_limit_store_the_header_is_ignored(tmp_path):
    """Nothing to consume: the header is read by no route (and the fast path, which
    serves such a service, never reads it), so even a malformed one changes nothing."""
    app = create_app(ServiceConfig(path=str(_policies(tmp_path, 'permit agent to read on order')), store=None),
                     watch=False)
    read = {"subject": {"type": "agent", "id": "agent:a"}, "action": {"name": "read"},
            "resource": {"type": "order", "id": "o-1"}}
    with TestClient(app) as c:
        for key in ("", "x" * 500, "fine"):
            r = c.post("/access/v1/evaluation", json=read, headers={"Idempotency-Key": key})
            assert r.status_code == 200 and r.json()["decision"] is True


def test_the_openapi_document_declares_the_header_on_the_evaluation_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    for route in ("/access/v1/evaluation", "/access/v1/evaluations"):
        (param,) = [p for p in paths[route]["post"].get("parameters", []) if p["name"] == "Idempotency-Key"]
        assert param["in"] == "header" and param["required"] is False
        assert param["schema"] == {"type": "string", "minLength": 1, "maxLength": 200}
    assert not [p for p in paths["/access/v1/search/resource"]["post"].get("parameters", [])
                if p["name"] == "Idempotency-Key"], "a search consumes nothing"
