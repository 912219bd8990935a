"""Each checker stage on its own (policylang/language/checker/): a parsed set is given a context
filled only by the stages it reads from, the stage under test runs alone, and its own
diagnostics — and only those — are asserted. Then the typed static types and the one
glob engine (policylang/language/globs.py) that matching and the checker's coverage share.
"""

from __future__ import annotations

import random

import pytest

from policylang.language.checker import STAGES, CheckContext
from policylang.language.checker.clauses import stage_clauses
from policylang.language.checker.collect import stage_collect
from policylang.language.checker.constants import stage_constants
from policylang.language.checker.expressions import ExprFacts
from policylang.language.checker.lint import stage_lint
from policylang.language.checker.names import stage_names
from policylang.language.checker.schema import stage_schema
from policylang.language.checker.typecheck import stage_types
from policylang.language.checker.types import (BOOL, CHAIN, NUMBER, STRING, ActionType, EntityType, ListType, Simple,
                                      common, describe_type, type_of_value)
from policylang.language.globs import Glob, covers
from policylang.language.parser import parse

SCHEMA = '''\
principal agent { tenant: string, trust: number? }
resource repo { owner: string, size: number }
action read, write on repo
'''


def ctx_for(text: str, *before) -> CheckContext:
    """A context for ``text`` after running only the stages in ``before``."""
    ctx = CheckContext([parse(text, "t.policy")], {"t.policy": "t.policy"})
    for stage in before:
        stage(ctx)
    return ctx


def run(stage, text: str, *before) -> list[tuple[str, int, str]]:
    """(code, line, message) of what ``stage`` alone reports on ``text``."""
    ctx = ctx_for(text, *before)
    start = len(ctx.diagnostics)
    stage(ctx)
    return [(d.code, d.span.line, d.message) for d in ctx.diagnostics[start:]]


def rule(body: str, head: str = "permit agent to read on repo") -> str:
    return f'@id("r")\n{head}\n{body}  because "why"\n'


def test_stage_list_is_the_modules_functions_in_order():
    assert [fn for _n, fn in STAGES] == [stage_collect, stage_constants, stage_names, stage_schema, stage_types,
                                         stage_clauses, stage_lint]


# ------------------------------------------------------------------ collect

def test_collect_fills_the_declarations_and_reports_duplicates():
    text = SCHEMA + 'const A = 1\nconst A = 2\noption max_tl = 1h\noption max_ttl = 2h\n' + rule("") + rule("")
    ctx = CheckContext([parse(text, "t.policy")], {"t.policy": "t.policy"})
    stage_collect(ctx)
    got = [(d.code, d.message) for d in ctx.diagnostics]
    assert [c for c, _ in got] == ["E006", "E007", "E006"], got
    assert "constant 'A' is already defined" in got[0][1]
    assert "unknown option 'max_tl'; did you mean 'max_ttl'?" in got[1][1]
    assert "rule id 'r' is already used" in got[2][1]
    assert list(ctx.const_decls) == ["A"] and ctx.constants == {}  # folding is the next stage's job
    assert ctx.options.max_ttl == 7200
    assert set(ctx.schema.principals) == {"agent"} and set(ctx.schema.actions) == {"read", "write"}
    assert [r.id for r in ctx.rules] == ["r", "r"]


def test_collect_reports_an_unknown_schema_type():
    assert [(c, m) for c, _l, m in run(stage_collect, "resource repo { owner: strng }\n")] == [
        ("E005", "unknown type 'strng'; did you mean 'string'?")]


# ------------------------------------------------------------------ constants

def test_constants_folds_in_order_and_reports_forward_use():
    text = "const A = B + 1\nconst B = 2\nconst C = B * 3\n"
    ctx = ctx_for(text, stage_collect)
    stage_constants(ctx)
    assert [(d.code, d.message) for d in ctx.diagnostics] == [("E002", "constant 'B' is used before it is defined")]
    assert ctx.constants == {"B": 2, "C": 6}


# ------------------------------------------------------------------ names

def test_names_reports_unknown_names_only():
    text = SCHEMA + rule('  when resouce.owner == "x" and resource.size < "big" and lenn(principal.tenant) > 1\n')
    got = run(stage_names, text, stage_collect, stage_constants)
    assert [c for c, _l, _m in got] == ["E002", "E002"], got
    assert "unknown name 'resouce'" in got[0][2] and "did you mean 'resource'?" in got[0][2]
    assert "unknown function 'lenn'" in got[1][2]


def test_names_is_its_own_walk_and_notes_the_constants_read():
    text = SCHEMA + "const LIMIT = 3\nconst SPARE = 1\n" + rule("  when all x in [LIMIT]: x > principal.trust\n")
    ctx = ctx_for(text, stage_collect, stage_constants)
    stage_names(ctx)
    assert ctx.diagnostics == [] and ctx.facts is None  # no type inference ran
    assert ctx.used_constants == {"LIMIT"}


def test_names_checks_delegation_fields_and_quantifier_scope():
    text = rule("  when delegation.dept > 1 and (any d in delegation.chain: d.kind == \"human\") and d.kind == \"x\"\n")
    got = run(stage_names, text, stage_collect, stage_constants)
    assert [c for c, _l, _m in got] == ["E002", "E002"], got
    assert "'delegation' has no attribute 'dept' (did you mean 'depth'?)" in got[0][2]
    assert "unknown name 'd'" in got[1][2]


# ------------------------------------------------------------------ schema

def test_schema_reports_undeclared_targets_and_attributes_only():
    text = SCHEMA + rule('  when resource.ownr == "x" and resource.size < "big"\n',
                         head="permit agent to read, wrte on repo")
    got = run(stage_schema, text, stage_collect, stage_constants, stage_names)
    assert [c for c, _l, _m in got] == ["E003", "E004"], got
    assert "action 'wrte' is not declared" in got[0][2]
    assert "resource attribute 'ownr' is not declared for resource type 'repo'" in got[1][2]


def test_schema_says_nothing_without_a_schema():
    assert run(stage_schema, rule('  when resource.anything == "x"\n', head="permit agent to read on repo"),
               stage_collect, stage_constants) == []


# ------------------------------------------------------------------ types

def test_types_reports_type_errors_only():
    text = SCHEMA + rule('  when resouce.owner == "x" and resource.size < "big"\n')
    got = run(stage_types, text, stage_collect, stage_constants)  # the walk runs on demand
    assert [(c, l) for c, l, _m in got] == [("E005", 6)], got  # line 6: the `when`
    assert "'<' compares two numbers or two strings, but this compares a number with a string" in got[0][2]


def test_types_an_unknown_type_never_errors():
    assert run(stage_types, rule('  when context.x < 3 and intent.y + 1 > 0\n'), stage_collect, stage_constants) == []


# ------------------------------------------------------------------ clauses

def test_clauses_reports_misplaced_clauses_and_bad_cidrs():
    text = rule('  when in_cidr(context.ip, "10.0.0.0/33")\n  grant "s" for 10m\n', head="forbid agent to read on repo")
    ctx = ctx_for(text, stage_collect, stage_constants)
    stage_clauses(ctx)
    got = [(d.code, d.span.line, d.message) for d in ctx.diagnostics]
    assert ctx.facts is None  # syntactic: the clauses stage needs no expression walk
    assert sorted(c for c, _l, _m in got) == ["E007", "E007"], got
    assert any("`grant` is only allowed on permit rules" in m for _c, _l, m in got)
    assert any('"10.0.0.0/33" is not a CIDR network' in m for _c, _l, m in got)


# ------------------------------------------------------------------ lint

def test_lint_reports_warnings_only():
    text = ("const UNUSED = 1\nconst USED = 2\n"
            "forbid agent to read on repo\n"
            "permit agent to read on repo when resource.size > USED\n")
    got = run(stage_lint, text, stage_collect, stage_constants)
    assert sorted({c for c, _l, _m in got}) == ["W101", "W104", "W106", "W107"], got
    assert [m for c, _l, m in got if c == "W107"] == ["constant 'UNUSED' is never used; remove it or use it in a rule"]


# ------------------------------------------------------------------ static types

def test_static_types_are_typed_values():
    assert describe_type(ListType(STRING)) == "a list"
    assert describe_type(EntityType("resource", ("repo",))) == "a resource entity"
    assert describe_type(ActionType(None)) == "an action"
    assert describe_type(None) == "a value" and describe_type(BOOL) == "a boolean"
    assert type_of_value([1, 2.5]) == ListType(NUMBER)
    assert type_of_value(["a", 1]) == ListType(None)
    assert common([CHAIN, ListType(EntityType("principal", None))]) == CHAIN
    assert {EntityType("principal", ("agent",)): 1}[EntityType("principal", ("agent",))] == 1
    with pytest.raises(AttributeError):
        ListType(STRING).elem = NUMBER  # frozen
    assert all(isinstance(t, Simple) for t in (STRING, NUMBER, BOOL))


# ------------------------------------------------------------------ one glob engine

def _strings(alphabet: str, n: int) -> list[str]:
    out = [""]
    for length in range(1, n + 1):
        out += ["".join(random.choice(alphabet) for _ in range(length)) for _ in range(30)]
    return out


def test_covers_agrees_with_matching_on_samples():
    """When ``covers(outer, inner)`` says yes, every sampled string ``inner`` matches is
    matched by ``outer``; when it says no, a counterexample exists among short strings
    built from the patterns' characters (checked exhaustively up to length 4)."""
    import itertools
    random.seed(7)
    pieces = ["a", "b", "/", "*", "**", "?"]
    for _ in range(300):
        inner = "".join(random.choice(pieces) for _ in range(random.randint(0, 4)))
        outer = "".join(random.choice(pieces) for _ in range(random.randint(0, 4)))
        gi, go = Glob(inner), Glob(outer)
        words = ["".join(w) for n in range(6) for w in itertools.product("ab/c", repeat=n)]
        counter = [w for w in words if gi.match(w) and not go.match(w)]
        if covers(outer, inner):
            assert counter == [], (outer, inner, counter[:3])
        else:
            assert counter, (outer, inner)


def test_the_runtime_matches_with_the_same_glob_class():
    from policylang.evaluation import runtime
    assert runtime.Glob is Glob
    assert runtime.glob("a/**") .match("a/b/c") and not runtime.glob("a/*").match("a/b/c")
