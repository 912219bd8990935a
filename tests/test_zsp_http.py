"""The credentials and approvals routes (policylang/server/zsp.py) on a bare FastAPI app."""

from __future__ import annotations

import json

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import policylang  # noqa: E402
from policylang.approvals import Approvals  # noqa: E402
from policylang.credentials import Issuer, KeySet  # noqa: E402
from policylang.server.zsp import make_router  # noqa: E402
from policylang.store import open_store  # noqa: E402

try:
    from redis_fixture import closed_port_url, redis_server, store, store_url  # noqa: F401
except ImportError:  # tests/ as a package
    from tests.redis_fixture import closed_port_url, redis_server, store, store_url  # noqa: F401

POLICY = '''
@id("prod-deploys-need-a-human")
require approval for agent to deploy on service
  when resource.env == "prod"
  by "sre-oncall"
  because "production deploys are high impact"

@id("deployers-deploy")
permit agent "agent:deployer" to deploy on service
  grant "deploy:" + resource.id for 15m
  because "the deploy agent deploys services"

@id("readers-read")
permit agent to read on repo
  grant "repo:read:" + resource.id for 10m
  because "agents read repositories"
'''

ENTITIES = {"human": {"user:alice": {"groups": ["sre-oncall"]}, "user:bob": {"groups": ["sre-oncall"]},
                      "user:dave": {"groups": []}}}

READ = {"principal": {"id": "agent:reader", "kind": "agent"}, "action": "read",
        "resource": {"type": "repo", "id": "acme/api"}, "delegation": [{"id": "user:alice", "kind": "human"}],
        "intent": {"task_id": "T-1"}}
DEPLOY = {"principal": {"id": "agent:deployer", "kind": "agent"}, "action": "deploy",
          "resource": {"type": "service", "id": "payments", "attrs": {"env": "prod"}},
          "delegation": [{"id": "user:alice", "kind": "human"}], "intent": {"task_id": "T-2"}}


def make_client(store, keys=None):
    approvals = Approvals(store, entities=ENTITIES)
    engine = policylang.Engine(policylang.loads(POLICY), entities=ENTITIES, approvals=approvals.checker)
    issuer = Issuer(keys or KeySet.generate(), store, issuer="https://pdp.test")
    app = fastapi.FastAPI()
    app.include_router(make_router(approvals=approvals, issuer=issuer, engine_getter=lambda: engine))
    return TestClient(app)


@pytest.fixture
def client(store):
    return make_client(store)


def test_jwks(client):
    r = client.get("/.well-known/jwks.json")
    assert r.status_code == 200
    (key,) = r.json()["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and "d" not in key


def test_token_lifecycle(client):
    r = client.post("/v1/tokens", json={"request": READ})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["scopes"] == ["repo:read:acme/api"] and body["decision"]["decision"] == "allow"
    tok = body["token"]
    r = client.post("/v1/tokens/verify", json={"token": tok, "scope": "repo:read:acme/api"})
    assert r.json()["valid"] is True and r.json()["claims"]["sub"] == "user:alice"
    r = client.post("/v1/tokens/verify", json={"token": tok, "scope": "repo:write:acme/api"})
    assert r.status_code == 200 and r.json()["valid"] is False and r.json()["reason"] == "ScopeNotGranted"
    r = client.post("/v1/tokens/refresh", json={"token": tok, "request": READ})
    assert r.status_code == 200, r.text
    new, new_jti = r.json()["token"], r.json()["jti"]
    assert client.post("/v1/tokens/verify", json={"token": tok}).json()["reason"] == "Revoked"
    r = client.post("/v1/tokens/revoke", json={"task": "T-1"})
    assert r.status_code == 200 and r.json()["task"] == "T-1" and new_jti in r.json()["revoked"]
    assert client.post("/v1/tokens/verify", json={"token": new}).json()["reason"] == "Revoked"
    assert client.post("/v1/tokens", json={"request": READ}).status_code == 403, "the task is over"


def test_revoke_one_jti(client):
    body = client.post("/v1/tokens", json={"request": READ}).json()
    assert client.post("/v1/tokens/revoke", json={"jti": body["jti"]}).json() == {"revoked": [body["jti"]]}
    assert client.post("/v1/tokens/verify", json={"token": body["token"]}).json()["reason"] == "Revoked"


def test_no_token_without_an_allow(client):
    r = client.post("/v1/tokens", json={"request": DEPLOY})
    assert r.status_code == 403
    assert r.json()["error"]["status"] == 403 and r.json()["decision"]["decision"] == "require_approval"


def test_approval_flow(client):
    r = client.post("/v1/approvals", json={"request": DEPLOY, "ttl": 600})
    assert r.status_code == 201, r.text
    ticket = r.json()["approval"]
    assert ticket["status"] == "pending" and ticket["approvers"] == ["sre-oncall"]
    tid = ticket["id"]
    r = client.post(f"/v1/approvals/{tid}/approve", json={"approver": "user:alice"})
    assert r.status_code == 403 and "delegated" in r.json()["error"]["message"]
    assert client.post(f"/v1/approvals/{tid}/approve", json={"approver": "user:dave"}).status_code == 403
    assert client.get("/v1/approvals", params={"approver": "user:bob"}).json()["approvals"][0]["id"] == tid
    assert client.get("/v1/approvals", params={"approver": "user:alice"}).json()["approvals"] == []
    r = client.post(f"/v1/approvals/{tid}/approve", json={"approver": "user:bob"})
    assert r.status_code == 200 and r.json()["approval"]["status"] == "approved"
    r = client.post("/v1/tokens", json={"request": {**DEPLOY, "approval": tid}})
    assert r.status_code == 201 and r.json()["scopes"] == ["deploy:payments"]
    assert client.get(f"/v1/approvals/{tid}").json()["approval"]["status"] == "approved"
    assert client.post(f"/v1/approvals/{tid}/deny", json={"approver": "user:bob"}).status_code == 200
    r = client.post(f"/v1/approvals/{tid}/approve", json={"approver": "user:bob"})
    assert r.status_code == 409 and "final" in r.json()["error"]["message"]
    assert client.post("/v1/tokens", json={"request": {**DEPLOY, "approval": tid}}).status_code == 403


def test_nothing_to_approve_is_a_conflict(client):
    r = client.post("/v1/approvals", json={"request": READ})
    assert r.status_code == 409 and r.json()["decision"]["decision"] == "allow"


def test_bad_query_is_400(client):
    r = client.get("/v1/approvals", params={"all": "maybe"})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("all:")
    assert client.get("/v1/approvals", params={"all": "true"}).status_code == 200


def test_unknown_ticket_is_404(client):
    assert client.get("/v1/approvals/apr_nope").status_code == 404
    assert client.post("/v1/approvals/apr_nope/approve", json={"approver": "user:bob"}).status_code == 404


BAD_BODIES = [
    ("not json", "application/json"), ("[1, 2]", "application/json"), ("", "application/json"),
    ('{"request": 5}', "application/json"), ('{"token": 5}', "application/json"),
    ('{"request": {"principal": {"id": "x"}}}', "application/json"),
    ('{"request": {"principal": {"id": "x", "kind": "agent"}, "action": "read", "resource": {"type": "repo"},'
     ' "risk": {"score": 7}}}', "application/json"),
    ('{"approver": ["user:bob"]}', "application/json"), ('{"jti": "x", "task": "y"}', "application/json"),
    ('{"jti": "NOT HEX"}', "application/json"), ('{"token": "x", "leeway": 9999}', "application/json"),
    ('{"token": "x", "leeway": "soon"}', "application/json"), ('{"x": NaN}', "application/json"),
    ('{"request": {}}', "text/plain"), ('{"request": {"approval": []}}', "application/json"),
    ('{"request": {"principal": {"id": "a", "kind": "agent"}, "action": "read", "resource": {"type": "repo"}},'
     ' "ttl": -1}', "application/json"),
    ("[" * 100000, "application/json"),
]
POSTS = ["/v1/approvals", "/v1/approvals/apr_x/approve", "/v1/approvals/apr_x/deny", "/v1/tokens",
         "/v1/tokens/refresh", "/v1/tokens/verify", "/v1/tokens/revoke"]


@pytest.mark.parametrize("path", POSTS)
def test_bad_bodies_are_4xx_never_500(client, path):
    for text, ctype in BAD_BODIES:
        r = client.post(path, content=text.encode(), headers={"Content-Type": ctype})
        assert 400 <= r.status_code < 500, (path, text[:60], r.status_code, r.text[:200])
        assert r.json()["error"]["status"] == r.status_code and r.json()["error"]["message"]


def test_unreachable_store_is_503(tmp_path):
    dead = open_store(closed_port_url())
    keys = KeySet.generate()
    issuing = make_client(open_store(f"sqlite:///{tmp_path / 's.db'}"), keys)
    tok = issuing.post("/v1/tokens", json={"request": READ}).json()["token"]
    issuer = Issuer(keys, dead, issuer="https://pdp.test")  # same keys, a store that is gone
    app = fastapi.FastAPI()
    app.include_router(make_router(approvals=Approvals(dead, entities=ENTITIES), issuer=issuer,
                                   engine_getter=lambda: policylang.Engine(policylang.loads(POLICY))))
    c = TestClient(app)
    for method, path, body in [("post", "/v1/tokens/verify", {"token": tok}),
                               ("post", "/v1/tokens", {"request": READ}),
                               ("post", "/v1/tokens/revoke", {"task": "T-1"}),
                               ("post", "/v1/approvals", {"request": DEPLOY}),
                               ("post", "/v1/approvals/apr_1/approve", {"approver": "user:bob"}),
                               ("get", "/v1/approvals", None)]:
        r = c.request(method, path, json=body)
        assert r.status_code == 503, (path, r.status_code, r.text)
        assert r.json()["error"]["status"] == 503


def test_only_configured_routes_exist(store):
    app = fastapi.FastAPI()
    app.include_router(make_router(approvals=Approvals(store, entities=ENTITIES)))
    c = TestClient(app)
    assert c.get("/v1/approvals").status_code == 200
    assert c.get("/.well-known/jwks.json").status_code == 404
    r = c.post("/v1/approvals", json={"request": DEPLOY})
    assert r.status_code == 501, "opening needs an engine to decide"


def test_no_policy_loaded_is_503(store):
    app = fastapi.FastAPI()
    app.include_router(make_router(issuer=Issuer(KeySet.generate(), store, issuer="x"),
                                   engine_getter=lambda: None))
    r = TestClient(app).post("/v1/tokens", json={"request": READ})
    assert r.status_code == 503


@pytest.mark.parametrize("text, ctype, words", [
    ("nope", "application/json", "not valid JSON"), ("{}", "text/plain", "Content-Type"),
    ("[]", "application/json", "JSON object"), ('{"request": {"action": "read"}}', "application/json", "principal"),
])
def test_malformed_input_is_400_naming_the_problem(client, text, ctype, words):
    r = client.post("/v1/tokens", content=text.encode(), headers={"Content-Type": ctype})
    assert r.status_code == 400 and words in r.json()["error"]["message"]


def test_error_bodies_are_json(client):
    r = client.post("/v1/tokens", content=b"nope", headers={"Content-Type": "application/json"})
    assert json.loads(r.text)["error"]["message"].startswith("the body is not valid JSON")
