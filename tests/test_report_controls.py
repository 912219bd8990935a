"""`policylang report PATH --controls` (docs/controls.md): rules mapped to the OWASP Top 10
for Agentic Applications 2026, the NIST AI RMF 1.0 and CSA MAESTRO, by @tag and by
inference; lint findings against controls; the uncovered list; Markdown, HTML and JSON;
escaping; bad tags; exit statuses."""

from __future__ import annotations

import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from policylang.cli import main
from policylang.language.loader import check_path, loads
from policylang.tools.controls import (
    FRAMEWORKS,
    MAESTRO,
    NIST,
    OWASP,
    resolve_control,
    resolve_tag,
)
from policylang.tools.report import build_report, render

EXAMPLES = sorted(Path(__file__).resolve().parent.parent.glob("examples/*/policies"))

SET = '''\
@id("deploy-gate")
require approval for agent to deploy on service
  by "sre-oncall"
  because "deploys need a person"

@id("no-exec")
forbid agent to exec on sandbox
  because "agents never run code"

@id("shallow-delegation")
forbid agent to * on *
  when delegation.depth > 2
  because "no long delegation chains"

@id("stop-when-risky")
forbid agent to * on *
  when risk.score > 0.8
  because "a high risk score stops the agent"

@id("payments-budget")
permit agent to pay on account
  when intent.task_id == "t1"
  limit sum(action.amount) <= 500 per principal.id per 1d
  grant "payments:pay" for 5m
  because "agents pay within a daily budget"

@id("long-grant")
permit agent to read on doc
  grant "docs:read" for 1h
  because "reads"

@id("tagged")
@tag("owasp:ASI04")
@tag("nist:GOVERN-6")
@tag("maestro:L1")
@tag("jit")
permit agent to install on package
  because "installs are reviewed elsewhere"
'''


def report_for(text: str, name: str = "set.policy", **kw):
    return build_report(loads(text, name), proven=False, **kw)


def ctl(cid: str):
    return resolve_control(cid)


def covering(report, cid: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for cov in report.rules_for(ctl(cid)):
        out.setdefault(cov.rule.id, []).append(cov)
    return out


def run(*args):
    result = CliRunner().invoke(main, ["report", *args])
    return result.exit_code, result.stdout, result.stderr


# ------------------------------------------------------------------ catalogues

def test_catalogues_have_the_canonical_ids_and_titles():
    assert [c.id for c in OWASP.controls] == [f"ASI{n:02d}" for n in range(1, 11)]
    titles = {c.id: c.title for c in OWASP.controls}
    assert titles["ASI01"] == "Agent Goal Hijack"
    assert titles["ASI07"] == "Insecure Inter-Agent Communication"
    assert titles["ASI10"] == "Rogue Agents"
    categories = [c.id for c in NIST.controls if c.parent]
    assert categories[:6] == [f"GOVERN {n}" for n in range(1, 7)]
    assert len(categories) == 19 and categories[-1] == "MANAGE 4"
    assert [c.id for c in NIST.controls if not c.parent] == ["GOVERN", "MAP", "MEASURE", "MANAGE"]
    assert next((c.id, c.title) for c in MAESTRO.controls) == ("L1", "Foundation Models")
    assert [(c.id, c.title) for c in MAESTRO.controls][-1] == ("L7", "Agent Ecosystem")
    for fw in FRAMEWORKS:
        assert fw.source.startswith("https://")


@pytest.mark.parametrize("tag, expected", [
    ("ASI03", "ASI03"), ("owasp:ASI03", "ASI03"), ("OWASP-Agentic:asi-3", "ASI03"), ("asi:03", "ASI03"),
    ("owasp-agentic:A01", "ASI01"), ("owasp-agentic:human-in-the-loop", "ASI09"),
    ("owasp-agentic:Rogue Agents", "ASI10"),
    ("nist:MANAGE-2", "MANAGE 2"), ("nist:MANAGE 2.4", "MANAGE 2"), ("nist-ai-rmf:GV-1.7", "GOVERN 1"),
    ("nist:measure", "MEASURE"), ("maestro:L3", "L3"), ("csa-maestro:layer 6", "L6"),
    ("maestro:agent-ecosystem", "L7"),
])
def test_accepted_tag_spellings(tag, expected):
    meaning = resolve_tag(tag)
    assert meaning.kind == "control" and meaning.control.id == expected


@pytest.mark.parametrize("tag", ["owasp:ASI11", "ASI00", "nist:MANAGE-5", "nist:MANAGE-2.5", "nist:GOVERN-1.8",
                                 "nist:PLAN-1", "maestro:L8", "maestro:", "owasp:not-a-risk"])
def test_unknown_control_ids(tag):
    meaning = resolve_tag(tag)
    assert meaning.kind == "unknown" and meaning.problem


@pytest.mark.parametrize("tag", ["jit", "four-eyes", "least-privilege", "team:payments", "A01"])
def test_ordinary_tags_are_not_controls(tag):
    assert resolve_tag(tag).kind == "other"


# ------------------------------------------------------------------ mappings

def test_inferred_mappings_with_reasons():
    r = report_for(SET)
    gate = covering(r, "ASI09")["deploy-gate"][0]
    assert gate.how == "inferred" and "approval gate" in gate.reason and "sre-oncall" in gate.reason
    assert "deploy-gate" in covering(r, "MAP 3") and "deploy-gate" in covering(r, "MANAGE 2")
    assert "no-exec" in covering(r, "ASI05") and "'exec'" in covering(r, "ASI05")["no-exec"][0].reason
    assert "no-exec" in covering(r, "ASI02")  # a forbid on a named action
    assert "delegation.depth" in covering(r, "ASI07")["shallow-delegation"][0].reason
    assert "shallow-delegation" in covering(r, "ASI03")
    risky = covering(r, "ASI10")["stop-when-risky"][0]
    assert "risk.score" in risky.reason
    assert "stop-when-risky" in covering(r, "MANAGE 2")  # a forbid on risk disengages the agent
    budget = covering(r, "ASI08")["payments-budget"][0]
    assert budget.reason.startswith("limit sum(…) per 1d")
    asi03 = covering(r, "ASI03")
    assert "5m" in asi03["payments-budget"][0].reason
    assert "long-grant" not in asi03  # a 1h grant is not short-lived
    assert "intent.task_id" in covering(r, "ASI01")["payments-budget"][0].reason


def test_explicit_tags_cover_and_ordinary_tags_are_ignored():
    r = report_for(SET)
    for cid, tag in [("ASI04", "owasp:ASI04"), ("GOVERN 6", "nist:GOVERN-6"), ("L1", "maestro:L1")]:
        (cov,) = covering(r, cid)["tagged"]
        assert cov.how == "tag" and cov.tag == tag
    assert r.covered(ctl("GOVERN"))  # a function is covered through its categories
    assert r.diagnostics == []


def test_uncovered_controls_are_listed():
    r = report_for(SET)
    assert [c.id for c in r.uncovered(OWASP)] == ["ASI06"]
    nist = [c.id for c in r.uncovered(NIST)]
    assert "MEASURE" in nist and "MEASURE 1" in nist and "GOVERN 6" not in nist and "MANAGE 2" not in nist
    assert [c.id for c in r.uncovered(MAESTRO)] == ["L2"]
    doc = r.to_dict()
    owasp = next(f for f in doc["frameworks"] if f["id"] == "owasp-agentic")
    assert owasp["uncovered"] == ["ASI06"]
    assert next(c for c in owasp["controls"] if c["id"] == "ASI06") == {
        "id": "ASI06", "title": "Memory and Context Poisoning", "parent": None, "covered": False,
        "rules": [], "findings": []}


def test_an_empty_set_covers_nothing():
    r = report_for("const X = 1\n")
    for fw in FRAMEWORKS:
        assert len(r.uncovered(fw)) == len(fw.controls)


# ------------------------------------------------------------------ lints against controls

LINTED = '''\
high_impact action deploy on service
action read on repo

@id("deny-deploys")
forbid agent to deploy on service
  because "no agent deploys"

@id("shadowed")
@tag("owasp:ASI02")
permit agent to deploy on service
  because "dead: the forbid above covers it"

@id("one-counter")
permit agent to read on repo
  limit count <= 10 per 1h
  because "a shared counter"

@id("unguarded-deploy")
permit human, agent to deploy on service
  when context.ok == true
  because "W105"
'''


def test_lint_findings_weaken_the_controls_of_their_rule():
    r = report_for(LINTED)
    (w104,) = [f for f in r.findings_for(ctl("ASI02")) if f.code == "W104"]
    assert w104.rule == "shadowed" and w104.source == "lint" and "never determine" in w104.reason
    assert w104.path == "set.policy" and w104.line == 10
    # the finding is also listed against the controls the lint concerns itself
    assert any(f.code == "W109" and f.rule == "one-counter" for f in r.findings_for(ctl("ASI08")))
    assert any(f.code == "W105" for f in r.findings_for(ctl("ASI09")))
    # a finding never counts as coverage
    assert not r.covered(ctl("ASI09"))


PROVEN = '''\
@id("read-any")
@tag("owasp:ASI03")
permit agent to read on repo
  when risk.score < 0.9
  because "reads at low risk"

@id("read-low")
@tag("owasp:ASI10")
permit agent to read on repo
  when risk.score < 0.5
  because "subsumed by read-any"
'''


def test_solver_proven_lints_weaken_the_controls_of_their_rule():
    pytest.importorskip("z3")
    r = build_report(loads(PROVEN, "set.policy"), proven=True)
    (f,) = [f for f in r.findings_for(ctl("ASI10")) if f.source == "proven"]
    assert f.rule == "read-low" and f.code == "W202" and "read-any" in f.message
    assert f.reason.startswith("proven: the permit is subsumed")
    assert not [f for f in r.findings_for(ctl("ASI03")) if f.source == "proven" and f.rule == "read-any"]
    assert any(n.startswith("solver-proven lints: run (1 finding)") for n in r.notes)
    assert not [f for fs in r.findings.values() for f in fs if f.code == "N201"]  # notes weaken nothing


def test_without_z3_the_proven_lints_are_a_note_not_a_failure(monkeypatch):
    monkeypatch.setitem(sys.modules, "z3", None)  # import z3 fails
    r = build_report(loads(LINTED, "set.policy"), proven=True)
    assert any(n.startswith("solver-proven lints: not run (z3 is not installed") for n in r.notes)
    assert r.findings_for(ctl("ASI02"))  # the checker's lints are still there


def test_a_failing_solver_is_a_note_and_the_report_still_stands(monkeypatch):
    pytest.importorskip("z3")
    from policylang.analysis import lints

    def broken(ps):
        raise RuntimeError("solver crashed")
    monkeypatch.setattr(lints, "proven_lints", broken)
    r = build_report(loads(LINTED, "set.policy"), proven=True)
    assert any(n.startswith("solver-proven lints: failed (RuntimeError: solver crashed)") for n in r.notes)
    assert r.findings_for(ctl("ASI02"))


# ------------------------------------------------------------------ bad tags

BAD_TAGS = '''\
@id("a")
@tag("owasp:ASI11")
@tag("nist:MANAGE-2.9")
permit agent to read on doc
  because "r"

@id("b")
  @tag("maestro:L8")
@tag("owsap:ASI01")
forbid agent to write on doc
  because "w"
'''


def test_bad_tags_are_diagnostics_with_positions():
    r = report_for(BAD_TAGS)
    got = [(d.code, d.severity, d.line, d.column) for d in r.diagnostics]
    assert got == [("R001", "error", 2, 6), ("R001", "error", 3, 6), ("R001", "error", 8, 8),
                   ("R002", "warning", 9, 6)]
    assert "ASI01 to ASI10" in r.diagnostics[0].message
    assert "MANAGE 2.1 to MANAGE 2.4" in r.diagnostics[1].message
    assert "did you mean 'owasp:'" in r.diagnostics[3].message
    assert r.errors == 3
    assert not r.covered(ctl("ASI01"))  # a misspelt prefix covers nothing


def test_cli_bad_tags_exit_1_and_still_write_the_report(tmp_path):
    (tmp_path / "p.policy").write_text(BAD_TAGS)
    out = tmp_path / "r.json"
    code, _stdout, stderr = run(str(tmp_path / "p.policy"), "--controls", "--format", "json", "-o", str(out))
    assert code == 1
    assert re.search(r"p\.policy:2:6: error\[R001\]: unknown control in @tag", stderr)
    assert "p.policy:9:6: warning[R002]" in stderr
    doc = json.loads(out.read_text())
    assert [d["code"] for d in doc["diagnostics"]] == ["R001", "R001", "R001", "R002"]


# ------------------------------------------------------------------ formats and escaping

class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


HOSTILE = '''\
@id("<script>alert(1)</script>")
@tag("owasp:<img src=x onerror=alert(1)>")
@tag("maestro:L6")
forbid agent to exec on sandbox
  because "</td><script>bad()</script>"
'''


def test_html_is_self_contained_and_escapes_every_value():
    r = report_for(HOSTILE)
    page = render(r, "html")
    parser = _Tags()
    parser.feed(page)
    parser.close()
    assert "script" not in parser.tags and "img" not in parser.tags
    assert "link" not in parser.tags  # no stylesheet fetched: the CSS is inline
    assert "style" in parser.tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)</script>" in "".join(parser.text)  # shown as text
    assert not re.search(r"(src|href)=\"(?!https://)", page)  # the only links are the catalogue sources


def test_markdown_escapes_html_and_markdown():
    page = render(report_for(HOSTILE), "markdown")
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "## OWASP Top 10 for Agentic Applications 2026" in page
    assert "### Uncovered: OWASP Top 10 for Agentic Applications" in page


def test_json_shape():
    doc = json.loads(render(report_for(SET), "json"))
    assert doc["schema"] == "policylang.controls-report/1"
    assert set(doc) == {"schema", "policy_set", "frameworks", "diagnostics", "notes"}
    assert doc["policy_set"]["rules"] == 7 and doc["policy_set"]["version"].startswith("sha256:")
    assert [f["id"] for f in doc["frameworks"]] == ["owasp-agentic", "nist-ai-rmf", "maestro"]
    asi09 = next(c for c in doc["frameworks"][0]["controls"] if c["id"] == "ASI09")
    (row,) = asi09["rules"]
    assert set(row) == {"rule", "path", "line", "column", "effect", "how", "tag", "reason"}
    assert row["rule"] == "deploy-gate" and row["line"] == 1 and row["effect"] == "require_approval"


# ------------------------------------------------------------------ the command

def test_cli_formats_and_output_file(tmp_path):
    (tmp_path / "p.policy").write_text(SET)
    code, stdout, stderr = run(str(tmp_path / "p.policy"), "--controls")
    assert code == 0 and stdout.startswith("# Controls report")
    assert "controls covered: owasp-agentic 9/10" in stderr
    code, stdout, _ = run(str(tmp_path / "p.policy"), "--controls", "--format", "json")
    assert code == 0 and json.loads(stdout)["frameworks"][0]["uncovered"] == ["ASI06"]
    out = tmp_path / "r.html"
    code, stdout, stderr = run(str(tmp_path / "p.policy"), "--controls", "--format", "html", "-o", str(out))
    assert code == 0 and stdout == "" and f"wrote {out}" in stderr
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_cli_fail_on_uncovered(tmp_path):
    (tmp_path / "p.policy").write_text(SET)
    path = str(tmp_path / "p.policy")
    code, _, stderr = run(path, "--controls", "--fail-on-uncovered", "ASI06,ASI09")
    assert code == 1 and "uncovered (--fail-on-uncovered): ASI06" in stderr
    assert run(path, "--controls", "--fail-on-uncovered", "ASI09, nist:MANAGE-2,maestro:L1")[0] == 0
    assert run(path, "--controls", "--fail-on-uncovered", "MEASURE 3")[0] == 1
    code, _, stderr = run(path, "--controls", "--fail-on-uncovered", "ASI99")
    assert code == 2 and "ASI99" in stderr


def test_cli_exit_statuses(tmp_path):
    (tmp_path / "p.policy").write_text(SET)
    path = str(tmp_path / "p.policy")
    assert run(path)[0] == 2  # which report?
    assert run(path, "--controls", "--format", "pdf")[0] == 2
    assert run(str(tmp_path / "missing"), "--controls")[0] == 2
    (tmp_path / "broken.policy").write_text('@id("x")\npermit agent to read on doc\n  when resourse.owner == 1\n')
    out = tmp_path / "r.md"
    code, stdout, stderr = run(str(tmp_path / "broken.policy"), "--controls", "-o", str(out))
    assert code == 1 and stdout == "" and not out.exists()
    assert re.search(r"broken\.policy:3:8: error\[E002\]", stderr) and "no report written" in stderr
    (tmp_path / "empty").mkdir()
    code, _, stderr = run(str(tmp_path / "empty"), "--controls")
    assert code == 1 and "no .policy files" in stderr


@pytest.mark.parametrize("policies", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_every_example_reports(policies):
    policy_set, diags = check_path(policies)
    assert policy_set is not None, diags
    r = build_report(policy_set, proven=False)
    assert r.diagnostics == []  # every control tag the examples use is known
    doc = json.loads(render(r, "json"))
    for fw in doc["frameworks"]:
        for c in fw["controls"]:
            assert c["covered"] == (c["id"] not in fw["uncovered"])
            for row in c["rules"]:
                assert row["reason"] and Path(row["path"]).is_file()
    parser = _Tags()
    parser.feed(render(r, "html"))


def test_the_coding_agent_example_maps_its_tags():
    policy_set, _ = check_path(next(p for p in EXAMPLES if p.parent.name == "coding-agent"))
    r = build_report(policy_set, proven=False)
    tagged = [c for c in r.rules_for(ctl("ASI09")) if c.how == "tag"]
    assert [(c.rule.id, c.tag) for c in tagged] == [("prod-deploys-need-a-human", "owasp-agentic:human-in-the-loop")]
    assert [c.tag for c in r.rules_for(ctl("ASI10")) if c.how == "tag"] == ["owasp-agentic:rogue-agent"]


def test_name_words_and_quantifiers():
    r = report_for('''\
@id("no-tool-exec")
forbid agent to "tools/exec" on tool
  because "x"

@id("runner-is-not-run")
forbid agent to runner on tool
  because "y"

@id("exec-permit")
permit agent to exec on sandbox
  because "a permit enables it"

@id("no-shell-tool")
require approval for agent to "tools/call" on tool "run_shell*"
  by "sre"
  because "shell tools need a person"

@id("chain-check")
forbid agent to * on *
  when any a in delegation.chain: a.kind == "untrusted"
  because "z"
''')
    assert set(covering(r, "ASI05")) == {"no-tool-exec", "no-shell-tool"}
    assert "resource id 'run_shell*'" in covering(r, "ASI05")["no-shell-tool"][0].reason
    assert "chain-check" in covering(r, "ASI07")
    assert "delegation.chain" in covering(r, "ASI07")["chain-check"][0].reason


def test_the_docs_describe_what_the_code_does():
    from policylang.tools.controls import OWASP_ALIASES
    from policylang.tools.report import (
        NAME_WORDS,
        SHORT_GRANT_TTL,
        TAG_CODES,
        WEAKENING_LINTS,
    )

    root = Path(__file__).resolve().parent.parent
    doc = (root / "docs" / "controls.md").read_text()
    for anchor in ("usage", "tags", "inference", "lints", "json", "owasp-agentic", "nist-ai-rmf", "maestro"):
        assert f'<a id="{anchor}"></a>' in doc
    for fw in FRAMEWORKS:
        assert fw.source in doc
        for c in fw.controls:
            if c.parent is None:
                assert f"| {c.id} |" in doc, c.id
    for _label, words, _risk, _ids in NAME_WORDS:
        for w in words:
            if not (w.endswith("s") and w[:-1] in words) and w not in {"dependencies", "memories"}:
                assert f"`{w}`" in doc, w
    for code in WEAKENING_LINTS:
        assert f"| {code} |" in doc
    for code in TAG_CODES:
        assert f"| {code} |" in doc
    for alias in OWASP_ALIASES:
        assert f"`{alias}`" in doc, alias
    assert SHORT_GRANT_TTL == 15 * 60 and "at most 15 minutes" in doc
    for path in (root / "policylang" / "tools" / "report.py", root / "policylang" / "cli" / "report.py"):
        for anchor in re.findall(r"docs/controls\.md#([a-z-]+)", path.read_text()):
            assert f'<a id="{anchor}"></a>' in doc, anchor


def test_a_huge_tag_value_is_a_short_diagnostic():
    r = report_for('@id("x")\n@tag("owasp:' + "x" * 100_000 + '")\npermit agent to read on doc\n  because "y"\n')
    (d,) = r.diagnostics
    assert d.code == "R001" and (d.line, d.column) == (2, 6) and len(d.message) < 300


def test_a_quantifier_variable_named_like_a_root_is_not_the_root():
    r = report_for('''\
@id("not-risk")
forbid agent to * on *
  when any risk in principal.tags: risk == "a"
  because "b"
''')
    assert "not-risk" not in covering(r, "ASI10")
