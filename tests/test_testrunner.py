"""policylang.tools.testrunner as a library: expectations, comparison, discovery, coverage, JUnit."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from policylang.tools import testrunner as tr


# ------------------------------------------------------------------ expect / compare

DECISION = {
    "decision": "allow",
    "rules": ["a", "b"],
    "reasons": ["because a"],
    "grants": [{"rule": "a", "scopes": ["s:1", "s:2"], "ttl": 600}, {"rule": "b", "scopes": ["t"], "ttl": 60}],
    "approvers": [],
    "errors": [{"rule": "c", "message": "missing attribute"}],
    "delegation_path": ["u", "p"],
    "policy_version": "sha256:x",
}


def mismatches(expect: dict) -> list[str]:
    return [m.field for m in tr.compare(tr.parse_expect(expect), DECISION)]


def test_exact_fields():
    assert mismatches({"decision": "allow", "rules": ["a", "b"], "reasons": ["because a"], "approvers": []}) == []
    assert mismatches({"decision": "deny"}) == ["decision"]
    assert mismatches({"rules": ["b", "a"]}) == ["rules"]
    assert mismatches({"rules": ["a"]}) == ["rules"]
    assert mismatches({"reasons": []}) == ["reasons"]
    assert mismatches({"approvers": ["x"]}) == ["approvers"]


def test_grants_compare_only_given_keys_in_order():
    assert mismatches({"grants": [{}, {}]}) == []
    assert mismatches({"grants": [{"ttl": "10m"}, {"ttl": "1m"}]}) == []
    assert mismatches({"grants": [{"scopes": ["s:1", "s:2"]}, {"rule": "b"}]}) == []
    assert mismatches({"grants": [{"scopes": ["s:2", "s:1"]}, {}]}) == ["grants"]
    assert mismatches({"grants": [{"rule": "b"}, {"rule": "a"}]}) == ["grants"]
    assert mismatches({"grants": [{}]}) == ["grants"]
    assert mismatches({"grants": []}) == ["grants"]


def test_grant_mismatch_shows_actual_cut_to_the_given_keys():
    (m,) = tr.compare(tr.parse_expect({"grants": [{"ttl": 1}, {"rule": "b"}]}), DECISION)
    assert m.actual == [{"ttl": 600}, {"rule": "b"}]
    (m,) = tr.compare(tr.parse_expect({"grants": [{"ttl": 1}]}), DECISION)
    assert m.actual == DECISION["grants"]


def test_errors_extension_compares_like_grants():
    assert mismatches({"errors": [{"rule": "c"}]}) == []
    assert mismatches({"errors": [{"rule": "c", "message": "missing attribute"}]}) == []
    assert mismatches({"errors": []}) == ["errors"]


@pytest.mark.parametrize("value,ttl", [(600, 600), ("10m", 600), ("1h30m", 5400), ("1d", 86400), ("45s", 45)])
def test_ttl_durations(value, ttl):
    assert tr.parse_expect({"grants": [{"ttl": value}]})["grants"][0]["ttl"] == ttl


@pytest.mark.parametrize("expect,needle", [
    ({}, "names nothing"),
    ([], "must be a mapping"),
    ({"decision": "permit"}, "must be one of"),
    ({"decision": "deny", "rule": ["x"]}, "did you mean 'rules'"),
    ({"rules": "x"}, "must be a list"),
    ({"rules": [1]}, "must be a string"),
    ({"grants": {"ttl": 1}}, "must be a list"),
    ({"grants": ["x"]}, "must be a mapping"),
    ({"grants": [{"ttl": True}]}, "number of seconds"),
    ({"grants": [{"ttl": "10 minutes"}]}, "not a duration"),
    ({"grants": [{"scopes": "x"}]}, "must be a list"),
    ({"errors": [{"rule": 3}]}, "must be a string"),
])
def test_parse_expect_rejects(expect, needle):
    with pytest.raises(tr.SuiteError, match=needle):
        tr.parse_expect(expect)


# ------------------------------------------------------------------ discovery

def test_find_suites(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "z.yaml").write_text("x: 1")
    (tmp_path / "a" / "b.yml").write_text("x: 1")
    (tmp_path / "a" / ".hidden.yaml").write_text("x: 1")
    (tmp_path / "a" / "c.json").write_text("{}")
    (tmp_path / "a" / "sub").mkdir()
    (tmp_path / "a" / "sub" / "d.yaml").write_text("x: 1")
    (tmp_path / "empty").mkdir()
    found, problems = tr.find_suites([str(tmp_path / "a"), str(tmp_path / "a" / "z.yaml"), str(tmp_path / "empty")])
    names = [Path(p).relative_to(tmp_path).as_posix() for p in found]
    assert names == ["a/b.yml", "a/sub/d.yaml", "a/z.yaml"]  # sorted, each once
    assert len(problems) == 1 and "no test suites" in problems[0].error


# ------------------------------------------------------------------ running, coverage

ATTENUATED = '''\
option attenuate_delegation = true

@id("people-read")
permit human to read on doc
  when principal.team == resource.team
  because "people read their team's documents"

@id("agents-read")
permit agent to read on doc
  because "agents read documents their delegator may read"

@id("agents-forbidden-on-secrets")
forbid agent to * on doc
  when resource.secret
  because "agents never touch secrets"
'''


def _write_suite(tmp_path: Path, cases: list[dict]) -> str:
    (tmp_path / "p.policy").write_text(ATTENUATED)
    (tmp_path / "s.yaml").write_text(json.dumps({"policies": "p.policy", "cases": cases}))
    return str(tmp_path / "s.yaml")


def _req(principal_kind: str, team: str, secret=False, chain=True):
    return {"principal": {"id": "p", "kind": principal_kind, "attrs": {"team": team}},
            "action": "read", "resource": {"type": "doc", "id": "d", "attrs": {"team": "x", "secret": secret}},
            "delegation": [{"id": "u", "kind": "human", "attrs": {"team": team}}] if chain else []}


def test_coverage_counts_delegator_evaluations(tmp_path):
    # the human permit only ever holds while the agent's delegator is evaluated (docs/language.md#delegation-attenuation)
    path = _write_suite(tmp_path, [{"name": "agent reads via alice", "request": _req("agent", "x"),
                                    "expect": {"decision": "allow", "rules": ["agents-read"]}}])
    runner = tr.Runner(coverage=True)
    (result,) = runner.run([path])
    assert result.error is None and result.passed == 1, tr.render_failure(result.cases[0])
    (cov,) = runner.coverage.values()
    assert cov.held == {"agents-read", "people-read"}
    assert [r.id for r in cov.uncovered] == ["agents-forbidden-on-secrets"]
    text = tr.render_coverage(runner.coverage.values())
    assert "2 of 3 rules held in some case" in text
    assert "p.policy:12: agents-forbidden-on-secrets (forbid) held in no case" in text


def test_coverage_skips_delegators_when_the_principal_is_not_allowed(tmp_path):
    path = _write_suite(tmp_path, [{"name": "secret", "request": _req("agent", "x", secret=True),
                                    "expect": {"decision": "deny"}}])
    runner = tr.Runner(coverage=True)
    runner.run([path])
    (cov,) = runner.coverage.values()
    assert cov.held == {"agents-read", "agents-forbidden-on-secrets"}


def test_attenuation_denial_is_compared_like_any_decision(tmp_path):
    path = _write_suite(tmp_path, [{"name": "wrong team", "request": _req("agent", "y"),
                                    "expect": {"decision": "deny", "rules": [],
                                               "reasons": ["delegator u is not allowed to read this resource "
                                                           "(attenuate_delegation)"]}}])
    (result,) = tr.Runner().run([path])
    assert result.passed == 1, tr.render_failure(result.cases[0])


def test_policy_sets_are_loaded_once_per_run(tmp_path, monkeypatch):
    path = _write_suite(tmp_path, [{"name": "a", "request": _req("agent", "x"), "expect": {"decision": "allow"}}])
    (tmp_path / "t.yaml").write_text((tmp_path / "s.yaml").read_text())
    import policylang.language.loader as loader

    calls = []
    real = loader.load
    monkeypatch.setattr(loader, "load", lambda p: calls.append(p) or real(p))
    results = tr.Runner().run([str(tmp_path)])
    assert [r.passed for r in results] == [1, 1]
    assert len(calls) == 1


def test_internal_errors_never_escape(tmp_path, monkeypatch):
    path = _write_suite(tmp_path, [{"name": "a", "request": _req("agent", "x"), "expect": {"decision": "allow"}}])
    import policylang.evaluation.engine as engine

    def boom(self, request):
        raise RuntimeError("kaput")
    monkeypatch.setattr(engine.Engine, "decide", boom)
    (result,) = tr.Runner().run([path])
    assert result.failed == 1
    assert "internal error: RuntimeError: kaput" in result.cases[0].reason


# ------------------------------------------------------------------ junit

def test_junit_xml_shape_and_escaping():
    ok = tr.CaseResult("s.yaml", "fine", 3, True, seconds=0.01)
    bad = tr.CaseResult("s.yaml", "bad \x01 name", 7, False, reason="bad request: principal.id: required")
    results = [tr.SuiteResult("s.yaml", cases=[ok, bad], seconds=0.02),
               tr.SuiteResult("broken.yaml", error="not valid YAML: oops\nmore")]
    root = ET.fromstring(tr.junit_xml(results))
    assert (root.tag, root.get("tests"), root.get("failures")) == ("testsuites", "3", "2")
    s1, s2 = root.findall("testsuite")
    assert (s1.get("name"), s1.get("tests"), s1.get("failures")) == ("s.yaml", "2", "1")
    c1, c2 = s1.findall("testcase")
    assert c1.find("failure") is None and c1.get("line") == "3"
    assert c2.get("name") == "bad \ufffd name"
    assert c2.find("failure").get("message") == "bad request: principal.id: required"
    assert c2.find("failure").get("type") == "MalformedCase"
    (c3,) = s2.findall("testcase")
    assert c3.find("failure").get("message") == "malformed suite: not valid YAML: oops"
    assert tr.totals(results) == (1, 2)
