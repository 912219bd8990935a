"""The audit viewer's API (docs/audit-viewer.md): a log written by policylang's own AuditLog
with real decisions, its chain verified line by line, tampering of every kind flagged at
the line ``policylang audit verify`` names, filters, and one record presented the way the
playground draws a decision (policylang/playground/audit_view.py)."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import policylang
from policylang.audit import AuditLog, record_hash, verify_file
from policylang.playground import audit_view
from policylang.playground.audit_view import (
    add_audit_routes,
    present_record,
    verify_lines,
)

POLICY = """
option attenuate_delegation = true

@id("orchestrator-reads")
permit agent "orchestrator" to read on doc
  because "the orchestrator reads documents"

@id("worker-reads")
permit agent "worker" to read on doc
  when delegation.root.kind == "human"
  grant "doc:read:" + resource.id for 10m
  because "a worker started by a person reads documents"

@id("worker-writes")
permit agent "worker" to write on doc
  because "a worker writes documents"

@id("writes-need-an-owner")
require approval for agent "worker" to publish on doc
  by "owners"
  because "publishing needs an owner"

@id("no-secrets")
forbid * to read on doc "secret"
  because "nobody reads the secret document"

@id("alice-reads")
permit human "user:alice" to * on doc
  because "alice may do anything to documents"
"""

HUMAN = {"id": "user:alice", "kind": "human"}
ORCH = {"id": "orchestrator", "kind": "agent"}
WORKER = {"id": "worker", "kind": "agent"}


def _request(action, resource, task, principal=WORKER, chain=(HUMAN, ORCH)):
    return {"principal": principal, "action": action, "resource": {"type": "doc", "id": resource},
            "delegation": list(chain), "intent": {"task_id": task}}


@pytest.fixture
def log_file(tmp_path):
    """A log of real decisions: allow through human -> orchestrator -> worker, a forbid,
    an attenuation denial (the orchestrator may not write), a require_approval, an issue-like
    event with a task and no decision, and a direct human decision."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync=False)
    engine = policylang.Engine(policylang.loads(POLICY), audit=log)
    engine.decide(_request("read", "readme", "T-1"))                    # line 1: allow
    engine.decide(_request("read", "secret", "T-1"))                    # line 2: deny (forbid)
    engine.decide(_request("write", "readme", "T-2"))                   # line 3: deny (attenuation)
    engine.decide(_request("publish", "readme", "T-2"))                 # line 4: require_approval
    log.record("open_task", task="T-3", principal="worker", root="user:alice")  # line 5
    engine.decide(_request("read", "notes", "T-3", principal=HUMAN, chain=()))  # line 6: allow
    return path


def lines_of(path):
    return path.read_bytes().splitlines(keepends=True)


def write_lines(path, lines):
    path.write_bytes(b"".join(lines))


def client_for(path=None):
    app = FastAPI()
    add_audit_routes(app, audit_path=path, read_only=True)
    return TestClient(app)


def statuses(report):
    return [(r["line"], r["status"]) for r in report["rows"]]


def same_as_verify_file(path, report_or_verification):
    """The viewer's verification agrees with policylang's own verify_file on the same bytes."""
    v = report_or_verification.get("verification", report_or_verification)
    ref = verify_file(path)
    assert (v["ok"], v["records"], v["head"], v["line"], v["message"], v["torn_line"]) == \
        (ref.ok, ref.records, ref.head, ref.line, ref.message, ref.torn_line)


# -- an intact log ----------------------------------------------------------------------------


def test_an_intact_log_verifies_and_every_row_is_ok(log_file):
    report = client_for(log_file).get("/api/audit/log").json()
    assert report["verification"]["ok"] is True
    assert report["verification"]["summary"] == "chain verified: 6 records"
    assert statuses(report) == [(n, "ok") for n in range(1, 7)]
    same_as_verify_file(log_file, report)
    first = report["rows"][0]
    assert first["event"] == "decide" and first["principal"] == "worker" and first["action"] == "read"
    assert first["resource"] == "doc:readme" and first["decision"] == "allow" and first["task"] == "T-1"
    assert [r["decision"] for r in report["rows"]] == ["allow", "deny", "deny", "require_approval", None, "allow"]
    assert report["rows"][4]["event"] == "open_task" and report["rows"][4]["task"] == "T-3"
    assert report["source"] == "file" and report["name"] == "audit.jsonl"


def test_upload_gives_the_same_report_as_the_configured_file(log_file):
    configured = client_for(log_file).get("/api/audit/log").json()
    uploaded = client_for(None).post("/api/audit/log", content=log_file.read_bytes()).json()
    assert uploaded["source"] == "upload"
    assert uploaded["rows"] == configured["rows"]
    assert uploaded["verification"] == configured["verification"]


def test_config_says_whether_a_log_is_configured(log_file):
    assert client_for(log_file).get("/api/audit/config").json()["configured"] is True
    none = client_for(None)
    assert none.get("/api/audit/config").json()["configured"] is False
    r = none.get("/api/audit/log")
    assert r.status_code == 404 and "--audit FILE" in r.json()["error"]["message"]


def test_a_configured_log_is_read_afresh_on_every_request(log_file):
    client = client_for(log_file)
    assert client.get("/api/audit/log").json()["verification"]["records"] == 6
    AuditLog(log_file, fsync=False).record("revoke", jti="abc")
    assert client.get("/api/audit/log").json()["verification"]["records"] == 7


def test_a_missing_configured_file_is_a_404_naming_it(tmp_path):
    r = client_for(tmp_path / "nope.jsonl").get("/api/audit/log")
    assert r.status_code == 404 and "nope.jsonl" in r.json()["error"]["message"]


# -- tampering (attacks: each must be flagged, never shown as verified) ----------------------------


def test_an_edited_decision_is_flagged_at_its_line_and_the_rest_marked_broken(log_file):
    lines = lines_of(log_file)
    assert b'"decision":"deny"' in lines[1]
    lines[1] = lines[1].replace(b'"decision":"deny"', b'"decision":"allow"')
    write_lines(log_file, lines)
    report = client_for(log_file).get("/api/audit/log").json()
    v = report["verification"]
    assert v["ok"] is False and v["line"] == 2
    assert v["summary"] == "chain broken at line 2: record altered: its hash does not match its content"
    assert statuses(report) == [(1, "ok"), (2, "tampered")] + [(n, "broken") for n in range(3, 7)]
    assert report["rows"][1]["decision"] == "allow", "the row shows what the forged line claims"
    assert all("chain is broken at line 2" in r["reason"] for r in report["rows"][2:])
    same_as_verify_file(log_file, report)


def test_an_edited_decision_with_a_recomputed_hash_breaks_the_next_link(log_file):
    lines = lines_of(log_file)
    rec = json.loads(lines[1])
    rec["decision"] = "allow"
    rec["hash"] = record_hash(rec)
    lines[1] = (json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
    write_lines(log_file, lines)
    report = client_for(log_file).get("/api/audit/log").json()
    assert report["verification"]["ok"] is False
    assert statuses(report)[:3] == [(1, "ok"), (2, "ok"), (3, "tampered")]
    assert "prev does not match the hash of line 2" in report["rows"][2]["reason"]
    same_as_verify_file(log_file, report)


def test_a_deleted_line_is_flagged(log_file):
    lines = lines_of(log_file)
    del lines[2]
    write_lines(log_file, lines)
    report = client_for(log_file).get("/api/audit/log").json()
    assert report["verification"]["ok"] is False and report["verification"]["line"] == 3
    assert statuses(report) == [(1, "ok"), (2, "ok"), (3, "tampered"), (4, "broken"), (5, "broken")]
    assert "a record was removed, inserted or reordered" in report["rows"][2]["reason"]
    same_as_verify_file(log_file, report)


def test_a_deleted_first_line_is_flagged(log_file):
    write_lines(log_file, lines_of(log_file)[1:])
    report = client_for(log_file).get("/api/audit/log").json()
    assert report["verification"]["ok"] is False and report["rows"][0]["status"] == "tampered"
    assert "records before it were removed" in report["rows"][0]["reason"]
    same_as_verify_file(log_file, report)


def test_reordered_lines_are_flagged(log_file):
    lines = lines_of(log_file)
    lines[3], lines[4] = lines[4], lines[3]
    write_lines(log_file, lines)
    report = client_for(log_file).get("/api/audit/log").json()
    assert report["verification"]["ok"] is False and report["verification"]["line"] == 4
    assert statuses(report)[3] == (4, "tampered") and statuses(report)[4] == (5, "broken")
    same_as_verify_file(log_file, report)


def test_a_duplicate_key_forgery_is_flagged(log_file):
    lines = lines_of(log_file)
    lines[1] = lines[1].replace(b'{"approvers"', b'{"decision":"allow","approvers"', 1)
    assert lines[1].startswith(b'{"decision":"allow","approvers"')
    write_lines(log_file, lines)
    report = client_for(log_file).get("/api/audit/log").json()
    assert report["verification"]["ok"] is False and report["rows"][1]["status"] == "tampered"
    assert "duplicate key 'decision'" in report["rows"][1]["reason"]
    same_as_verify_file(log_file, report)


def test_a_rewritten_spelling_is_flagged(log_file):
    lines = lines_of(log_file)
    lines[0] = (json.dumps(json.loads(lines[0]), sort_keys=True) + "\n").encode()  # spaces after , and :
    write_lines(log_file, lines)
    report = client_for(log_file).get("/api/audit/log").json()
    assert report["rows"][0]["status"] == "tampered" and "canonical form" in report["rows"][0]["reason"]
    same_as_verify_file(log_file, report)


def test_a_truncated_last_line_is_marked_torn_not_ok(log_file):
    data = log_file.read_bytes()
    log_file.write_bytes(data[:-40])  # the last record cut mid-way, as a crash leaves it
    report = client_for(log_file).get("/api/audit/log").json()
    v = report["verification"]
    assert v["ok"] is True and v["records"] == 5 and v["torn_line"] == 6
    assert "line 6 is an incomplete last record (an interrupted write), ignored" in v["summary"]
    assert statuses(report)[-1] == (6, "torn")
    same_as_verify_file(log_file, report)


def test_a_cut_off_tail_is_flagged_against_the_anchored_head(log_file):
    head = json.loads(lines_of(log_file)[-1])["hash"]
    write_lines(log_file, lines_of(log_file)[:-2])
    client = client_for(log_file)
    assert client.get("/api/audit/log").json()["verification"]["ok"] is True, "a chain alone cannot tell"
    report = client.get("/api/audit/log", params={"head": head}).json()
    assert report["verification"]["ok"] is False and report["verification"]["line"] == 5
    assert "the log was cut off after line 4" in report["verification"]["summary"]
    ref = verify_file(log_file, head=head)
    assert (ref.ok, ref.line, ref.message) == (False, 5, report["verification"]["message"])
    intact = client.get("/api/audit/log", params={"head": json.loads(lines_of(log_file)[1])["hash"]}).json()
    assert intact["verification"]["ok"] is True and "anchored head" in intact["verification"]["summary"]


def test_a_tampered_log_never_verifies_whatever_line_is_edited(log_file):
    """Every one-byte change of every record line (in its decision, principal, hash or
    prev) is flagged: the viewer never shows an edited log as verified."""
    original = lines_of(log_file)
    for i, line in enumerate(original):
        rec = json.loads(line)
        for key in ("decision", "hash", "prev", "time"):
            if not isinstance(rec.get(key), str):
                continue
            forged = dict(rec)
            value = forged[key]
            forged[key] = value[:-1] + ("0" if value[-1] != "0" else "1")
            lines = list(original)
            lines[i] = (json.dumps(forged, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
            v = verify_lines(b"".join(lines))["verification"]
            assert v["ok"] is False and v["line"] == i + 1, (i, key)


def test_verify_lines_agrees_with_verify_file_on_mutated_logs(log_file, tmp_path):
    """Differential: for cut, joined, duplicated, emptied and garbled logs, the viewer's first
    bad line, message, count, head and torn line are verify_file's."""
    original = log_file.read_bytes()
    lines = lines_of(log_file)
    variants = [
        original[:-1], original[:len(lines[0]) + 10], original + b"\n", b"\n" + original,
        lines[0] + lines[0] + b"".join(lines[1:]), original.replace(b"\n", b"\r\n"),
        original + b"\xff\xfe\n", original + b"[1,2]\n", original + b"{}\n", b"",
        original + b'{"x":NaN}\n', lines[0].rstrip(b"\n"),
    ]
    for n, data in enumerate(variants):
        path = tmp_path / f"v{n}.jsonl"
        path.write_bytes(data)
        same_as_verify_file(path, verify_lines(data))


# -- bad uploads: per-line errors or a 4xx, never a 500 -----------------------------------------------


def test_garbage_lines_are_reported_per_line():
    body = b"hello\n\xff\xfe not utf-8\n{\"a\": 1}\n"
    r = client_for(None).post("/api/audit/log", content=body)
    assert r.status_code == 200
    report = r.json()
    assert report["verification"]["ok"] is False and report["verification"]["line"] == 1
    rows = report["rows"]
    assert rows[0]["status"] == "tampered" and rows[0]["reason"].startswith("not a JSON record")
    assert rows[0]["preview"] == "hello"
    assert rows[1]["status"] == "broken" and "this line: not UTF-8" in rows[1]["reason"]
    assert rows[2]["status"] == "broken"


def test_a_huge_upload_is_a_413_naming_the_limit(monkeypatch):
    monkeypatch.setattr(audit_view, "MAX_UPLOAD_BYTES", 1000)
    client = client_for(None)
    r = client.post("/api/audit/log", content=b"x" * 1001)
    assert r.status_code == 413 and "at most 1000 bytes" in r.json()["error"]["message"]

    def chunks():  # no Content-Length: the cap holds while streaming
        for _ in range(20):
            yield b"y" * 100

    r = client.post("/api/audit/log", content=chunks())
    assert r.status_code == 413


def test_a_too_large_configured_file_is_a_413(monkeypatch, log_file):
    monkeypatch.setattr(audit_view, "MAX_FILE_BYTES", 100)
    r = client_for(log_file).get("/api/audit/log")
    assert r.status_code == 413 and "policylang audit verify" in r.json()["error"]["message"]


def test_odd_records_never_crash_the_report_or_the_detail():
    odd = [b'{"x":NaN}', b'[' * 5000 + b']' * 5000, b'"just a string"',
           (b'{"request":"not an object","delegation_path":[1,{"a":2}],"decision":7,"reasons":"r",'
            b'"errors":[1],"grants":{"a":1}}'),
           b'{"request":{"principal":{"id":["x"]},"action":{"name":5},"resource":[]}}',
           '{"request":{"principal":{"id":"\u00e9"}}}'.encode()]
    body = b"\n".join(odd) + b"\n"
    client = client_for(None)
    r = client.post("/api/audit/log", content=body)
    assert r.status_code == 200 and r.json()["total"] == len(odd)
    for n in range(1, len(odd) + 1):
        d = client.post(f"/api/audit/records/{n}", content=body)
        assert d.status_code == 200, (n, d.text)
    nan = client.post("/api/audit/records/1", content=body).json()
    assert nan["presented"]["path"] == [] and nan["record"] == {"x": "NaN"}
    weird = client.post("/api/audit/records/4", content=body).json()["presented"]
    assert weird["decision"] is None and weird["errors"] == [{"rule": "", "message": "1"}]
    assert [h["id"] for h in weird["path"]] == ["1", '{"a": 2}']


@pytest.mark.parametrize("query, field", [
    ({"offset": "-1"}, "offset"), ({"limit": "lots"}, "limit"), ({"limit": "99999999"}, "limit"),
    ({"head": "abc"}, "head"), ({"task": "t" * 5000}, "task"), ({"offset": "\u00b2"}, "offset"),
])
def test_bad_parameters_are_a_400_naming_the_field(log_file, query, field):
    r = client_for(log_file).get("/api/audit/log", params=query)
    assert r.status_code == 400 and r.json()["error"]["message"].startswith(f"{field}:")


@pytest.mark.parametrize("line, status", [("0", 400), ("x", 400), ("99", 404), ("1.5", 400)])
def test_a_bad_record_line_is_a_4xx(log_file, line, status):
    r = client_for(log_file).get(f"/api/audit/records/{line}")
    assert r.status_code == status and r.json()["error"]["message"].startswith("line:")


# -- filters ------------------------------------------------------------------------------------


def test_filters_by_task_principal_and_decision(log_file):
    client = client_for(log_file)

    def lines_for(**params):
        report = client.get("/api/audit/log", params=params).json()
        assert report["verification"]["records"] == 6, "verification covers the whole log"
        return [r["line"] for r in report["rows"]]

    assert lines_for(task="T-1") == [1, 2]
    assert lines_for(task="T-3") == [5, 6]
    assert lines_for(decision="deny") == [2, 3]
    assert lines_for(decision="require_approval") == [4]
    assert lines_for(principal="worker") == [1, 2, 3, 4, 5]
    assert lines_for(principal="orchestrator") == [1, 2, 3, 4], "a delegator on the path matches"
    assert lines_for(principal="user:alice") == [1, 2, 3, 4, 6]
    assert lines_for(task="T-2", decision="deny") == [3]
    assert lines_for(task="T-9") == []
    assert lines_for(task="  ") == [1, 2, 3, 4, 5, 6], "a blank filter is no filter"


def test_filters_keep_the_tampered_status(log_file):
    lines = lines_of(log_file)
    lines[0] = lines[0].replace(b'"decision":"allow"', b'"decision":"deny"')
    write_lines(log_file, lines)
    report = client_for(log_file).get("/api/audit/log", params={"task": "T-2"}).json()
    assert report["verification"]["ok"] is False and report["verification"]["line"] == 1
    assert statuses(report) == [(3, "broken"), (4, "broken")]


def test_paging(log_file):
    client = client_for(log_file)
    page = client.get("/api/audit/log", params={"offset": "2", "limit": "2"}).json()
    assert [r["line"] for r in page["rows"]] == [3, 4] and page["matched"] == 6


# -- one record: detail and the presented decision --------------------------------------------------


def test_record_detail_presents_the_delegation_chain(log_file):
    d = client_for(log_file).get("/api/audit/records/1").json()
    assert d["status"] == "ok" and d["line"] == 1
    assert d["request"]["delegation"][0]["id"] == "user:alice"
    assert d["decision_fields"]["decision"] == "allow"
    p = d["presented"]
    assert p["decision"] == "allow" and p["allowed"] is True
    assert p["determining"] == ["worker-reads"]
    assert p["reasons"] == ["a worker started by a person reads documents"]
    assert p["grants"][0]["scopes"] == ["doc:read:readme"]
    assert [(h["id"], h["role"], h["kind"]) for h in p["path"]] == [
        ("user:alice", "root", "human"), ("orchestrator", "delegator", "agent"), ("worker", "subject", "agent")]
    assert p["path"][-1]["allowed"] is True
    assert [h["allowed"] for h in p["path"][:-1]] == [None, None], "a record does not say how each hop decided"
    assert p["path"][0]["label"] == "human user:alice"


def test_present_record_of_an_attenuation_denial_marks_the_refusing_delegator(log_file):
    rec = json.loads(lines_of(log_file)[2])
    assert rec["decision"] == "deny" and rec["rules"] == []
    p = present_record(rec)
    assert [h["allowed"] for h in p["path"]] == [True, False, False]
    assert "the first delegator not allowed" in p["path"][1]["note"]
    assert "orchestrator lacked the authority" in p["path"][2]["note"]


def test_present_record_of_a_forbid_and_an_approval(log_file):
    lines = lines_of(log_file)
    deny = present_record(json.loads(lines[1]))
    assert deny["decision"] == "deny" and deny["determining"] == ["no-secrets"] and deny["allowed"] is False
    assert [h["allowed"] for h in deny["path"]] == [None, None, False]
    gate = present_record(json.loads(lines[3]))
    assert gate["decision"] == "require_approval" and gate["approvers"] == ["owners"]
    assert gate["allowed"] is False and "needs approval by owners" in gate["path"][-1]["note"]


def test_present_record_of_an_event_without_a_decision(log_file):
    p = present_record(json.loads(lines_of(log_file)[4]))
    assert p["decision"] is None and p["event"] == "open_task" and p["path"] == []
    direct = present_record(json.loads(lines_of(log_file)[5]))
    assert [(h["id"], h["role"], h["allowed"]) for h in direct["path"]] == [("user:alice", "subject", True)]


def test_present_record_from_the_request_when_there_is_no_delegation_path():
    rec = {"event": "decide", "request": {"principal": {"id": "bot", "kind": "agent"},
                                          "delegation": [{"id": "user:bob", "kind": "human"}]}}
    assert [(h["id"], h["role"], h["kind"]) for h in present_record(rec)["path"]] == [
        ("user:bob", "root", "human"), ("bot", "subject", "agent")]
    with pytest.raises(TypeError):
        present_record(["not", "a", "record"])


def test_a_tampered_record_detail_says_so(log_file):
    lines = lines_of(log_file)
    lines[1] = lines[1].replace(b'"decision":"deny"', b'"decision":"allow"')
    write_lines(log_file, lines)
    d = client_for(log_file).get("/api/audit/records/2").json()
    assert d["status"] == "tampered" and "hash does not match" in d["reason"]
    assert d["verification"]["ok"] is False
    assert d["presented"]["decision"] == "allow", "what the line claims, shown next to its flag"


# -- wired into the playground, behind its front --------------------------------------------------


@pytest.fixture
def playground(tmp_path, log_file):
    from policylang.playground.app import create_app

    (tmp_path / "p.policy").write_text(POLICY, encoding="utf-8")
    return TestClient(create_app(tmp_path / "p.policy", audit_path=log_file), base_url="http://127.0.0.1")


def test_the_playground_serves_the_viewer_and_its_api(playground):
    page = playground.get("/static/audit.html")
    assert page.status_code == 200 and 'src="audit.js"' in page.text and 'src="path.js"' in page.text
    for asset in ("audit.js", "audit.css", "path.js"):
        assert playground.get(f"/static/{asset}").status_code == 200, asset
    assert 'href="static/audit.html"' in playground.get("/").text
    report = playground.get("/api/audit/log").json()
    assert report["verification"]["summary"] == "chain verified: 6 records"
    assert playground.get("/api/audit/config").json() == {
        "configured": True, "name": "audit.jsonl", "read_only": True, "max_upload_bytes": audit_view.MAX_UPLOAD_BYTES,
        "filters": ["task", "principal", "decision"]}


def test_a_page_on_another_origin_cannot_upload_or_read_through_rebinding(playground, log_file):
    """Attack: a web page the user visits posts to the loopback playground, or reaches it
    through a DNS name rebound to 127.0.0.1. The playground's front refuses both."""
    r = playground.post("/api/audit/log", content=log_file.read_bytes(), headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.json()["error"]["message"]
    r = playground.get("/api/audit/log", headers={"host": "evil.example"})
    assert r.status_code == 403 and "loopback" in r.json()["error"]["message"]


def test_no_route_opens_a_file_other_than_the_configured_log(tmp_path, log_file):
    """Attack: ask the viewer for another file (a path parameter, a traversal in the line)."""
    secret = tmp_path / "secret.txt"
    secret.write_text("top-secret-value\n", encoding="utf-8")
    client = client_for(log_file)
    for params in ({"path": str(secret)}, {"file": str(secret)}, {"audit": str(secret)}):
        r = client.get("/api/audit/log", params=params)
        assert r.status_code == 200 and r.json()["name"] == "audit.jsonl" and "top-secret" not in r.text
    for line in ("..%2Fsecret.txt", "%2E%2E/secret.txt", "1%2F..%2F..%2Fsecret.txt"):
        r = client.get(f"/api/audit/records/{line}")
        assert r.status_code in (400, 404) and "top-secret" not in r.text
    none = client_for(None)
    r = none.get("/api/audit/log", params={"path": str(secret)})
    assert r.status_code == 404 and "top-secret" not in r.text


def test_a_record_is_presented_as_the_playground_presents_its_decision(tmp_path):
    """The same decision, presented live by the playground (present.present) and from its
    audit record (present_record): same decision fields, same hops, roles and labels; the
    hops a record can tell (subject; delegators of an attenuation denial) marked alike."""
    from policylang.playground.present import present

    policies = policylang.loads(POLICY)
    log = AuditLog(tmp_path / "a.jsonl", fsync=False)
    engine = policylang.Engine(policies, audit=log)
    for req in (_request("read", "readme", "T-1"), _request("read", "secret", "T-1"),
                _request("write", "readme", "T-2"), _request("publish", "readme", "T-2"),
                _request("read", "notes", "T-3", principal=HUMAN, chain=())):
        live = present(policies, req, engine.decide(req))
        rec = json.loads(lines_of(tmp_path / "a.jsonl")[-1])
        mine = present_record(rec)
        for key in ("decision", "allowed", "reasons", "determining", "errors", "grants", "approvers",
                    "policy_version"):
            assert mine[key] == live[key], (req["action"], key)
        assert [(h["id"], h["role"], h["kind"], h["label"]) for h in mine["path"]] == \
            [(h["id"], h["role"], h["kind"], h["label"]) for h in live["path"]]
        assert mine["path"][-1]["allowed"] == live["path"][-1]["allowed"]
        for got, want in zip(mine["path"][:-1], live["path"][:-1]):
            assert got["allowed"] in (None, want["allowed"]), (req["action"], got["id"])
        if rec["decision"] == "deny" and not rec["rules"]:  # the attenuation denial
            assert [h["allowed"] for h in mine["path"]] == [h["allowed"] for h in live["path"]]
