"""Adversarial input: huge, deep and hostile policies and requests.

Everything here must do work linear in the input's size (measured by ratio: 4x the
input must take well under 16x the Python steps, i.e. not quadratic; steps are counted
deterministically by tests/cost.py, never timed, as this machine is shared) and fail, where it must, with a PolicyError /
RequestError carrying a clear message, never a RecursionError or a traceback. Nothing
from a policy's strings or a request is ever executed, and the engine's generated
Python source never contains request data.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest
from cost import assert_linear_steps

import policylang
from policylang import PolicyError, RequestError


def assert_linear(make, run, small: int):
    """``run(make(n))`` at n and 4n: the Python steps may grow about 4x, never about 16x."""
    return assert_linear_steps(make, run, small)


def req(**context):
    return {"principal": {"id": "spiffe://acme.io/agents/coder", "kind": "agent"}, "action": "read",
            "resource": {"type": "repo", "id": "acme/api"}, "context": context}


# --------------------------------------------------------------------- size and depth
def test_a_10_mb_policy_file_loads(tmp_path):
    """10 MB of comments and a 10 MB string literal: loaded, in linear time."""
    big = "# " + "x" * 5_000_000 + "\n" + '@id("big")\npermit agent to read on repo\n  when context.s == "' \
          + "y" * 5_000_000 + '"\n'
    path = tmp_path / "big.policy"
    path.write_text(big)
    assert path.stat().st_size > 10_000_000
    engine = policylang.Engine(policylang.load(str(path)))
    assert engine.decide(req(s="y" * 5_000_000)).rules == ["big"]
    assert engine.decide(req(s="y")).decision == "deny"


def test_a_10_mb_file_of_garbage_fails_with_a_diagnostic(tmp_path):
    path = tmp_path / "garbage.policy"
    path.write_bytes(b"permit agent to read on repo when (((( \x00\xff" + os.urandom(10_000_000))
    with pytest.raises(PolicyError) as exc:
        policylang.load(str(path))
    assert exc.value.diagnostics and exc.value.diagnostics[0].code == "E001"


def test_a_file_that_never_closes_its_string_fails_with_e001_in_linear_time():
    def run(text):
        with pytest.raises(PolicyError) as exc:
            policylang.loads(text)
        assert [d.code for d in exc.value.diagnostics] == ["E001"]
        assert "unterminated string" in exc.value.diagnostics[0].message
    assert_linear(lambda n: 'permit agent to read on repo\n  when context.s == "' + "z" * n, run, 500_000)


def _rules(n: int) -> str:
    rule = '@id("r%d")\npermit agent "spiffe://acme.io/*" to read, list on repo\n  when context.a == "%s"\n' \
           '  because "x"\n'
    return "".join(rule % (i, "v" * 40) for i in range(n))


def test_many_rules_load_in_linear_time():
    """Rule count scaled 4x (300 to 1,200 rules; a 10 MB file of rules is the same per byte)."""
    assert_linear(_rules, lambda text: policylang.loads(text), 300)


@pytest.mark.parametrize("make", [
    pytest.param(lambda n: "not " * n + "true", id="not"),
    pytest.param(lambda n: "-" * n + "1 == 1", id="negation"),
    pytest.param(lambda n: "1 in " + "[" * n + "]" * n, id="list"),
    pytest.param(lambda n: "context" + ".a" * n + " == 1", id="attribute"),
    pytest.param(lambda n: "context" + "[0]" * n + " == 1", id="index"),
    pytest.param(lambda n: "1 == " + " + ".join(["1"] * n), id="addition"),
    pytest.param(lambda n: "len(" * n + "context.a" + ")" * n + " == 1", id="call"),
    pytest.param(lambda n: "(any x in [1]: " * n + "true" + ")" * n, id="quantifier"),
    pytest.param(lambda n: "(" * n + "true and " * 3 + "(not " * n + "true" + ")" * (2 * n), id="mixed"),
])
def test_a_10000_deep_expression_is_e001_not_recursion_error(make):
    text = "permit agent to read on repo\n  when " + make(10_000) + "\n"
    try:
        ps = policylang.loads(text)
    except PolicyError as e:
        assert [d.code for d in e.diagnostics] == ["E001"], e.diagnostics
        assert "nest" in e.diagnostics[0].message
        return
    # accepted (flattened, e.g. redundant parentheses): then it must also evaluate
    policylang.Engine(ps).decide(req(a=1))


def test_10000_redundant_parentheses_and_a_10000_term_chain_evaluate():
    for cond in ["(" * 10_000 + "true" + ")" * 10_000, " and ".join(["true"] * 10_000),
                 " or ".join(["false"] * 10_000)]:
        try:
            ps = policylang.loads("@id(\"d\")\npermit agent to read on repo\n  when " + cond + "\n")
        except PolicyError as e:
            assert [d.code for d in e.diagnostics] == ["E001"]
            continue
        d = policylang.Engine(ps).decide(req())
        assert d.decision in ("allow", "deny") and not d.errors


def test_deep_json_in_a_request_is_a_request_error_or_decided():
    deep: object = 1
    for _ in range(5_000):
        deep = {"a": deep}
    ps = policylang.loads('permit agent to read on repo\n  when context.a.a.a == 1\n')
    try:
        d = policylang.Engine(ps).decide(req(a=deep))
    except RequestError:
        return
    assert d.decision == "deny"  # context.a.a.a is a record: == 1 is false, and never raises


def test_a_100000_element_list_literal_loads_and_decides_in_linear_time():
    def make(n):
        return '@id("l")\npermit agent to read on repo\n  when context.a in [' \
               + ", ".join(f'"v{i}"' for i in range(n)) + "]\n"
    ps = policylang.loads(make(100_000))
    engine = policylang.Engine(ps, cache_size=0)
    assert engine.decide(req(a="v99999")).rules == ["l"]
    assert engine.decide(req(a="nope")).decision == "deny"
    assert_linear(make, lambda text: policylang.loads(text), 2_000)


# --------------------------------------------------------------------------- globs
PATHOLOGICAL = "*a*a*a*a*a*b"


def test_matches_with_a_pathological_glob_is_linear():
    engine = policylang.Engine(policylang.loads(f'permit agent to read on repo\n  when context.s matches '
                                                f'"{PATHOLOGICAL}"\n'), cache_size=0)
    assert engine.decide(req(s="a" * 100_000)).decision == "deny"
    assert engine.decide(req(s="a" * 100_000 + "b")).decision == "allow"
    assert_linear(lambda n: req(s="a" * n), engine.decide, 25_000)
    # with ** and slashes too
    engine2 = policylang.Engine(policylang.loads('permit agent to read on repo\n  when context.s matches '
                                                 '"**a**a**a**a**a**b"\n'), cache_size=0)
    assert_linear(lambda n: req(s="a/" * (n // 2)), engine2.decide, 25_000)


def test_id_globs_with_a_pathological_pattern_are_linear():
    engine = policylang.Engine(policylang.loads(f'permit agent "{PATHOLOGICAL}" to read on repo '
                                                f'"**a**a**a**a**b"\n'), cache_size=0)

    def make(n):
        return {"principal": {"id": "a" * n, "kind": "agent"}, "action": "read",
                "resource": {"type": "repo", "id": "a/" * (n // 2)}}
    assert engine.decide(make(100_000)).decision == "deny"
    assert_linear(make, engine.decide, 25_000)


# ------------------------------------------------------------------- wide requests
def test_a_request_with_100000_context_keys_is_linear():
    engine = policylang.Engine(policylang.loads('@id("k")\npermit agent to read on repo\n'
                                                '  when context.k99 == 99\n'), cache_size=0)
    big = req(**{f"k{i}": i for i in range(100_000)})
    assert engine.decide(big).rules == ["k"]
    assert_linear(lambda n: req(**{f"k{i}": i for i in range(n)}), engine.decide, 25_000)
    # and through the cache (the cache key must not be quadratic either)
    cached = policylang.Engine(engine.policies if hasattr(engine, "policies") else
                               policylang.loads('permit agent to read on repo\n  when context.k99 == 99\n'))
    assert_linear(lambda n: req(**{f"k{i}": i for i in range(n)}), cached.decide, 25_000)


def test_a_100000_entry_delegation_chain_is_decided_or_rejected_in_linear_time():
    engine = policylang.Engine(policylang.loads('permit agent to read on repo\n  when delegation.depth < 5\n'),
                               cache_size=0)

    def make(n):
        r = req()
        r["delegation"] = [{"id": f"user:{i}", "kind": "human"} for i in range(n)]
        return r
    # a chain longer than MAX_DELEGATION_DEPTH (64) is refused before any per-entry work
    with pytest.raises(RequestError) as err:
        engine.decide(make(100_000))
    assert err.value.field == "delegation"

    def decide_or_refuse(r):
        try:
            engine.decide(r)
        except RequestError:
            pass
    assert_linear(make, decide_or_refuse, 25_000)


# ----------------------------------------------------------- nothing is ever executed
HOSTILE = [
    "__import__('os').system('touch {sentinel}')",
    "\"); __import__('os').system('touch {sentinel}') #",
    "'); __import__('os').system('touch {sentinel}') #",
    "\\'); __import__(\"os\").system(\"touch {sentinel}\") #\n",
    "\n__import__('os').system('touch {sentinel}')\n",
    "{{__import__('os').system('touch {sentinel}')}}",
    "${{__import__('os').system('touch {sentinel}')}}",
    "\\\\\\\"\"\"'''\n\r\t\u2028\u0000 exec(\"import os; os.system('touch {sentinel}')\")",
]


@pytest.fixture
def sentinel(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a policy or request string was executed"
    assert not os.path.exists("/tmp/pwned") or os.path.getmtime("/tmp/pwned") < START


START = time.time()


def _q(s: str) -> str:
    return json.dumps(s)


def test_policy_strings_are_never_executed(sentinel):
    for i, raw in enumerate(HOSTILE):
        s = raw.format(sentinel=sentinel)
        text = (f"@id({_q(s)})\n@tag({_q(s)})\n"
                f"permit agent {_q(s)} to {_q(s)}, read on repo {_q(s)}\n"
                f"  when context.s == {_q(s)} or context has {_q(s)} or context[{_q(s)}] == {_q(s)}\n"
                f"  when context.s matches {_q(s)} or starts_with(context.s, {_q(s)})\n"
                f"  grant {_q(s)} + context.s for 1m\n  because {_q(s)}\n"
                f"@id({_q(s + 'forbid')})\nforbid * to * on *\n  when context.s == {_q(s)} + {_q(s)}\n")
        try:
            ps = policylang.loads(text, name=f"hostile{i}.policy")
        except PolicyError as e:  # a raw NUL or control character is E001: fine, nothing ran
            assert all(d.code.startswith("E") for d in e.diagnostics)
            continue
        engine = policylang.Engine(ps)
        for value in (s, "x", s + s):
            r = {"principal": {"id": s, "kind": "agent"}, "action": s,
                 "resource": {"type": "repo", "id": s}, "context": {"s": value, s: value}}
            d = engine.decide(r)
            assert d.decision in ("allow", "deny")
        # and formatting them is harmless too
        from policylang.language.formatter import format_source
        again = policylang.Engine(policylang.loads(format_source(text), name=f"hostile{i}.policy"))
        r = {"principal": {"id": s, "kind": "agent"}, "action": s, "resource": {"type": "repo", "id": s},
             "context": {"s": s}}
        assert again.decide(r).to_dict() | {"policy_version": ""} == engine.decide(r).to_dict() | \
            {"policy_version": ""}


def test_request_data_is_never_executed_nor_put_in_generated_source(sentinel):
    ps = policylang.loads('@id("p")\npermit agent to read on repo\n  when context.s == principal.name\n'
                          '  when resource.owner in principal.orgs\n  grant "repo:" + resource.id for 5m\n'
                          '@id("f")\nforbid * to * on *\n  when context has evil and context.evil matches "*x*"\n')
    engine = policylang.Engine(ps)
    before = engine.tree.source
    marker = "ZZ_MARKER_ZZ"
    for raw in HOSTILE:
        s = raw.format(sentinel=sentinel) + marker
        r = {"principal": {"id": s, "kind": "agent", "attrs": {"name": s, "orgs": [s], s: s}},
             "action": {"name": "read", "attrs": {s: s}},
             "resource": {"type": "repo", "id": s, "attrs": {"owner": s, s: s}},
             "context": {"s": s, "evil": s, s: {s: s}}, "intent": {"task_id": s, "purpose": s},
             "risk": {"score": 0.5, "signals": [s]}, "delegation": [{"id": s, "kind": "human", "attrs": {s: s}}],
             "approval": s}
        d = engine.decide(r)
        assert d.decision == "allow" and d.grants[0]["scopes"] == ["repo:" + s]
        for kind in ("agent", s):  # an unknown kind, action or type: a new plan, still no data in it
            r2 = {**r, "principal": {**r["principal"], "kind": kind}, "action": s,
                  "resource": {**r["resource"], "type": s}}
            engine.decide(r2)
        source = engine.tree.source
        assert marker not in source and "system" not in source and str(sentinel) not in source
    assert marker not in before


def test_hostile_strings_round_trip_exactly():
    """Quotes, backslashes, newlines and unicode come out exactly as they went in."""
    for raw in HOSTILE:
        s = raw.format(sentinel="/nonexistent").replace("\u0000", "")
        ps = policylang.loads(f"@id({_q(s)})\npermit agent to read on repo\n  when context.s == {_q(s)}\n"
                              f"  grant {_q(s)} for 1m\n  because {_q(s)}\n")
        d = policylang.Engine(ps).decide(req(s=s))
        assert d.rules == [s] and d.reasons == [s] and d.grants[0]["scopes"] == [s]


def test_malformed_requests_are_request_errors_naming_the_field():
    engine = policylang.Engine(policylang.loads("permit agent to read on repo\n"))
    bad = [
        ({}, "principal"),
        ({"principal": {"id": 1, "kind": "agent"}, "action": "read", "resource": {"type": "repo"}}, "principal.id"),
        ({"principal": {"id": "x", "kind": "agent"}, "action": ["read"], "resource": {"type": "repo"}}, "action"),
        ({"principal": {"id": "x", "kind": "agent"}, "action": "read", "resource": {"type": "repo"},
          "risk": {"score": float("nan")}}, "risk.score"),
        ({"principal": {"id": "x", "kind": "agent"}, "action": "read", "resource": {"type": "repo"},
          "delegation": [None]}, "delegation"),
    ]
    for request, field in bad:
        with pytest.raises(RequestError) as exc:
            engine.decide(request)
        assert field in str(exc.value), (request, str(exc.value))


def test_recursion_limit_is_untouched():
    """Nothing above raised the interpreter's recursion limit to get through."""
    assert sys.getrecursionlimit() <= 10_000
