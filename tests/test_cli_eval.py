"""`policylang eval`: decision JSON or trace, from a file or stdin; one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import policylang
from policylang.cli import main

POLICY = '''\
const MAX_RISK = 0.7

@id("coder-reads-own-repos")
permit agent "spiffe://acme.io/agents/*" to read on repo
  when resource.owner == principal.tenant
  when risk.score < MAX_RISK
  grant "repo:read:" + resource.id for 10m
  because "coding agents read their own tenant's repositories"

@id("deploys-need-a-human")
require approval for agent to deploy on service
  by "sre-oncall"
  because "deploys are high impact"
'''

ENTITIES = {"agent": {"spiffe://acme.io/agents/coder": {"tenant": "acme"}},
            "repo": {"acme/api": {"owner": "acme"}, "globex/web": {"owner": "globex"}}}

ALLOW = {"principal": {"id": "spiffe://acme.io/agents/coder", "kind": "agent"}, "action": "read",
         "resource": {"type": "repo", "id": "acme/api"}, "risk": {"score": 0.1},
         "delegation": [{"id": "user:alice", "kind": "human"}]}


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("set").mkdir()
    Path("set/rules.policy").write_text(POLICY)
    Path("set/data.entities.json").write_text(json.dumps(ENTITIES))
    Path("allow.json").write_text(json.dumps(ALLOW))
    return tmp_path


def run(*args, input=None):
    return CliRunner().invoke(main, ["eval", *args], input=input)


def _one_line_error(r, *needles):
    assert r.exit_code == 1, r.output
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in r.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_allow_from_a_file_prints_the_decision_json(work):
    r = run("set", "--request", "allow.json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    expected = policylang.Engine(policylang.load("set")).decide(ALLOW).to_dict()
    assert out == expected
    assert out["decision"] == "allow"
    assert out["rules"] == ["coder-reads-own-repos"]
    assert out["grants"] == [{"rule": "coder-reads-own-repos", "scopes": ["repo:read:acme/api"], "ttl": 600}]
    assert out["delegation_path"] == ["user:alice", "spiffe://acme.io/agents/coder"]
    assert list(out) == ["decision", "rules", "reasons", "grants", "approvers", "errors", "delegation_path",
                         "policy_version"]
    assert r.stdout.startswith("{\n  ")  # indented


def test_deny_and_require_approval_exit_0(work):
    deny = dict(ALLOW, resource={"type": "repo", "id": "globex/web"})
    r = run("set", "--request", "-", input=json.dumps(deny))
    assert r.exit_code == 0
    assert json.loads(r.stdout)["decision"] == "deny"
    gate = {"principal": {"id": "a", "kind": "agent"}, "action": "deploy", "resource": {"type": "service"}}
    r = run("set", "--request", "-", input=json.dumps(gate))
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["decision"] == "require_approval" and out["approvers"] == ["sre-oncall"]


def test_request_from_stdin(work):
    r = run("set", "--request", "-", input=json.dumps(ALLOW))
    assert r.exit_code == 0
    assert json.loads(r.stdout)["decision"] == "allow"


def test_explain_prints_the_trace(work):
    r = run("set", "--request", "allow.json", "--explain")
    assert r.exit_code == 0
    assert r.stdout.startswith("decision: allow")
    assert "delegation path: user:alice -> spiffe://acme.io/agents/coder" in r.stdout
    assert "coder-reads-own-repos" in r.stdout and "[held]" in r.stdout
    assert "set/rules.policy:3" in r.stdout.replace("\\", "/")
    deny = dict(ALLOW, risk={"score": 0.9})
    r = run("set", "--request", "-", "--explain", input=json.dumps(deny))
    assert r.exit_code == 0
    assert r.stdout.startswith("decision: deny")
    assert "did not hold" in r.stdout and "0.9 < 0.7" in r.stdout


def test_entities_file_wins_over_the_sets_files(work):
    Path("more.json").write_text(json.dumps({"repo": {"acme/api": {"owner": "globex"}}}))
    r = run("set", "--request", "allow.json", "--entities", "more.json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["decision"] == "deny"


def test_evaluation_errors_are_in_the_decision(work):
    no_risk = {k: v for k, v in ALLOW.items() if k != "risk"}
    r = run("set", "--request", "-", input=json.dumps(no_risk))
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["decision"] == "deny"
    assert [e["rule"] for e in out["errors"]] == ["coder-reads-own-repos"]


@pytest.mark.parametrize("text,needle", [
    ('{"principal": ', "not valid JSON"),
    ("", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"principal": {"kind": "agent"}, "action": "read", "resource": {"type": "repo"}}', "principal.id"),
    ('{"principal": {"id": "a", "kind": "agent"}, "resource": {"type": "repo"}}', "action"),
    ('{"principal": {"id": "a", "kind": "agent"}, "action": "read", "resource": {"type": "repo"}, '
     '"risk": {"score": 7}}', "risk.score"),
    ('{"principal": {"id": "a", "kind": "agent"}, "action": "read", "resource": {"type": "repo"}, '
     '"risk": {"score": NaN}}', "NaN"),
    ('{"principal": {"id": "a", "kind": "agent"}, "action": "read", "resource": {"type": "repo"}, '
     '"delegation": [null]}', "delegation[0]"),
])
def test_bad_requests_are_one_line_exit_1(work, text, needle):
    _one_line_error(run("set", "--request", "-", input=text), needle)


def test_bad_json_in_a_file_names_the_file(work):
    Path("bad.json").write_text("{nope}")
    _one_line_error(run("set", "--request", "bad.json"), "bad.json", "not valid JSON")


def test_request_not_utf8(work):
    Path("latin1.json").write_bytes(b'{"x": "\xe9"}')
    _one_line_error(run("set", "--request", "latin1.json"), "UTF-8")


def test_policy_set_with_errors_is_one_line_exit_1(work):
    Path("broken").mkdir()
    Path("broken/a.policy").write_text('permit agent to read on repo when resourse.x == 1 because "x"\n'
                                       'permit agent to read on repo when nope == 1 because "y"\n')
    line = _one_line_error(run("broken", "--request", "allow.json"), "E002", "broken")
    assert "and 1 more error" in line


def test_bad_entities_file_is_one_line_exit_1(work):
    Path("ents.json").write_text('{"repo": {"acme/api": 3}}')
    _one_line_error(run("set", "--request", "allow.json", "--entities", "ents.json"), "ents.json", "E001")


@pytest.mark.parametrize("args", [
    [],                                        # no PATH
    ["set"],                                   # no --request
    ["set", "--request"],                      # --request without a value
    ["set", "--request", "missing.json"],      # a file that does not exist
    ["missing-set", "--request", "allow.json"],
    ["set", "--request", "allow.json", "--bogus"],
])
def test_usage_errors_exit_2(work, args):
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output


def test_installed_script_reads_stdin(work):
    # the console script installed beside this interpreter (else the one on PATH)
    beside = Path(sys.executable).with_name("policylang")
    exe = str(beside) if beside.is_file() else shutil.which("policylang")
    cmd = [exe] if exe else [sys.executable, "-c", "from policylang.cli import main; main()"]
    p = subprocess.run(cmd + ["eval", "set", "--request", "-"], input=json.dumps(ALLOW),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["decision"] == "allow"
    p = subprocess.run(cmd + ["eval", "set", "--request", "-"], input="{oops", capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1
    assert p.stdout == "" and len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr
