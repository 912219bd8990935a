"""The playground end to end in headless Chromium (docs/playground.md): type a policy and
see its diagnostic, send a request and see the decision with the drawn delegation path,
edit a rule and see the example requests whose decision changed, click a trace row and see
its source line highlighted. Screenshots go to the artefacts directory (conftest.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "multi-agent-pipeline"


@pytest.fixture
def pipeline(tmp_path) -> Path:
    """A copy of the multi-agent pipeline example (policies and test suites)."""
    dest = tmp_path / "pipeline"
    shutil.copytree(EXAMPLE, dest)
    return dest / "policies"


def _open(page, url: str) -> None:
    page.goto(url)
    _wait(page, "[data-testid=check-status][data-state=ok]")


def _wait(page, selector: str) -> None:
    """Wait until an element matching ``selector`` exists (a status may be empty text)."""
    page.wait_for_selector(selector, state="attached")


def _editor_text(page) -> str:
    return page.locator("[data-testid=policy-editor]").input_value()


def _decide(page, example_id: str) -> None:
    page.select_option("[data-testid=example-select]", example_id)
    page.click("[data-testid=decide-button]")
    _wait(page, "[data-testid=request-error][data-state=ok]")


def test_typing_a_policy_error_shows_a_diagnostic_with_line_and_column(browser_page, serve_playground, pipeline):
    page = browser_page
    _open(page, serve_playground(pipeline))
    assert page.locator("[data-testid=file-tab][aria-selected=true]").get_attribute("data-file") == "agents.policy"
    lines_before = _editor_text(page).count("\n")
    editor = page.locator("[data-testid=policy-editor]")
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.type('\npermit agent to "tools/call" on mcp_tool when risk.score >')
    _wait(page, "[data-testid=check-status][data-state=errors]")
    diag = page.locator("[data-testid=diagnostic][data-severity=error]").first
    text = diag.inner_text()
    m = re.match(r"agents\.policy:(\d+):(\d+): error\[E\d+\]", text)
    assert m, text
    assert int(m.group(1)) in (lines_before + 1, lines_before + 2)
    # the line is marked in the editor and the tab shows the file has errors
    assert page.locator(f"#policy-highlight [data-line='{m.group(1)}'].pl-line--err").count() == 1
    assert page.locator("#policy-highlight .tok-squiggle").count() >= 1
    assert "pl-tab--error" in page.locator("[data-testid=file-tab][data-file='agents.policy']").get_attribute("class")
    # finishing the condition clears it
    page.keyboard.type(" 0.99")
    _wait(page, "[data-testid=check-status][data-state=ok]")
    assert page.locator("[data-testid=diagnostic][data-severity=error]").count() == 0
    # and the keywords are highlighted by the page's own tokenizer
    assert page.locator("#policy-highlight .tok-effect-permit").count() >= 1
    assert page.locator("#policy-highlight .tok-string").count() >= 1


def test_a_request_shows_its_decision_and_the_delegation_path_with_the_denied_hop(browser_page, serve_playground,
                                                                                 pipeline):
    page = browser_page
    _open(page, serve_playground(pipeline))
    # the orchestrator lacks the authority: the allow of the worker's rule is attenuated to a deny
    _decide(page, "tests/tools.yaml#3")
    assert page.locator("[data-testid=decision]").inner_text() == "deny"
    hops = page.locator("[data-testid=path-hop]")
    assert hops.count() == 3
    assert [hops.nth(i).get_attribute("data-role") for i in range(3)] == ["root", "delegator", "subject"]
    assert [hops.nth(i).get_attribute("data-allowed") for i in range(3)] == ["true", "false", "false"]
    assert "user:alice" in hops.nth(0).inner_text()
    assert "orchestrator" in hops.nth(1).inner_text()
    assert hops.nth(1).locator("[data-testid=path-hop-status]").inner_text() == "denied"
    assert page.locator("[data-testid=path-verdict]").inner_text() == "deny"
    assert "attenuate_delegation" in page.locator("[data-testid=reasons]").inner_text()
    rows = page.locator("[data-testid=trace-row]")
    assert rows.count() >= 1
    held = page.locator("[data-testid=trace-row][data-rule='researchers-search-and-fetch']")
    assert held.get_attribute("data-held") == "true"

    # an allowed request: every hop allowed, the grant listed
    _decide(page, "tests/tools.yaml#1")
    assert page.locator("[data-testid=decision]").inner_text() == "allow"
    assert [hops.nth(i).get_attribute("data-allowed") for i in range(3)] == ["true", "true", "true"]
    assert "mcp:search/web_search" in page.locator("[data-testid=grants]").inner_text()
    assert "researchers-search-and-fetch" in page.locator("[data-testid=determining]").inner_text()


def test_a_bad_request_names_the_field(browser_page, serve_playground, pipeline):
    page = browser_page
    _open(page, serve_playground(pipeline))
    page.locator("[data-testid=request-editor]").fill('{"principal": {"id": "a"}, "action": "x"}')
    page.select_option("[data-testid=example-select]", "")
    page.click("[data-testid=decide-button]")
    _wait(page, "[data-testid=request-error][data-state=error]")
    assert page.locator("[data-testid=request-error]").inner_text().startswith("request.")


def test_editing_a_rule_lists_the_example_requests_whose_decision_changed(browser_page, serve_playground, pipeline):
    page = browser_page
    _open(page, serve_playground(pipeline))
    text = _editor_text(page)
    assert "when delegation.depth == 1" in text
    page.locator("[data-testid=policy-editor]").fill(text.replace("when delegation.depth == 1",
                                                                  "when delegation.depth == 2"))
    _wait(page, "[data-testid=changes-status][data-state=done]")
    row = page.locator("[data-testid=change-row][data-example='tests/orchestrator.yaml#1']")
    assert row.count() == 1
    assert row.locator("[data-testid=change-before]").inner_text() == "allow"
    assert row.locator("[data-testid=change-after]").inner_text() == "deny"
    # only the spawn cases can change, and nothing was written to disk
    for ex in page.locator("[data-testid=change-row]").evaluate_all("rows => rows.map(r => r.dataset.example)"):
        assert ex.startswith("tests/orchestrator.yaml#"), ex
    assert "when delegation.depth == 1" in (pipeline / "agents.policy").read_text()
    # reverting the file empties the list
    page.click("[data-testid=revert-button]")
    _wait(page, "[data-testid=changes-status][data-state=unchanged]")
    assert page.locator("[data-testid=change-row]").count() == 0


def test_clicking_a_trace_row_highlights_its_source_line(browser_page, serve_playground, pipeline):
    page = browser_page
    _open(page, serve_playground(pipeline))
    _decide(page, "tests/tools.yaml#1")
    row = page.locator("[data-testid=trace-row][data-rule='no-deep-delegation']")
    where = row.locator("td").last.inner_text()
    file, line = where.rsplit(":", 1)
    assert file == "guardrails.policy"
    row.click()
    assert page.locator("[data-testid=file-tab][aria-selected=true]").get_attribute("data-file") == "guardrails.policy"
    hl = page.locator("#policy-highlight .pl-line--hl")
    assert hl.count() == 1
    assert hl.get_attribute("data-line") == line
    assert "no-deep-delegation" in hl.inner_text()
    assert "pl-trace-row--selected" in row.get_attribute("class")


def test_read_only_by_default_and_saving_only_with_allow_write(browser_page, serve_playground, pipeline):
    page = browser_page
    _open(page, serve_playground(pipeline))
    assert page.locator("[data-testid=mode]").get_attribute("data-read-only") == "true"
    assert not page.locator("[data-testid=save-button]").is_visible()

    _open(page, serve_playground(pipeline, allow_write=True))
    assert page.locator("[data-testid=mode]").get_attribute("data-read-only") == "false"
    text = _editor_text(page)
    page.locator("[data-testid=policy-editor]").fill(text + "\n# saved from the playground\n")
    _wait(page, "[data-testid=check-status][data-state=ok]")
    page.click("[data-testid=save-button]")
    page.wait_for_selector("[data-testid=file-tab][data-file='agents.policy']:not(:has-text('*'))")
    assert (pipeline / "agents.policy").read_text().endswith("# saved from the playground\n")


def test_markup_in_a_request_or_a_policy_is_shown_as_text_never_run(browser_page, serve_playground, tmp_path):
    policies = tmp_path / "xss"
    policies.mkdir()
    (policies / "x.policy").write_text(
        '@id("reads")\n'
        'permit agent to read on doc\n'
        '  because "<img src=x onerror=\\"window.__pwned=1\\">"\n')
    page = browser_page
    _open(page, serve_playground(policies))
    evil = '<img src=x onerror="window.__pwned=2">'
    page.locator("[data-testid=request-editor]").fill(json.dumps({
        "principal": {"kind": "agent", "id": evil}, "action": "read", "resource": {"type": "doc", "id": "d"},
        "delegation": [{"kind": "human", "id": "<script>window.__pwned=3</script>"}]}))
    page.click("[data-testid=decide-button]")
    _wait(page, "[data-testid=request-error][data-state=ok]")
    assert page.locator("[data-testid=decision]").inner_text() == "allow"
    assert evil in page.locator("[data-testid=path-hop]").last.inner_text()
    assert "onerror" in page.locator("[data-testid=reasons]").inner_text()
    assert page.locator("img").count() == 0 and page.locator("#path script").count() == 0
    assert page.evaluate("window.__pwned") is None
