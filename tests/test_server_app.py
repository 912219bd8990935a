"""The app factory in-process: start-up failures, the OpenAPI document, the approval and
token routes mounted when a store is configured, and a core that imports no web stack."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

with warnings.catch_warnings():  # starlette suggests httpx2; the httpx client works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

import policylang
from policylang.language.errors import RequestError
from policylang.server import ServiceConfig, authzen, create_app

try:
    from test_server_harness import CERT, TODO
except ImportError:  # tests/ as a package
    from tests.test_server_harness import CERT, TODO

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_import_policylang_does_not_import_the_web_stack():
    code = ("import sys, policylang; policylang.Engine; policylang.load; "
            "bad = [m for m in ('fastapi', 'starlette', 'uvicorn', 'prometheus_client') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_a_broken_set_raises_policy_error_with_every_diagnostic(tmp_path):
    (tmp_path / "a.policy").write_text("permit user to read on doc when nope == 1\n"
                                       "forbid user to read on doc when nada == 2\n")
    with pytest.raises(policylang.PolicyError) as info:
        create_app(ServiceConfig(path=str(tmp_path)), watch=False)
    errors = [(d.code, d.line) for d in info.value.diagnostics if d.severity == "error"]
    assert errors == [("E002", 1), ("E002", 2)]
    (tmp_path / "a.policy").write_text("permit user to read on doc\n")
    (tmp_path / "b.entities.json").write_text("[]")
    with pytest.raises(policylang.PolicyError) as info:
        create_app(ServiceConfig(path=str(tmp_path)), watch=False)
    assert [(d.code, d.path) for d in info.value.diagnostics if d.severity == "error"] == [
        ("E001", str(tmp_path / "b.entities.json"))]


def test_openapi_document_describes_every_endpoint():
    app = create_app(ServiceConfig(path=str(CERT)), watch=False)
    with TestClient(app) as client:
        doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    for path in ("/access/v1/evaluation", "/access/v1/evaluations", "/access/v1/search/subject",
                 "/access/v1/search/resource", "/access/v1/search/action", "/v1/decide"):
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["type"] == "object"
        assert set(paths[path]["post"]["responses"]) >= {"200", "400", "413"}
    assert paths["/access/v1/evaluation"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "required"] == ["subject", "action", "resource"]
    for path in ("/.well-known/authzen-configuration", "/healthz", "/metrics"):
        assert "get" in paths[path]


def test_approval_and_token_routes_are_mounted_only_with_a_store(tmp_path):
    plain = create_app(ServiceConfig(path=str(TODO / "policies")), watch=False)
    with TestClient(plain) as client:
        assert client.get("/v1/approvals").status_code == 404
    store = f"sqlite:///{tmp_path / 'state.db'}"
    with_store = create_app(ServiceConfig(path=str(TODO / "policies"), store=store), watch=False)
    with TestClient(with_store) as client:
        r = client.get("/v1/approvals")
        assert r.status_code == 200 and r.json() == {"approvals": []}
        # a request that is simply allowed opens no ticket: the router decides with the served engine
        r = client.post("/v1/approvals", json={"request": {
            "principal": {"id": "morty@the-citadel.com", "kind": "user"}, "action": "can_read_todos",
            "resource": {"type": "todo", "id": "t1"}}})
        assert r.status_code == 409, r.text
        assert "/v1/approvals" in client.get("/openapi.json").json()["paths"]
        # the decision endpoints are unchanged
        r = client.post("/access/v1/evaluation", json={
            "subject": {"type": "user", "id": "morty@the-citadel.com"}, "action": {"name": "can_read_todos"},
            "resource": {"type": "todo", "id": "t1"}})
        assert r.json()["decision"] is True


def test_requests_with_an_approval_are_checked_against_the_store(tmp_path):
    policies = tmp_path / "p"
    policies.mkdir()
    (policies / "deploy.policy").write_text(
        '@id("deployers")\npermit agent to deploy on service\n  because "agents deploy"\n\n'
        '@id("prod-needs-a-human")\nrequire approval for agent to deploy on service\n'
        '  when resource.env == "prod"\n  by "sre"\n  because "prod is high impact"\n')
    (policies / "people.entities.json").write_text('{"human": {"user:bob": {"groups": ["sre"]}}}')
    store = f"sqlite:///{tmp_path / 'state.db'}"
    app = create_app(ServiceConfig(path=str(policies), store=store), watch=False)
    req = {"principal": {"id": "agent-1", "kind": "agent"}, "action": "deploy",
           "resource": {"type": "service", "id": "api", "attrs": {"env": "prod"}}}
    with TestClient(app) as client:
        d = client.post("/v1/decide", json=req).json()
        assert d["decision"] == "require_approval" and d["approvers"] == ["sre"]
        ticket = client.post("/v1/approvals", json={"request": req})
        assert ticket.status_code == 201, ticket.text
        tid = ticket.json()["approval"]["id"]
        assert client.post("/v1/decide", json={**req, "approval": tid}).json()["decision"] == "require_approval"
        assert client.post(f"/v1/approvals/{tid}/approve", json={"approver": "user:bob"}).status_code == 200
        assert client.post("/v1/decide", json={**req, "approval": tid}).json()["decision"] == "allow"
        # the same through AuthZEN: the approval id travels in context.approval
        az = {"subject": {"type": "agent", "id": "agent-1"}, "action": {"name": "deploy"},
              "resource": {"type": "service", "id": "api", "properties": {"env": "prod"}},
              "context": {"approval": tid}}
        assert client.post("/access/v1/evaluation", json=az).json()["decision"] is True


def test_the_todo_example_checks_clean_and_its_suite_passes():
    from click.testing import CliRunner

    from policylang.cli import main
    runner = CliRunner()
    checked = runner.invoke(main, ["check", str(TODO / "policies")])
    assert checked.exit_code == 0 and "0 errors, 0 warnings" in checked.output
    tested = runner.invoke(main, ["test", str(TODO / "tests")])
    assert tested.exit_code == 0, tested.output
    assert "44 passed, 0 failed" in tested.output


def test_authzen_context_is_exactly_the_spec_decision():
    from policylang.server.authzen import decision_response
    policies = policylang.loads(
        '@id("broken")\npermit agent to read on repo\n  when 1 / 0 == 1\n  because "never"\n\n'
        '@id("reads")\npermit agent to read on repo\n  grant "repo:read:" + resource.id for 10m\n  because "r"\n\n'
        '@id("gate")\nrequire approval for agent to write on repo\n  by "leads"\n  because "w"\n')
    engine = policylang.Engine(policies)
    for action in ("read", "write", "delete"):
        for _ in range(2):  # decided, then from the cache
            d = engine.decide({"principal": {"id": "a", "kind": "agent"}, "action": action,
                               "resource": {"type": "repo", "id": "x"},
                               "delegation": [{"id": "u", "kind": "human"}]})
            answer = decision_response(d)
            assert answer == {"decision": d.decision == "allow", "context": d.to_dict()}


def test_tokens_and_audit_with_keys_store_and_audit_log(tmp_path):
    from policylang.audit import verify_file
    from policylang.credentials import KeySet
    policies = tmp_path / "p"
    policies.mkdir()
    (policies / "r.policy").write_text('@id("reads")\npermit agent to read on repo\n'
                                       '  grant "repo:read:" + resource.id for 10m\n  because "r"\n')
    keys = tmp_path / "keys.json"
    KeySet.generate().save(keys)
    audit = tmp_path / "audit.jsonl"
    app = create_app(ServiceConfig(path=str(policies), store=f"sqlite:///{tmp_path / 's.db'}", keys=str(keys),
                                   issuer="https://pdp.test", audit=str(audit)), watch=False)
    req = {"principal": {"id": "a", "kind": "agent"}, "action": "read", "resource": {"type": "repo", "id": "x"}}
    with TestClient(app) as client:
        minted = client.post("/v1/tokens", json={"request": req})
        assert minted.status_code == 201 and minted.json()["scopes"] == ["repo:read:x"]
        check = client.post("/v1/tokens/verify", json={"token": minted.json()["token"], "scope": "repo:read:x"})
        assert check.json()["valid"] is True and check.json()["claims"]["iss"] == "https://pdp.test"
        assert client.post("/access/v1/evaluation", json={
            "subject": {"type": "agent", "id": "a"}, "action": {"name": "read"},
            "resource": {"type": "repo", "id": "x"}}).json()["decision"] is True
    # every decision (the token route's and the evaluation's) is in an intact chain
    events = [json.loads(line)["event"] for line in audit.read_text().splitlines()]
    assert events.count("decide") == 2 and "issue" in events
    assert verify_file(str(audit)).ok


# ------------------------------------------------------------- the mapping never crashes

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=12)
_entity = st.fixed_dictionaries({}, optional={"type": _json_values | st.sampled_from(["user", "record"]),
                                              "id": _json_values | st.sampled_from(["alice", "record-1"]),
                                              "properties": _json_values})
_bodies = st.fixed_dictionaries({}, optional={
    "subject": _entity | _json_values, "resource": _entity | _json_values,
    "action": st.fixed_dictionaries({}, optional={"name": _json_values | st.just("read"),
                                                  "properties": _json_values}) | _json_values,
    "context": st.dictionaries(st.sampled_from(["delegation", "risk", "intent", "approval", "x"]), _json_values,
                               max_size=3) | _json_values,
    "evaluations": st.lists(st.just({}) | _json_values, max_size=3) | _json_values,
    "options": st.fixed_dictionaries({}, optional={"evaluations_semantic": _json_values | st.sampled_from(
        list(authzen.SEMANTICS))}) | _json_values,
    "page": st.fixed_dictionaries({}, optional={"limit": _json_values, "token": _json_values}) | _json_values,
})
_ENGINE = policylang.Engine(policylang.load(CERT))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(_bodies)
def test_any_json_body_maps_or_is_a_400(body):
    """Whatever the body, the mapping either yields requests the engine decides, or a
    BadRequest (a 400 naming a field); nothing else escapes."""
    def decide(req):
        try:
            _ENGINE.decide(req)
        except RequestError as e:
            assert authzen.request_error(e).message
    for parse in (lambda b: [authzen.to_request(b)],
                  lambda b: [i for i in (authzen.parse_batch(b).items or []) if isinstance(i, dict)],
                  lambda b: [authzen.parse_search(b, "subject").request],
                  lambda b: [authzen.parse_search(b, "resource").request],
                  lambda b: [authzen.parse_search(b, "action").request]):
        try:
            requests = parse(body)
        except authzen.BadRequest as e:
            assert e.message and ": " in e.message or e.message.startswith("evaluations")
            continue
        for req in requests:
            decide(req)


def test_search_pages_through_a_large_entity_set(tmp_path):
    (tmp_path / "docs.policy").write_text('@id("public")\npermit user to read on doc\n  when resource.public\n'
                                          '  because "public docs"\n')
    docs = {f"doc-{i:04d}": {"public": i % 3 != 0} for i in range(2400)}
    (tmp_path / "docs.entities.json").write_text(json.dumps({"doc": docs, "user": {"u": {}}}))
    allowed = sorted(k for k, v in docs.items() if v["public"])
    app = create_app(ServiceConfig(path=str(tmp_path)), watch=False)
    with TestClient(app) as client:
        body = {"subject": {"type": "user", "id": "u"}, "action": {"name": "read"}, "resource": {"type": "doc"}}
        got, token, pages = [], None, 0
        while True:
            page = {"limit": 700, **({"token": token} if token else {})}
            out = client.post("/access/v1/search/resource", json={**body, "page": page}).json()
            got.extend(r["id"] for r in out["results"])
            pages += 1
            token = out["page"]["next_token"]
            if not token:
                break
        assert got == allowed and pages == 3  # 1600 results: 700 + 700 + 200
        # no limit: one page of at most 1000
        out = client.post("/access/v1/search/resource", json=body).json()
        assert len(out["results"]) == 1000 and out["page"]["next_token"]
        out = client.post("/access/v1/search/resource", json={**body, "page": {"limit": 10**9}}).json()
        assert len(out["results"]) == 1000
