"""`policylang test`: suites, failures with expected/actual and trace, malformed suites,
coverage, JUnit XML, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from policylang.cli import main

POLICY = '''\
const MAX_RISK = 0.7

@id("agents-trace-to-a-human")
forbid agent to * on *
  unless delegation.root.kind == "human"
  because "every agent action must trace back to a person"

@id("coder-reads-own-repos")
permit agent "spiffe://acme.io/agents/*" to read on repo
  when resource.owner == principal.tenant
  when risk.score < MAX_RISK
  grant "repo:read:" + resource.id for 10m
  because "coding agents read their own tenant's repositories"

@id("deploys-need-a-human")
require approval for agent to deploy on service
  by "sre-oncall", "release-managers"
  because "deploys are high impact"

@id("agents-deploy")
permit agent to deploy on service
  because "agents deploy once approved"

@id("never-used")
permit human to read on repo
  when principal.tenant == "nobody"
  because "a rule no case exercises"
'''

ENTITIES = {"agent": {"spiffe://acme.io/agents/coder": {"tenant": "acme"}},
            "repo": {"acme/api": {"owner": "acme"}}}

READ = ('{principal: {id: "spiffe://acme.io/agents/coder", kind: agent}, action: read, '
        'resource: {type: repo, id: acme/api}, risk: {score: 0.1}, delegation: [{id: "user:alice", kind: human}]}')
DEPLOY = ('{principal: {id: "spiffe://acme.io/agents/coder", kind: agent}, action: deploy, '
          'resource: {type: service, id: api}, delegation: [{id: "user:alice", kind: human}]}')

GOOD = f'''\
policies: ../policies
entities: [../data/acme.entities.json]
approved: [apr_ok]
cases:
  - name: coder reads its own tenant's repo
    request: {READ}
    expect:
      decision: allow
      rules: [coder-reads-own-repos]
      reasons: ["coding agents read their own tenant's repositories"]
      grants: [{{scopes: ["repo:read:acme/api"], ttl: 600}}]
      approvers: []
  - name: a deploy waits for an approver
    request: {DEPLOY}
    expect: {{decision: require_approval, rules: [deploys-need-a-human], approvers: [sre-oncall, release-managers]}}
  - name: an approved deploy is allowed
    request: {DEPLOY[:-1]}, approval: apr_ok}}
    expect: {{decision: allow, rules: [agents-deploy], grants: []}}
  - name: an unknown approval id is not accepted
    request: {DEPLOY[:-1]}, approval: apr_other}}
    expect: {{decision: require_approval}}
'''


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for d in ("policies", "data", "tests"):
        Path(d).mkdir()
    Path("policies/rules.policy").write_text(POLICY)
    Path("data/acme.entities.json").write_text(json.dumps(ENTITIES))
    Path("tests/good.yaml").write_text(GOOD)
    return tmp_path


def suite(name: str, text: str) -> str:
    p = Path("tests") / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
    return str(p)


def run(*args):
    return CliRunner().invoke(main, ["test", *args])


def last_line(r) -> str:
    return r.stdout.rstrip("\n").splitlines()[-1]


# ------------------------------------------------------------------ passing

def test_a_passing_suite_exits_0_with_the_closing_line(work):
    r = run("tests/good.yaml")
    assert r.exit_code == 0, r.output
    assert last_line(r) == "4 passed, 0 failed"
    assert "FAIL" not in r.stdout


def test_a_directory_is_searched_recursively_for_yaml_and_yml(work):
    suite("nested/more.yml", f'''\
        policies: ../../policies
        entities: ../../data/acme.entities.json
        cases:
          - name: again
            request: {READ}
            expect: {{decision: allow}}
        ''')
    Path("tests/notes.txt").write_text("not a suite")
    r = run("tests")
    assert r.exit_code == 0, r.output
    assert last_line(r) == "5 passed, 0 failed"


def test_verbose_lists_passing_cases(work):
    r = run("-v", "tests/good.yaml")
    assert "ok   tests/good.yaml:5: coder reads its own tenant's repo" in r.stdout.replace("\\", "/")


# ------------------------------------------------------------------ failures

def test_a_failure_prints_case_expected_actual_and_the_trace(work):
    suite("bad.yaml", f'''\
        policies: ../policies
        entities: [../data/acme.entities.json]
        cases:
          - name: reads are denied (wrong on purpose)
            request: {READ}
            expect:
              decision: deny
              rules: [agents-trace-to-a-human]
        ''')
    r = run("tests/bad.yaml")
    assert r.exit_code == 1
    out = r.stdout.replace("\\", "/")
    assert "FAIL tests/bad.yaml:4: reads are denied (wrong on purpose)" in out
    assert "expected decision: deny" in out
    assert "actual decision:   allow" in out
    assert 'expected rules: ["agents-trace-to-a-human"]' in out
    assert 'actual rules:   ["coder-reads-own-repos"]' in out
    # the explain trace
    assert "explain:" in out and "rules considered:" in out and "[held] coder-reads-own-repos" in out
    assert last_line(r) == "0 passed, 1 failed"


@pytest.mark.parametrize("expect,ok", [
    ('{decision: allow, grants: [{scopes: ["repo:read:acme/api"]}]}', True),
    ('{decision: allow, grants: [{ttl: 10m}]}', True),
    ('{decision: allow, grants: [{rule: coder-reads-own-repos, scopes: ["repo:read:acme/api"], ttl: 600}]}', True),
    ('{decision: allow, grants: [{ttl: 601}]}', False),
    ('{decision: allow, grants: []}', False),
    ('{decision: allow, grants: [{ttl: 600}, {ttl: 600}]}', False),
    ('{decision: allow, reasons: []}', False),
    ('{rules: [coder-reads-own-repos]}', True),
    ('{rules: []}', False),
    ('{approvers: []}', True),
])
def test_expect_comparisons(work, expect, ok):
    suite("cmp.yaml", f'''\
        policies: ../policies
        entities: [../data/acme.entities.json]
        cases:
          - name: compare
            request: {READ}
            expect: {expect}
        ''')
    r = run("tests/cmp.yaml")
    assert r.exit_code == (0 if ok else 1), r.output
    assert last_line(r) == ("1 passed, 0 failed" if ok else "0 passed, 1 failed")


def test_rules_compare_in_order(work):
    Path("policies/more.policy").write_text('@id("also-reads")\npermit agent to read on repo\n'
                                            '  because "a second permit"\n')
    body = '''\
        policies: ../policies
        entities: [../data/acme.entities.json]
        cases:
          - name: order
            request: %s
            expect: {rules: %s}
        '''
    suite("order.yaml", body % (READ, "[also-reads, coder-reads-own-repos]"))
    assert run("tests/order.yaml").exit_code == 0
    suite("order.yaml", body % (READ, "[coder-reads-own-repos, also-reads]"))
    assert run("tests/order.yaml").exit_code == 1


@pytest.mark.parametrize("text,reason", [
    ("policies: [\n", "not valid YAML"),
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("", "must be a YAML mapping"),
    ("cases: []\n", "missing key 'policies'"),
    ("policies: ../policies\n", "missing key 'cases'"),
    ("policies: ../policies\ncases: []\n", "cases is empty"),
    ("policies: ../policies\ncases: {a: 1}\n", "cases must be a list"),
    ("policies: ../policies\npolices: x\ncases: []\n", "did you mean 'policies'"),
    ("policies: ../nowhere\ncases: [{name: a, request: {}, expect: {decision: allow}}]\n", "no such file"),
    ("policies: ../policies\nentities: [../data/missing.json]\ncases: [{name: a, request: {}, expect: {decision: allow}}]\n",
     "cannot read"),
    ("policies: ../policies\napproved: apr_1\ncases: [{name: a, request: {}, expect: {decision: allow}}]\n",
     "approved must be a list"),
    ("policies: ../policies\npolicies: ../policies\ncases: []\n", "duplicate key 'policies'"),
])
def test_malformed_suites_are_failures_with_their_reason(work, text, reason):
    suite("broken.yaml", text)
    r = run("tests/broken.yaml")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    assert "FAIL tests/broken.yaml: malformed suite:" in r.stdout.replace("\\", "/")
    assert reason in r.stdout
    assert last_line(r) == "0 passed, 1 failed"


def test_policies_that_fail_to_load_show_their_diagnostics(work):
    Path("bad_policies").mkdir()
    Path("bad_policies/x.policy").write_text('permit agent to read on repo when resourse.owner == "a"\n')
    suite("s.yaml", "policies: ../bad_policies\ncases: [{name: a, request: {}, expect: {decision: allow}}]\n")
    r = run("tests/s.yaml")
    assert r.exit_code == 1
    assert "do not load" in r.stdout and "error[E002]" in r.stdout and "resourse" in r.stdout


@pytest.mark.parametrize("case,reason", [
    ('{name: a, request: {principal: {kind: agent}, action: read, resource: {type: repo}}, expect: {decision: deny}}',
     "bad request: principal.id"),
    ('{name: a, request: {}, expect: {decison: deny}}', "did you mean 'decision'"),
    ('{name: a, request: {}, expect: {}}', "expect names nothing"),
    ('{name: a, request: {}, expect: {decision: maybe}}', "expect.decision must be one of"),
    ('{name: a, request: {}, expect: {decision: deny, rules: x}}', "expect.rules must be a list"),
    ('{name: a, request: {}, expect: {grants: [{scope: [x]}]}}', "did you mean 'scopes'"),
    ('{name: a, request: {}, expect: {grants: [{ttl: soon}]}}', "not a duration"),
    ('{name: a, request: {}}', "missing key 'expect'"),
    ('{request: {}, expect: {decision: deny}}', "missing key 'name'"),
    ('{name: a, request: {}, expect: {decision: deny}, extra: 1}', "unknown key 'extra'"),
    ('just a string', "a case must be a mapping"),
    ('{name: a, request: {principal: {id: x, kind: agent}, action: read, resource: {type: repo}, '
     'context: {1: x}}, expect: {decision: deny}}', "not a string"),
])
def test_malformed_cases_fail_alone(work, case, reason):
    suite("cases.yaml", f'''\
        policies: ../policies
        entities: [../data/acme.entities.json]
        cases:
          - {case}
          - name: the good one
            request: {READ}
            expect: {{decision: allow}}
        ''')
    r = run("tests/cases.yaml")
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    assert reason in r.stdout, r.stdout
    assert "FAIL tests/cases.yaml:4:" in r.stdout.replace("\\", "/")
    assert last_line(r) == "1 passed, 1 failed"


def test_yaml_scalars_mean_what_json_would(work):
    # `no` and `on` stay strings (YAML 1.1 would make them booleans); dates stay strings
    Path("policies/scalars.policy").write_text(
        '@id("odd-names")\npermit agent to "on" on repo\n'
        '  when resource.id == "no" and context.day == "2024-01-01"\n  because "scalars"\n')
    suite("scalars.yaml", '''\
        policies: ../policies
        cases:
          - name: scalars
            request: {principal: {id: x, kind: agent}, action: on, resource: {type: repo, id: no},
                      context: {day: 2024-01-01}, delegation: [{id: u, kind: human}]}
            expect: {decision: allow, rules: [odd-names]}
        ''')
    r = run("tests/scalars.yaml")
    assert r.exit_code == 0, r.output


def test_failures_in_several_suites_are_all_counted(work):
    suite("b1.yaml", "nope: 1\n")
    # without the entity file the coder has no tenant, so the read is denied
    suite("b2.yaml", f"policies: ../policies\ncases:\n  - name: x\n    request: {READ}\n    expect: {{decision: allow}}\n")
    r = run("tests")
    assert r.exit_code == 1
    assert last_line(r) == "4 passed, 2 failed"


def test_a_directory_without_suites_is_a_failure(work):
    Path("empty").mkdir()
    r = run("empty")
    assert r.exit_code == 1
    assert "no test suites" in r.stdout
    assert last_line(r) == "0 passed, 1 failed"


@pytest.mark.parametrize("args", [[], ["missing.yaml"], ["--bogus", "tests"], ["--junit"]])
def test_usage_errors_exit_2(work, args):
    r = run(*args)
    assert r.exit_code == 2, r.output


# ------------------------------------------------------------------ coverage

def test_coverage_lists_rules_that_held_in_no_case(work):
    r = run("--coverage", "tests/good.yaml")
    assert r.exit_code == 0
    out = r.stdout.replace("\\", "/")
    assert "coverage of policies: 3 of 5 rules held in some case" in out
    assert "policies/rules.policy:3: agents-trace-to-a-human (forbid) held in no case" in out
    assert "policies/rules.policy:24: never-used (permit) held in no case" in out
    assert "coder-reads-own-repos (" not in out.split("coverage of")[1]
    assert last_line(r) == "4 passed, 0 failed"


def test_coverage_counts_a_forbid_that_raised_separately(work):
    suite("more.yaml", f'''\
        policies: ../policies
        entities: [../data/acme.entities.json]
        cases:
          - name: no delegation
            request: {{principal: {{id: a, kind: agent}}, action: read, resource: {{type: repo, id: acme/api}}}}
            expect: {{decision: deny, rules: [agents-trace-to-a-human]}}
        ''')
    r = run("--coverage", "tests")
    assert "agents-trace-to-a-human (forbid) held in no case" not in r.stdout
    assert "4 of 5 rules held" in r.stdout


# ------------------------------------------------------------------ junit

def test_junit_xml(work, tmp_path):
    suite("bad.yaml", f'''\
        policies: ../policies
        entities: [../data/acme.entities.json]
        cases:
          - name: wrong <on> purpose & more
            request: {READ}
            expect: {{decision: deny}}
          - name: right
            request: {READ}
            expect: {{decision: allow}}
        ''')
    suite("malformed.yaml", "policies: [\n")
    r = run("tests", "--junit", "junit.xml")
    assert r.exit_code == 1
    root = ET.parse("junit.xml").getroot()
    assert root.tag == "testsuites"
    assert root.get("tests") == "7" and root.get("failures") == "2"
    suites = {s.get("name").replace("\\", "/"): s for s in root.findall("testsuite")}
    assert set(suites) == {"tests/bad.yaml", "tests/good.yaml", "tests/malformed.yaml"}
    bad = suites["tests/bad.yaml"]
    assert bad.get("tests") == "2" and bad.get("failures") == "1"
    cases = bad.findall("testcase")
    assert [c.get("name") for c in cases] == ["wrong <on> purpose & more", "right"]
    failure = cases[0].find("failure")
    assert failure is not None and "expected decision deny, got allow" in failure.get("message")
    assert "rules considered" in failure.text
    assert cases[1].find("failure") is None
    assert cases[0].get("classname") == "tests.bad"
    mal = suites["tests/malformed.yaml"]
    assert mal.get("failures") == "1"
    assert "not valid YAML" in mal.find("testcase/failure").get("message")
    assert all(float(c.get("time")) >= 0 for c in root.iter("testcase"))


def test_junit_unwritable_path_exits_1(work):
    r = run("tests/good.yaml", "--junit", "no/such/dir/junit.xml")
    assert r.exit_code == 1
    assert "cannot write" in r.stderr


# ------------------------------------------------------------------ the installed script

def test_installed_script_runs_suites(work):
    # the console script installed beside this interpreter (else the one on PATH)
    beside = Path(sys.executable).with_name("policylang")
    exe = str(beside) if beside.is_file() else shutil.which("policylang")
    cmd = [exe] if exe else [sys.executable, "-c", "from policylang.cli import main; main()"]
    p = subprocess.run(cmd + ["test", "tests"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines()[-1] == "4 passed, 0 failed"
