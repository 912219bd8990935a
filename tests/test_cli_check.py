"""`policylang check`: exit codes, text/json/sarif output, several paths, --strict, speed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from policylang.cli import main
from policylang.language.errors import CODES

CLEAN = '''\
@id("reads")
permit agent to read on repo
  when resource.owner == principal.tenant
  because "agents read their tenant's repositories"
'''

# two warnings: W101 (no @id) and W106 (no because)
WARNS = '''\
permit agent to read on repo
  when resource.owner == principal.tenant
'''

# one error (E002, unknown name) and one warning (W106)
BROKEN = '''\
@id("broken")
permit agent to read on repo
  when resourse.owner == "acme"
'''

HEADER = re.compile(r"^(?P<path>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning)\[(?P<code>[EW]\d{3})\]: .+$")


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A working directory with a clean file, a warnings-only file and a broken one."""
    monkeypatch.chdir(tmp_path)
    Path("clean.policy").write_text(CLEAN)
    Path("warns.policy").write_text(WARNS)
    Path("broken.policy").write_text(BROKEN)
    return tmp_path


def run(*args, **kw):
    return CliRunner().invoke(main, ["check", *args], **kw)


# ------------------------------------------------------------------ exit codes

def test_clean_file_exits_0_and_prints_no_diagnostics(files):
    r = run("clean.policy")
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    assert "0 errors, 0 warnings" in r.stderr


def test_warnings_only_exit_0_but_1_under_strict(files):
    r = run("warns.policy")
    assert r.exit_code == 0
    assert "warning[W101]" in r.stdout and "warning[W106]" in r.stdout
    r = run("--strict", "warns.policy")
    assert r.exit_code == 1
    assert "warning[W101]" in r.stdout


def test_errors_exit_1(files):
    assert run("broken.policy").exit_code == 1
    assert run("--strict", "broken.policy").exit_code == 1


@pytest.mark.parametrize("args", [[], ["--frobnicate", "clean.policy"], ["does-not-exist.policy"],
                                  ["--format", "xml", "clean.policy"]])
def test_usage_errors_exit_2(files, args):
    r = run(*args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output


def test_strict_with_a_clean_file_exits_0(files):
    assert run("--strict", "clean.policy").exit_code == 0


# ------------------------------------------------------------------ text format

def test_text_prints_every_diagnostic_with_source_line_and_caret(files):
    r = run("broken.policy")
    lines = r.stdout.splitlines()
    headers = [ln for ln in lines if HEADER.match(ln)]
    # the error and the warning are both printed, warnings are not hidden by errors
    codes = [HEADER.match(h)["code"] for h in headers]
    assert "E002" in codes and "W106" in codes
    e = next(h for h in headers if "[E002]" in h)
    m = HEADER.match(e)
    assert m["path"] == "broken.policy" and m["line"] == "3" and m["sev"] == "error"
    assert "resource" in e  # the suggestion of the closest name
    i = lines.index(e)
    assert lines[i + 1] == "  when resourse.owner == \"acme\""
    caret = lines[i + 2]
    col = int(m["col"])
    assert caret.strip().startswith("^") and caret.index("^") == col - 1
    assert "checked 1 policy set: 1 error, 1 warning" in r.stderr


def test_each_path_is_its_own_policy_set(files):
    # the same rule id in two files: fine as two sets, E006 as one directory set
    Path("set").mkdir()
    Path("set/a.policy").write_text(CLEAN)
    Path("set/b.policy").write_text(CLEAN)
    r = run("set/a.policy", "set/b.policy")
    assert r.exit_code == 0, r.output
    assert "checked 2 policy sets" in r.stderr
    r = run("set")
    assert r.exit_code == 1
    assert re.search(r"^set/b\.policy:1:1: error\[E006\]", r.stdout, re.M), r.stdout


def test_several_files_and_directories_at_once(files):
    Path("dir").mkdir()
    Path("dir/nested").mkdir()
    Path("dir/nested/w.policy").write_text(WARNS)
    r = run("clean.policy", "dir", "broken.policy")
    assert r.exit_code == 1
    paths = {HEADER.match(ln)["path"] for ln in r.stdout.splitlines() if HEADER.match(ln)}
    assert paths == {os.path.join("dir", "nested", "w.policy"), "broken.policy"}
    assert "checked 3 policy sets: 1 error, 3 warnings" in r.stderr


def test_a_file_that_does_not_parse_is_e001_with_the_expected_token(files):
    Path("syntax.policy").write_text('permit agent to read on repo\n  when resource.owner ==\n')
    r = run("syntax.policy")
    assert r.exit_code == 1
    assert re.search(r"^syntax\.policy:\d+:\d+: error\[E001\]: ", r.stdout, re.M), r.stdout
    assert "Traceback" not in r.output


def test_bad_entity_file_in_a_directory_set_is_e001(files):
    Path("ents").mkdir()
    Path("ents/rules.policy").write_text(CLEAN)
    Path("ents/data.entities.json").write_text('{"repo": [1, 2]}')
    r = run("ents")
    assert r.exit_code == 1
    assert "ents/data.entities.json:1:1: error[E001]" in r.stdout.replace(os.sep, "/")


# ------------------------------------------------------------------ json

def test_json_format(files):
    r = run("--format", "json", "broken.policy", "warns.policy")
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert set(out) == {"diagnostics", "errors", "warnings"}
    assert out["errors"] == 1 and out["warnings"] == 3
    assert len(out["diagnostics"]) == 4
    for d in out["diagnostics"]:
        assert set(d) == {"code", "severity", "message", "path", "line", "column", "end_line", "end_column"}
        assert d["severity"] == CODES[d["code"]][0]
        assert d["line"] >= 1 and d["column"] >= 1
    e = next(d for d in out["diagnostics"] if d["severity"] == "error")
    assert (e["code"], e["path"], e["line"], e["column"]) == ("E002", "broken.policy", 3, 8)
    assert e["end_line"] == 3 and e["end_column"] > e["column"]


def test_json_format_clean_and_strict(files):
    r = run("--format", "json", "clean.policy")
    assert r.exit_code == 0
    assert json.loads(r.stdout) == {"diagnostics": [], "errors": 0, "warnings": 0}
    r = run("--format", "json", "--strict", "warns.policy")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["warnings"] == 2


# ------------------------------------------------------------------ sarif

def _sarif(r) -> dict:
    log = json.loads(r.stdout)
    # The structure GitHub code scanning requires of an uploaded SARIF file.
    assert log["version"] == "2.1.0"
    assert log["$schema"].endswith("sarif-2.1.0.json")
    assert isinstance(log["runs"], list) and len(log["runs"]) == 1
    run_ = log["runs"][0]
    driver = run_["tool"]["driver"]
    assert driver["name"] == "policylang"
    assert driver["informationUri"].startswith("https://")
    assert isinstance(driver["version"], str) and driver["version"]
    rules = driver["rules"]
    assert [rule["id"] for rule in rules] == list(CODES)
    for rule in rules:
        severity, short = CODES[rule["id"]]
        assert rule["shortDescription"]["text"] == short
        assert rule["fullDescription"]["text"]
        assert rule["defaultConfiguration"]["level"] == severity
        assert "docs/diagnostics.md#" + rule["id"].lower() in rule["helpUri"]
    for res in run_["results"]:
        assert res["ruleId"] in CODES
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        assert res["level"] in ("error", "warning")
        assert res["message"]["text"]
        (loc,) = res["locations"]
        phys = loc["physicalLocation"]
        uri = phys["artifactLocation"]["uri"]
        assert "\\" not in uri and not uri.startswith("/") and not uri.startswith("./")
        region = phys["region"]
        assert region["startLine"] >= 1 and region["startColumn"] >= 1
        if "endLine" in region:
            assert (region["endLine"], region["endColumn"]) > (region["startLine"], region["startColumn"])
    return log


def test_sarif_format(files):
    Path("sub").mkdir()
    Path("sub/broken.policy").write_text(BROKEN)
    r = run("--format", "sarif", "sub/broken.policy", "warns.policy")
    assert r.exit_code == 1
    log = _sarif(r)
    results = log["runs"][0]["results"]
    assert {res["ruleId"] for res in results} == {"E002", "W106", "W101"}
    e = next(res for res in results if res["ruleId"] == "E002")
    assert e["level"] == "error"
    assert "resourse" in e["message"]["text"]
    phys = e["locations"][0]["physicalLocation"]
    assert phys["artifactLocation"]["uri"] == "sub/broken.policy"
    assert phys["region"]["startLine"] == 3 and phys["region"]["startColumn"] == 8
    assert phys["region"]["endLine"] == 3 and phys["region"]["endColumn"] > 8
    assert {res["level"] for res in results if res["ruleId"] != "E002"} == {"warning"}
    assert log["runs"][0]["columnKind"] == "unicodeCodePoints"


def test_sarif_clean_run_has_rules_and_no_results(files):
    r = run("--format", "sarif", "clean.policy")
    assert r.exit_code == 0
    log = _sarif(r)
    assert log["runs"][0]["results"] == []


def test_sarif_uris_are_relative_with_forward_slashes(files):
    Path("a b").mkdir()
    Path("a b/w.policy").write_text(WARNS)
    for given in ["./a b/w.policy", str(files / "a b" / "w.policy"), "a b"]:
        r = run("--format", "sarif", given)
        uris = {res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                for res in _sarif(r)["runs"][0]["results"]}
        assert uris == {"a%20b/w.policy"}, given


# ------------------------------------------------------------------ the installed script, speed

def _script() -> list[str]:
    # the console script installed beside this interpreter (else the one on PATH)
    beside = Path(sys.executable).with_name("policylang")
    exe = str(beside) if beside.is_file() else shutil.which("policylang")
    return [exe] if exe else [sys.executable, "-c", "from policylang.cli import main; main()"]


def test_installed_script_checks_files(files):
    p = subprocess.run(_script() + ["check", "--format", "json", "broken.policy", "clean.policy"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert json.loads(p.stdout)["errors"] == 1
    p = subprocess.run(_script() + ["check", "clean.policy"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0
    p = subprocess.run(_script() + ["check"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2


def test_check_does_not_import_the_engine(files):
    code = ("import sys\n"
            "from policylang.cli import main\n"
            "try:\n"
            "    main(['check', '--format', 'sarif', 'clean.policy', 'broken.policy'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "heavy = [m for m in ('policylang.evaluation.engine', 'policylang.evaluation.compiler', 'yaml', 'fastapi', 'cryptography')\n"
            "         if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in p.stderr, p.stderr


# ------------------------------------------------------------------ pre-commit hooks and the CI doc

ROOT = Path(__file__).resolve().parents[1]


def test_pre_commit_hooks():
    import yaml

    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert hooks["policylang-check"]["entry"] == "policylang check --strict --set-root"
    assert hooks["policylang-fmt"]["entry"] == "policylang fmt --check"
    for h in hooks.values():
        assert h["files"] == r"\.policy$" and h["language"] == "python" and h["name"]
        assert re.search(h["files"], "policies/a.policy") and not re.search(h["files"], "a.policy.bak")


def test_ci_doc_has_the_sarif_upload_job():
    import yaml

    text = (ROOT / "docs" / "ci.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    workflow = next(yaml.safe_load(b) for b in blocks if "jobs:" in b)
    steps = next(iter(workflow["jobs"].values()))["steps"]
    check = next(s for s in steps if "policylang check" in s.get("run", "") and "--format sarif" in s["run"])
    upload = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif"))
    assert upload["with"]["sarif_file"] in check["run"]
    assert upload["if"] == "always()"
    assert workflow["permissions"]["security-events"] == "write"


def test_a_directory_without_policy_files_is_an_error(files):
    """A mis-pointed CI step (`check --strict build/` with no policies there) must fail."""
    Path("nothing").mkdir()
    for args in (["nothing"], ["--strict", "nothing"], ["--format", "json", "nothing"]):
        r = run(*args)
        assert r.exit_code == 1, args
        assert "error: nothing has no .policy files" in r.stderr


def test_set_root_checks_a_file_with_the_rest_of_its_set(files):
    """pre-commit passes changed files one by one; --set-root checks each in its set, so a
    rule file that uses the schema and constants of its sibling files gets no E002."""
    root = Path("repo/policies")
    (root / "rules").mkdir(parents=True)
    (root / "schema.policy").write_text('const teams = ["a", "b"]\n')
    (root / "rules" / "read.policy").write_text(
        'permit agent to read on repo when principal.team in teams\n  because "teams read"\n')
    alone = run(str(root / "rules" / "read.policy"))
    assert alone.exit_code == 1 and "E002" in alone.output
    r = run("--set-root", str(root / "rules" / "read.policy"), str(root / "schema.policy"))
    assert r.exit_code == 0, r.output
    assert "checked 1 policy set" in r.stderr  # both files are one set, checked once


def test_every_code_has_a_sarif_full_description():
    from policylang.language.errors import CODES
    from policylang.tools.sarif import FULL_DESCRIPTIONS

    assert sorted(set(CODES) - set(FULL_DESCRIPTIONS)) == []
