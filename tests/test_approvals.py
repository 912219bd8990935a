"""Human approvals (docs/language.md#approvals, docs/zero-standing-privilege.md Approvals), on both stores."""

from __future__ import annotations

import json

import pytest

import policylang
from policylang.approvals import Approvals, ApprovalError
from policylang.audit import AuditLog, verify_file
from policylang.store import open_store

try:
    from redis_fixture import dead_store_url, redis_server, store, store_url  # noqa: F401
except ImportError:  # tests/ as a package
    from tests.redis_fixture import dead_store_url, redis_server, store, store_url  # noqa: F401

T0 = 1_000_000.0

ENTITIES = {
    "human": {
        "user:alice": {"groups": ["sre-oncall"]},          # the requester's root: may not approve
        "user:bob": {"groups": ["sre-oncall"]},
        "user:carol": {"groups": ["release-managers", "security"]},
        "user:dave": {"groups": ["marketing"]},
        "user:erin": {"groups": "security"},
    },
    "agent": {"agent:rogue": {"groups": ["sre-oncall"]}},  # not a human: never an approver
}


class Clock:
    def __init__(self):
        self.t = T0

    def __call__(self):
        return self.t


class Gate:
    """A hand-built require_approval decision."""

    def __init__(self, approvers=("sre-oncall", "release-managers"), rules=("prod-deploys"),
                 decision="require_approval", path=("user:alice", "agent:deployer")):
        self.decision = decision
        self.rules = list(rules) if isinstance(rules, tuple) else [rules]
        self.reasons = ["production deploys are high impact"]
        self.grants = []
        self.approvers = list(approvers)
        self.errors = []
        self.delegation_path = list(path)
        self.policy_version = "sha256:x"


def deploy(**over):
    r = {"principal": {"id": "agent:deployer", "kind": "agent"}, "action": {"name": "deploy", "attrs": {}},
         "resource": {"type": "service", "id": "payments", "attrs": {"env": "prod"}},
         "delegation": [{"id": "user:alice", "kind": "human"}], "intent": {"task_id": "T-1"}}
    r.update(over)
    return r


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def approvals(store, clock):
    return Approvals(store, entities=ENTITIES, clock=clock)


SRE = ["sre-oncall", "release-managers"]


def test_open_approve_confirm(approvals):
    ticket = approvals.open(Gate(), deploy(), ttl=600)
    assert ticket.id.startswith("apr_") and ticket.status == "pending"
    assert (ticket.principal, ticket.action, ticket.resource_type, ticket.resource_id, ticket.task) == \
        ("agent:deployer", "deploy", "service", "payments", "T-1")
    assert ticket.expires_at == T0 + 600
    assert not approvals.checker(ticket.id, deploy(), SRE), "pending confirms nothing"
    approved = approvals.approve(ticket.id, approver="user:bob")
    assert approved.status == "approved" and approved.approvals[0]["approver"] == "user:bob"
    assert approvals.checker(ticket.id, deploy(), SRE)
    assert approvals.checker(ticket.id, deploy(), SRE), "reusable until it expires"


@pytest.mark.parametrize("who, why", [
    ("agent:deployer", "made or delegated"),   # the requesting principal
    ("user:alice", "made or delegated"),       # in the delegation chain (and in the group)
    ("user:dave", "none of the approver groups"),
    ("user:nobody", "not a known human"),
    ("agent:rogue", "not a known human"),      # right group, wrong kind
    ("", "non-empty"),
])
def test_who_may_not_approve(approvals, who, why):
    ticket = approvals.open(Gate(), deploy())
    with pytest.raises(ApprovalError, match=why):
        approvals.approve(ticket.id, approver=who)
    with pytest.raises(ApprovalError):
        approvals.deny(ticket.id, approver=who)
    assert approvals.get(ticket.id).status == "pending"


def test_a_delegator_deeper_in_the_chain_may_not_approve(approvals):
    req = deploy(delegation=[{"id": "user:carol", "kind": "human"}, {"id": "user:bob", "kind": "human"}])
    ticket = approvals.open(Gate(path=("user:carol", "user:bob", "agent:deployer")), req)
    for who in ("user:carol", "user:bob"):
        with pytest.raises(ApprovalError, match="made or delegated") as info:
            approvals.approve(ticket.id, approver=who)
        assert info.value.code == "forbidden"


def test_ticket_is_bound_to_principal_action_resource_and_task(approvals):
    ticket = approvals.open(Gate(), deploy())
    approvals.approve(ticket.id, approver="user:bob")
    assert approvals.checker(ticket.id, deploy(action="deploy"), SRE), "bare action strings work too"
    others = [
        deploy(principal={"id": "agent:other", "kind": "agent"}),
        deploy(action="rollback"),
        deploy(resource={"type": "database", "id": "payments"}),
        deploy(resource={"type": "service", "id": "ledger"}),
        deploy(intent={"task_id": "T-2"}),
        deploy(intent=None),
    ]
    for other in others:
        assert not approvals.checker(ticket.id, other, SRE), other


def test_approval_does_not_count_for_a_request_whose_chain_holds_the_approver(approvals):
    ticket = approvals.open(Gate(), deploy())
    approvals.approve(ticket.id, approver="user:bob")
    sneaky = deploy(delegation=[{"id": "user:bob", "kind": "human"}])
    assert not approvals.checker(ticket.id, sneaky, SRE)


def test_expiry(approvals, clock):
    ticket = approvals.open(Gate(), deploy(), ttl=60)
    approvals.approve(ticket.id, approver="user:bob")
    clock.t = T0 + 59.9
    assert approvals.checker(ticket.id, deploy(), SRE)
    clock.t = T0 + 60
    assert not approvals.checker(ticket.id, deploy(), SRE)
    assert approvals.get(ticket.id).status == "expired"
    with pytest.raises(ApprovalError, match="expired") as info:
        approvals.approve(ticket.id, approver="user:carol")
    assert info.value.code == "expired"


def test_deny_is_final(approvals):
    ticket = approvals.open(Gate(), deploy())
    approvals.approve(ticket.id, approver="user:bob")
    denied = approvals.deny(ticket.id, approver="user:carol")
    assert denied.status == "denied" and denied.denied_by == "user:carol"
    assert not approvals.checker(ticket.id, deploy(), SRE)
    with pytest.raises(ApprovalError, match="final") as info:
        approvals.approve(ticket.id, approver="user:bob")
    assert info.value.code == "denied"


def test_each_gate_needs_an_approver_from_its_own_list(approvals):
    ticket = approvals.open(Gate(approvers=("sre-oncall", "security"), rules=("a", "b")), deploy())
    approvals.approve(ticket.id, approver="user:bob")  # sre-oncall only
    assert approvals.checker(ticket.id, deploy(), ["sre-oncall"])
    assert not approvals.checker(ticket.id, deploy(), ["security"])
    approvals.approve(ticket.id, approver="user:erin")  # groups given as a bare string
    assert approvals.checker(ticket.id, deploy(), ["security"])


def test_membership_is_checked_again_when_the_gate_asks(store, clock):
    people = {"human": {"user:bob": {"groups": ["sre-oncall"]}}}
    approvals = Approvals(store, entities=lambda kind, ident: people.get(kind, {}).get(ident), clock=clock)
    ticket = approvals.open(Gate(), deploy())
    approvals.approve(ticket.id, approver="user:bob")
    assert approvals.checker(ticket.id, deploy(), SRE)
    people["human"]["user:bob"] = {"groups": []}  # bob left the on-call rotation
    assert not approvals.checker(ticket.id, deploy(), SRE)


@pytest.mark.parametrize("args", [
    ("apr_unknown", deploy(), SRE), (None, deploy(), SRE), (42, deploy(), SRE),
    ("apr_x", None, SRE), ("apr_x", "junk", SRE), ("apr_x", deploy(), None), ("apr_x", deploy(), []),
])
def test_checker_never_raises(approvals, args):
    assert approvals.checker(*args) is False


def test_checker_confirms_nothing_when_the_store_is_unreachable(dead_store_url, clock):
    approvals = Approvals(open_store(dead_store_url), entities=ENTITIES, clock=clock)
    assert approvals.checker("apr_1", deploy(), SRE) is False


def test_open_refuses_what_is_not_a_gate(approvals):
    for bad in (Gate(decision="allow"), Gate(decision="deny"), Gate(approvers=())):
        with pytest.raises(ApprovalError) as info:
            approvals.open(bad, deploy())
        assert info.value.code == "invalid"
    with pytest.raises(ApprovalError, match="another delegation path"):
        approvals.open(Gate(path=("user:mallory", "agent:deployer")), deploy())
    with pytest.raises(ApprovalError, match="ttl"):
        approvals.open(Gate(), deploy(), ttl=0)
    with pytest.raises(ApprovalError, match="malformed request"):
        approvals.open(Gate(path=()), {"principal": {"kind": "agent"}})


def test_unknown_ticket(approvals):
    for op in (approvals.get, lambda i: approvals.approve(i, approver="user:bob")):
        with pytest.raises(ApprovalError) as info:
            op("apr_nope")
        assert info.value.code == "not_found"


def test_list_filters(approvals, clock):
    a = approvals.open(Gate(), deploy(), ttl=100)
    b = approvals.open(Gate(approvers=("security",)), deploy(), ttl=1000)
    c = approvals.open(Gate(), deploy(), ttl=1000)
    approvals.deny(c.id, approver="user:bob")
    assert [t.id for t in approvals.list()] == [a.id, b.id]
    assert [t.id for t in approvals.list(approver="user:bob")] == [a.id]
    assert [t.id for t in approvals.list(approver="user:erin")] == [b.id]
    assert [t.id for t in approvals.list(approver="user:alice")] == [], "not on own requests"
    clock.t = T0 + 100
    assert [t.id for t in approvals.list()] == [b.id]
    assert {t.id: t.status for t in approvals.list(include_closed=True)} == \
        {a.id: "expired", b.id: "pending", c.id: "denied"}


def test_approval_events_are_audited(tmp_path, store, clock):
    log = AuditLog(tmp_path / "audit.jsonl")
    approvals = Approvals(store, entities=ENTITIES, audit=log, clock=clock)
    t = approvals.open(Gate(), deploy())
    approvals.approve(t.id, approver="user:bob")
    approvals.deny(t.id, approver="user:carol")
    events = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(e["event"], e.get("approver")) for e in events] == \
        [("approval_open", None), ("approve", "user:bob"), ("deny", "user:carol")]
    assert verify_file(tmp_path / "audit.jsonl").ok


# -- with the real engine ------------------------------------------------------------------

POLICY = '''
@id("prod-deploys-need-a-human")
require approval for agent to deploy on service
  when resource.env == "prod"
  by "sre-oncall", "release-managers"
  because "production deploys are high impact"

@id("payments-need-security")
require approval for agent to deploy on service "payments"
  by "security"
  because "payments changes need a security review"

@id("deployers-deploy")
permit agent "agent:deployer" to deploy on service
  grant "deploy:" + resource.id for 15m
  because "the deploy agent deploys services"
'''


def test_with_the_engine_each_gate_is_confirmed_separately(store):
    approvals = Approvals(store, entities=ENTITIES)
    engine = policylang.Engine(policylang.loads(POLICY), entities=ENTITIES, approvals=approvals.checker)
    req = deploy()
    d = engine.decide(req)
    assert d.decision == "require_approval"
    assert d.rules == ["prod-deploys-need-a-human", "payments-need-security"]
    ticket = approvals.open(d, req)
    with pytest.raises(ApprovalError):
        approvals.approve(ticket.id, approver="user:alice")  # self-approval via the chain
    approvals.approve(ticket.id, approver="user:bob")
    retry = {**req, "approval": ticket.id}
    d2 = engine.decide(retry)
    assert d2.decision == "require_approval"
    assert d2.rules == ["payments-need-security"] and d2.approvers == ["security"]
    approvals.approve(ticket.id, approver="user:erin")
    d3 = engine.decide(retry)
    assert d3.decision == "allow" and d3.grants[0]["scopes"] == ["deploy:payments"]
    # the approval unlocks nothing for another resource
    other = {**retry, "resource": {"type": "service", "id": "ledger", "attrs": {"env": "prod"}}}
    assert engine.decide(other).decision == "require_approval"


def test_entities_from_a_policy_set(tmp_path, store):
    (tmp_path / "p.policy").write_text(POLICY)
    (tmp_path / "people.entities.json").write_text(json.dumps(ENTITIES))
    policies = policylang.load(str(tmp_path))
    approvals = Approvals(store, entities=policies)
    ticket = approvals.open(Gate(), deploy())
    assert approvals.approve(ticket.id, approver="user:bob").status == "approved"


# -- properties ------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                     max_leaves=10)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(approval_id=_json, request=_json, approvers=_json)
def test_the_checker_never_raises_and_never_confirms_garbage(tmp_path, approval_id, request, approvers):
    approvals = Approvals(open_store(f"sqlite:///{tmp_path / 'p.db'}"), entities=ENTITIES)
    assert approvals.checker(approval_id, request, approvers) is False
