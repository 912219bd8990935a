"""The engine's own behaviour beyond the conformance cases: the index, the cache, the
approval checker, audit hooks, decide_many, explain and bad input."""

from __future__ import annotations

import time

import pytest

import policylang
from policylang.evaluation import interpreter

POLICY = """
const PROD = ["prod", "prod-eu"]
@id("d07-reads") permit * to read on doc when principal.dept == "d07" and resource.owner == principal.tenant
  grant "doc:read:" + resource.id for 10m because "d07 reads its tenant's docs"
@id("d08-reads") permit * to read on doc when principal.dept == "d08"
@id("d09-reads") permit * to read on doc when principal.dept == "d09"
@id("prod-gate") require approval for agent to deploy on service when resource.env in PROD by "sre"
@id("deployers") permit agent to deploy on service because "agents deploy"
@id("risky") forbid * to * on * when risk has score and risk.score > 0.9 because "too risky"
"""


def req(dept="d07", **extra):
    r = {"principal": {"id": "u1", "kind": "human", "attrs": {"dept": dept, "tenant": "acme", "unread": 1}},
         "action": "read", "resource": {"type": "doc", "id": "x", "attrs": {"owner": "acme"}}}
    r.update(extra)
    return r


@pytest.fixture(scope="module")
def policies():
    return policylang.loads(POLICY, name="engine.policy")


def test_index_reaches_only_matching_rules(policies):
    engine = policylang.Engine(policies, cache_size=0, instrument=True)
    d = engine.decide(req("d07"))
    assert d.decision == "allow" and d.rules == ["d07-reads"]
    # the department test is answered by the index: only the rest of d07-reads runs
    # (resource.owner == principal.tenant) plus the risk forbid's `risk has score`
    assert engine.counters.conditions == 2
    engine.counters.reset()
    engine.decide(req("d99"))
    assert engine.counters.conditions == 1  # only the forbid; no department matched


def test_index_falls_back_when_the_value_is_missing(policies):
    engine = policylang.Engine(policies, cache_size=0)
    r = req()
    del r["principal"]["attrs"]["dept"]
    d = engine.decide(r)
    assert d.decision == "deny"
    assert [e["rule"] for e in d.errors] == ["d07-reads", "d08-reads", "d09-reads"]
    assert d.to_dict() == interpreter.decide(policies, r).to_dict()


def test_typed_values_never_share_an_index_slot_or_cache_entry():
    ps = policylang.loads('@id("one") permit * to a on t when principal.v == 1\n'
                          '@id("one-b") permit * to a on t when principal.v == 1.0\n'
                          '@id("t") permit * to a on t when principal.v == true\n')
    engine = policylang.Engine(ps)
    base = {"action": "a", "resource": {"type": "t"}}
    for value, rules in ((1, ["one", "one-b"]), (1.0, ["one", "one-b"]), (True, ["t"]), ("1", [])):
        for _ in range(2):
            d = engine.decide({"principal": {"id": "p", "kind": "k", "attrs": {"v": value}}, **base})
            assert d.rules == rules, value


def test_cache_shares_entries_across_unread_values(policies):
    engine = policylang.Engine(policies)
    engine.decide(req())
    r2 = req()
    r2["principal"]["attrs"]["unread"] = 2        # no rule reads it
    r2["principal"]["id"] = "u2"                  # nor the principal id
    d = engine.decide(r2)
    info = engine.cache_info()
    assert info["hits"] == 1 and info["size"] == 1
    assert d.delegation_path == ["u2"]            # still this request's own path
    r3 = req()
    r3["principal"]["attrs"]["tenant"] = "globex"  # read by d07-reads: a new entry
    assert engine.decide(r3).decision == "deny"
    assert engine.cache_info()["size"] == 2


def test_cache_disabled_and_bounded(policies):
    assert policylang.Engine(policies, cache_size=0).cache_info()["maxsize"] == 0
    engine = policylang.Engine(policies, cache_size=2)
    for dept in ("d07", "d08", "d09", "d10"):
        engine.decide(req(dept))
    assert engine.cache_info()["size"] == 2


def test_cache_ttl_expires(policies):
    engine = policylang.Engine(policies, cache_size=10, cache_ttl=0.05)
    engine.decide(req())
    engine.decide(req())
    assert engine.cache_info()["hits"] == 1
    time.sleep(0.1)
    engine.decide(req())
    assert engine.cache_info()["hits"] == 1


def test_cached_decisions_cannot_be_corrupted_by_callers(policies):
    engine = policylang.Engine(policies)
    d = engine.decide(req())
    d.rules.append("evil")
    d.grants[0]["scopes"].append("evil")
    again = engine.decide(req())
    assert again.rules == ["d07-reads"] and again.grants[0]["scopes"] == ["doc:read:x"]


def test_approval_dependent_decisions_are_never_served_stale(policies):
    approved = {"apr-1"}
    engine = policylang.Engine(policies, approvals=lambda a, r, by: a in approved)
    deploy = {"principal": {"id": "bot", "kind": "agent"}, "action": "deploy",
              "resource": {"type": "service", "id": "api", "attrs": {"env": "prod"}}, "approval": "apr-1"}
    assert engine.decide(deploy).decision == "allow"
    approved.clear()  # the approval is revoked: the next decision must see it
    assert engine.decide(deploy).decision == "require_approval"
    calls = []
    engine2 = policylang.Engine(policies, approvals=lambda a, r, by: calls.append((a, by)) or True)
    engine2.decide(deploy)
    assert calls == [("apr-1", ["sre"])]


def test_decide_many_keeps_order_and_names_the_bad_item(policies):
    engine = policylang.Engine(policies)
    out = engine.decide_many([req("d07"), req("d99"), req("d08")])
    assert [d.decision for d in out] == ["allow", "deny", "allow"]
    with pytest.raises(policylang.RequestError) as info:
        engine.decide_many([req(), {"principal": {"id": "u"}}])
    assert info.value.field == "[1].principal.kind"


def test_explain_names_rules_conditions_and_values(policies):
    engine = policylang.Engine(policies)
    r = req()
    r["resource"]["attrs"]["owner"] = "globex"
    text = engine.decide(r).explain()
    assert "decision: deny" in text
    assert "delegation path: u1" in text
    assert "d07-reads" in text and "engine.policy:3" in text
    assert '"globex" == "acme" is false' in text


def test_explain_lists_errors_with_their_location(policies):
    engine = policylang.Engine(policies)
    r = req()
    del r["principal"]["attrs"]["dept"]
    text = engine.decide(r).explain()
    assert "errors:" in text and "principal has no attribute 'dept'" in text
    assert "d08-reads (engine.policy:5)" in text


def test_entities_mapping_and_callable(policies):
    stored = {"human": {"u1": {"dept": "d07", "tenant": "acme"}}, "doc": {"x": {"owner": "acme"}}}
    bare = {"principal": {"id": "u1", "kind": "human"}, "action": "read", "resource": {"type": "doc", "id": "x"}}
    assert policylang.Engine(policies, entities=stored).decide(bare).decision == "allow"
    seen = []

    def pip(kind, eid):
        seen.append((kind, eid))
        return stored.get(kind, {}).get(eid)
    assert policylang.Engine(policies, entities=pip, cache_size=0).decide(bare).decision == "allow"
    assert ("human", "u1") in seen and ("doc", "x") in seen


def test_bad_engine_arguments(policies):
    with pytest.raises(TypeError):
        policylang.Engine("not a policy set")
    with pytest.raises(ValueError):
        policylang.Engine(policies, entities={"human": ["not", "an", "object"]})


@pytest.mark.parametrize("bad", [None, "x", 5, [], {"principal": "me"}])
def test_bad_requests_raise_request_error_only(policies, bad):
    with pytest.raises(policylang.RequestError):
        policylang.Engine(policies).decide(bad)


class Audit:
    def __init__(self, fail=False):
        self.fail = fail
        self.records = []

    def record(self, event, **fields):
        if self.fail:
            raise OSError("disk full")
        self.records.append((event, fields))


def test_audit_hook_records_every_decision_and_fails_closed(policies):
    audit = Audit()
    engine = policylang.Engine(policies, audit=audit)
    engine.decide(req())
    engine.decide(req())  # cached decisions are audited too
    assert [e for e, _ in audit.records] == ["decide", "decide"]
    fields = audit.records[0][1]
    assert fields["decision"].decision == "allow" and fields["request"] == req()
    assert isinstance(fields["latency_us"], int)
    with pytest.raises(OSError):
        policylang.Engine(policies, audit=Audit(fail=True)).decide(req())


def test_generated_code_holds_no_request_data_and_runs_in_its_own_namespace(policies):
    engine = policylang.Engine(policies)
    source = engine.tree.source
    assert "acme" not in source and "u1" not in source
    evil = req()
    evil["principal"]["attrs"]["dept"] = "__import__('os').system('false')"
    assert engine.decide(evil).decision == "deny"
    # a policy string full of quotes, backslashes and Python is only ever data
    ps = policylang.loads('@id("q") permit * to a on t when principal.s == "\\"); import os #\\\\\\n"')
    e = policylang.Engine(ps)
    ok = {"principal": {"id": "p", "kind": "k", "attrs": {"s": '"); import os #\\\n'}},
          "action": "a", "resource": {"type": "t"}}
    assert e.decide(ok).decision == "allow"


def test_policy_version_is_a_content_hash():
    a = policylang.loads('permit * to a on t', name="x.policy")
    b = policylang.loads('permit * to a on t', name="x.policy")
    c = policylang.loads('permit * to b on t', name="x.policy")
    assert a.version == b.version != c.version
    assert a.version.startswith("sha256:")


def test_concurrent_decisions_from_many_threads_agree(policies):
    import threading

    engine = policylang.Engine(policies, cache_size=8)
    reference = {d: policylang.Engine(policies, cache_size=0).decide(req(d)).to_dict()
                 for d in ("d07", "d08", "d09", "d10", "d11")}
    failures = []

    def worker(seed):
        for i in range(300):
            dept = ("d07", "d08", "d09", "d10", "d11")[(seed + i) % 5]
            try:
                if engine.decide(req(dept)).to_dict() != reference[dept]:
                    failures.append(dept)
            except Exception as e:  # pragma: no cover - the assertion below reports it
                failures.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_audit_log_can_be_attached_later(policies):
    engine = policylang.Engine(policies)
    engine.decide(req())
    audit = Audit()
    engine.audit = audit
    engine.decide(req())
    assert [e for e, _ in audit.records] == ["decide"]
    engine.audit = None
    engine.decide(req())
    assert len(audit.records) == 1
