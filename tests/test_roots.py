"""The one roots table (policylang/language/roots.py) drives every phase.

Each test reads the table and checks that a phase agrees with it: the checker accepts
exactly its names, the generated functions take its arguments in its order, every
built-in attribute reads the same compiled and interpreted, and the cache key tells
apart two requests that differ in nothing but one root's attribute.
"""

from __future__ import annotations

import inspect

import pytest

import policylang
from policylang.evaluation import interpreter
from policylang.evaluation.request import parse_request
from policylang.language.roots import ARGS, BY_NAME, NAMES, ROOTS


def _request(**over):
    r = {"principal": {"id": "agent:a", "kind": "agent", "attrs": {"team": "x"}},
         "action": {"name": "read", "attrs": {"mode": "fast"}},
         "resource": {"type": "repo", "id": "r1", "attrs": {"owner": "x"}},
         "context": {"ip": "10.0.0.1"},
         "risk": {"score": 0.2, "signals": []},
         "intent": {"task": "t1"},
         "delegation": [{"id": "user:alice", "kind": "user", "attrs": {"team": "x"}}]}
    r.update(over)
    return r


def test_the_table_lists_the_documented_roots_in_argument_order():
    assert [r.name for r in ROOTS] == ["principal", "action", "resource", "context", "risk",
                                       "delegation", "intent"]
    assert NAMES == frozenset(BY_NAME)
    assert ARGS == "P, A, R, C, K, CH, I"


def test_every_root_is_a_known_name_to_the_checker_and_nothing_else_is():
    for root in ROOTS:
        policylang.loads(f'permit agent to read on repo when {root.name} has zz or true')
    with pytest.raises(policylang.PolicyError) as e:
        policylang.loads("permit agent to read on repo when principl.team == \"x\"")
    errors = [d for d in e.value.diagnostics if d.code.startswith("E")]
    assert [d.code for d in errors] == ["E002"]
    assert "principal" in errors[0].message  # the suggestion comes from the table


def test_generated_functions_take_the_table_arguments_in_order():
    engine = policylang.Engine(policylang.loads('permit agent to read on repo when context.ip == "10.0.0.1"'))
    rule = engine.tree.rules[0]
    params = list(inspect.signature(rule.check).parameters.values())
    assert [p.name for p in params[:len(ROOTS)]] == [r.arg for r in ROOTS]
    assert all(p.default is inspect.Parameter.empty for p in params[:len(ROOTS)])
    # after the roots, the rule's literals as defaults (compiler._Factory): "10.0.0.1" here
    literals = params[len(ROOTS):]
    assert [p.name for p in literals] == ["_p0"] and literals[0].default == "10.0.0.1"


@pytest.mark.parametrize("root,attr", [(r.name, b) for r in ROOTS for b in r.builtins]
                         + [("principal", "team"), ("action", "mode"), ("resource", "owner"),
                            ("context", "ip"), ("risk", "score"), ("intent", "task")])
def test_each_read_the_table_defines_is_the_same_compiled_and_interpreted(root, attr):
    expr = f"{root}.{attr}"
    text = (f'@id("r")\npermit agent to read on repo when {expr} == {expr}\n'
            f'@id("s")\npermit agent to read on repo when {expr} != {expr}\n')
    ps = policylang.loads(text)
    engine = policylang.Engine(ps, cache_size=0)
    for req in (_request(), _request(risk=None, intent=None, delegation=[]),
                _request(resource={"type": "repo"})):
        req = {k: v for k, v in req.items() if v is not None}
        compiled = engine.decide(req)
        reference = interpreter.decide_request(ps, parse_request(req))
        assert compiled.to_dict() == reference.to_dict(), (expr, req)


def test_an_absent_optional_root_raises_its_own_message():
    ps = policylang.loads('permit agent to read on repo when risk.score < 0.5')
    d = policylang.Engine(ps).decide(_request(risk=None) | {"risk": None})
    assert d.decision == "deny"
    assert any("the request has no risk" in e["message"] for e in d.to_dict()["errors"])


@pytest.mark.parametrize("root,attr,other", [
    ("principal", "id", {"principal": {"id": "agent:b", "kind": "agent", "attrs": {"team": "x"}}}),
    ("principal", "team", {"principal": {"id": "agent:a", "kind": "agent", "attrs": {"team": "y"}}}),
    ("action", "mode", {"action": {"name": "read", "attrs": {"mode": "slow"}}}),
    ("resource", "id", {"resource": {"type": "repo", "id": "r2", "attrs": {"owner": "x"}}}),
    ("context", "ip", {"context": {"ip": "10.0.0.2"}}),
    ("risk", "score", {"risk": {"score": 0.9, "signals": []}}),
    ("intent", "task", {"intent": {"task": "t2"}}),
    ("delegation", "depth", {"delegation": []}),
    ("delegation", "root", {"delegation": [{"id": "user:bob", "kind": "user"}]}),
])
def test_the_cache_key_holds_every_read_root_attribute(root, attr, other):
    """Two requests that differ only in the attribute a rule reads must not share a
    cached decision: the key function is built from the same table."""
    ps = policylang.loads(f'permit agent to read on repo when {root}.{attr} == {root}.{attr}')
    engine = policylang.Engine(ps)
    plan = engine.tree.plan("agent", "read", "repo")
    a = parse_request(_request())
    b = parse_request(_request(**other))
    args = lambda r: (r.principal, r.action, r.resource, r.context, r.risk, r.chain, r.intent)  # noqa: E731
    assert plan.key(*args(a)) != plan.key(*args(b))
    assert plan.key(*args(a)) == plan.key(*args(parse_request(_request())))


def test_index_readers_agree_with_the_table():
    """Rules sharing an equality test on a root attribute are indexed; the index reads
    the attribute with the table's read and finds the same rules as the plain scan."""
    text = "\n".join(f'@id("t{i}")\npermit agent to read on repo when principal.team == "t{i}"'
                     for i in range(5))
    ps = policylang.loads(text)
    engine = policylang.Engine(ps, cache_size=0)
    assert engine.tree.plan("agent", "read", "repo").groups  # the index is in use
    for team in ("t0", "t3", "nope"):
        req = _request(principal={"id": "agent:a", "kind": "agent", "attrs": {"team": team}})
        assert engine.decide(req).to_dict() == interpreter.decide_request(ps, parse_request(req)).to_dict()
