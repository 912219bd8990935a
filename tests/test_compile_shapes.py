"""compile_rules generates one rule per skeleton in full and derives the others from it
(policylang/evaluation/compiler.py, _skeleton): what it derives must be exactly what a full
code generation of each rule makes."""

from __future__ import annotations

import policylang
from benchmarks.scenarios import scenario_m, varied_policy_text
from policylang.evaluation import compiler, interpreter
from policylang.evaluation.compiler import (
    ExpressionCodegen,
    _codegen,
    _typed,
    compile_rules,
)

SMALL = '''
const LIMIT = 5
const ENVS = ["prod", "stage"]
permit * to read on doc when principal.dept == "d1" and risk.score < 0.5
permit * to read on doc when principal.dept == "d2" and risk.score < 1
permit * to read on doc when principal.dept == "d3" and risk.score < 0.25
permit * to read on doc when "admin" in principal.roles
permit * to read on doc when "ops" in principal.roles
permit * to read on doc when principal.level + 1 > 3 and principal.level + 2 > 3
permit * to read on doc when principal.tags[0] == "a"
permit * to read on doc when principal.tags[1] == "b"
permit * to read on doc when principal.dept in ["x", "y"]
permit * to read on doc when principal.dept in ["z"]
permit * to read on doc when principal.dept in ENVS or principal.level > LIMIT
permit * to read on doc when in_cidr(context.ip, "10.0.0.0/8")
permit * to read on doc when in_cidr(context.ip, "192.168.0.0/16")
permit * to read on doc when principal.name matches "a*" and principal.ok == true
permit * to read on doc when principal.name matches "b*" and principal.ok == false
permit * to read on doc when any t in principal.tags: t == "x"
permit * to read on doc when any t in principal.tags: t == "y"
permit * to read on doc when principal.level == 1 and principal.level != 1.0
permit * to read on doc when principal.level == 2 and principal.level != 2.5
permit * to read on doc when principal.dept == "q" grant "doc:read" for 10m
permit * to read on doc when principal.dept == "r" grant "doc:write" for 1h
permit agent "a-*" to read on doc when principal.dept == "s"
forbid * to read on doc unless principal.level >= 0
'''


def _check(ps) -> int:
    """Every rule as compile_rules compiled it == a full generation of it (its shape, its
    functions' literals, index key and reads); returns how many rules were compiled."""
    constants = dict(ps.constants)
    rules, _source, factories = compile_rules(ps)
    for info, cr in zip(ps.rules, rules, strict=True):
        assert cr.info is info
        _p, _t, full = _codegen(ExpressionCodegen(constants), info.rule, False, constants)
        assert cr.shape == full.shape_key, info.id
        assert cr.shape in factories, info.id
        # the rule's literals are its functions' defaults (none for a shape without them)
        assert _typed(cr.check.__defaults__ or ()) == _typed(full.params), info.id
        assert _typed(cr.index_key) == _typed(full.index_key), info.id
        assert cr.reads == full.reads, info.id
    return len(rules)


def test_derived_rules_are_what_a_full_generation_makes():
    _check(policylang.loads(SMALL, name="small.policy"))


def test_varied_set():
    _check(policylang.loads(varied_policy_text(1500), name="varied.policy"))


def test_scenarios_share_their_shapes():
    for scn in (scenario_m(n_requests=10),):
        ps = policylang.loads(scn.text, name=f"{scn.name}.policy")
        _check(ps)
        skeletons = {compiler._skeleton(info.rule, dict(ps.constants))[0] for info in ps.rules}
        assert len(skeletons) < 20  # a handful of shapes for thousands of rules


def test_decisions_agree_with_the_interpreter_on_the_small_set():
    ps = policylang.loads(SMALL, name="small.policy")
    engine = policylang.Engine(ps, cache_size=0)
    base = {"principal": {"id": "a-1", "kind": "agent", "attrs": {}}, "action": "read",
            "resource": {"type": "doc", "id": "x"}, "context": {"ip": "10.1.2.3"}, "risk": {"score": 0.3}}
    seen = set()
    for dept in ("d1", "d2", "d3", "q", "r", "s", "x", "z", "prod"):
        for level in (0, 1, 2, 2.5, 7):
            r = {**base, "principal": {**base["principal"], "attrs": {
                "dept": dept, "level": level, "roles": ["ops"], "tags": ["a", "y"], "name": "bob", "ok": False}}}
            d = engine.decide(r).to_dict()
            want = interpreter.decide(ps, r).to_dict()
            assert (d["decision"], d["rules"], d["errors"]) == (want["decision"], want["rules"], want["errors"])
            seen.add((d["decision"], tuple(d["rules"])))
    assert len(seen) > 3


def test_an_attribute_named_like_the_shape_placeholder_is_read_as_written():
    """Generated shapes are named by rewriting their placeholder in the ``def`` lines only:
    a rule that reads ``principal.__shape__`` reads that attribute, not another one (a
    request with ``_shape_0`` must not pass where the interpreter denies)."""
    import policylang

    ps = policylang.loads('permit agent to read on repo when principal.__shape__ == "x"\n')
    engine = policylang.Engine(ps, cache_size=0)

    def decide(attrs):
        return engine.decide({"principal": {"kind": "agent", "id": "a", "attrs": attrs}, "action": "read",
                              "resource": {"type": "repo", "id": "r"}}).decision
    assert decide({"__shape__": "x"}) == "allow"
    assert decide({"_shape_0": "x"}) == "deny"


def test_shared_literals_are_one_object_of_the_same_class_and_sign():
    """_shared (docs/engine.md#memory-locality) makes equal literals one object, but only
    within one class and, for floats, one sign: 1, 1.0 and True stay three values, -0.0
    stays apart from 0.0 (a later division would tell them apart), NaN stays itself."""
    import math

    memo: dict = {}
    a, b = "".join(["fin", "ance"]), "".join(["fi", "nance"])
    assert a == b and a is not b
    first = compiler._shared((a, 1, 1.0, 0.0, 10**30), memo)
    again = compiler._shared((b, True, 1.0 * 1, -0.0, 10**30 + 0), memo)
    assert again[0] is first[0]
    assert [v.__class__ for v in again] == [str, bool, float, float, int]
    assert again[1] is True and again[2] is first[2]
    assert math.copysign(1.0, again[3]) == -1.0 and math.copysign(1.0, first[3]) == 1.0
    assert again[4] is first[4]
    nan = float("nan")
    assert compiler._shared((nan,), memo)[0] is nan
    assert compiler._shared((float("nan"),), memo)[0] is not nan


def test_rules_with_equal_literals_share_their_objects():
    """Ten rules comparing the risk score with the same threshold point to one float (the
    parser makes a new one for each rule's text); and the set decides as the interpreter
    does."""
    text = "".join(f'permit * to read on doc when principal.dept == "d{n}" and risk.score < 0.5\n'
                   for n in range(10))
    ps = policylang.loads(text, name="shared.policy")
    rules, _src, _f = compile_rules(ps)
    defaults = [v for cr in rules for fn in (cr.check, cr.rest) if fn is not None
                for v in (fn.__defaults__ or ()) if v.__class__ is float]
    assert len(defaults) >= 10 and len({id(v) for v in defaults}) == 1
    engine = policylang.Engine(ps, cache_size=0)
    for dept, score in (("d3", 0.2), ("d3", 0.7), ("d9", 0.49), ("x", 0.1)):
        r = {"principal": {"id": "a", "kind": "agent", "attrs": {"dept": dept}},
             "action": "read", "resource": {"type": "doc", "id": "x"}, "risk": {"score": score}}
        assert engine.decide(r).to_dict()["rules"] == interpreter.decide(ps, r).to_dict()["rules"]


def test_the_fields_every_decision_reads_lead_the_compiled_rule():
    """A matched rule's order, effect, id and reason are read by every decision holding
    it: they come first, in the object's first cache line (docs/engine.md#memory-locality)."""
    assert compiler.CompiledRule.__slots__[:4] == ("order", "effect", "id", "reason")
