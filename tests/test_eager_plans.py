"""Plans ready before the first request (docs/engine.md#loading): the engine builds the
decision plan of every (kind, action, type) its set names, and the fallbacks for names no
rule mentions, when it is constructed; identical plans are one object; sets with too many
combinations plan what their rules name together and build the rest on first use, with the
same decisions."""

from __future__ import annotations

import policylang
from benchmarks.scenarios import abac_scenario, rbac_scenario
from policylang.evaluation import compiler
from policylang.evaluation.compiler import UNNAMED, CompiledSet

SCN = abac_scenario(300, n_requests=600, seed=11)


def _summary(d) -> tuple:
    return (d.decision, tuple(d.rules), tuple(d.reasons), tuple(e["message"] for e in d.errors))


def test_every_combination_is_planned_at_construction_and_no_request_adds_one():
    engine = policylang.Engine(policylang.loads(SCN.text), cache_size=0)
    tree = engine.tree
    expected = (len(tree.kinds) + 1) * (len(tree.actions) + 1) * (len(tree.types) + 1)
    assert len(tree._plans) == expected
    before = dict(tree._plans)
    other = {"principal": {"kind": "robot", "id": "r1"}, "action": {"name": "fly"},
             "resource": {"type": "moon", "id": "m1"}}
    for r in [*SCN.requests, other]:
        engine.decide(r)
    assert tree._plans == before  # nothing was built on a request
    assert (UNNAMED, UNNAMED, UNNAMED) in tree._plans


def test_combinations_with_the_same_rules_share_one_plan():
    tree = policylang.Engine(policylang.loads(rbac_scenario(40).text), cache_size=0).tree
    distinct = {id(p) for p in tree._plans.values()}
    assert len(distinct) < len(tree._plans)


def test_eager_and_lazy_plans_decide_alike(monkeypatch):
    ps = policylang.loads(SCN.text)
    eager = policylang.Engine(ps, cache_size=0)
    lazy = policylang.Engine(ps, cache_size=0)
    lazy.tree = CompiledSet(ps, eager=False)
    assert not lazy.tree._plans
    assert [_summary(eager.decide(r)) for r in SCN.requests] == [_summary(lazy.decide(r)) for r in SCN.requests]


def test_over_the_budget_only_the_named_combinations_are_planned(monkeypatch):
    monkeypatch.setattr(compiler, "EAGER_PLANS", 1)
    monkeypatch.setattr(compiler, "EAGER_PLANS_PER_RULE", 1)
    ps = policylang.loads(SCN.text)
    tree = CompiledSet(ps)
    full = (len(tree.kinds) + 1) * (len(tree.actions) + 1) * (len(tree.types) + 1)
    assert len(tree._plans) <= len(ps.rules) < full
    named = {(UNNAMED, a, t) for r in ps.rules for a in (r.rule.target.actions or (UNNAMED,))
             for t in ([s.name for s in r.rule.target.resources] if r.rule.target.resources else [UNNAMED])}
    assert set(tree._plans) <= named | {(UNNAMED, UNNAMED, UNNAMED)}
    engine = policylang.Engine(ps, cache_size=0)
    monkeypatch.undo()
    reference = policylang.Engine(ps, cache_size=0)
    assert [_summary(engine.decide(r)) for r in SCN.requests] == \
        [_summary(reference.decide(r)) for r in SCN.requests]


def test_the_memo_of_requests_triples_is_bounded_and_never_changes_a_plan(monkeypatch):
    # the memo in front of the plans is keyed by what requests send (any kind, action and
    # type): a stream of names no rule mentions fills it to RAW_PLANS and it starts again,
    # and every lookup, memo or not, is the plan of the named-or-UNNAMED key
    monkeypatch.setattr(compiler, "RAW_PLANS", 8)
    ps = policylang.loads(SCN.text)
    memo_engine = policylang.Engine(ps, cache_size=0)
    tree = memo_engine.tree
    plain = CompiledSet(ps)
    stream = list(SCN.requests[:100])
    for i in range(50):  # junk names, as a hostile stream sends them
        stream.append({"principal": {"kind": f"k{i}", "id": "x"}, "action": f"a{i}",
                       "resource": {"type": f"t{i}", "id": "y"}})
    stream += SCN.requests[:100]  # seen before the memo was emptied, then again
    for r in stream:
        memo_engine.decide(r)
        p, a, t = r["principal"]["kind"], r["action"], r["resource"]["type"]
        a = a if isinstance(a, str) else a["name"]
        assert tree.plan(p, a, t) is tree._plan(p, a, t)
        assert [e[0].id for e in tree.plan(p, a, t).entries] == [e[0].id for e in plain.plan(p, a, t).entries]
        assert len(tree._raw) <= 8
    fresh = policylang.Engine(ps, cache_size=0)
    assert [_summary(memo_engine.decide(r)) for r in stream] == [_summary(fresh.decide(r)) for r in stream]


def test_the_memo_of_requests_triples_holds_the_sets_own_strings():
    """The memo's keys are the set's strings of the kind, action and type wherever the set
    names them (docs/engine.md#memory-locality), whichever copy the first request sent; a
    name no rule mentions stays the request's; and the memo still finds the plan when the
    next request sends yet another copy."""
    ps = policylang.loads('permit agent to read on doc when principal.ok == true\n')
    engine = policylang.Engine(ps, cache_size=0)
    tree = engine.tree

    def fresh(s: str) -> str:
        return "".join(list(s))  # equal, not the same object

    req = {"principal": {"kind": fresh("agent"), "id": "a", "attrs": {"ok": True}},
           "action": fresh("read"), "resource": {"type": fresh("doc"), "id": "d"}}
    assert engine.decide(req).decision == "allow"
    ((k, a, t),) = [key for key in tree._raw if key == ("agent", "read", "doc")]
    names = {n: n for n in (*tree.kinds, *tree.actions, *tree.types)}
    assert k is names["agent"] and a is names["read"] and t is names["doc"]
    assert k is not req["principal"]["kind"]
    other = fresh("fly")
    engine.decide({**req, "action": other})
    ((_, a2, _),) = [key for key in tree._raw if key[1] == "fly"]
    assert a2 is other  # not a name of the set: the request's string
    again = {**req, "action": fresh("read")}
    assert tree.plan("agent", again["action"], "doc") is tree._plan("agent", "read", "doc")
    assert engine.decide(again).decision == "allow"
