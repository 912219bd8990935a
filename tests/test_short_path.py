"""The engine's short path (Engine._evaluate, compiler.Plan.simple): plans of plain permits
and forbids with at most one index group are decided without the entry list. Every
decision must equal the reference interpreter's, field for field: source order of the
determining rules when the plain entries and the index group both hold, errors that send
the request down the full path, and the plans that must not take the short path."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policylang
from policylang.evaluation import interpreter

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _req(dept="eng", tenant="t1", owner="t1", score=0.5, action="read", rtype="doc", **more):
    req = {
        "principal": {"kind": "agent", "id": "a1", "attrs": {"dept": dept, "tenant": tenant}},
        "action": action,
        "resource": {"type": rtype, "id": "d1", "attrs": {"owner": owner}},
        "risk": {"score": score},
    }
    req.update(more)
    return req


def _agree(text, reqs):
    ps = policylang.loads(text)
    engine = policylang.Engine(ps, cache_size=0)
    out = []
    for req in reqs:
        got = engine.decide(req).to_dict()
        want = interpreter.decide(ps, req).to_dict()
        assert got == want, (text, req)
        out.append(got)
    return engine, out


MIXED = """
@id("p-plain-1") permit * to read on doc when risk.score < 0.9 because "low risk"
@id("p-eng") permit * to read on doc when principal.dept == "eng" because "eng reads"
@id("p-plain-2") permit * to read on doc when resource.owner == principal.tenant
@id("p-ops") permit * to read on doc when principal.dept == "ops"
@id("p-eng-2") permit * to read on doc when principal.dept == "eng" and risk.score < 0.8 because "eng, lower risk"
@id("f-plain") forbid * to read on doc when risk.score > 0.95 because "too risky"
@id("f-eng") forbid * to read on doc when principal.dept == "eng" and risk.score > 0.9
@id("f-ops") forbid * to read on doc when principal.dept == "ops" and risk.score > 0.9
"""


def test_the_mixed_plan_takes_the_short_path_and_one_index_group():
    engine = policylang.Engine(policylang.loads(MIXED), cache_size=0)
    plan = engine.tree.plan("agent", "read", "doc")
    assert plan.simple
    assert len(plan.groups) == 1 and plan.groups[0].path == ("principal", "dept")


def test_rules_found_by_the_plain_entries_and_the_group_keep_source_order():
    _engine, (allow, deny, deny2) = _agree(MIXED, [_req(score=0.5), _req(score=0.97), _req(dept="ops", score=0.97)])
    # plain p-plain-1 and p-plain-2 hold, and the group's p-eng and p-eng-2 between and after them
    assert allow["decision"] == "allow"
    assert allow["rules"] == ["p-plain-1", "p-eng", "p-plain-2", "p-eng-2"]
    assert allow["reasons"] == ["low risk", "eng reads", "eng, lower risk"]
    # forbids: the plain f-plain, then the group's f-eng (after it in the text)
    assert deny["decision"] == "deny" and deny["rules"] == ["f-plain", "f-eng"]
    assert deny["reasons"] == ["too risky"]
    assert deny2["rules"] == ["f-plain", "f-ops"]


def test_a_rule_that_raises_is_reported_as_the_full_path_reports_it():
    # risk absent: every rule reading risk.score fails; the forbids that fail hold (fail closed)
    req = _req()
    del req["risk"]
    _engine, (d,) = _agree(MIXED, [req])
    assert d["decision"] == "deny"
    assert {e["rule"] for e in d["errors"]} >= {"p-plain-1", "f-plain", "f-eng"}
    assert "f-plain" in d["rules"]
    # the index group's value absent: its rules run in full and raise
    req = _req()
    del req["principal"]["attrs"]["dept"]
    _engine, (d,) = _agree(MIXED, [req])
    assert d["decision"] == "deny"
    assert {"p-eng", "f-eng"} <= {e["rule"] for e in d["errors"]}


def test_nothing_holds_is_a_plain_deny():
    _engine, (d,) = _agree(MIXED, [_req(dept="sales", tenant="t1", owner="t2", score=0.92)])
    assert d["decision"] == "deny" and d["rules"] == [] and d["errors"] == []


def test_the_delegation_path_is_the_full_path_s():
    req = _req(delegation=[{"kind": "human", "id": "alice"}, {"kind": "agent", "id": "orchestrator"}])
    _engine, (d,) = _agree(MIXED, [req])
    assert d["delegation_path"] == ["alice", "orchestrator", "a1"]


def test_plans_with_grants_globs_gates_or_limits_take_the_full_path():
    cases = {
        "grant": 'permit * to read on doc grant "doc:read" for 5m',
        "subject glob": 'permit agent "bot-*" to read on doc',
        "resource glob": 'permit * to read on doc "d*"',
        "gate": 'require approval for * to read on doc by "ops"',
        "limit": "permit * to read on doc limit count <= 5 per 1h",
    }
    for what, rule in cases.items():
        engine = policylang.Engine(policylang.loads(f'@id("r") {rule}\n@id("f") forbid * to read on doc when risk.score > 0.9'),
                                   cache_size=0)
        assert not engine.tree.plan("agent", "read", "doc").simple, what
    plain = policylang.Engine(policylang.loads('@id("r") permit * to read on doc\n@id("f") forbid * to read on doc'),
                              cache_size=0)
    assert plain.tree.plan("agent", "read", "doc").simple


DEPTS = ("eng", "ops", "sales")
TESTS = ('principal.dept == "{d}"', "risk.score < {h}", "risk.score > {h}", "resource.owner == principal.tenant",
         'principal.tenant == "t1"', "principal.dept in [\"{d}\", \"ops\"]")


@st.composite
def _sets(draw):
    rules = []
    for i in range(draw(st.integers(1, 9))):
        effect = draw(st.sampled_from(("permit", "permit", "forbid")))
        n = draw(st.integers(0, 3))
        tests = [draw(st.sampled_from(TESTS)).format(d=draw(st.sampled_from(DEPTS)), h=draw(st.sampled_from((0.3, 0.6, 0.9))))
                 for _ in range(n)]
        if draw(st.booleans()):  # an indexable first test, so index groups form
            tests.insert(0, f'principal.dept == "{draw(st.sampled_from(DEPTS))}"')
        when = (" when " + " and ".join(tests)) if tests else ""
        because = f' because "why {i}"' if draw(st.booleans()) else ""
        target = draw(st.sampled_from(("* to read on doc", "* to * on doc", "* to read on *", "* to * on *")))
        rules.append(f'@id("r{i}") {effect} {target}{when}{because}')
    return "\n".join(rules)


_values = st.one_of(st.sampled_from(DEPTS), st.none(), st.integers(0, 2), st.booleans())


@st.composite
def _requests(draw):
    req = _req(dept=draw(st.sampled_from(DEPTS)), tenant=draw(st.sampled_from(("t1", "t2"))),
               owner=draw(st.sampled_from(("t1", "t2"))), score=draw(st.sampled_from((0.1, 0.5, 0.7, 0.95))),
               action=draw(st.sampled_from(("read", "write"))), rtype=draw(st.sampled_from(("doc", "repo"))))
    odd = draw(_values)  # sometimes a dept that is absent or of another type
    if draw(st.integers(0, 3)) == 0:
        if odd is None:
            del req["principal"]["attrs"]["dept"]
        else:
            req["principal"]["attrs"]["dept"] = odd
    if draw(st.integers(0, 5)) == 0:
        del req["risk"]
    return req


@SETTINGS
@given(_sets(), st.lists(_requests(), min_size=1, max_size=6))
def test_generated_permit_and_forbid_sets_agree_with_the_interpreter(text, reqs):
    _agree(text, reqs)


def test_an_instrumented_engine_counts_each_test_once_when_a_rule_raises():
    """A rule that raises sends a short-path request down the full path, which evaluates
    the plan again: an instrumented engine (whose counters are a regression guard) must
    still count each evaluated test once, as for a plan that never takes the short path."""
    text = ('permit * to read on doc when principal.dept == "eng"\n'
            'forbid * to read on doc when resource.size > 10\n')  # raises: no size attribute
    raising = policylang.Engine(policylang.loads(text), cache_size=0, instrument=True)
    d = raising.decide(_req())
    assert d.decision == "deny" and d.errors  # the forbid raised: fail closed
    # the same tests, counted by a plan that is not simple (a grant keeps it off the path)
    full = policylang.Engine(policylang.loads(
        'permit * to read on doc when principal.dept == "eng"\n  grant "doc:read" for 10m\n'
        'forbid * to read on doc when resource.size > 10\n'), cache_size=0, instrument=True)
    assert not full.tree.plan("agent", "read", "doc").simple
    full.decide(_req())
    assert raising.counters.conditions == full.counters.conditions == 2
