"""Issue 11: attacks on approval tickets (findings 7, 8 and 9).

Each test performs the attack and fails if it succeeds: a ticket that confirms a
request other than the one approved, a lifetime over the cap, a single-use ticket
used twice, or an approval that takes effect although its audit record was not written.
"""

from __future__ import annotations

import json
import threading

import pytest

import policylang
from policylang.approvals import ApprovalError, Approvals, canonical_request, request_digest
from policylang.audit import AuditError, AuditLog
from policylang.store import open_store

try:
    from redis_fixture import redis_server, store, store_url  # noqa: F401
except ImportError:  # tests/ as a package
    from tests.redis_fixture import redis_server, store, store_url  # noqa: F401

POLICY = '''
@id("big-refunds")
require approval for agent to refund on payment
  when context.amount > 100
  by "finance"
  because "refunds over 100 need finance"

@id("agents-refund")
permit agent to refund on payment
  because "the support agent refunds"
'''

TWO_GATES = '''
@id("big-refunds")
require approval for agent to refund on payment
  when context.amount > 100
  by "finance"

@id("vip-refunds")
require approval for agent to refund on payment "vip"
  by "security"

@id("agents-refund")
permit agent to refund on payment
'''

ENTITIES = {"human": {
    "user:alice": {"groups": ["customers"]},
    "user:mallory": {"groups": ["customers"]},
    "user:bob": {"groups": ["finance"]},
    "user:erin": {"groups": ["security"]},
}}


def refund(amount=150, on_behalf="user:alice", payment="p-1", **over):
    r = {"principal": {"id": "agent:support", "kind": "agent"}, "action": "refund",
         "resource": {"type": "payment", "id": payment},
         "context": {"amount": amount, "currency": "EUR"},
         "delegation": [{"id": on_behalf, "kind": "human"}], "intent": {"task_id": "T-1"}}
    r.update(over)
    return r


class Clock:
    def __init__(self):
        self.t = 1_000_000.0

    def __call__(self):
        return self.t


def setup(store, policy=POLICY, **kw):
    ps = policylang.loads(policy)
    approvals = Approvals(store, entities=ENTITIES, **kw)
    engine = policylang.Engine(ps, entities=ENTITIES, approvals=approvals.checker)
    return approvals, engine


def approved_ticket(approvals, engine, req, approver="user:bob", **kw):
    d = engine.decide(req)
    assert d.decision == "require_approval"
    t = approvals.open(d, req, **kw)
    approvals.approve(t.id, approver=approver)
    return t


# -- finding 7: the ticket is bound to the whole request ------------------------------------------


def test_a_ticket_for_150_does_not_confirm_10_000_000(store):
    approvals, engine = setup(store)
    t = approved_ticket(approvals, engine, refund(150))
    assert engine.decide({**refund(150), "approval": t.id}).decision == "allow"
    attack = {**refund(10_000_000), "approval": t.id}
    assert engine.decide(attack).decision == "require_approval", "the approval was replayed for 10,000,000"


def test_alices_ticket_does_not_unlock_the_agent_working_for_mallory(store):
    approvals, engine = setup(store)
    t = approved_ticket(approvals, engine, refund(on_behalf="user:alice"))
    attack = {**refund(on_behalf="user:mallory"), "approval": t.id}
    assert engine.decide(attack).decision == "require_approval"
    longer = {**refund(), "delegation": [{"id": "user:mallory", "kind": "human"},
                                         {"id": "user:alice", "kind": "human"}], "approval": t.id}
    assert engine.decide(longer).decision == "require_approval"


@pytest.mark.parametrize("change", [
    lambda r: r["context"].update(currency="USD"),
    lambda r: r["context"].update(extra="x"),
    lambda r: r["resource"].update(attrs={"owner": "mallory"}),
    lambda r: r.update(action={"name": "refund", "attrs": {"fast": True}}),
    lambda r: r.update(principal={"id": "agent:support", "kind": "agent", "attrs": {"tier": 9}}),
    lambda r: r.update(intent={"task_id": "T-1", "purpose": "something else"}),
    lambda r: r.update(risk={"score": 0.9}),
    lambda r: r["delegation"][0].update(attrs={"role": "admin"}),
    lambda r: r["delegation"][0].update(kind="agent"),
], ids=["currency", "extra-context", "resource-attrs", "action-attrs", "principal-attrs", "purpose",
        "risk", "delegator-attrs", "delegator-kind"])
def test_any_other_field_voids_the_ticket(store, change):
    approvals, engine = setup(store)
    t = approved_ticket(approvals, engine, refund())
    attack = json.loads(json.dumps(refund()))
    change(attack)
    attack["approval"] = t.id
    assert not approvals.checker(t.id, attack, ["finance"])
    assert engine.decide(attack).decision != "allow"


def test_equivalent_spellings_keep_confirming(store):
    """The digest is over one spelling: 150.0 is 150, an action string is {name}, a
    missing attrs is {}. Not a way around the binding, just no needless refusals."""
    approvals, engine = setup(store)
    t = approved_ticket(approvals, engine, refund(150))
    same = {**refund(150.0), "action": {"name": "refund", "attrs": {}},
            "resource": {"type": "payment", "id": "p-1", "attrs": {}}, "approval": t.id}
    assert request_digest(same) == request_digest(refund(150)) == t.digest
    assert engine.decide(same).decision == "allow"


def test_the_digest_is_sha256_of_the_canonical_request():
    import hashlib

    req = refund(150, approval="apr_x")
    c = canonical_request(req)
    assert "approval" not in c
    text = json.dumps(c, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert request_digest(req) == "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    assert request_digest(req) != request_digest(refund(151))
    with pytest.raises(ValueError, match="context.amount"):
        request_digest(refund(float("nan")))


def test_a_ticket_without_a_digest_confirms_nothing(store):
    """A ticket from before binding (or one whose digest was stripped in the store)."""
    approvals, engine = setup(store)
    t = approved_ticket(approvals, engine, refund())

    def strip(data):
        data = dict(data)
        data.pop("digest")
        return data

    store.update_approval(t.id, strip)
    assert engine.decide({**refund(), "approval": t.id}).decision == "require_approval"


def test_the_approver_is_shown_what_they_approve(store, tmp_path):
    log = AuditLog(tmp_path / "a.jsonl", redact=["card_number"], fsync=False)
    approvals, engine = setup(store, audit=log)
    req = refund(10_000_000)
    req["context"]["Card_Number"] = "4111111111111111"
    d = engine.decide(req)
    t = approvals.open(d, req)
    listed = approvals.list()[0]
    assert listed.digest == t.digest == request_digest(req)
    assert listed.request["context"]["amount"] == 10_000_000
    assert listed.request["delegation"] == [{"id": "user:alice", "kind": "human", "attrs": {}}]
    assert "10000000" in listed.summary and "via user:alice" in listed.summary
    assert "4111111111111111" not in json.dumps(listed.to_dict()), "a redacted key is shown in clear"


def test_http_and_cli_show_the_request(store_url, tmp_path):
    fastapi = pytest.importorskip("fastapi")
    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    from policylang.cli import main
    from policylang.server.zsp import make_router

    store = open_store(store_url)
    approvals, engine = setup(store)
    app = fastapi.FastAPI()
    app.include_router(make_router(approvals=approvals, engine_getter=lambda: engine))
    client = TestClient(app)
    r = client.post("/v1/approvals", json={"request": refund(10_000_000)})
    assert r.status_code == 201, r.text
    tid = r.json()["approval"]["id"]
    (listed,) = client.get("/v1/approvals").json()["approvals"]
    assert listed["id"] == tid and listed["digest"] == request_digest(refund(10_000_000))
    assert listed["request"]["context"]["amount"] == 10_000_000
    assert "10000000" in listed["summary"]
    people = tmp_path / "people.entities.json"
    people.write_text(json.dumps(ENTITIES))
    out = CliRunner().invoke(main, ["approvals", "list", "--store", store_url]).output
    assert tid in out and '"amount": 10000000' in out and "via user:alice" in out
    assert request_digest(refund(10_000_000)) in out
    listed = json.loads(CliRunner().invoke(main, ["approvals", "list", "--store", store_url,
                                                  "--format", "json"]).output)["approvals"]
    assert listed[0]["request"]["context"]["amount"] == 10_000_000


# -- single use -------------------------------------------------------------------------------


def test_a_single_use_ticket_confirms_one_decision(store):
    approvals, engine = setup(store)
    t = approved_ticket(approvals, engine, refund(), single_use=True)
    assert engine.decide({**refund(), "approval": t.id}).decision == "allow"
    assert engine.decide({**refund(), "approval": t.id}).decision == "require_approval", "used twice"
    assert approvals.get(t.id).status == "used"
    assert t.id not in [x.id for x in approvals.list()]
    with pytest.raises(ApprovalError) as info:
        approvals.approve(t.id, approver="user:bob")
    assert info.value.code == "used"


def test_a_single_use_ticket_is_not_reused_through_the_same_request_object(store):
    approvals, engine = setup(store)
    t = approved_ticket(approvals, engine, refund(), single_use=True)
    retry = {**refund(), "approval": t.id}
    assert engine.decide(retry).decision == "allow"
    assert engine.decide(retry).decision == "require_approval"


def test_a_single_use_ticket_with_two_gates_is_not_spent_while_partly_approved(store):
    approvals, engine = setup(store, policy=TWO_GATES)
    req = refund(payment="vip")
    d = engine.decide(req)
    assert d.rules == ["big-refunds", "vip-refunds"]
    t = approvals.open(d, req, single_use=True)
    approvals.approve(t.id, approver="user:bob")
    retry = {**req, "approval": t.id}
    assert engine.decide(retry).decision == "require_approval"
    approvals.approve(t.id, approver="user:erin")  # still approvable: nothing was spent
    assert engine.decide({**req, "approval": t.id}).decision == "allow"
    assert engine.decide({**req, "approval": t.id}).decision == "require_approval"


def test_racing_decisions_get_one_allow(store):
    """Eight threads retry with one single-use ticket at once: one allow, on both stores."""
    approvals, engine = setup(store, policy=TWO_GATES)
    req = refund(payment="vip")
    t = approvals.open(engine.decide(req), req, single_use=True)
    approvals.approve(t.id, approver="user:bob")
    approvals.approve(t.id, approver="user:erin")
    results, barrier = [], threading.Barrier(8)

    def go():
        barrier.wait()
        results.append(engine.decide({**req, "approval": t.id}).decision)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results.count("allow") == 1, results
    assert engine.decide({**req, "approval": t.id}).decision == "require_approval"


def test_two_approvals_instances_share_the_consumption(store_url):
    """Two replicas on one store: the ticket used on one confirms nothing on the other."""
    a1, e1 = setup(open_store(store_url))
    a2, e2 = setup(open_store(store_url))
    t = approved_ticket(a1, e1, refund(), single_use=True)
    assert e1.decide({**refund(), "approval": t.id}).decision == "allow"
    assert e2.decide({**refund(), "approval": t.id}).decision == "require_approval"


# -- finding 8: the lifetime cap --------------------------------------------------------------------


def test_a_ten_year_ticket_is_refused(store):
    approvals, engine = setup(store)
    d = engine.decide(refund())
    with pytest.raises(ApprovalError, match="max_approval_ttl") as info:
        approvals.open(d, refund(), ttl=10 * 365 * 24 * 3600)
    assert info.value.code == "invalid"
    assert approvals.list(include_closed=True) == []
    assert approvals.open(d, refund(), ttl=24 * 3600).expires_at > 0  # the default cap itself is fine


def test_the_policy_option_sets_the_cap(store):
    ps = policylang.loads("option max_approval_ttl = 2h\n" + POLICY)
    assert ps.options.max_approval_ttl == 7200
    approvals = Approvals(store, entities=ENTITIES, clock=Clock())
    engine = policylang.Engine(ps, entities=ENTITIES, approvals=approvals.checker)
    d = engine.decide(refund())
    with pytest.raises(ApprovalError, match="7200"):
        approvals.open(d, refund(), ttl=3 * 3600)
    t = approvals.open(d, refund(), ttl=7200)
    assert t.expires_at - t.created_at == 7200
    # a hand-built decision has no engine: the policy set is passed
    with pytest.raises(ApprovalError):
        approvals.open(d.to_dict(), refund(), ttl=3 * 3600, policies=ps)


def test_the_service_cap_lowers_the_policys(store):
    approvals, engine = setup(store, max_ttl=600, clock=Clock())
    d = engine.decide(refund())
    with pytest.raises(ApprovalError, match="600"):
        approvals.open(d, refund(), ttl=3600)
    t = approvals.open(d, refund())  # no ttl: the default (1 h) lowered to the cap
    assert t.expires_at - t.created_at == 600


def test_a_bad_option_value_is_a_diagnostic():
    from policylang.language.errors import PolicyError

    for bad in ('"forever"', "0s", "true"):
        with pytest.raises(PolicyError, match="option max_approval_ttl needs a positive duration"):
            policylang.loads(f"option max_approval_ttl = {bad}\n" + POLICY)


def test_http_refuses_a_ten_year_ticket(store):
    fastapi = pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from policylang.server.zsp import make_router

    approvals, engine = setup(store)
    app = fastapi.FastAPI()
    app.include_router(make_router(approvals=approvals, engine_getter=lambda: engine))
    client = TestClient(app)
    r = client.post("/v1/approvals", json={"request": refund(), "ttl": 315_360_000})
    assert r.status_code == 400 and "max_approval_ttl" in r.json()["error"]["message"]
    assert approvals.list(include_closed=True) == []
    r = client.post("/v1/approvals", json={"request": refund(), "single_use": "yes"})
    assert r.status_code == 400
    r = client.post("/v1/approvals", json={"request": refund(), "single_use": True})
    assert r.status_code == 201 and r.json()["approval"]["single_use"] is True


# -- finding 9: audit first -------------------------------------------------------------------------


class BrokenAudit:
    """An audit log whose disk is full."""

    redact = frozenset()

    def __init__(self):
        self.broken = False
        self.events = []

    def record(self, event, **kw):
        if self.broken:
            raise AuditError("cannot write audit log: No space left on device")
        self.events.append(event)
        return {}


def test_an_approval_that_could_not_be_audited_does_not_open_the_gate(store):
    audit = BrokenAudit()
    approvals, engine = setup(store, audit=audit)
    d = engine.decide(refund())
    t = approvals.open(d, refund())
    audit.broken = True
    with pytest.raises(AuditError):
        approvals.approve(t.id, approver="user:bob")
    assert approvals.get(t.id).status == "pending"
    assert not approvals.checker(t.id, refund(), ["finance"])
    assert engine.decide({**refund(), "approval": t.id}).decision == "require_approval"


def test_a_ticket_that_could_not_be_audited_is_not_opened(store):
    audit = BrokenAudit()
    audit.broken = True
    approvals, engine = setup(store, audit=audit)
    with pytest.raises(AuditError):
        approvals.open(engine.decide(refund()), refund())
    assert approvals.list(include_closed=True) == []


def test_a_deny_whose_audit_failed_stays_in_effect(store):
    audit = BrokenAudit()
    approvals, engine = setup(store, audit=audit)
    t = approved_ticket(approvals, engine, refund())
    audit.broken = True
    with pytest.raises(AuditError):
        approvals.deny(t.id, approver="user:bob")
    assert approvals.get(t.id).status == "denied", "a deny closes even when it could not be logged"
    assert engine.decide({**refund(), "approval": t.id}).decision == "require_approval"


def test_http_503_and_the_gate_stays_closed(store, tmp_path):
    fastapi = pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from policylang.server.zsp import make_router

    log_path = tmp_path / "audit.jsonl"
    log = AuditLog(log_path, fsync=False)
    approvals, engine = setup(store, audit=log)
    app = fastapi.FastAPI()
    app.include_router(make_router(approvals=approvals, engine_getter=lambda: engine))
    client = TestClient(app)
    tid = client.post("/v1/approvals", json={"request": refund()}).json()["approval"]["id"]
    log.path = str(tmp_path)  # a directory: every write fails
    r = client.post(f"/v1/approvals/{tid}/approve", json={"approver": "user:bob"})
    assert r.status_code == 503, r.text
    assert engine.decide({**refund(), "approval": tid}).decision == "require_approval"
    assert approvals.get(tid).status == "pending"
