"""Approvals over AuthZEN (docs/server.md#aarp) in process: what the live tests in
test_aarp_http.py cannot easily reach — a policy change between denial and submission,
an audit log that fails, a clock past the deadline, concurrent submissions of one denial,
the service without binding keys, and serve's option checks."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from policylang.credentials import KeySet  # noqa: E402
from policylang.server.aarp import AccessRequests  # noqa: E402
from policylang.server.app import create_app  # noqa: E402
from policylang.server.auth import Caller  # noqa: E402
from policylang.server.service import ServiceConfig, build_service  # noqa: E402

POLICY = '''
@id("big-refunds-need-finance")
require approval for agent to refund on payment
  when context.amount > 100
  by "finance"
  because "refunds over 100 need a finance approver"

@id("support-refunds")
permit agent to refund on payment
  because "support agents refund payments"
'''
ENTITIES = {"human": {"user:fin": {"groups": ["finance"]}}}
ERR = "urn:openid:authzen:access-request:error:"
EVAL = {"subject": {"type": "agent", "id": "agent:support"}, "resource": {"type": "payment", "id": "p-1"},
        "action": {"name": "refund"}, "context": {"amount": 150}}
PEP = Caller(id="pep:gateway", method="jwt")


def _app(tmp: Path, *, binding: bool = True, audit: bool = True):
    d = tmp / "policies"
    d.mkdir(exist_ok=True)
    (d / "p.policy").write_text(POLICY)
    (d / "people.entities.json").write_text(json.dumps(ENTITIES))
    KeySet.generate().save(tmp / "binding.json")
    config = ServiceConfig(path=str(d), store=f"sqlite:///{tmp / 'state.db'}", poll_interval=0,
                           audit=str(tmp / "audit.jsonl") if audit else None)
    service, extras = build_service(config)
    aarp = {"binding_keys": str(tmp / "binding.json"), "binding_ttl": 600} if binding else None
    app = create_app(config, service=service, extras=extras, aarp=aarp, watch=False)
    return app, service, TestClient(app)


def _submission(ctx: dict, context=None) -> dict:
    ar = ctx["access_request"]
    return {**{k: EVAL[k] for k in ("subject", "resource", "action")}, "context": context or EVAL["context"],
            "denial": {"evaluation_id": ctx["evaluation_id"], "expires_at": ar["expires_at"],
                       "binding_token": ar["binding_token"]}}


def test_a_denial_that_is_no_longer_requestable_is_not_requestable(tmp_path):
    app, service, client = _app(tmp_path)
    ctx = client.post("/access/v1/evaluation", json=EVAL).json()["context"]
    # the policy changes: refunds no longer need an approval
    (tmp_path / "policies" / "p.policy").write_text('''
@id("support-refunds")
permit agent to refund on payment
  because "support agents refund payments"
''')
    assert service.load("test").ok
    r = client.post("/access/v1/requests", json=_submission(ctx))
    assert r.status_code == 400, r.text
    assert r.json()["type"] == ERR + "not_requestable"
    assert "allow" in r.json()["detail"]


def test_a_denial_whose_audit_record_fails_gets_no_binding_token(tmp_path):
    from policylang.audit import AuditError
    app, _service, client = _app(tmp_path)

    class Failing:
        redact = frozenset()

        def record(self, *a, **k):
            raise AuditError("disk full")

    app.state.access_requests.audit = Failing()
    r = client.post("/access/v1/evaluation", json=EVAL)
    assert r.status_code == 503, r.text
    assert "binding_token" not in r.text


def test_the_deadline_is_the_earlier_of_exp_and_expires_at(tmp_path):
    app, _service, client = _app(tmp_path)
    aarp: AccessRequests = app.state.access_requests
    ctx = client.post("/access/v1/evaluation", json=EVAL).json()["context"]
    real = aarp._clock
    try:
        aarp._clock = lambda: real() + 601  # past expires_at (and exp)
        r = client.post("/access/v1/requests", json=_submission(ctx))
        assert r.status_code == 410 and r.json()["type"] == ERR + "expired_denial"
    finally:
        aarp._clock = real
    assert client.post("/access/v1/requests", json=_submission(ctx)).status_code == 202


def test_one_denial_submitted_concurrently_opens_one_task(tmp_path):
    app, _service, client = _app(tmp_path)
    aarp: AccessRequests = app.state.access_requests
    ctx = client.post("/access/v1/evaluation", json=EVAL).json()["context"]
    body = _submission(ctx)
    results, errors = [], []

    def go():
        try:
            results.append(aarp.submit(json.loads(json.dumps(body)), PEP, "http://pdp.test", None))
        except Exception as e:  # noqa: BLE001 - collected and asserted on
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len({payload["task"]["id"] for _s, payload, _h in results}) == 1
    opened = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    # audit first: a racer that lost recorded its open, then that it did not take effect
    opens = [r for r in opened if r["event"] == "approval_open"]
    aborted = [r for r in opened if r["event"] == "approval_aborted" and r["aborted"] == "approval_open"]
    assert len(opens) - len(aborted) == 1
    assert all(r["evaluation_id"] == ctx["evaluation_id"] for r in opens)


def test_a_changed_request_after_approval_is_denied_and_spends_nothing(tmp_path):
    app, _service, client = _app(tmp_path)
    ctx = client.post("/access/v1/evaluation", json=EVAL).json()["context"]
    task = client.post("/access/v1/requests", json=_submission(ctx)).json()["task"]
    ticket = "apr_" + task["id"][4:]
    # no authentication configured (loopback only): the body names the approver
    assert client.post(f"/v1/approvals/{ticket}/approve", json={"approver": "user:fin"}).status_code == 200
    approval = client.get(f"/access/v1/requests/{task['id']}").json()["result"]["approval"]
    big = {**EVAL, "context": {"amount": 10_000_000, "approval": approval}}
    r = client.post("/access/v1/evaluation", json=big).json()
    assert r["decision"] is False and r["context"]["reason"] == "out_of_scope"
    ok = client.post("/access/v1/evaluation", json={**EVAL, "context": {"amount": 150, "approval": approval}}).json()
    assert ok["decision"] is True
    again = client.post("/access/v1/evaluation", json={**EVAL, "context": {"amount": 150, "approval": approval}})
    assert again.json()["decision"] is False and again.json()["context"]["reason"] == "approval_expired"


def test_without_binding_keys_nothing_changes(tmp_path):
    _app_, _service, client = _app(tmp_path, binding=False)
    r = client.post("/access/v1/evaluation", json=EVAL).json()
    assert r["decision"] is False and r["context"]["decision"] == "require_approval"
    assert not {"access_request", "evaluation_id", "reason"} & set(r["context"])
    doc = client.get("/.well-known/authzen-configuration").json()
    assert "access_request_endpoint" not in doc and "jwks_uri" not in doc
    assert client.post("/access/v1/requests", json={}).status_code == 404
    assert client.get("/access/v1/jwks").status_code == 404


def test_serve_refuses_binding_keys_without_a_store_or_a_signing_key(tmp_path):
    from policylang.cli.serve import command
    d = tmp_path / "policies"
    d.mkdir()
    (d / "p.policy").write_text(POLICY)
    keys = tmp_path / "binding.json"
    KeySet.generate().save(keys)
    r = CliRunner().invoke(command, [str(d), "--binding-keys", str(keys)])
    assert r.exit_code == 2 and "--binding-keys needs --store" in r.output
    public = tmp_path / "public.json"
    ks = KeySet.load(keys)
    public.write_text(json.dumps(ks.public_jwks(0, 0)))
    r = CliRunner().invoke(command, [str(d), "--binding-keys", str(public), "--store",
                                     f"sqlite:///{tmp_path / 's.db'}", "--create-store"])
    assert r.exit_code == 1 and "no signing key" in r.output
