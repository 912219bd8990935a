"""The front end never crashes (docs/language.md#what-the-checker-verifies, README.md#python-api): whatever text comes in, ``loads`` either
returns a policy set or raises :class:`PolicyError` with diagnostics, never another
exception, and nesting beyond the parser's limit is an E001, not a RecursionError."""

from __future__ import annotations

import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policylang
from policylang.language.errors import PolicyError
from policylang.language.parser import KEYWORDS, MAX_DEPTH
from policylang.language.roots import NAMES as ROOTS

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load_or_diagnose(text: str):
    """``loads`` must succeed or raise PolicyError whose diagnostics all have a place."""
    try:
        ps = policylang.loads(text, "fuzz.policy")
    except PolicyError as e:
        assert e.diagnostics, "a PolicyError always carries diagnostics"
        for d in e.diagnostics:
            assert d.code in policylang.language.errors.CODES
            assert d.line >= 1 and d.column >= 1
            assert d.render()
        assert any(d.severity == "error" for d in e.diagnostics)
        return None
    for d in ps.diagnostics:
        assert d.severity == "warning"
    return ps


# ------------------------------------------------------------------ random input

@FUZZ
@given(st.text())
def test_random_text(text):
    load_or_diagnose(text)


@FUZZ
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=400))
def test_random_unicode_including_controls(text):
    load_or_diagnose(text)


TOKENS = sorted(KEYWORDS) + sorted(ROOTS) + [
    "=", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "@", "?", "(", ")", "[", "]", "{", "}",
    ",", ".", ":", "\n", "#c\n", "@id", '@id("x")', '@tag("t")', "require approval for",
    "x", "y", "d", "len", "lower", "in_cidr", "starts_with", "f", "MAX", "set", "string", "number?",
    "bool", "list", "duration", "high_impact", "id", "kind", "type", "name", "chain", "depth", "root",
    '"s"', '""', '"a\\"b"', '"\\u00e9"', '"10.0.0.0/8"', '"bad/99"', '"*"', '"**"', '"a/*"',
    "0", "1", "42", "0.5", "1.0", "10m", "1h30m", "2d", "45s", "1e5", ".5", "-1", "$", "\t", "é", "\x00",
    "max_ttl", "attenuate_delegation",
]


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60), st.sampled_from([" ", "", "\n"]))
def test_random_token_soup(tokens, sep):
    load_or_diagnose(sep.join(tokens))


RULE_PIECES = [
    "permit agent to read on repo", "forbid * to * on *", "require approval for agent to deploy on service",
    'when principal.tenant == resource.owner', 'when risk.score < MAX', 'unless delegation.depth > 2',
    'when any d in delegation.chain: d.kind == "human"', 'when in_cidr(context.ip, "10.0.0.0/8")',
    'when resource.id matches "acme/**"', 'when principal has trust and principal.trust > 1',
    'when "a" < 1', 'when nope', 'when len(1, 2)', 'grant "repo:" + resource.id for 10m', 'grant 1 for 2h',
    'by "sre"', 'because "why"', '@id("r")', '@id("r2")', "const MAX = 0.7", 'const NET = "1.2.3.4/40"',
    "option max_ttl = 30m", "option nope = 1", "principal agent { tenant: string, trust: number? }",
    "resource repo { owner: string }", "action read on repo", "high_impact action deploy on service",
    "context { ip: string? }", "principal agent { x: strng }",
]


@FUZZ
@given(st.lists(st.sampled_from(RULE_PIECES), max_size=25))
def test_random_sequences_of_statement_pieces(pieces):
    # well-formed pieces in random order reach every checker stage
    load_or_diagnose("\n".join(pieces))


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_from_a_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "x.policy"
    path.write_bytes(data)
    try:
        policylang.load(path)
    except PolicyError as e:
        assert e.diagnostics


def test_non_string_input_is_a_policy_error():
    with pytest.raises(PolicyError):
        policylang.loads(b"permit agent to read on repo")  # type: ignore[arg-type]


# ------------------------------------------------------------------ nesting

DEEP = 20_000

def _wrapped(n: int, wrappers, core: str) -> str:
    """``core`` inside ``n`` wrappers, cycling through ``(prefix, suffix)`` pairs."""
    pre = [wrappers[i % len(wrappers)][0] for i in range(n)]
    post = [wrappers[i % len(wrappers)][1] for i in reversed(range(n))]
    return "".join(pre) + core + "".join(post)


NESTINGS = {
    "parentheses": lambda n: _wrapped(n, [("(1 + ", ")")], "1") + " == 1",
    "not": lambda n: "not " * n + "true",
    "unary minus": lambda n: "-" * n + "1 == 1",
    "spaced minus": lambda n: "- " * n + "1 == 1",
    "lists": lambda n: "[" * n + "]" * n + " == []",
    "calls": lambda n: "lower(" * n + '"x"' + ")" * n + ' == "x"',
    "index": lambda n: "x" + "[0" * n + "]" * n + " == 1",
    "index keys": lambda n: "[" * n + "1" + "]" * n + " == 1",
    "mixed": lambda n: _wrapped(n, [("(", ")"), ("not ", ""), ("-", ""), ("[", "]"), ("len(", ")"),
                                    ("((", "))")], "1"),
    "attributes": lambda n: "principal" + ".a" * n + " == 1",
    "additions": lambda n: " + ".join(["1"] * n) + " == 1",
    "quantifiers": lambda n: "any x in [1]: " * n + "true",
}


@pytest.mark.parametrize("form", sorted(NESTINGS))
def test_nesting_20000_deep_is_an_e001_not_a_crash(form):
    text = f"permit agent to read on repo\n  when {NESTINGS[form](DEEP)}\n"
    limit = sys.getrecursionlimit()
    with pytest.raises(PolicyError) as e:
        policylang.loads(text, "deep.policy")
    assert sys.getrecursionlimit() == limit
    [d] = e.value.diagnostics
    assert d.code == "E001", d.header()
    assert d.line == 2


@pytest.mark.parametrize("form", ["parentheses", "not", "unary minus", "lists", "calls", "index keys",
                                  "attributes", "quantifiers"])
def test_nesting_100_deep_loads_and_checks(form):
    assert MAX_DEPTH >= 100
    depth = 100
    cond = NESTINGS[form](depth)
    text = f'@id("deep")\npermit agent to read on repo\n  when {cond}\n  because "deep but allowed"\n'
    ps = policylang.loads(text, "deep.policy")
    assert [r.id for r in ps.rules] == ["deep"]
    assert not ps.errors


def test_redundant_parentheses_do_not_nest():
    # parentheses leave no node behind: 20,000 of them around one literal are one level
    ps = policylang.loads('@id("r")\npermit agent to read on repo\n  when ' + "(" * DEEP + "true" + ")" * DEEP
                          + '\n  because "x"\n')
    assert ps.rules[0].rule.conditions[0].expr.value is True


def test_nesting_100_deep_in_a_constant_is_folded():
    ps = policylang.loads("const A = " + "(" * 100 + "1 + 1" + ")" * 100 + "\n"
                          '@id("r")\npermit agent to read on repo when A == 2 because "x"\n')
    assert ps.constants == {"A": 2}


def test_deep_nesting_type_errors_are_still_reported():
    # the checker walks 100 levels without trouble and still finds the mistake at the bottom
    text = '@id("r")\npermit agent to read on repo\n  when ' + "not (" * 99 + '"x"' + ")" * 99 + '\n  because "x"\n'
    with pytest.raises(PolicyError) as e:
        policylang.loads(text)
    assert [d.code for d in e.value.diagnostics] == ["E005"]


def test_long_flat_and_or_chains_are_not_nesting():
    chain = " or ".join(f'principal.id == "p{i}"' for i in range(5000))
    ps = policylang.loads(f'@id("r")\npermit agent to read on repo\n  when {chain}\n  because "x"\n')
    assert len(ps.rules[0].rule.conditions[0].expr.items) == 5000
