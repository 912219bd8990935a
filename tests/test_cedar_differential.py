"""Differential testing against Cedar (cedarpy): the subset both languages share.

Hypothesis generates policy sets in that subset (permit/forbid; kind, action and type
targets; ``when``/``unless`` over ``== != < <= > >=``, list membership ``in``, ``and``,
``or``, ``not``, ``has``, string and integer literals, attribute paths on principal,
resource and context) and, per set, a batch of requests. Each set is written twice: as
policylang text and as Cedar text (``@id("…")`` on both sides), each request as a
policylang request and as a Cedar request (entity UIDs with attrs, a ``context``
record). The decision (allow vs deny) and the determining rules (``decision.rules``
vs Cedar's ``diagnostics.reasons`` mapped through their ``@id``) must agree whenever
neither side reports an evaluation error. See docs/differential.md.

The normal suite runs at least ``MIN_CASES`` compared requests (10,000); set
``POLICYLANG_DIFF_CASES`` (e.g. ``1000000``) for a long run.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policylang

cedarpy = pytest.importorskip(
    "cedarpy", reason="cedarpy is not installed: `pip install -e '.[bench]'` (or `pip install cedarpy`) "
                      "to run the differential tests against Cedar")

KINDS = ["agent", "human"]
ACTIONS = ["read", "write", "deploy"]
TYPES = ["repo", "doc"]
ATTRS = ["a", "b", "c"]          # never id/kind/type/name: those are built in on the policylang side
SUB = ["x", "y"]                 # keys of nested records
STRINGS = ["", "x", "y", "acme", "a b", "q\"uote", "back\\slash", "ü"]
INTS = [-3, -1, 0, 1, 2, 7, 100]

PER_SET = 50                     # requests per generated policy set
MIN_CASES = int(os.environ.get("POLICYLANG_DIFF_CASES", "10000"))
TOPUP_SEED = int(os.environ.get("POLICYLANG_DIFF_SEED", "8"))   # shard long runs over processes
PROGRESS_EVERY = 50_000

# ---------------------------------------------------------------------------- the AST
# Expressions are tuples; ``pl`` and ``cedar`` render them in each language.


def pl(e) -> str:
    tag = e[0]
    if tag == "lit":
        return json.dumps(e[1], ensure_ascii=False) if isinstance(e[1], str) else str(e[1]).lower() \
            if isinstance(e[1], bool) else str(e[1])
    if tag == "path":
        return ".".join(e[1])
    if tag == "list":
        return "[" + ", ".join(pl(x) for x in e[1]) + "]"
    if tag == "cmp":
        return f"({pl(e[2])} {e[1]} {pl(e[3])})"
    if tag == "in":
        return f"({pl(e[1])} in {pl(e[2])})"
    if tag == "has":
        return f"({'.'.join(e[1])} has {e[2]})"
    if tag == "and":
        return f"({pl(e[1])} and {pl(e[2])})"
    if tag == "or":
        return f"({pl(e[1])} or {pl(e[2])})"
    if tag == "not":
        return f"(not {pl(e[1])})"
    raise AssertionError(e)


def cedar(e) -> str:
    tag = e[0]
    if tag == "lit":
        v = e[1]
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, int):
            return str(v)
        return json.dumps(v, ensure_ascii=False)
    if tag == "path":
        return ".".join(e[1])
    if tag == "list":
        return "[" + ", ".join(cedar(x) for x in e[1]) + "]"
    if tag == "cmp":
        return f"({cedar(e[2])} {e[1]} {cedar(e[3])})"
    if tag == "in":                      # list membership: Cedar's set .contains
        return f"({cedar(e[2])}.contains({cedar(e[1])}))"
    if tag == "has":
        return f"({'.'.join(e[1])} has {e[2]})"
    if tag == "and":
        return f"({cedar(e[1])} && {cedar(e[2])})"
    if tag == "or":
        return f"({cedar(e[1])} || {cedar(e[2])})"
    if tag == "not":
        return f"(!{cedar(e[1])})"
    raise AssertionError(e)


# ----------------------------------------------------------------------- strategies
ROOTS = ["principal", "resource", "context"]

paths = st.one_of(
    st.tuples(st.sampled_from(ROOTS), st.sampled_from(ATTRS)),
    st.tuples(st.sampled_from(ROOTS), st.sampled_from(ATTRS), st.sampled_from(SUB)),
).map(lambda t: ("path", t))
str_lit = st.sampled_from(STRINGS).map(lambda s: ("lit", s))
int_lit = st.sampled_from(INTS).map(lambda i: ("lit", i))
bool_lit = st.sampled_from([True, False]).map(lambda b: ("lit", b))
scalar = st.one_of(str_lit, int_lit, paths)
eq_operand = st.one_of(str_lit, int_lit, bool_lit, paths)   # true == 1 is false on both sides
list_lit = st.lists(st.one_of(str_lit, int_lit), max_size=4).map(lambda xs: ("list", xs))

atoms = st.one_of(
    st.builds(lambda op, a, b: ("cmp", op, a, b), st.sampled_from(["==", "!="]), eq_operand, eq_operand),
    # ordering: Cedar orders only integers, so mostly integer operands (a string is an error there)
    st.builds(lambda op, a, b: ("cmp", op, a, b), st.sampled_from(["<", "<=", ">", ">="]),
              st.one_of(int_lit, paths), st.one_of(int_lit, paths)),
    st.builds(lambda a, b: ("in", a, b), scalar, st.one_of(list_lit, paths)),
    st.builds(lambda p, n: ("has", p, n),
              st.one_of(st.sampled_from(ROOTS).map(lambda r: (r,)),
                        st.tuples(st.sampled_from(ROOTS), st.sampled_from(ATTRS))),
              st.sampled_from(ATTRS + SUB)),
    paths,                                           # a boolean attribute used as a condition
    st.sampled_from([True, False]).map(lambda b: ("lit", b)),
)

conditions = st.recursive(
    atoms,
    lambda sub: st.one_of(
        st.builds(lambda a, b: ("and", a, b), sub, sub),
        st.builds(lambda a, b: ("or", a, b), sub, sub),
        st.builds(lambda a: ("not", a), sub),
    ),
    max_leaves=5,
)

rules = st.fixed_dictionaries({
    "effect": st.sampled_from(["permit", "permit", "forbid"]),
    "kinds": st.one_of(st.just(None), st.lists(st.sampled_from(KINDS), min_size=1, max_size=2, unique=True)),
    "actions": st.one_of(st.just(None), st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=2, unique=True)),
    "types": st.one_of(st.just(None), st.lists(st.sampled_from(TYPES), min_size=1, max_size=2, unique=True)),
    "conds": st.lists(st.tuples(st.sampled_from(["when", "when", "unless"]), conditions), max_size=3),
})
rule_sets = st.lists(rules, min_size=1, max_size=6)


def policylang_text(rs) -> str:
    out = []
    for i, r in enumerate(rs):
        subj = "*" if r["kinds"] is None else ", ".join(r["kinds"])
        acts = "*" if r["actions"] is None else ", ".join(r["actions"])
        res = "*" if r["types"] is None else ", ".join(r["types"])
        lines = [f'@id("r{i}")', f"{r['effect']} {subj} to {acts} on {res}"]
        lines += [f"  {kw} {pl(c)}" for kw, c in r["conds"]]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _is(var: str, names):
    return "(" + " || ".join(f"{var} is {n}" for n in names) + ")"


def cedar_text(rs) -> str:
    out = []
    for i, r in enumerate(rs):
        scope_p = "principal" if r["kinds"] is None or len(r["kinds"]) > 1 else f"principal is {r['kinds'][0]}"
        scope_r = "resource" if r["types"] is None or len(r["types"]) > 1 else f"resource is {r['types'][0]}"
        if r["actions"] is None:
            scope_a = "action"
        elif len(r["actions"]) == 1:
            scope_a = f'action == Action::"{r["actions"][0]}"'
        else:
            scope_a = "action in [" + ", ".join(f'Action::"{a}"' for a in r["actions"]) + "]"
        conds = []
        if r["kinds"] is not None and len(r["kinds"]) > 1:
            conds.append(f"when {{ {_is('principal', r['kinds'])} }}")
        if r["types"] is not None and len(r["types"]) > 1:
            conds.append(f"when {{ {_is('resource', r['types'])} }}")
        conds += [f"{kw} {{ {cedar(c)} }}" for kw, c in r["conds"]]
        out.append(f'@id("r{i}")\n{r["effect"]}({scope_p}, {scope_a}, {scope_r})\n' + "\n".join(conds) + ";")
    return "\n".join(out) + "\n"


def _value(rnd: random.Random, depth: int = 0):
    roll = rnd.random()
    if roll < 0.35:
        return rnd.choice(STRINGS)
    if roll < 0.7:
        return rnd.choice(INTS)
    if roll < 0.8:
        return rnd.random() < 0.5
    if roll < 0.9:
        return [rnd.choice(STRINGS + INTS) for _ in range(rnd.randint(0, 3))]
    if depth == 0:
        return {k: _value(rnd, 1) for k in SUB if rnd.random() < 0.7}
    return rnd.choice(INTS)


def _attrs(rnd: random.Random) -> dict:
    return {k: _value(rnd) for k in ATTRS if rnd.random() < 0.7}


def make_requests(rnd: random.Random, n: int):
    """``n`` policylang requests with unique entity ids, the Cedar requests and entities."""
    reqs, creqs, entities = [], [], []
    for i in range(n):
        kind, typ, act = rnd.choice(KINDS), rnd.choice(TYPES), rnd.choice(ACTIONS)
        pattrs, rattrs, ctx = _attrs(rnd), _attrs(rnd), _attrs(rnd)
        pid, rid = f"p{i}", f"r{i}"
        reqs.append({"principal": {"id": pid, "kind": kind, "attrs": pattrs}, "action": act,
                     "resource": {"type": typ, "id": rid, "attrs": rattrs}, "context": ctx})
        entities.append({"uid": {"type": kind, "id": pid}, "attrs": pattrs, "parents": []})
        entities.append({"uid": {"type": typ, "id": rid}, "attrs": rattrs, "parents": []})
        creqs.append({"principal": {"type": kind, "id": pid}, "action": {"type": "Action", "id": act},
                      "resource": {"type": typ, "id": rid}, "context": ctx})
    return reqs, creqs, entities


# ---------------------------------------------------------------------------- the run
class Tally:
    def __init__(self):
        self.sets = self.compared = self.skipped = 0
        self.allow = self.deny_forbid = self.deny_default = 0
        self.pl_only_error = self.cedar_only_error = self.both_error = 0


def run_set(rs, seed: int, tally: Tally, n: int = PER_SET) -> None:
    ptext, ctext = policylang_text(rs), cedar_text(rs)
    # the production configuration: a decision cache (cached == uncached is tests/test_differential.py)
    engine = policylang.Engine(policylang.loads(ptext, name="diff.policy"))
    reqs, creqs, entities = make_requests(random.Random(seed), n)
    results = cedarpy.is_authorized_batch(creqs, ctext, entities)
    tally.sets += 1
    for req, creq, res in zip(reqs, creqs, results):
        d = engine.decide(req)
        cerrs = res.diagnostics.errors
        if d.errors or cerrs:
            tally.skipped += 1
            if d.errors and cerrs:
                tally.both_error += 1
            elif d.errors:
                tally.pl_only_error += 1
            else:
                tally.cedar_only_error += 1
            continue
        tally.compared += 1
        if tally.compared % PROGRESS_EVERY == 0:
            print(f"[cedar differential] {tally.compared} compared, {tally.skipped} skipped, {tally.sets} sets",
                  file=sys.stderr, flush=True)
        names = res.diagnostics.id_annotations_by_reason
        cedar_rules = sorted(names[p] for p in res.diagnostics.reasons)
        cedar_decision = "allow" if res.allowed else "deny"
        detail = f"\n--- policylang\n{ptext}--- cedar\n{ctext}--- request\n{json.dumps(req)}"
        assert d.decision == cedar_decision, f"policylang {d.decision}, cedar {cedar_decision}{detail}"
        assert sorted(d.rules) == cedar_rules, f"policylang {d.rules}, cedar {cedar_rules}{detail}"
        if d.decision == "allow":
            tally.allow += 1
        elif d.rules:
            tally.deny_forbid += 1
        else:
            tally.deny_default += 1


def test_translation_smoke():
    """A hand-written set: the translation itself is right (so the generated run means something)."""
    rs = [{"effect": "permit", "kinds": ["agent"], "actions": ["read"], "types": None,
           "conds": [("when", ("cmp", "==", ("path", ("principal", "a")), ("path", ("resource", "a"))))]},
          {"effect": "forbid", "kinds": None, "actions": None, "types": ["doc"],
           "conds": [("unless", ("in", ("path", ("context", "b")), ("list", [("lit", "x"), ("lit", 1)])))]}]
    assert 'permit(principal is agent, action == Action::"read", resource)' in cedar_text(rs)
    assert "[\"x\", 1].contains(context.b)" in cedar_text(rs)
    engine = policylang.Engine(policylang.loads(policylang_text(rs), name="s.policy"))
    req = {"principal": {"id": "p", "kind": "agent", "attrs": {"a": 1}}, "action": "read",
           "resource": {"type": "doc", "id": "d", "attrs": {"a": 1}}, "context": {"b": 2}}
    assert engine.decide(req).rules == ["r1"]
    [res] = cedarpy.is_authorized_batch(
        [{"principal": {"type": "agent", "id": "p"}, "action": {"type": "Action", "id": "read"},
          "resource": {"type": "doc", "id": "d"}, "context": {"b": 2}}],
        cedar_text(rs), [{"uid": {"type": "agent", "id": "p"}, "attrs": {"a": 1}, "parents": []},
                         {"uid": {"type": "doc", "id": "d"}, "attrs": {"a": 1}, "parents": []}])
    assert not res.allowed and [res.diagnostics.id_annotations_by_reason[p] for p in res.diagnostics.reasons] == ["r1"]


def test_decisions_and_determining_rules_agree_with_cedar():
    tally = Tally()
    # each example compares about PER_SET * (share without errors) requests; ask for enough
    examples = max(50, (MIN_CASES * 2) // PER_SET)

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(rule_sets, st.integers(0, 2**32 - 1))
    def check(rs, seed):
        run_set(rs, seed, tally)

    started = time.monotonic()
    check()
    # top up deterministically when hypothesis stopped early (or errors skipped many)
    rnd = random.Random(TOPUP_SEED)
    while tally.compared < MIN_CASES:
        run_set(_random_rules(rnd), rnd.getrandbits(32), tally)
    elapsed = time.monotonic() - started
    print(f"\ncedar differential: {tally.sets} policy sets, {tally.compared} compared requests "
          f"({tally.allow} allow, {tally.deny_forbid} deny by forbid, {tally.deny_default} default deny), "
          f"{tally.skipped} skipped for evaluation errors (policylang only {tally.pl_only_error}, "
          f"cedar only {tally.cedar_only_error}, both {tally.both_error}) in {elapsed:.1f}s")
    assert tally.compared >= MIN_CASES
    # the generator must exercise every outcome, not just default deny
    assert tally.allow and tally.deny_forbid and tally.deny_default


def _random_rules(rnd: random.Random):
    """A rule set drawn with plain ``random`` (used to top up the count)."""
    def cond(depth=0):
        roll = rnd.random()
        if depth < 2 and roll < 0.3:
            op = rnd.choice(["and", "or", "not"])
            return ("not", cond(depth + 1)) if op == "not" else (op, cond(depth + 1), cond(depth + 1))
        path = ("path", (rnd.choice(ROOTS), rnd.choice(ATTRS)))
        pick = rnd.random()
        if pick < 0.3:
            return ("cmp", rnd.choice(["==", "!="]), path, ("lit", rnd.choice(STRINGS + INTS)))
        if pick < 0.55:
            return ("cmp", rnd.choice(["<", "<=", ">", ">="]), path, ("lit", rnd.choice(INTS)))
        if pick < 0.8:
            return ("in", path, ("list", [("lit", rnd.choice(STRINGS + INTS)) for _ in range(rnd.randint(0, 3))]))
        return ("has", (rnd.choice(ROOTS),), rnd.choice(ATTRS))

    def maybe(vocab):
        return None if rnd.random() < 0.4 else rnd.sample(vocab, rnd.randint(1, 2))

    return [{"effect": rnd.choice(["permit", "permit", "forbid"]), "kinds": maybe(KINDS),
             "actions": maybe(ACTIONS), "types": maybe(TYPES),
             "conds": [(rnd.choice(["when", "unless"]), cond()) for _ in range(rnd.randint(0, 2))]}
            for _ in range(rnd.randint(1, 6))]
