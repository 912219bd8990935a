"""Static checks (docs/language.md#what-the-checker-verifies): every diagnostic code, what triggers it and what does not.

Each code has a policy that triggers it (code, line, column and the key words of the
message are asserted: a user reads those) and a close variant that does not. Then the
checker's cross-cutting promises: every diagnostic at once, no cascades, directory
loading, and speed on large sets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cost import assert_linear_steps

import policylang
from policylang.language import checker, nodes as ast
from policylang.language.checker import STAGES, glob_covers
from policylang.language.errors import CODES, PolicyError
from policylang.language.loader import check_path
from policylang.language.parser import parse

SCHEMA = '''\
principal agent { tenant: string, roles: set<string>, trust: number? }
principal human { department: string }
resource repo { owner: string, visibility: string, archived: bool, size: number }
resource service { env: string, tier: number }
action read, list, write on repo
action delete on repo { soft: bool }
high_impact action deploy, rollback on service
context { ticket: string?, ip: string? }
'''

GOOD_RULE_TAIL = '  because "ok"\n'


def diags(text: str, name: str = "t.policy"):
    """Every diagnostic of ``text`` loaded as one file (errors and warnings)."""
    try:
        ps = policylang.loads(text, name)
    except PolicyError as e:
        return list(e.diagnostics)
    return list(ps.diagnostics)


def codes(text: str) -> list[str]:
    return [d.code for d in diags(text)]


def only(text: str, code: str):
    """The single diagnostic with ``code`` (asserts there is exactly one)."""
    found = [d for d in diags(text) if d.code == code]
    assert len(found) == 1, f"expected one {code}, got {[d.header() for d in diags(text)]}"
    return found[0]


def rule(body: str, head: str = 'permit agent to read on repo', rid: str = "r") -> str:
    """A well-formed rule (id and because) with ``body`` as its conditions/clauses."""
    return f'@id("{rid}")\n{head}\n{body}  because "why"\n'


def assert_at(d, line: int, column: int, *words: str, end_column: int | None = None) -> None:
    assert (d.line, d.column) == (line, column), d.header()
    for w in words:
        assert w in d.message, f"{w!r} not in {d.message!r}"
    if end_column is not None:
        assert d.end_column == end_column, d.header()


def test_clean_policy_has_no_diagnostics():
    text = SCHEMA + '''\
const MAX_RISK = 0.7
@id("coder-reads")
permit agent "spiffe://acme.io/agents/*" to read, list on repo
  when resource.owner == principal.tenant
  when risk.score < MAX_RISK and not resource.archived
  when principal has trust and principal.trust > 0.5
  unless context has ip and not in_cidr(context.ip, "10.0.0.0/8")
  when any r in principal.roles: r matches "dev-*"
  when len(delegation.chain) < 3 and delegation.root.kind == "human"
  grant "repo:read:" + resource.id for 10m
  because "coding agents read their tenant's repositories"

@id("deploys-need-approval")
require approval for agent to deploy on service
  when resource.env == "prod"
  by "sre-oncall"
  because "production deploys are high impact"

@id("agents-deploy")
permit agent to deploy on service
  when resource.tier < 3
  because "agents deploy low tiers once approved"
'''
    assert diags(text) == []


def test_every_code_is_documented_with_severity():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "diagnostics.md").read_text(encoding="utf-8")
    for code, (severity, _desc) in CODES.items():
        assert f"## {code}" in doc, code
        assert severity == {"E": "error", "W": "warning", "N": "note"}[code[0]]


def test_stages_are_named_in_order_and_documented():
    names = [n for n, _ in STAGES]
    assert names == ["collect", "constants", "names", "schema", "types", "clauses", "lint"]
    doc = checker.__doc__
    positions = [doc.index(f"``{n}``") for n in names]
    assert positions == sorted(positions)


# ------------------------------------------------------------------ E001

def test_e001_syntax_error_says_what_was_expected():
    d = only('permit agent to read on repo\n  when resource.owner = "acme"\n', "E001")
    assert_at(d, 2, 23, "unexpected '='", "expected", "use '=='")


def test_e001_not_for_a_valid_comparison():
    assert "E001" not in codes(rule('  when resource.owner == "acme"\n'))


# ------------------------------------------------------------------ E002

def test_e002_unknown_name_suggests_the_closest():
    d = only(rule('  when resouce.owner == "acme"\n'), "E002")
    assert_at(d, 3, 8, "unknown name 'resouce'", "did you mean 'resource'?", end_column=15)


def test_e002_unknown_name_without_a_close_match_lists_what_names_are():
    d = only(rule('  when zzz == 1\n'), "E002")
    assert_at(d, 3, 8, "unknown name 'zzz'", "constant", "quantifier variable")


def test_e002_constants_and_quantifier_variables_are_known():
    text = 'const LIMIT = 3\n' + rule('  when any d in delegation.chain: d.kind == "human"\n  when 1 < LIMIT\n')
    assert "E002" not in codes(text)


def test_e002_quantifier_variable_is_out_of_scope_after_its_body():
    text = rule('  when (any d in delegation.chain: d.kind == "human") and d.id == "x"\n')
    d = only(text, "E002")
    assert_at(d, 3, 59, "unknown name 'd'")


def test_e002_unknown_function_suggests_a_function():
    d = only(rule('  when lowr(principal.id) == "x"\n'), "E002")
    assert_at(d, 3, 8, "unknown function 'lowr'", "did you mean 'lower'?", end_column=12)


def test_e002_unknown_delegation_attribute():
    d = only(rule('  when delegation.dept < 3\n'), "E002")
    assert_at(d, 3, 19, "'delegation' has no attribute 'dept'", "did you mean 'depth'?", "chain, depth and root",
              end_column=23)


def test_e002_not_for_free_form_root_attributes():
    text = rule('  when intent.purpose == "x" and context.whatever == 1 and risk.anything == 2\n'
                '  when principal.free == 1 and delegation.depth < 2\n')
    assert "E002" not in codes(text)


def test_e002_in_a_grant_scope():
    d = only(rule('  grant "repo:" + resource.idd + principl.id for 10m\n'), "E002")
    assert_at(d, 3, 34, "unknown name 'principl'")


def test_e002_in_a_constant_definition():
    d = only('const A = B + 1\nconst B = 2\n' + rule('  when A == B\n'), "E002")
    assert_at(d, 1, 11, "'B' is used before it is defined")


def test_e002_a_constant_that_failed_causes_no_second_error():
    found = diags('const A = 1 / 0\nconst B = A + 1\n' + rule('  when B == 2 and A == 1\n'))
    assert [(d.code, d.line) for d in found if d.severity == "error"] == [("E005", 1)]


def test_e002_a_constant_that_refers_to_itself():
    d = only('const A = A + 1\n' + rule('  when A == 1\n'), "E002")
    assert_at(d, 1, 11, "constant 'A' refers to itself")


# ------------------------------------------------------------------ E003

def test_e003_undeclared_kind_type_and_action():
    text = SCHEMA + rule("", head="permit agnt to raed on rpo")
    found = sorted((d.column, d.message) for d in diags(text) if d.code == "E003")
    line = SCHEMA.count("\n") + 2
    assert [c for c, _ in found] == [8, 16, 24]
    assert "principal kind 'agnt' is not declared" in found[0][1] and "did you mean 'agent'?" in found[0][1]
    assert "action 'raed' is not declared" in found[1][1] and "did you mean 'read'?" in found[1][1]
    assert "resource type 'rpo' is not declared" in found[2][1] and "did you mean 'repo'?" in found[2][1]
    assert all(d.line == line for d in diags(text) if d.code == "E003")


def test_e003_action_on_a_type_it_is_not_declared_for():
    text = SCHEMA + rule("", head="permit agent to read, deploy on repo")
    d = only(text, "E003")
    assert_at(d, SCHEMA.count("\n") + 2, 23, "action 'deploy' is not declared on resource type 'repo'",
              "only on 'service'", end_column=29)


def test_e003_only_for_categories_the_schema_declares():
    # kinds are declared, resource types and actions are not: only kinds are checked
    text = 'principal agent { tenant: string }\n' + rule("", head="permit agent to fly on spaceship")
    assert "E003" not in codes(text)
    text = 'principal agent { tenant: string }\n' + rule("", head="permit robot to fly on spaceship")
    assert codes(text).count("E003") == 1


def test_e003_not_without_a_schema():
    assert "E003" not in codes(rule("", head="permit anything to anything on anything"))


def test_e003_action_declared_on_an_undeclared_type():
    d = only('resource repo { owner: string }\naction read on repo, rpo\n', "E003")
    assert_at(d, 2, 1, "declared on resource type 'rpo'", "did you mean 'repo'?")


# ------------------------------------------------------------------ E004

def test_e004_attribute_not_declared_for_the_targeted_kind():
    text = SCHEMA + rule('  when principal.tennant == "acme"\n')
    d = only(text, "E004")
    assert_at(d, SCHEMA.count("\n") + 3, 18, "principal attribute 'tennant' is not declared for kind 'agent'",
              "did you mean 'tenant'?", end_column=25)


def test_e004_every_targeted_kind_must_declare_it():
    text = SCHEMA + rule('  when principal.tenant == "acme"\n', head="permit agent, human to read on repo")
    d = only(text, "E004")
    assert "not declared for kind 'human'" in d.message


def test_e004_under_star_some_declared_kind_suffices():
    text = SCHEMA + rule('  when principal.department == "x"\n', head="permit * to read on repo")
    assert "E004" not in codes(text)
    text = SCHEMA + rule('  when principal.nope == "x"\n', head="permit * to read on repo")
    d = only(text, "E004")
    assert "not declared for any declared kind" in d.message


def test_e004_resource_action_context_and_delegation_entities():
    text = SCHEMA + rule('  when resource.ownr == "a"\n'
                         '  when action.soft or action.hard\n'
                         '  when context.tiket == "x"\n'
                         '  when delegation.root.departmnt == "x"\n'
                         '  when any d in delegation.chain: d.tenantt == "x"\n',
                         head="permit agent to delete on repo")
    found = [(d.line - SCHEMA.count("\n"), d.message) for d in diags(text) if d.code == "E004"]
    assert len(found) == 5, found
    assert "resource attribute 'ownr'" in found[0][1] and "did you mean 'owner'?" in found[0][1]
    assert "action attribute 'hard'" in found[1][1]
    assert "context attribute 'tiket'" in found[2][1] and "did you mean 'ticket'?" in found[2][1]
    assert "principal attribute 'departmnt'" in found[3][1] and "any declared kind" in found[3][1]
    assert "principal attribute 'tenantt'" in found[4][1]


def test_e004_not_for_builtins_or_declared_attributes():
    text = SCHEMA + rule('  when principal.id == "a" and principal.kind == "agent" and resource.id == "r"\n'
                         '  when resource.type == "repo" and action.name == "read" and resource.owner == "o"\n'
                         '  when resource["visibility"] == "public"\n')
    assert "E004" not in codes(text)


def test_e004_not_without_a_schema_for_that_category():
    text = 'principal agent { tenant: string }\n' + rule('  when resource.anything == 1 and context.x == 2\n')
    assert "E004" not in codes(text)


def test_e004_not_repeated_for_an_undeclared_kind():
    text = SCHEMA + rule('  when principal.whatever == 1\n', head="permit robot to read on repo")
    assert codes(text).count("E003") == 1
    assert "E004" not in codes(text)


# ------------------------------------------------------------------ E005

def test_e005_string_compared_with_a_number():
    d = only(rule('  when "abc" < 3\n'), "E005")
    assert_at(d, 3, 8, "'<' compares two numbers or two strings", "a string with a number", end_column=17)


def test_e005_schema_attribute_types_are_known():
    text = SCHEMA + rule('  when resource.owner >= 10\n')
    d = only(text, "E005")
    assert_at(d, SCHEMA.count("\n") + 3, 8, "'>=' compares", "a string with a number")


def test_e005_not_for_unknown_types():
    text = rule('  when resource.owner < 3 and principal.level + 1 > 2 and context.x in principal.list\n')
    assert "E005" not in codes(text)


@pytest.mark.parametrize("cond, col, words", [
    ('  when 1 matches "x"\n', 8, ["'matches' needs a string"]),
    ('  when "a" in 3\n', 15, ["needs a list (or a string) on the right", "a number"]),
    ('  when 3 in "abc"\n', 8, ["substring", "a number"]),
    ('  when "x"\n', 8, ["`when` condition must be a boolean", "a string"]),
    ('  unless 1 + 1\n', 10, ["`unless` condition must be a boolean", "a number"]),
    ('  when true and "x"\n', 17, ["operands of 'and' must be booleans", "a string"]),
    ('  when not 3\n', 12, ["'not' needs a boolean", "a number"]),
    ('  when -"x" == 1\n', 8, ["unary '-' needs a number"]),
    ('  when "a" - 1 == 1\n', 8, ["'-' needs two numbers", "a string"]),
    ('  when "a" + 1 == 1\n', 8, ["'+' adds two numbers or joins two strings", "mixes a string and a number"]),
    ('  when len(5) > 1\n', 12, ["len() needs a list or a string"]),
    ('  when lower(risk.score) == "x"\n', 14, ["lower() needs a string", "a number"]),
    ('  when any x in 3: true\n', 17, ["'any' iterates over a list"]),
    ('  when all x in [1, 2]: x\n', 25, ["body of 'all' must be a boolean", "a number"]),
    ('  when "abc"[0] == "a"\n', 8, ["cannot index a string"]),
    ('  when [1, 2]["a"] == 1\n', 15, ["list index must be an integer", "a string"]),
    ('  when delegation.depth.x == 1\n', 25, ["cannot read attribute 'x' of a number"]),
    ('  when starts_with(delegation.chain, "a")\n', 20, ["starts_with() needs a string", "a list"]),
    ('  when len(1, 2) == 1\n', 8, ["len() takes 1 argument, but 2 were given"]),
])
def test_e005_type_errors(cond, col, words):
    d = only(rule(cond), "E005")
    assert_at(d, 3, col, *words)


def test_e005_grant_scope_must_be_a_string():
    d = only(rule('  grant "repo:" + resource.id, 42 for 10m\n'), "E005")
    assert_at(d, 3, 32, "grant scope must be a string", "a number", end_column=34)


def test_e005_constants_and_function_results_have_types():
    text = 'const LIMIT = "ten"\n' + rule('  when len(resource.id) < LIMIT\n')
    d = only(text, "E005")
    assert_at(d, 4, 8, "a number with a string")


def test_e005_unknown_schema_type():
    d = only('principal agent { tenant: strng }\n', "E005")
    assert_at(d, 1, 27, "unknown type 'strng'", "did you mean 'string'?")


def test_e005_reported_once_per_mistake():
    # the bad subtraction is unknown from there on: no second error from `and`
    assert codes(rule('  when "a" - 1 and true\n')).count("E005") == 1


def test_e005_not_for_well_typed_expressions():
    text = SCHEMA + rule('  when risk.score * 2 + 1 < 3 and resource.owner + "/x" == "a/x"\n'
                         '  when "x" in risk.signals and "ac" in resource.owner and 10m < 1h\n'
                         '  when all r in principal.roles: starts_with(r, "dev") and len(r) > 0\n'
                         '  when delegation.chain[0].kind == "human" and upper(resource.id) != ""\n')
    assert "E005" not in codes(text)


# ------------------------------------------------------------------ E006

def test_e006_duplicate_rule_id():
    text = rule("", rid="same") + rule("", rid="same")
    d = only(text, "E006")
    assert_at(d, 4, 1, "rule id 'same' is already used at t.policy:1")


def test_e006_duplicate_constant_option_and_root_name():
    text = 'const A = 1\nconst A = 2\noption max_ttl = 1h\noption max_ttl = 2h\nconst risk = 1\n'
    found = [(d.line, d.column, d.message) for d in diags(text) if d.code == "E006"]
    assert found == [
        (2, 7, "constant 'A' is already defined at t.policy:1"),
        (4, 8, "option 'max_ttl' is already set at t.policy:3"),
        (5, 7, "constant 'risk' has the name of a root"),
    ]


def test_e006_second_id_annotation_on_one_rule():
    d = only('@id("a")\n@id("b")\npermit agent to read on repo because "x"\n', "E006")
    assert_at(d, 2, 1, "a second @id")


def test_e006_not_for_distinct_ids():
    assert "E006" not in codes(rule("", rid="a") + rule("", rid="b"))


# ------------------------------------------------------------------ E007

def test_e007_grant_on_a_forbid():
    d = only(rule('  grant "x" for 10m\n', head="forbid agent to read on repo"), "E007")
    assert_at(d, 3, 3, "`grant` is only allowed on permit rules", end_column=20)


def test_e007_require_approval_without_by():
    d = only(rule("", head="require approval for agent to write on repo"), "E007")
    assert_at(d, 2, 1, "needs a `by` clause", end_column=21)


def test_e007_by_on_a_permit():
    d = only(rule('  by "sre"\n'), "E007")
    assert_at(d, 3, 3, "`by` names approvers", "only allowed on `require approval`")


def test_e007_grant_ttl_over_max_ttl():
    d = only(rule('  grant "x" for 1h30m\n'), "E007")
    assert_at(d, 3, 3, "grant ttl 1h30m is longer than the set's max_ttl (1h)", "option max_ttl")
    assert "E007" not in codes('option max_ttl = 2h\n' + rule('  grant "x" for 1h30m\n'))
    assert "E007" not in codes(rule('  grant "x" for 1h\n'))


def test_e007_bad_cidr_literal_and_constant():
    text = 'const NET = "10.0.0.0/33"\n' + rule('  when in_cidr(context.ip, "300.1.2.3/8") or in_cidr(context.ip, NET)\n')
    found = [d for d in diags(text) if d.code == "E007"]
    assert [(d.line, d.column) for d in found] == [(4, 28), (4, 66)]
    assert '"300.1.2.3/8" is not a CIDR network' in found[0].message
    assert "the value of constant 'NET'" in found[1].message


def test_e007_valid_cidrs_ipv4_and_ipv6():
    text = rule('  when in_cidr(context.ip, "10.0.0.0/8") or in_cidr(context.ip, "fd00::/8")\n')
    assert "E007" not in codes(text)


def test_e007_second_because_by_or_grant():
    text = rule('  by "a"\n  by "b"\n  because "one"\n', head="require approval for agent to write on repo")
    found = [d for d in diags(text) if d.code == "E007"]
    assert [(d.line, d.column) for d in found] == [(4, 3), (6, 3)]
    assert "a second `by` clause" in found[0].message
    assert "a second `because` clause" in found[1].message
    text = rule('  grant "a" for 1m\n  grant "b" for 1m\n')
    d = only(text, "E007")
    assert_at(d, 4, 3, "a second `grant` clause")


def test_e007_unknown_option_and_bad_option_value():
    found = [d for d in diags('option max_tll = 1h\noption attenuate_delegation = 3\n') if d.code == "E007"]
    assert "unknown option 'max_tll'" in found[0].message and "did you mean 'max_ttl'?" in found[0].message
    assert "needs true or false" in found[1].message


# ------------------------------------------------------------------ W101 … W107

def test_w101_rule_without_id():
    d = only('permit agent to read on repo because "x"\n', "W101")
    assert_at(d, 1, 1, "no @id", "'t.policy:1'", end_column=7)
    assert "W101" not in codes(rule(""))


def test_w102_permit_everything_everywhere():
    d = only(rule("", head="permit agent to * on *"), "W102")
    assert_at(d, 2, 8, "over-broad", end_column=23)
    assert "W102" not in codes(rule("", head="permit agent to * on repo"))
    assert "W102" not in codes(rule("", head="forbid agent to * on *"))


def test_w103_optional_attribute_without_has_guard():
    text = SCHEMA + rule('  when principal.trust > 0.5\n')
    d = only(text, "W103")
    assert_at(d, SCHEMA.count("\n") + 3, 8, "'principal.trust' is optional", "principal has trust",
              end_column=23)


def test_w103_a_guard_in_an_earlier_condition_counts():
    # issue 17 point 3: conditions stop at the first that fails, so an earlier `when
    # principal has trust` guards a later read
    text = SCHEMA + rule('  when principal has trust\n  when principal.trust > 0.5\n')
    assert "W103" not in codes(text)
    for guard in ('  when context has ip and principal has trust\n',
                  '  unless not principal has trust\n',
                  '  unless context has ip or not principal has trust\n'):
        assert "W103" not in codes(SCHEMA + rule(guard + '  when principal.trust > 0.5\n')), guard


def test_w103_a_guard_that_need_not_hold_does_not_count():
    n = SCHEMA.count("\n")
    for guard in ('  when principal has trust or risk.score < 0.5\n',   # an `or` item need not hold
                  '  unless principal has trust\n',                      # an `unless` that goes on when absent
                  '  when not principal has trust\n'):
        d = only(SCHEMA + rule(guard + '  when principal.trust > 0.5\n'), "W103")
        assert_at(d, n + 4, 8, "'principal.trust' is optional")
    # a guard after the read does not count
    d = only(SCHEMA + rule('  when principal.trust > 0.5\n  when principal has trust\n'), "W103")
    assert_at(d, n + 3, 8)


def test_w103_guard_in_the_same_condition():
    text = SCHEMA + rule('  when principal has trust and principal.trust > 0.5\n'
                         '  unless context has ticket and context.ticket == "x"\n'
                         '  when any d in delegation.chain: d has trust and d.trust > 1\n')
    assert "W103" not in codes(text)


def test_w104_rule_covered_by_an_unconditional_forbid():
    text = (rule("", head='permit agent "spiffe://acme.io/agents/*" to read on repo "acme/*"', rid="p")
            + rule("", head='forbid agent "spiffe://acme.io/**" to read, write on repo', rid="f"))
    d = only(text, "W104")
    assert_at(d, 2, 1, "can never determine a decision", "'f'")


def test_w104_not_when_the_forbid_has_a_condition_or_does_not_cover():
    permit = rule("", head='permit agent to read on repo', rid="p")
    assert "W104" not in codes(permit + rule('  when risk.score > 0.9\n', head="forbid * to * on *", rid="f"))
    assert "W104" not in codes(permit + rule("", head='forbid agent "x/*" to read on repo', rid="f"))
    assert "W104" not in codes(permit + rule("", head='forbid agent to write on repo', rid="f"))
    # a resource glob never matches a request without resource.id, so it covers no glob-less target
    assert "W104" not in codes(permit + rule("", head='forbid agent to read on repo "**"', rid="f"))


@pytest.mark.parametrize("outer, inner, covered", [
    ("**", "anything/at/all", True),
    ("a/*", "a/b", True),
    ("a/*", "a/b*", True),
    ("a/*", "a/**", False),
    ("a/**", "a/*/c", True),
    ("a/?", "a/*", False),
    ("*", "x?y", True),
    ("*", "x/y", False),
    ("spiffe://acme.io/**", "spiffe://acme.io/agents/*", True),
    ("spiffe://acme.io/agents/*", "spiffe://acme.io/**", False),
])
def test_w104_glob_coverage(outer, inner, covered):
    assert glob_covers(outer, inner) is covered


def test_w105_high_impact_action_permitted_to_agents_without_a_gate():
    text = SCHEMA + rule("", head="permit agent to deploy, rollback on service")
    found = [d for d in diags(text) if d.code == "W105"]
    assert [(d.line, d.column) for d in found] == [(SCHEMA.count("\n") + 2, 17), (SCHEMA.count("\n") + 2, 25)]
    assert "high-impact action 'deploy' is permitted to agents" in found[0].message
    assert "require approval for agent to deploy on service" in found[0].message


def test_w105_not_with_a_covering_gate_or_for_other_kinds():
    gate = rule('  when resource.env == "prod"\n  by "sre"\n',
                head="require approval for agent to deploy, rollback on service", rid="g")
    assert "W105" not in codes(SCHEMA + gate + rule("", head="permit agent to deploy, rollback on service"))
    assert "W105" not in codes(SCHEMA + rule("", head="permit human to deploy on service"))
    narrow = rule('  by "sre"\n', head='require approval for agent "x/*" to deploy on service', rid="g")
    assert "W105" in codes(SCHEMA + narrow + rule("", head="permit agent to deploy on service"))


def test_w106_rule_without_because():
    d = only('@id("r")\nforbid agent to read on repo\n', "W106")
    assert_at(d, 2, 1, "no `because`")
    assert "W106" not in codes(rule(""))


def test_w107_unused_constant():
    d = only('const A = 1\nconst B = 2\nconst C = B + 1\n' + rule('  when 1 < A\n'), "W107")
    assert_at(d, 3, 7, "constant 'C' is never used", end_column=8)
    assert "W107" not in codes('const A = 1\n' + rule('  when 1 < A\n'))


def test_w107_constant_used_in_a_grant_scope_or_other_constant():
    text = 'const P = "repo:"\nconst Q = P\n' + rule('  grant Q + resource.id for 1m\n')
    assert "W107" not in codes(text)


# ------------------------------------------------------------------ all at once

def test_every_diagnostic_is_reported_not_just_the_first():
    text = SCHEMA + '''\
@id("r")
permit agnt to read on repo
  when resouce.owner == 1
  when "a" < 1
  grant "x" for 3h
  by "nobody"
'''
    found = set(codes(text))
    assert {"E002", "E003", "E005", "E007", "W106"} <= found


def test_warnings_do_not_stop_loading():
    ps = policylang.loads('permit agent to read on repo\n')
    assert sorted(d.code for d in ps.diagnostics) == ["W101", "W106"]
    assert len(ps.rules) == 1


def test_diagnostics_are_sorted_and_carry_the_source_line():
    try:
        policylang.loads(rule('  when zz == 1 and yy == 2\n'))
    except PolicyError as e:
        assert [d.column for d in e.diagnostics] == [8, 20]
        assert e.diagnostics[0].line_text == "  when zz == 1 and yy == 2"
        assert "^^" in e.render()
    else:  # pragma: no cover
        pytest.fail("expected a PolicyError")


# ------------------------------------------------------------------ directory sets

def write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


def test_directory_loads_files_in_sorted_order_with_relative_default_ids(tmp_path):
    write(tmp_path, "b.policy", 'permit agent to read on repo because "b"\n')
    write(tmp_path, "a/z.policy", '\n\nforbid agent to write on repo because "az"\n')
    write(tmp_path, "a/sub/y.policy", '@id("named")\npermit human to read on repo because "y"\n')
    write(tmp_path, "notes.txt", "not a policy")
    ps = policylang.load(tmp_path)
    assert [r.id for r in ps.rules] == ["named", "a/z.policy:3", "b.policy:1"]
    assert [r.index for r in ps.rules] == [0, 1, 2]
    w101 = [d for d in ps.diagnostics if d.code == "W101"]
    assert [Path(d.path).relative_to(tmp_path).as_posix() for d in w101] == ["a/z.policy", "b.policy"]


def test_directory_constants_are_visible_across_files(tmp_path):
    write(tmp_path, "a.policy", 'const LIMIT = 3\n')
    write(tmp_path, "b.policy", rule('  when delegation.depth < LIMIT\n'))
    assert policylang.load(tmp_path).constants == {"LIMIT": 3}


def test_directory_duplicate_ids_across_files_are_e006(tmp_path):
    write(tmp_path, "a.policy", rule("", rid="dup"))
    write(tmp_path, "b.policy", "\n" + rule("", rid="dup"))
    with pytest.raises(PolicyError) as e:
        policylang.load(tmp_path)
    [d] = e.value.diagnostics
    assert d.code == "E006" and d.path.endswith("b.policy") and d.line == 2
    assert "a.policy:1" in d.message


def test_directory_invalid_entities_file_is_e001_naming_it(tmp_path):
    write(tmp_path, "a.policy", rule(""))
    write(tmp_path, "data/users.entities.json", '{"human": {"alice": [1, 2]}}')
    with pytest.raises(PolicyError) as e:
        policylang.load(tmp_path)
    [d] = e.value.diagnostics
    assert d.code == "E001" and d.path.endswith("users.entities.json")
    write(tmp_path, "data/users.entities.json", '{"human": ')
    _ps, found = check_path(tmp_path)
    assert [d.code for d in found] == ["E001"] and "not valid JSON" in found[0].message


def test_directory_errors_in_several_files_are_all_reported(tmp_path):
    write(tmp_path, "a.policy", rule('  when nope == 1\n'))
    write(tmp_path, "b.policy", 'permit agent to\n')
    _ps, found = check_path(tmp_path)
    assert [(Path(d.path).name, d.code) for d in found if d.severity == "error"] == [("b.policy", "E001")]
    write(tmp_path, "b.policy", rule('  when nada == 1\n', rid="b"))
    _ps, found = check_path(tmp_path)
    assert [(Path(d.path).name, d.code) for d in found] == [("a.policy", "E002"), ("b.policy", "E002")]


# ------------------------------------------------------------------ speed

def _replicated(n_rules: int) -> list[ast.PolicyFile]:
    """A set of ``n_rules`` rules built from one parsed block of varied rules."""
    block = SCHEMA + "const MAX = 0.7\nconst ENVS = [\"prod\"]\n" + "".join(
        rule(body, head=head, rid=f"r{i}")
        for i, (head, body) in enumerate([
            ('permit agent "spiffe://a/*" to read, list on repo "acme/*"',
             '  when resource.owner == principal.tenant and risk.score < MAX\n'
             '  when principal has trust and principal.trust > 0.5\n'
             '  grant "repo:read:" + resource.id for 10m\n'),
            ('forbid agent to write, delete on repo',
             '  when delegation.depth > 3 or not (resource.visibility == "public")\n'
             '  unless any d in delegation.chain: d.kind == "human"\n'),
            ('require approval for agent to deploy on service',
             '  when resource.env in ENVS and in_cidr(context.ip, "10.0.0.0/8")\n  by "sre"\n'),
            ('permit agent to deploy on service', '  when len(principal.roles) > 1\n'),
        ]))
    f = parse(block, "big.policy")
    schema = [s for s in f.statements if not isinstance(s, ast.Rule)]
    rules = [s for s in f.statements if isinstance(s, ast.Rule)]
    stmts = schema + rules * (n_rules // len(rules))
    return [ast.PolicyFile("big.policy", tuple(stmts), span=f.span)]


def test_checking_many_rules_is_linear():
    """500 -> 2,000 rules: the checker's Python steps grow about 4x (counted, not timed)."""
    assert_linear_steps(_replicated, lambda files: checker.check(files, {"big.policy": "big.policy"}), 500)


def test_w104_index_keeps_many_forbids_and_permits_linear():
    parts = []
    for i in range(3000):
        parts.append(f'@id("f{i}")\nforbid agent to act{i} on repo because "f"\n')
        parts.append(f'@id("p{i}")\npermit agent to act{i + 1}, act{i + 2} on repo because "p"\n')
    files = [parse("".join(parts), "big.policy")]
    result = checker.check(files, {"big.policy": "big.policy"})
    assert not [d for d in result.diagnostics if d.code == "W104"]

    def make(n):
        text = "".join(f'@id("f{i}")\nforbid agent to act{i} on repo because "f"\n'
                       f'@id("p{i}")\npermit agent to act{i + 1}, act{i + 2} on repo because "p"\n' for i in range(n))
        return [parse(text, "big.policy")]
    # W104's index keeps this linear: 4x the rules, about 4x the Python steps (counted, not timed)
    assert_linear_steps(make, lambda fs: checker.check(fs, {"big.policy": "big.policy"}), 400)


# ------------------------------------------------------------------ issue 17 point 3: precision

def test_e004_has_key_not_declared():
    n = SCHEMA.count("\n")
    d = only(SCHEMA + rule('  when delegation.root has kidn\n'), "E004")
    assert_at(d, n + 3, 8, "`has` tests an undeclared attribute, so it is always false",
              "principal attribute 'kidn' is not declared for any declared kind", "did you mean 'kind'?",
              end_column=32)
    d = only(SCHEMA + rule('  when context has tiket\n'), "E004")
    assert_at(d, n + 3, 8, "context attribute 'tiket'", "did you mean 'ticket'?", end_column=25)
    d = only(SCHEMA + rule('  when resource has "ownr"\n'), "E004")
    assert_at(d, n + 3, 8, "resource attribute 'ownr' is not declared for resource type 'repo'",
              "did you mean 'owner'?", end_column=27)


def test_e004_not_for_declared_or_builtin_has_keys_or_without_a_schema():
    body = ('  when principal has trust and resource has owner and delegation.root has tenant\n'
            '  when context has ticket and principal has id and resource has type\n')
    assert "E004" not in codes(SCHEMA + rule(body))
    assert codes(rule('  when principal has anything and context has odd\n')) == []


def test_w112_substring_between_two_string_attributes():
    schema = SCHEMA.replace("archived: bool,", "archived: bool, teams: string,")
    n = schema.count("\n")
    d = only(schema + rule('  when principal.tenant in resource.teams\n'), "W112")
    assert_at(d, n + 3, 8, "'in' between two string attributes tests for a substring",
              "'resource.teams'", "declare it set<string>", end_column=42)
    assert "W112" in codes(schema + rule('  when principal.tenant not in resource["teams"]\n'))
    # a literal, a constant or a function result on one side is a deliberate substring test
    for body in ('  when "ops" in resource.teams\n', '  when principal.tenant in "ops-team"\n',
                 '  when lower(principal.tenant) in resource.teams\n',
                 '  when principal.tenant in principal.roles\n'):  # a set: membership
        assert "W112" not in codes(schema + rule(body)), body


def test_e005_equality_between_types_that_are_never_equal():
    n = SCHEMA.count("\n")
    d = only(SCHEMA + rule('  when principal.roles == "admin"\n'), "E005")
    assert_at(d, n + 3, 8, "'==' compares a list with a string, which are never equal, so this is always false",
              '`"admin" in principal.roles`', end_column=34)
    d = only(SCHEMA + rule('  when resource.size != resource.owner\n'), "E005")
    assert_at(d, n + 3, 8, "'!=' compares a number with a string", "always true", "convert one side")
    assert "E005" in codes(SCHEMA + rule('  when resource == "acme/x"\n'))
    assert "E005" in codes(SCHEMA + rule('  when principal == resource\n'))


def test_e005_not_for_equality_that_can_hold():
    for body in ('  when principal.tenant == resource.owner\n', '  when resource.size == 1.5\n',
                 '  when principal.roles == ["a", "b"]\n', '  when principal.roles == []\n',
                 '  when delegation.root == principal\n', '  when context.ticket != "x"\n',
                 '  when intent.x == 1\n', '  when principal.unknown_thing == 1\n'):
        assert "E005" not in codes(SCHEMA + rule(body)), body
    assert "E005" not in codes(rule('  when principal.roles == "admin"\n'))  # no schema: unknown types
    assert "E005" not in codes(rule('  when [1] == 1\n'))  # constants only: not a schema mistake


# ------------------------------------------------------------------ issue 17 point 4: attenuation gates

ATTENUATED = '''\
option attenuate_delegation = true

@id("orchestrator-calls")
permit agent "spiffe://x/orchestrator" to call on tool
  because "o"

@id("workers-call")
permit agent "spiffe://x/workers/*" to call on tool
  because "w"

'''


def test_w113_gate_for_a_whole_kind_also_gates_the_orchestrator():
    text = ATTENUATED + rule('  by "owners"\n', head="require approval for agent to call on tool", rid="g")
    d = only(text, "W113")
    assert_at(d, 12, 1, "under `attenuate_delegation` this gate also gates agent \"spiffe://x/orchestrator\"",
              "(permitted by 'orchestrator-calls')", "without the request's approval", end_column=21)
    star = rule('  by "owners"\n', head="require approval for * to * on *", rid="g")
    assert "W113" in codes(ATTENUATED + star)


def test_w113_not_for_a_gate_that_names_only_the_actors_or_without_attenuation():
    narrow = rule('  by "owners"\n', head='require approval for agent "spiffe://x/workers/*" to call on tool',
                  rid="g")
    assert "W113" not in codes(ATTENUATED + narrow)
    other_action = rule('  by "owners"\n', head="require approval for agent to delete on tool", rid="g")
    assert "W113" not in codes(ATTENUATED + other_action)
    other_type = rule('  by "owners"\n', head="require approval for agent to call on doc", rid="g")
    assert "W113" not in codes(ATTENUATED + other_type)
    whole = rule('  by "owners"\n', head="require approval for agent to call on tool", rid="g")
    assert "W113" not in codes(ATTENUATED.replace("option attenuate_delegation = true\n", "") + whole)


def _pipeline_request(approval="ap-1"):
    return {"principal": {"id": "spiffe://x/workers/1", "kind": "agent"}, "action": {"name": "call"},
            "resource": {"type": "tool", "id": "t"},
            "delegation": [{"id": "user:alice", "kind": "human"}, {"id": "spiffe://x/orchestrator", "kind": "agent"}],
            "approval": approval}


HUMANS = 'permit human to call on tool\n  because "people call tools"\n'


def test_explain_shows_the_delegators_and_the_gate_that_stopped_one():
    text = ATTENUATED + '@id("h")\n' + HUMANS + rule('  by "owners"\n', head="require approval for agent to call on tool",
                                                     rid="g")
    engine = policylang.Engine(policylang.loads(text, "p.policy"), approvals=lambda a, r, who: a == "ap-1")
    d = engine.decide(_pipeline_request())
    assert d.decision == "deny"
    out = d.explain()
    assert 'approval "ap-1" satisfied gate g (approvers: owners)' in out
    assert "delegators (attenuate_delegation: each decides as itself, without the request's approval):" in out
    assert "  [allow] human user:alice (depth 0) by h" in out
    assert ("  [require_approval] agent spiffe://x/orchestrator (depth 1) by g <- the first delegator not allowed: "
            "an allow becomes a deny") in out
    assert "gated by g: the request's approval does not reach a delegator" in out


def test_explain_on_an_approved_allow_says_which_approval_satisfied_which_gate():
    gate = rule('  by "owners"\n', head='require approval for agent "spiffe://x/workers/*" to call on tool', rid="g")
    text = ATTENUATED + '@id("h")\n' + HUMANS + gate
    engine = policylang.Engine(policylang.loads(text, "p.policy"), approvals=lambda a, r, who: a == "ap-1")
    d = engine.decide(_pipeline_request())
    assert d.decision == "allow"
    out = d.explain()
    assert 'approval "ap-1" satisfied gate g (approvers: owners)' in out
    assert "  [allow] agent spiffe://x/orchestrator (depth 1) by orchestrator-calls" in out
    assert "first delegator not allowed" not in out
    # unapproved: no approval line, the gate is what the decision says
    pending = engine.decide(_pipeline_request(approval=None))
    assert pending.decision == "require_approval" and "satisfied gate" not in pending.explain()

