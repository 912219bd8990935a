"""The audit viewer end to end (docs/audit-viewer.md): a playground on loopback, headless
Chromium through Playwright (fixtures in tests/browser/conftest.py). A log written by
policylang's own AuditLog with real decisions (human -> orchestrator -> worker), one line
edited: the page flags it, marks what follows as not verified, and draws a clicked record's
decision and delegation path. Screenshots are saved to the artefacts directory."""

from __future__ import annotations

import json

import pytest

import policylang
from policylang.audit import AuditLog


def expect(target):
    """Playwright's expect, imported when used (the ``browser`` fixture skips, or fails under
    POLICYLANG_REQUIRE_BROWSER=1, when Playwright is missing)."""
    from playwright.sync_api import expect as _expect

    return _expect(target)


POLICY = """
option attenuate_delegation = true

@id("orchestrator-reads")
permit agent "orchestrator" to read on doc
  because "the orchestrator reads documents"

@id("worker-reads")
permit agent "worker" to read on doc
  when delegation.root.kind == "human"
  grant "doc:read:" + resource.id for 10m
  because "a worker started by a person reads documents"

@id("worker-writes")
permit agent "worker" to write on doc
  because "a worker writes documents"

@id("no-secrets")
forbid * to read on doc "secret"
  because "nobody reads the secret document"

@id("alice-reads")
permit human "user:alice" to * on doc
  because "alice may do anything to documents"
"""

HUMAN = {"id": "user:alice", "kind": "human"}
ORCH = {"id": "orchestrator", "kind": "agent"}
WORKER = {"id": "worker", "kind": "agent"}


def _request(action, resource, task, principal=WORKER, chain=(HUMAN, ORCH)):
    return {"principal": principal, "action": action, "resource": {"type": "doc", "id": resource},
            "delegation": list(chain), "intent": {"task_id": task}}


@pytest.fixture
def policy_dir(tmp_path):
    d = tmp_path / "policies"
    d.mkdir()
    (d / "docs.policy").write_text(POLICY, encoding="utf-8")
    return d


@pytest.fixture
def log_file(tmp_path, policy_dir):
    """Line 1 allow (human -> orchestrator -> worker), 2 deny (forbid), 3 deny (the
    orchestrator may not write: attenuation), 4 open_task, 5 alice directly."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync=False)
    engine = policylang.Engine(policylang.load(policy_dir), audit=log)
    engine.decide(_request("read", "readme", "T-1"))
    engine.decide(_request("read", "secret", "T-1"))
    engine.decide(_request("write", "readme", "T-2"))
    log.record("open_task", task="T-3", principal="worker", root="user:alice")
    engine.decide(_request("read", "notes", "T-3", principal=HUMAN, chain=()))
    return path


def rows(page):
    return page.get_by_test_id("audit-row")


def row(page, line):
    return page.locator(f'[data-testid="audit-row"][data-line="{line}"]')


def test_a_tampered_line_is_flagged_and_a_record_path_drawn(serve_playground, browser_page, log_file,
                                                           policy_dir, artifacts_dir):
    lines = log_file.read_bytes().splitlines(keepends=True)
    assert b'"decision":"deny"' in lines[1]
    lines[1] = lines[1].replace(b'"decision":"deny"', b'"decision":"allow"')  # the forgery
    log_file.write_bytes(b"".join(lines))

    page = browser_page
    base = serve_playground(policy_dir, audit=log_file)
    page.goto(base)
    page.get_by_test_id("audit-link").click()
    page.wait_for_url("**/static/audit.html")

    banner = page.get_by_test_id("audit-banner")
    expect(banner).to_have_text("chain broken at line 2: record altered: its hash does not match its content")
    expect(banner).to_have_attribute("data-ok", "false")
    expect(rows(page)).to_have_count(5)
    expect(row(page, 1)).to_have_attribute("data-status", "ok")
    expect(row(page, 2)).to_have_attribute("data-status", "tampered")
    expect(row(page, 2).get_by_test_id("row-status")).to_contain_text("tampered")
    expect(row(page, 2).get_by_test_id("row-decision")).to_have_text("allow")  # what the forgery claims
    for n in (3, 4, 5):
        expect(row(page, n)).to_have_attribute("data-status", "broken")
        expect(row(page, n).get_by_test_id("row-status")).to_contain_text("chain is broken at line 2")
    page.screenshot(path=str(artifacts_dir / "audit-viewer-tampered.png"), full_page=True)

    # the intact first record: its decision and path human -> orchestrator -> worker
    row(page, 1).click()
    detail = page.get_by_test_id("audit-detail")
    expect(detail).to_be_visible()
    expect(detail.get_by_test_id("detail-status")).to_have_attribute("data-status", "ok")
    expect(detail.get_by_test_id("detail-claim")).to_be_hidden()
    expect(detail.get_by_test_id("decision")).to_have_text("allow")
    hops = detail.get_by_test_id("path-hop")
    expect(hops).to_have_count(3)
    assert [hops.nth(i).get_attribute("data-role") for i in range(3)] == ["root", "delegator", "subject"]
    expect(hops.nth(0)).to_contain_text("user:alice")
    expect(hops.nth(1)).to_contain_text("orchestrator")
    expect(hops.nth(2)).to_have_attribute("data-allowed", "true")
    expect(detail.get_by_test_id("path-verdict")).to_have_text("allow")
    expect(detail.get_by_test_id("determining")).to_have_text("worker-reads")
    expect(detail.get_by_test_id("grants")).to_contain_text("doc:read:readme")
    page.screenshot(path=str(artifacts_dir / "audit-viewer-record-path.png"), full_page=True)

    # the forged record: shown with its flag, never as verified
    row(page, 2).click()
    expect(detail.get_by_test_id("detail-status")).to_have_attribute("data-status", "tampered")
    expect(detail.get_by_test_id("detail-status")).to_contain_text("hash does not match")
    expect(detail.get_by_test_id("detail-line")).to_have_text("2")
    expect(detail.get_by_test_id("detail-claim")).to_be_visible()
    page.screenshot(path=str(artifacts_dir / "audit-viewer-tampered-record.png"), full_page=True)


def test_an_uploaded_log_verifies_filters_and_shows_an_attenuation_denial(serve_playground, browser_page,
                                                                          log_file, policy_dir, artifacts_dir):
    page = browser_page
    base = serve_playground(policy_dir)  # no --audit: the log is chosen on the page
    page.goto(base + "static/audit.html")
    expect(page.get_by_test_id("open-configured")).to_be_hidden()
    page.get_by_test_id("audit-file").set_input_files(str(log_file))
    banner = page.get_by_test_id("audit-banner")
    expect(banner).to_have_text("chain verified: 5 records")
    expect(banner).to_have_attribute("data-ok", "true")
    expect(page.locator('[data-testid="audit-row"][data-status="ok"]')).to_have_count(5)

    page.get_by_test_id("filter-task").fill("T-1")
    page.get_by_test_id("apply-filters").click()
    expect(rows(page)).to_have_count(2)
    page.get_by_test_id("filter-task").fill("")
    page.get_by_test_id("filter-decision").select_option("deny")
    expect(rows(page)).to_have_count(2)
    expect(banner).to_have_text("chain verified: 5 records")  # the whole log, whatever the filter
    page.get_by_test_id("filter-decision").select_option("")
    page.get_by_test_id("filter-principal").fill("orchestrator")
    page.get_by_test_id("apply-filters").click()
    expect(rows(page)).to_have_count(3)

    row(page, 3).click()
    hops = page.get_by_test_id("audit-detail").get_by_test_id("path-hop")
    expect(hops).to_have_count(3)
    expect(hops.nth(0)).to_have_attribute("data-allowed", "true")
    expect(hops.nth(1)).to_have_attribute("data-allowed", "false")
    expect(hops.nth(2)).to_have_attribute("data-allowed", "false")
    expect(page.get_by_test_id("audit-detail").get_by_test_id("reasons")).to_contain_text(
        "delegator orchestrator is not allowed to write this resource (attenuate_delegation)")
    page.screenshot(path=str(artifacts_dir / "audit-viewer-upload-filtered.png"), full_page=True)


def test_a_record_cannot_inject_markup_into_the_viewer(serve_playground, browser_page, tmp_path, policy_dir):
    """Attack: a principal id, task and reason carrying HTML and script. The chain is valid
    (AuditLog wrote it), so every cell is shown; none may become markup or run."""
    path = tmp_path / "evil.jsonl"
    evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    log = AuditLog(path, fsync=False)
    log.record("decide", request={"principal": {"id": evil, "kind": "agent"}, "action": "read",
                                  "resource": {"type": "doc", "id": evil},
                                  "delegation": [{"id": evil, "kind": "human"}], "intent": {"task_id": evil}},
               decision={"decision": "deny", "rules": [evil], "reasons": [evil], "grants": [], "approvers": [],
                         "errors": [{"rule": evil, "message": evil}], "delegation_path": [evil, evil]})
    page = browser_page
    page.goto(serve_playground(policy_dir) + "static/audit.html")
    page.get_by_test_id("audit-file").set_input_files(str(path))
    expect(page.get_by_test_id("audit-banner")).to_have_text("chain verified: 1 record")
    expect(row(page, 1)).to_contain_text("<img src=x")
    row(page, 1).click()
    expect(page.get_by_test_id("audit-detail").get_by_test_id("path-hop")).to_have_count(2)
    expect(page.get_by_test_id("audit-detail").get_by_test_id("reasons")).to_contain_text("<script>")
    assert page.evaluate("window.__pwned === undefined")
    assert page.locator("main img, main script").count() == 0


def test_a_cut_off_tail_shows_against_the_anchored_head_and_garbage_per_line(serve_playground, browser_page,
                                                                           log_file, policy_dir, tmp_path):
    lines = log_file.read_bytes().splitlines(keepends=True)
    head = json.loads(lines[-1])["hash"]
    log_file.write_bytes(b"".join(lines[:-2]))  # the last two records removed
    page = browser_page
    page.goto(serve_playground(policy_dir, audit=log_file) + "static/audit.html")
    banner = page.get_by_test_id("audit-banner")
    expect(banner).to_have_text("chain verified: 3 records")  # a chain alone cannot tell
    page.get_by_test_id("anchored-head").fill(head)
    page.get_by_test_id("apply-filters").click()
    expect(banner).to_have_attribute("data-ok", "false")
    expect(banner).to_contain_text("chain broken at line 4: no record has the anchored head hash")
    expect(banner).to_contain_text("the log was cut off after line 3")
    page.get_by_test_id("anchored-head").fill("not a hash")
    page.get_by_test_id("apply-filters").click()
    expect(banner).to_have_text("head: must be a SHA-256 hash: 64 hexadecimal digits")
    page.get_by_test_id("clear-filters").click()
    expect(banner).to_have_text("chain verified: 3 records")

    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"hello\n\xff\xfe\n" + b"".join(lines))
    page.get_by_test_id("audit-file").set_input_files(str(garbage))
    expect(banner).to_contain_text("chain broken at line 1: not a JSON record")
    expect(row(page, 1)).to_have_attribute("data-status", "tampered")
    expect(row(page, 1)).to_contain_text("hello")
    expect(row(page, 2).get_by_test_id("row-status")).to_contain_text("this line: not UTF-8")
    expect(page.locator('[data-testid="audit-row"][data-status="broken"]')).to_have_count(len(lines) + 1)
