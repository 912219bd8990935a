"""The lints the solver proves (policylang/analysis/lints.py, docs/analysis.md#proven-lints):
each fires where it holds, stays silent on near misses, never claims anything for a rule
the encoding does not express exactly (a note instead), and is cross-checked against
every request of a small domain decided by the Engine on generated sets."""

from __future__ import annotations

import itertools
import json

import pytest

z3 = pytest.importorskip("z3")

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policygen import policy_sets, requests

import policylang
from policylang.analysis.lints import proven_lints
from policylang.cli import main
from policylang.language.errors import CODES


def _lints(text: str) -> list:
    return proven_lints(policylang.loads(text, name="p.policy"))


def _codes(text: str) -> list[tuple[str, int]]:
    return [(d.code, d.line) for d in _lints(text)]


SET = '''@id("never")
permit agent to read on doc
  when principal.level > 5 and principal.level < 3
@id("no-untrusted-delete")
forbid agent to delete on doc
  when principal.trusted != true
@id("untrusted-delete")
permit agent to delete on doc
  when principal.trusted == false
@id("broad-read")
permit agent to read on doc
  when principal.team == "a"
@id("narrow-read")
permit agent to read on doc
  when principal.team == "a" and resource.public == true
@id("same-read")
permit agent to read on doc
  when principal.team == "a"
@id("gate")
require approval for agent to delete on doc
  when principal.trusted == false
  by "sre"
'''


def test_each_lint_fires_with_the_rule_span_and_names_the_other_rule():
    ds = {d.line: d for d in _lints(SET)}
    assert sorted((d.code, line) for line, d in ds.items()) == [
        ("W201", 2), ("W201", 20), ("W202", 14), ("W202", 17), ("W203", 8)]
    assert "no request satisfies" in ds[2].message
    assert "'no-untrusted-delete' (p.policy:4)" in ds[8].message and "dead" in ds[8].message
    assert "subsumed by the permit 'broad-read' (p.policy:10)" in ds[14].message
    assert "equivalent to the permit 'broad-read' (p.policy:10)" in ds[17].message
    assert "require approval rule" in ds[20].message and "denied by a forbid" in ds[20].message
    d = ds[8]
    assert (d.path, d.column, d.end_line, d.end_column, d.severity) == ("p.policy", 1, 8, 7, "warning")


def test_near_misses_stay_silent():
    # satisfiable conditions (3.5 is between 3 and 4)
    assert _codes('permit agent to read on doc\n  when principal.level > 3 and principal.level < 4\n') == []
    # the forbid leaves a gap: trusted agents with level > 1
    assert _codes('forbid agent to delete on doc\n  when principal.trusted == false\n'
                  'permit agent to delete on doc\n  when principal.level > 1\n') == []
    # a wider permit is not subsumed by a narrower one; the narrower one is
    assert _codes('permit agent to read on doc\n  when principal.team == "a"\n'
                  'permit agent to read on doc\n  when principal.team in ["a", "b"]\n') == [("W202", 1)]
    # same conditions, another grant: not subsumed
    assert _codes('permit agent to read on doc\n  when principal.team == "a"\n  grant "doc:read" for 5m\n'
                  'permit agent to read on doc\n  when principal.team == "a"\n') == []
    # a forbid covering only one of the permit's actions does not kill it
    assert _codes('forbid agent to delete on doc\npermit agent to read, delete on doc\n') == []
    # permits on different resource types never subsume each other
    assert _codes('permit agent to read on doc\npermit agent to read on repo\n') == []


def test_a_threshold_forbid_kills_a_stricter_permit_and_not_a_looser_one():
    dead = _codes('forbid agent to read on doc\n  when principal.level > 3\n'
                  'permit agent to read on doc\n  when principal.level > 5\n')
    assert dead == [("W203", 3)]
    assert _codes('forbid agent to read on doc\n  when principal.level > 5\n'
                  'permit agent to read on doc\n  when principal.level > 3\n') == []


def test_comparisons_of_two_request_attributes_are_proven_whatever_the_lists_lengths():
    text = ('forbid * to * on *\n  when resource.owner != principal.tenant\n'
            'permit agent to read on doc\n  when resource.owner != principal.tenant and principal.level > 1\n'
            'permit agent to read on doc\n  when resource.owner == principal.tenant\n')
    assert _codes(text) == [("W203", 3)]


def test_a_grant_built_by_string_concatenation_is_exact():
    # "+" with a string on one side is concatenation (or an error), never arithmetic
    text = ('permit agent to read on doc\n  when principal.team == "a"\n  grant "doc:" + resource.id + ":r" for 5m\n'
            'permit agent to read on doc\n  grant "doc:" + resource.id + ":r" for 5m\n')
    assert _codes(text) == [("W202", 1)]


def test_fail_closed_errors_are_part_of_the_proof():
    # the forbid raises (and so holds) when principal.level is missing or not a number;
    # the permit needs level < 0, where the forbid's unless fails: dead
    text = ('forbid agent to read on doc\n  unless principal.level >= 0\n'
            'permit agent to read on doc\n  when principal.level < 0\n')
    assert _codes(text) == [("W203", 3)]
    # a permit that does not read level is still allowed when level is 0
    assert _codes('forbid agent to read on doc\n  unless principal.level >= 0\n'
                  'permit agent to read on doc\n  when principal.team == "a"\n') == []


def test_a_gate_does_not_make_a_permit_dead_since_an_approval_lets_it_allow():
    text = ('require approval for agent to read on doc\n  by "ops"\n'
            'permit agent to read on doc\n  when principal.team == "a"\n')
    assert _codes(text) == []


@pytest.mark.parametrize("rule, construct", [
    ('permit agent to read on doc\n  when lower(principal.team) == "a" and principal.level < 0 and principal.level > 1\n',
     "lower()"),
    # lists of at most 3 items: len > 5 is unsatisfiable in the encoding and not in the engine
    ('permit agent to read on doc\n  when len(context.items) > 5\n', "len()"),
    # four membership tests need four items: more than the bound
    ('permit agent to read on doc\n  when "a" in context.xs and "b" in context.xs and "c" in context.xs'
     ' and "d" in context.xs\n'.strip() + "\n", "more than the list bound"),
    # x + 1 == x never holds for rationals and does for 1e16 as a double
    ('permit agent to read on doc\n  when principal.x + 1 == principal.x\n', "numeric arithmetic"),
    ('permit agent to read on doc\n  when delegation.depth > 4\n', "delegation.depth"),
])
def test_a_rule_the_encoding_does_not_express_exactly_gets_a_note_and_never_a_lint(rule, construct):
    ds = _lints(rule)
    assert [(d.code, d.severity) for d in ds] == [("N201", "note")]
    assert "not proven" in ds[0].message and construct in ds[0].message


def test_the_notes_match_the_engine_where_a_bounded_proof_would_have_lied():
    ps = policylang.loads('permit agent to read on doc\n  when len(context.items) > 5\n')
    req = {"principal": {"id": "a", "kind": "agent"}, "action": "read", "resource": {"type": "doc"},
           "context": {"items": [1, 2, 3, 4, 5, 6]}}
    assert policylang.Engine(ps).decide(req).decision == "allow"
    ps = policylang.loads('permit agent to read on doc\n  when principal.x + 1 == principal.x\n')
    req = {"principal": {"id": "a", "kind": "agent", "attrs": {"x": 1e16}}, "action": "read",
           "resource": {"type": "doc"}}
    assert policylang.Engine(ps).decide(req).decision == "allow"


def test_an_inexact_forbid_is_never_the_reason_for_a_lint():
    # the forbid uses in_cidr(): it might not hold, so the permit is not claimed dead
    text = ('forbid agent to read on doc\n  unless in_cidr(context.ip, "10.0.0.0/8")\n'
            'permit agent to read on doc\n')
    assert _codes(text) == [("N201", 1)]


def test_lints_hold_over_stored_entity_data_authoritative_or_not(tmp_path):
    # merged attributes are attributes a request could carry itself: the proof covers them
    (tmp_path / "a.policy").write_text(
        'principal agent authoritative { suspended: bool }\n'
        '@id("no-suspended")\nforbid agent to read on doc\n  when principal.suspended\n'
        '@id("suspended-read")\npermit agent to read on doc\n  when principal.suspended == true\n'
        '@id("never")\npermit agent to read on doc\n  when principal.suspended and not principal.suspended\n')
    (tmp_path / "agents.entities.json").write_text(json.dumps({"agent": {"a1": {"suspended": True}}}))
    ps = policylang.load(str(tmp_path))
    assert [(d.code, d.line) for d in proven_lints(ps)] == [("W203", 6), ("W201", 9)]
    engine = policylang.Engine(ps)
    for attrs in ({}, {"suspended": False}, {"suspended": True}):
        for pid in ("a1", "a2"):
            got = engine.decide({"principal": {"id": pid, "kind": "agent", "attrs": attrs},
                                 "action": "read", "resource": {"type": "doc"}})
            assert not {"suspended-read", "never"} & set(got.rules)


def test_a_set_with_attenuate_delegation_gets_one_note():
    ds = _lints('option attenuate_delegation = true\npermit agent to read on doc\n'
                '  when principal.level > 5 and principal.level < 3\n')
    assert [d.code for d in ds] == ["N201"] and "attenuate_delegation" in ds[0].message


# ------------------------------------------------------------------ the CLI

def _run(*args):
    return CliRunner().invoke(main, ["check", *args])


def test_check_prove_text_json_sarif_and_exit_status(tmp_path):
    p = tmp_path / "s.policy"
    p.write_text(SET)
    plain = _run(str(p))
    assert plain.exit_code == 0 and "W20" not in plain.output
    r = _run("--prove", str(p))
    assert r.exit_code == 0, r.output
    assert f"{p}:8:1: warning[W203]:" in r.output and "permit agent to delete on doc\n^^^^^^" in r.output
    assert "0 notes (--prove)" in r.stderr and r.output.count("warning[W20") == 5
    assert _run("--prove", "--strict", str(p)).exit_code == 1
    out = json.loads(_run("--prove", "--format", "json", str(p)).output)
    got = sorted((d["code"], d["line"], d["column"], d["severity"]) for d in out["diagnostics"] if d["code"] >= "W2")
    assert got == [("W201", 2, 1, "warning"), ("W201", 20, 1, "warning"), ("W202", 14, 1, "warning"),
                   ("W202", 17, 1, "warning"), ("W203", 8, 1, "warning")]
    assert out["notes"] == 0 and out["warnings"] == sum(d["severity"] == "warning" for d in out["diagnostics"])
    log = json.loads(_run("--prove", "--format", "sarif", str(p)).output)
    run_ = log["runs"][0]
    rules = run_["tool"]["driver"]["rules"]
    ids = [r["id"] for r in rules]
    for code in ("W201", "W202", "W203", "N201"):
        assert code in ids
        assert rules[ids.index(code)]["fullDescription"]["text"].startswith("check --prove")
    assert rules[ids.index("N201")]["defaultConfiguration"]["level"] == "note"
    res = [x for x in run_["results"] if x["ruleId"] == "W203"]
    assert len(res) == 1 and res[0]["level"] == "warning"
    assert res[0]["locations"][0]["physicalLocation"]["region"]["startLine"] == 8
    assert rules[res[0]["ruleIndex"]]["id"] == "W203"


def test_check_prove_notes_are_not_warnings(tmp_path):
    p = tmp_path / "s.policy"
    p.write_text('@id("r")\npermit agent to read on doc\n  when lower(principal.team) == "a"\n  because "x"\n')
    r = _run("--prove", "--strict", str(p))
    assert r.exit_code == 0, r.output
    assert "note[N201]: not proven: rule r uses lower()" in r.output and "1 note (--prove)" in r.stderr
    log = json.loads(_run("--prove", "--format", "sarif", str(p)).output)
    (res,) = log["runs"][0]["results"]
    assert res["ruleId"] == "N201" and res["level"] == "note"


def test_check_prove_on_a_set_with_errors_reports_the_errors_only(tmp_path):
    p = tmp_path / "s.policy"
    p.write_text("permit agent to read on doc\n  when resouce.x == 1\n")
    r = _run("--prove", str(p))
    assert r.exit_code == 1 and "E002" in r.output and "N201" not in r.output and "W20" not in r.output


def test_check_prove_fails_closed_with_a_message_if_the_solver_breaks(tmp_path, monkeypatch):
    from policylang.analysis import lints

    def broken(_ps):
        raise z3.Z3Exception("boom")

    monkeypatch.setattr(lints, "proven_lints", broken)
    p = tmp_path / "s.policy"
    p.write_text("permit agent to read on doc\n")
    r = _run("--prove", str(p))
    assert r.exit_code == 1 and "internal error in --prove: Z3Exception" in r.stderr
    assert "Traceback" not in r.output


def test_check_prove_without_z3_exits_2_with_a_clear_message(tmp_path, monkeypatch):
    import importlib.util

    p = tmp_path / "s.policy"
    p.write_text("permit agent to read on doc\n")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "z3" else real(name, *a))
    r = _run("--prove", str(p))
    assert r.exit_code == 2
    assert "--prove needs the z3 solver" in r.stderr and "policylang[analysis]" in r.stderr
    assert _run(str(p)).exit_code == 0  # without --prove z3 is not needed


# ------------------------------------------------------------------ cross-check on generated sets

_CONDS = ['principal.level > 1', 'principal.level > 3', 'principal.level < 3', 'principal.level >= 5',
          'principal.team == "a"', 'principal.team in ["a", "b"]', 'principal.team != "b"',
          'resource.public == true', 'principal.trusted != true', 'principal.trusted == false',
          'not resource.public', 'resource.owner == principal.team', 'resource.owner != principal.team']
_LEVELS, _TEAMS, _BOOLS = [None, 0, 2, 3, 4, 6, "x"], [None, "a", "b", "c", 1, ["a"]], [None, True, False]
_OWNERS = [None, "a", ["a"]]


@st.composite
def _sets(draw):
    out = []
    for _ in range(draw(st.integers(2, 6))):
        effect = draw(st.sampled_from(["permit", "permit", "forbid", "gate"]))
        action = draw(st.sampled_from(["read", "write", "*"]))
        conds = draw(st.lists(st.sampled_from(_CONDS), max_size=2))
        kw = draw(st.sampled_from(["when", "unless"]))
        head = {"permit": "permit", "forbid": "forbid", "gate": "require approval for"}[effect]
        text = f"{head} agent to {action} on doc"
        if conds:
            text += f"\n  {kw} " + " and ".join(conds)
        if effect == "gate":
            text += '\n  by "ops"'
        out.append(text)
    return "\n".join(out) + "\n"


def _all_requests():
    for action, level, team, public, trusted, owner in itertools.product(
            ["read", "write"], _LEVELS, _TEAMS, _BOOLS, _BOOLS, _OWNERS):
        p = {k: v for k, v in (("level", level), ("team", team), ("trusted", trusted)) if v is not None}
        r = {k: v for k, v in (("public", public), ("owner", owner)) if v is not None}
        yield {"principal": {"id": "a1", "kind": "agent", "attrs": p}, "action": action,
               "resource": {"type": "doc", "id": "d", "attrs": r}}


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(_sets())
def test_no_request_of_the_domain_contradicts_a_lint(text):
    ps = policylang.loads(text, name="gen.policy")
    ds = proven_lints(ps)
    by_line = {info.rule.head_span.line: info for info in ps.rules}
    dead = {by_line[d.line].id for d in ds if d.code in ("W201", "W203")}
    subsumed = {}
    for d in ds:
        if d.code == "W202":
            other = next(i.id for i in ps.rules if f"({i.location})" in d.message or f"at {i.location} " in d.message)
            subsumed[by_line[d.line].id] = other
    engine = policylang.Engine(ps)
    for req in _all_requests():
        got = engine.decide(req)
        assert not dead & set(got.rules), (text, req, got.to_dict())
        if got.decision == "allow":
            for p, q in subsumed.items():
                assert p not in got.rules or q in got.rules, (text, req, got.to_dict())


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(policy_sets(), st.lists(requests(), min_size=1, max_size=6))
def test_lints_on_the_fuzzers_sets_never_crash_and_sampled_requests_agree(text, reqs):
    # the generator's sets use every construct (quantifiers, delegation, lists, constants…)
    try:
        ps = policylang.loads(text, name="gen.policy")
    except policylang.PolicyError:
        return
    ds = proven_lints(ps)
    by_line = {info.rule.head_span.line: info for info in ps.rules}
    for d in ds:
        assert d.code in CODES and d.severity == CODES[d.code][0] and d.line in by_line
    dead = {by_line[d.line].id for d in ds if d.code in ("W201", "W203")}
    engine = policylang.Engine(ps)
    for req in reqs:
        try:
            got = engine.decide(req)
        except policylang.RequestError:
            continue
        assert not dead & set(got.rules), (text, req, got.to_dict())
