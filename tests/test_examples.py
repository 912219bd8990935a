"""Every example in examples/ passes `policylang check --strict` and its own suites.

An example's policy set is its ``policies/`` directory (or the example directory itself
when its ``.policy`` files live elsewhere); its suites are ``tests/`` (or any YAML file
in the example with top-level ``policies`` and ``cases`` keys). Examples that other
engineers add are picked up the same way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import policylang
from policylang.tools import testrunner
from policylang.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

#: The examples of issue 4: their suites must make every rule hold in some case.
FULLY_COVERED = ["coding-agent", "finance-agent", "multi-agent-pipeline"]


def _policy_set(example: Path) -> Path | None:
    if (example / "policies").is_dir():
        return example / "policies"
    return example if any(example.rglob("*.policy")) else None


def _suites(example: Path) -> list[Path]:
    if (example / "tests").is_dir():
        return [example / "tests"]
    found = []
    for p in sorted(example.rglob("*.y*ml")):
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and "policies" in data and "cases" in data:
            found.append(p)
    return found


EXAMPLE_DIRS = sorted(p for p in EXAMPLES.iterdir() if p.is_dir() and _policy_set(p)) if EXAMPLES.is_dir() else []
IDS = [p.name for p in EXAMPLE_DIRS]


@pytest.fixture(autouse=True)
def _at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def _rel(p: Path) -> str:
    return os.path.relpath(p, ROOT)


def test_the_issue_4_examples_exist():
    for name in FULLY_COVERED:
        example = EXAMPLES / name
        assert (example / "policies").is_dir(), name
        assert (example / "README.md").is_file(), name
        assert list((example / "policies").glob("*.entities.json")), name
        assert list((example / "tests").glob("*.yaml")), name


@pytest.mark.parametrize("example", EXAMPLE_DIRS, ids=IDS)
def test_check_strict(example):
    r = CliRunner().invoke(main, ["check", "--strict", _rel(_policy_set(example))])
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("example", EXAMPLE_DIRS, ids=IDS)
def test_suites_pass(example):
    suites = _suites(example)
    if not suites:
        pytest.skip(f"{example.name} has no test suites")
    r = CliRunner().invoke(main, ["test", *map(_rel, suites)])
    assert r.exit_code == 0, r.output
    assert r.stdout.rstrip().splitlines()[-1].endswith(" passed, 0 failed")


@pytest.mark.parametrize("name", FULLY_COVERED)
def test_every_rule_holds_in_some_case(name):
    runner = testrunner.Runner(coverage=True)
    results = runner.run([_rel(EXAMPLES / name / "tests")])
    assert testrunner.totals(results)[1] == 0
    assert runner.coverage, name
    for cov in runner.coverage.values():
        assert not cov.uncovered, testrunner.render_coverage([cov])
        assert not cov.only_by_error, testrunner.render_coverage([cov])


@pytest.mark.parametrize("name", FULLY_COVERED)
def test_suites_exercise_every_kind_of_outcome(name):
    """allow, deny, require_approval with and without approved ids, fail-closed errors."""
    runner = testrunner.Runner()
    results = runner.run([_rel(EXAMPLES / name / "tests")])
    actual = [c.actual for s in results for c in s.cases]
    decisions = {a["decision"] for a in actual}
    assert decisions == {"allow", "deny", "require_approval"}, name
    assert any(a["errors"] for a in actual), f"{name}: no fail-closed case"
    assert any(a["grants"] for a in actual), f"{name}: no grant"
    # an approval the suite's checker accepted turned a gate into an allow
    approved = set()
    for s in results:
        data = yaml.safe_load(Path(s.path).read_text(encoding="utf-8"))
        approved |= set(data.get("approved") or [])
    assert approved, f"{name}: no suite lists approved ids"


@pytest.mark.parametrize("name", FULLY_COVERED)
def test_policies_use_ids_tags_and_reasons(name):
    policies = policylang.load(EXAMPLES / name / "policies")
    assert len(policies.rules) >= 8
    assert all(r.explicit_id for r in policies.rules)
    assert all(r.rule.because for r in policies.rules)
    assert any(r.tags for r in policies.rules)
    assert not policies.diagnostics


def test_installed_script_checks_and_tests_the_examples():
    # the console script installed beside this interpreter (else the one on PATH)
    beside = Path(sys.executable).with_name("policylang")
    exe = str(beside) if beside.is_file() else shutil.which("policylang")
    cmd = [exe] if exe else [sys.executable, "-c", "from policylang.cli import main; main()"]
    sets = [_rel(_policy_set(e)) for e in EXAMPLE_DIRS]
    p = subprocess.run(cmd + ["check", "--strict", *sets], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    suites = [_rel(s) for e in EXAMPLE_DIRS for s in _suites(e)]
    p = subprocess.run(cmd + ["test", *suites], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.splitlines()[-1].endswith(" passed, 0 failed")


@pytest.mark.parametrize("name", FULLY_COVERED)
def test_examples_are_in_the_canonical_layout(name):
    r = CliRunner().invoke(main, ["fmt", "--check", _rel(EXAMPLES / name / "policies")])
    assert r.exit_code == 0, r.output
