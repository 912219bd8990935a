"""The playground's JSON API (docs/playground.md#api) through Starlette's TestClient:
every endpoint, bad input answered 400 naming the field, read-only by default, writes only
inside the set, the loopback Host and same-origin checks, authentication off loopback
(docs/playground.md#security)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from click.testing import CliRunner
from starlette.testclient import TestClient

from policylang.cli import main
from policylang.playground.app import create_app, mount_ui

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LOCAL = "http://127.0.0.1:8182"


@pytest.fixture
def pipeline(tmp_path) -> Path:
    dest = tmp_path / "pipeline"
    shutil.copytree(EXAMPLES / "multi-agent-pipeline", dest)
    return dest / "policies"


@pytest.fixture
def coding(tmp_path) -> Path:
    dest = tmp_path / "coding"
    shutil.copytree(EXAMPLES / "coding-agent", dest)
    return dest / "policies"


def client(path, **kw) -> TestClient:
    return TestClient(create_app(path, **kw), base_url=LOCAL)


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _example(c, example_id):
    return next(e for e in c.get("/api/examples").json()["examples"] if e["id"] == example_id)


# ------------------------------------------------------------------ the page and its assets

def test_the_page_and_its_assets_are_served_from_the_package_with_a_strict_csp(pipeline):
    c = client(pipeline)
    page = c.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    # no asset from anywhere else: every src/href is a relative static/ path
    for ref in ("static/playground.js", "static/path.js", "static/highlight.js", "static/playground.css"):
        assert ref in page.text
        assert c.get("/" + ref).status_code == 200
    assert "http://" not in page.text and "https://" not in page.text
    assert c.get("/static/../app.py").status_code == 404
    assert c.get("/static/app.py").status_code == 404


# ------------------------------------------------------------------ reading

def test_files_lists_the_set_with_its_texts(pipeline):
    data = client(pipeline).get("/api/files").json()
    paths = [f["path"] for f in data["files"]]
    assert paths == sorted(paths)
    assert "agents.policy" in paths and "pipeline.entities.json" in paths
    agents = next(f for f in data["files"] if f["path"] == "agents.policy")
    assert agents["text"] == (pipeline / "agents.policy").read_text()
    assert agents["kind"] == "policy"
    assert data["read_only"] is True


def test_examples_are_the_cases_of_the_suites_and_the_request_files(coding):
    examples = client(coding).get("/api/examples").json()["examples"]
    ids = [e["id"] for e in examples]
    assert "requests/coder-reads-api.json" in ids
    assert any(i.startswith("tests/repos.yaml#") for i in ids) and any(i.startswith("tests/deploys.yaml#") for i in ids)
    first = next(e for e in examples if e["id"] == "tests/deploys.yaml#1")
    assert isinstance(first["request"], dict) and first["expect"] in ("allow", "deny", "require_approval")


def test_a_one_file_set_shows_that_file_and_the_request_next_to_it(tmp_path):
    dest = tmp_path / "approval-flow"
    shutil.copytree(EXAMPLES / "approval-flow", dest)
    c = client(dest / "policies" / "deploy.policy")
    assert [f["path"] for f in c.get("/api/files").json()["files"]] == ["deploy.policy"]
    ex = _example(c, "request.json")
    assert ex["request"] == json.loads((dest / "request.json").read_text())
    r = c.post("/api/check", json={"files": {"other.policy": "permit agent to read on doc\n"}})
    assert r.status_code == 400 and r.json()["error"]["field"] == "files.other.policy"
    p = c.post("/api/decide", json={"request": ex["request"], "example": ex["id"]}).json()["decision"]
    assert p["decision"] in ("allow", "deny", "require_approval") and p["path"][-1]["role"] == "subject"


def test_a_set_that_does_not_load_on_disk_still_opens_with_its_diagnostics(pipeline):
    broken = (pipeline / "agents.policy").read_text() + "\npermit\n"
    (pipeline / "agents.policy").write_text(broken)
    c = client(pipeline)
    assert next(f for f in c.get("/api/files").json()["files"] if f["path"] == "agents.policy")["text"] == broken
    body = c.post("/api/check", json={}).json()
    assert body["ok"] is False and any(d["file"] == "agents.policy" for d in body["diagnostics"])
    fixed = broken[: -len("\npermit\n")]
    changes = c.post("/api/changes", json={"files": {"agents.policy": fixed}}).json()
    assert changes["changed"] and all(ch["before"]["decision"] is None for ch in changes["changed"])


# ------------------------------------------------------------------ check

def test_check_reports_diagnostics_with_file_line_and_column_and_writes_nothing(pipeline):
    before = _snapshot(pipeline.parent)
    c = client(pipeline)
    text = (pipeline / "agents.policy").read_text() + '\npermit agent to "tools/call" on mcp_tool when risk.score >\n'
    r = c.post("/api/check", json={"files": {"agents.policy": text}})
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is False
    d = next(d for d in body["diagnostics"] if d["severity"] == "error")
    assert d["file"] == "agents.policy"
    assert d["line"] >= text.count("\n") - 1 and d["column"] >= 1
    assert d["code"].startswith("E") and d["message"]
    ok = c.post("/api/check", json={"files": {"agents.policy": text.replace(">\n", "> 0.9\n")}}).json()
    assert ok["ok"] is True and ok["rules"] >= 1
    assert c.post("/api/check", json={}).json()["ok"] is True
    assert _snapshot(pipeline.parent) == before


def test_check_of_an_unknown_attribute_is_the_checkers_diagnostic(pipeline):
    text = (pipeline / "agents.policy").read_text().replace("principal.role ==", "principal.rol ==", 1)
    body = client(pipeline).post("/api/check", json={"files": {"agents.policy": text}}).json()
    assert any("rol" in d["message"] and d["file"] == "agents.policy" for d in body["diagnostics"])


# ------------------------------------------------------------------ decide

def test_decide_presents_the_decision_the_path_and_the_trace(pipeline):
    c = client(pipeline)
    ex = _example(c, "tests/tools.yaml#1")
    r = c.post("/api/decide", json={"request": ex["request"], "example": ex["id"]})
    assert r.status_code == 200
    p = r.json()["decision"]
    assert p["decision"] == "allow" and p["allowed"] is True
    assert p["determining"] == ["researchers-search-and-fetch"]
    assert p["grants"] == [{"rule": "researchers-search-and-fetch", "scopes": ["mcp:search/web_search"], "ttl": 600}]
    assert [h["role"] for h in p["path"]] == ["root", "delegator", "subject"]
    assert [h["id"] for h in p["path"]] == ["user:alice", "spiffe://pipeline.example/orchestrator",
                                            "spiffe://pipeline.example/workers/researcher"]
    assert all(h["allowed"] is True for h in p["path"])
    row = next(t for t in p["trace"] if t["rule"] == "researchers-search-and-fetch")
    assert row["held"] is True and row["effect"] == "permit" and row["file"] == "agents.policy"
    source_line = (pipeline / "agents.policy").read_text().splitlines()[row["line"] - 1]
    assert source_line == '@id("researchers-search-and-fetch")'  # the rule starts at its annotations
    not_held = next(t for t in p["trace"] if t["rule"] == "no-deep-delegation")
    assert not_held["held"] is False and "2 > 3 is false" in not_held["why"]


def test_an_attenuated_allow_marks_the_delegator_that_lacked_the_authority(pipeline):
    c = client(pipeline)
    ex = _example(c, "tests/tools.yaml#3")
    p = c.post("/api/decide", json={"request": ex["request"], "example": ex["id"]}).json()["decision"]
    assert p["decision"] == "deny"
    assert [h["allowed"] for h in p["path"]] == [True, False, False]
    assert "first delegator not allowed" in p["path"][1]["note"]
    assert "attenuate_delegation" in p["reasons"][0]


def test_decide_uses_the_edited_texts_not_the_files(pipeline):
    c = client(pipeline)
    ex = _example(c, "tests/tools.yaml#1")
    text = (pipeline / "agents.policy").read_text().replace('when principal.role == "researcher"',
                                                            'when principal.role == "nobody"')
    p = c.post("/api/decide", json={"request": ex["request"], "example": ex["id"],
                                    "files": {"agents.policy": text}}).json()["decision"]
    assert p["decision"] == "deny"
    assert 'principal.role == "researcher"' in (pipeline / "agents.policy").read_text()


def test_decide_with_the_examples_approvals(pipeline):
    c = client(pipeline)
    gated = [e for e in c.get("/api/examples").json()["examples"] if e["expect"] == "require_approval"]
    assert gated, "the pipeline example has a gated case"
    ex = gated[0]
    p = c.post("/api/decide", json={"request": ex["request"], "example": ex["id"]}).json()["decision"]
    assert p["decision"] == "require_approval" and p["approvers"]


@pytest.mark.parametrize("body, field", [
    ({}, "request"),
    ({"request": 3}, "request"),
    ({"request": {"principal": 3, "action": "x", "resource": {"type": "t", "id": "i"}}}, "request.principal"),
    ({"request": {"principal": {"id": "a", "kind": "agent"}, "action": "x",
                  "resource": {"type": "t", "id": "i"}, "contxt": {}}}, "request"),
    ({"request": {}, "example": 5}, "example"),
    ({"request": {}, "example": "no-such"}, "example"),
    ({"request": {}, "entities": []}, "entities"),
    ({"request": {}, "approvals": "apr_1"}, "approvals"),
    ({"request": {}, "files": []}, "files"),
    ({"request": {}, "files": {"agents.policy": 3}}, "files.agents.policy"),
    ({"request": {}, "files": {"../evil.policy": "x"}}, "files.../evil.policy"),
    ({"request": {}, "files": {"/etc/passwd.policy": "x"}}, "files./etc/passwd.policy"),
    ({"request": {}, "files": {"notes.txt": "x"}}, "files.notes.txt"),
])
def test_bad_input_is_400_naming_the_field(pipeline, body, field):
    r = client(pipeline).post("/api/decide", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["status"] == 400
    assert err["field"] == field or err["field"].startswith(field + "."), err


@pytest.mark.parametrize("raw, ctype", [
    (b"{bad", "application/json"), (b"[1, 2]", "application/json"), (b"\xff\xfe", "application/json"),
    (b'{"request": NaN}', "application/json"), (b"[" * 100_000, "application/json"),
    (b'{"request": {}}', "text/plain"),
])
def test_a_body_that_is_not_a_json_object_is_400(pipeline, raw, ctype):
    for route in ("/api/check", "/api/decide", "/api/changes"):
        r = client(pipeline).post(route, content=raw, headers={"content-type": ctype})
        assert r.status_code == 400, (route, r.text)
        assert r.json()["error"]["field"] in ("body", "content-type")


def test_deciding_against_a_set_with_errors_is_400_with_its_diagnostics(pipeline):
    r = client(pipeline).post("/api/decide", json={"request": {}, "files": {"agents.policy": "permit"}})
    assert r.status_code == 400
    body = r.json()
    assert body["error"]["field"] == "files"
    assert body["diagnostics"] and body["diagnostics"][0]["file"] == "agents.policy"


# ------------------------------------------------------------------ changes

def test_changes_lists_the_examples_whose_decision_changed(pipeline):
    c = client(pipeline)
    text = (pipeline / "agents.policy").read_text().replace("when delegation.depth == 1", "when delegation.depth == 2")
    body = c.post("/api/changes", json={"files": {"agents.policy": text}}).json()
    assert body["compared"] == len(c.get("/api/examples").json()["examples"])
    changed = {ch["example"]: ch for ch in body["changed"]}
    spawn = changed["tests/orchestrator.yaml#1"]
    assert spawn["before"]["decision"] == "allow" and spawn["after"]["decision"] == "deny"
    assert spawn["before"]["rules"] == ["orchestrator-spawns-workers"]
    assert all(k.startswith("tests/orchestrator.yaml#") for k in changed)
    assert c.post("/api/changes", json={}).json()["changed"] == []


# ------------------------------------------------------------------ writing

def test_read_only_by_default_refuses_to_save(pipeline):
    before = _snapshot(pipeline.parent)
    r = client(pipeline).post("/api/save", json={"path": "agents.policy", "text": "# gone\n"})
    assert r.status_code == 403
    assert "read-only" in r.json()["error"]["message"]
    assert _snapshot(pipeline.parent) == before


def test_allow_write_saves_a_file_inside_the_set(pipeline):
    c = client(pipeline, read_only=False)
    text = (pipeline / "agents.policy").read_text() + "# saved\n"
    r = c.post("/api/save", json={"path": "agents.policy", "text": text})
    assert r.status_code == 200 and r.json() == {"written": "agents.policy"}
    assert (pipeline / "agents.policy").read_text() == text
    assert not [p for p in pipeline.iterdir() if p.name.startswith(".playground-")]


@pytest.mark.parametrize("name", ["../x.policy", "../../x.policy", "a/../../x.policy", "/tmp/x.policy",
                                  "C:/x.policy", "..\\x.policy", ".hidden.policy", "x.py", "", "a//b.policy"])
def test_saving_outside_the_set_is_refused(pipeline, name):
    before = _snapshot(pipeline.parent.parent)
    r = client(pipeline, read_only=False).post("/api/save", json={"path": name, "text": "permit x to y on z\n"})
    assert r.status_code in (400, 403), r.text
    assert r.json()["error"]["field"] == "path"
    assert _snapshot(pipeline.parent.parent) == before


def test_saving_through_a_symlink_out_of_the_set_is_refused(pipeline, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.policy").write_text("# untouched\n")
    os.symlink(outside, pipeline / "linked")
    os.symlink(outside / "victim.policy", pipeline / "alias.policy")
    c = client(pipeline, read_only=False)
    for name in ("linked/victim.policy", "linked/new.policy", "alias.policy"):
        r = c.post("/api/save", json={"path": name, "text": "# overwritten\n"})
        assert r.status_code == 403, (name, r.text)
    assert (outside / "victim.policy").read_text() == "# untouched\n"
    assert sorted(p.name for p in outside.iterdir()) == ["victim.policy"]


# ------------------------------------------------------------------ who may call

def test_a_non_loopback_host_header_is_refused_dns_rebinding(pipeline):
    evil = TestClient(create_app(pipeline), base_url="http://attacker.example:8182")
    for method, route in (("GET", "/api/files"), ("GET", "/"), ("POST", "/api/check")):
        r = evil.request(method, route, json={} if method == "POST" else None)
        assert r.status_code == 403, route
        assert "agents.policy" not in r.text
    assert client(pipeline).get("/api/files").status_code == 200
    assert TestClient(create_app(pipeline), base_url="http://localhost:9").get("/api/files").status_code == 200


def test_a_cross_origin_post_is_refused_csrf(pipeline):
    c = client(pipeline, read_only=False)
    r = c.post("/api/save", json={"path": "agents.policy", "text": "# pwned\n"},
               headers={"origin": "http://attacker.example"})
    assert r.status_code == 403
    assert "# pwned" not in (pipeline / "agents.policy").read_text()
    r = c.post("/api/check", json={}, headers={"origin": "null"})
    assert r.status_code == 403
    assert c.post("/api/check", json={}, headers={"origin": LOCAL}).status_code == 200


def _jwt_auth(tmp_path):
    jwt = pytest.importorskip("jwt")
    from cryptography.hazmat.primitives.asymmetric import ec

    from policylang.server.auth import Authenticator

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="ES256", use="sig")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    auth = Authenticator(jwks=str(tmp_path / "jwks.json"), audience="playground")

    def token(aud="playground", k=key):
        now = int(time.time())
        return jwt.encode({"sub": "user:alice", "aud": aud, "iat": now, "exp": now + 300}, k,
                          algorithm="ES256", headers={"kid": "k1"})
    return auth, token


def test_with_authentication_every_api_call_needs_a_valid_token(pipeline, tmp_path):
    auth, token = _jwt_auth(tmp_path)
    c = TestClient(create_app(pipeline, auth=auth), base_url="http://playground.internal:8182")
    assert c.get("/api/files").status_code == 401
    assert c.post("/api/check", json={}).status_code == 401
    assert c.get("/api/files", headers={"authorization": "Bearer " + token(aud="other")}).status_code == 401
    from cryptography.hazmat.primitives.asymmetric import ec
    forged = token(k=ec.generate_private_key(ec.SECP256R1()))
    assert c.get("/api/files", headers={"authorization": "Bearer " + forged}).status_code == 401
    ok = c.get("/api/files", headers={"authorization": "Bearer " + token()})
    assert ok.status_code == 200 and ok.json()["files"]
    assert c.get("/").status_code == 200  # the page itself holds no policy text


def test_the_cli_refuses_a_non_loopback_host_without_authentication(pipeline):
    r = CliRunner().invoke(main, ["playground", str(pipeline), "--host", "0.0.0.0"])
    assert r.exit_code == 2
    assert "without authentication" in r.output
    r = CliRunner().invoke(main, ["playground", str(pipeline), "--jwt-audience", "x"])
    assert r.exit_code == 2


def test_serve_ui_refuses_a_non_loopback_host_without_authentication_and_several_workers(pipeline):
    r = CliRunner().invoke(main, ["serve", str(pipeline), "--ui", "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "--ui" in r.output
    r = CliRunner().invoke(main, ["serve", str(pipeline), "--ui", "--workers", "2"])
    assert r.exit_code == 2 and "--workers 1" in r.output


def test_serve_ui_mounts_the_playground_read_only_at_ui(pipeline):
    from policylang.server.app import create_app as service_app

    app = service_app(str(pipeline), watch=False, handle_sighup=False)
    mount_ui(app, pipeline, auth=app.state.authenticator)
    c = TestClient(app, base_url=LOCAL)
    assert c.get("/ui", follow_redirects=False).status_code == 307
    page = c.get("/ui/")
    assert page.status_code == 200 and "static/playground.js" in page.text
    assert c.get("/ui/static/path.js").status_code == 200
    assert "agents.policy" in [f["path"] for f in c.get("/ui/api/files").json()["files"]]
    assert c.post("/ui/api/save", json={"path": "agents.policy", "text": "#\n"}).status_code == 403
    assert c.get("/healthz").status_code == 200  # the service is still there


def test_the_cli_names_the_missing_server_extra(pipeline, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    r = CliRunner().invoke(main, ["playground", str(pipeline)])
    assert r.exit_code == 1
    assert "pip install 'policylang[server]'" in r.output and "fastapi" in r.output
