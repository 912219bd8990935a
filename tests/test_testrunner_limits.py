"""Test suites over sets with limits (docs/cli.md#sequences): each case gets a fresh limit
store and a clock that moves only when a step says ``advance``; a ``sequence`` sends its
steps' requests (each ``repeat`` times) against that one store, so the n-th request of a
case can be expected to be refused."""

from __future__ import annotations

import glob
import os
import tempfile
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from policylang.cli import main
from policylang.tools import testrunner as tr

POLICY = '''
@id("budget")
permit agent to refund on order
  limit sum(action.amount) <= 100 per intent.task_id
  limit count <= 3 per principal.id per 1h
  because "refunds within a budget"

@id("readers")
permit agent to read on order
  because "agents read"
'''

HEAD = '''
policies: p.policy
cases:
'''

REFUND = ('{principal: {id: "agent:a", kind: agent}, action: {name: refund, attrs: {amount: AMOUNT}}, '
          'resource: {type: order, id: o-1}, intent: {task_id: TASK}}')


def refund(amount=10, task="T-1") -> str:
    return REFUND.replace("AMOUNT", str(amount)).replace("TASK", task)


def run(tmp_path: Path, cases: str, policy: str = POLICY) -> tr.SuiteResult:
    (tmp_path / "p.policy").write_text(policy)
    suite = tmp_path / "suite.yaml"
    suite.write_text(HEAD + textwrap.indent(textwrap.dedent(cases).strip("\n"), "  ") + "\n")
    return tr.Runner().run_suite(str(suite))


def test_the_n_th_request_of_a_sequence_is_refused(tmp_path):
    res = run(tmp_path, f'''
        - name: the fourth refund this hour is refused
          sequence:
            - request: {refund()}
              repeat: 3
              expect: {{decision: allow, rules: [budget]}}
            - request: {refund()}
              expect:
                decision: deny
                limits: [{{outcome: not_consumed}}, {{rule: budget, used: 3, left: 0, outcome: refused}}]
    ''')
    assert res.error is None, res.error
    (case,) = res.cases
    assert case.passed, case.summary()


def test_a_wrong_expectation_fails_at_the_request_that_differs(tmp_path):
    res = run(tmp_path, f'''
        - name: expects one allow too many
          sequence:
            - request: {refund()}
              repeat: 4
              expect: {{decision: allow}}
    ''')
    (case,) = res.cases
    assert not case.passed and case.reason is None
    assert case.step == "step 1, request 4 of the case"
    assert case.summary() == "step 1, request 4 of the case: expected decision allow, got deny"
    assert [e["outcome"] for e in case.actual["limits"]] == ["not_consumed", "refused"]
    report = tr.render_failure(case)
    assert "  at step 1, request 4 of the case" in report and "limit (budget) refused" in report


def test_each_case_starts_from_an_empty_store(tmp_path):
    one = f'''
        - name: NAME
          sequence:
            - request: {refund(60)}
              expect: {{decision: allow, limits: [{{used: 60}}, {{used: 1}}]}}
    '''
    res = run(tmp_path, one.replace("NAME", "first") + one.replace("NAME", "second")
              + f'''
        - name: a plain case too
          request: {refund(100)}
          expect: {{decision: allow, limits: [{{used: 100, left: 0}}, {{used: 1}}]}}
    ''')
    assert [c.passed for c in res.cases] == [True, True, True], [c.summary() for c in res.cases]


def test_the_budget_is_per_key(tmp_path):
    res = run(tmp_path, f'''
        - name: two tasks, two budgets
          sequence:
            - request: {refund(100, "T-1")}
              expect: {{decision: allow}}
            - request: {refund(1, "T-1")}
              expect: {{decision: deny, limits: [{{key: T-1, used: 100, needed: 1, outcome: refused}}, {{}}]}}
            - request: {refund(100, "T-2")}
              expect: {{decision: allow, limits: [{{key: T-2, used: 100}}, {{used: 2}}]}}
    ''')
    assert res.cases[0].passed, res.cases[0].summary()


def test_advance_moves_the_clock_into_the_next_window(tmp_path):
    res = run(tmp_path, f'''
        - name: the rate limit window
          at: "2025-06-01T10:30:00Z"
          sequence:
            - request: {refund(1)}
              repeat: 3
              expect: {{decision: allow, limits: [{{}}, {{window_end: "2025-06-01T11:00:00Z"}}]}}
            - advance: 29m
              request: {refund(1)}
              expect: {{decision: deny}}
            - advance: 1m
              request: {refund(1)}
              expect: {{decision: allow, limits: [{{used: 4}}, {{used: 1, window_end: "2025-06-01T12:00:00Z"}}]}}
    ''')
    assert res.cases[0].passed, res.cases[0].summary()


def test_without_at_the_clock_starts_at_the_documented_instant(tmp_path):
    res = run(tmp_path, f'''
        - name: default clock
          request: {refund(1)}
          expect: {{decision: allow, limits: [{{}}, {{window_end: "2025-01-01T01:00:00Z"}}]}}
    ''')
    assert res.cases[0].passed, res.cases[0].summary()


def test_release_gives_each_allow_back(tmp_path):
    res = run(tmp_path, f'''
        - name: released refunds never add up
          sequence:
            - request: {refund(100)}
              repeat: 5
              release: true
              expect: {{decision: allow, limits: [{{used: 100}}, {{used: 1}}]}}
            - request: {refund(100)}
              expect: {{decision: allow}}
    ''')
    assert res.cases[0].passed, res.cases[0].summary()


def test_an_idempotent_retry_is_replayed(tmp_path):
    retry = refund(70)[:-1] + ', idempotency_key: "k-1"}'
    res = run(tmp_path, f'''
        - name: retries
          sequence:
            - request: {retry}
              expect: {{decision: allow, limits: [{{used: 70, outcome: reserved}}, {{outcome: reserved}}]}}
            - request: {retry}
              repeat: 3
              expect: {{decision: allow, limits: [{{used: 70, outcome: replayed}}, {{used: 1, outcome: replayed}}]}}
    ''')
    assert res.cases[0].passed, res.cases[0].summary()


def test_a_set_without_limits_runs_sequences_on_the_suite_engine(tmp_path):
    res = run(tmp_path, '''
        - name: reads
          sequence:
            - request: {principal: {id: "agent:a", kind: agent}, action: read, resource: {type: order}}
              repeat: 3
              expect: {decision: allow, rules: [readers]}
    ''', policy='@id("readers")\npermit agent to read on order because "agents read"\n')
    assert res.cases[0].passed, res.cases[0].summary()


@pytest.mark.parametrize("case,words", [
    ('{name: x, sequence: []}', "sequence must be a non-empty list"),
    ('{name: x, sequence: {request: {}}}', "sequence must be a non-empty list of steps, each with request and "
                                           "expect, not a mapping"),
    ('{name: x, sequence: [1]}', "sequence[0] must be a mapping"),
    ('{name: x, sequence: [{request: {}}]}', "sequence[0]: missing key 'expect'"),
    ('{name: x, sequence: [{expect: {decision: allow}}]}', "sequence[0]: missing key 'request'"),
    ('{name: x, sequence: [{request: {}, expect: {decision: allow}, repaet: 2}]}', "did you mean 'repeat'"),
    ('{name: x, sequence: [{request: {}, expect: {decision: allow}, repeat: 0}]}', "repeat must be a whole number"),
    ('{name: x, sequence: [{request: {}, expect: {decision: allow}, repeat: true}]}', "repeat must be a whole"),
    ('{name: x, sequence: [{request: {}, expect: {decision: allow}, advance: soon}]}', "not a duration"),
    ('{name: x, sequence: [{request: {}, expect: {decision: allow}, release: yes}]}', "release must be true or false"),
    ('{name: x, sequence: [{request: {}, expect: {decison: allow}}]}', "sequence[0].unknown key 'decison'"),
    ('{name: x, sequence: [{request: {}, expect: {decision: allow}, repeat: 100001}]}', "at most 100000"),
    ('{name: x, request: {}, expect: {decision: allow}, sequence: [{request: {}, expect: {decision: allow}}]}',
     "either request and expect, or sequence"),
    ('{name: x, at: "2025-01-01T00:00:00", request: {}, expect: {decision: allow}}', "has no time zone"),
    ('{name: x, at: "yesterday", request: {}, expect: {decision: allow}}', "not an RFC 3339 time"),
    ('{name: x, at: 5, request: {}, expect: {decision: allow}}', "at must be an RFC 3339 time"),
    ('{name: x, request: {}, expect: {limits: {}}}', "expect.limits must be a list"),
    ('{name: x, request: {}, expect: {limits: [{ruel: x}]}}', "did you mean 'rule'"),
    ('{name: x, request: {}, expect: {limits: [{used: "3"}]}}', "used must be a number"),
    ('{name: x, request: {}, expect: {limits: [{outcome: denied}]}}', "outcome must be one of"),
    ('{name: x, request: {}, expect: {limits: [{rule: 3}]}}', "rule must be a string"),
])
def test_malformed_sequences_are_failures_with_their_reason(tmp_path, case, words):
    res = run(tmp_path, "- " + case)
    assert res.error is None
    (c,) = res.cases
    assert not c.passed and c.reason is not None and words in c.reason, c.reason


def test_a_bad_request_in_a_sequence_names_its_step(tmp_path):
    res = run(tmp_path, f'''
        - name: x
          sequence:
            - request: {refund()}
              expect: {{decision: allow}}
            - request: {{principal: {{kind: agent}}, action: refund, resource: {{type: order}}}}
              expect: {{decision: deny}}
    ''')
    (c,) = res.cases
    assert c.reason.startswith("step 2, request 2 of the case: bad request: principal.id"), c.reason


def test_the_temporary_stores_are_removed(tmp_path):
    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "policylang-test-limits-*")))
    run(tmp_path, f'''
        - name: x
          request: {refund()}
          expect: {{decision: allow}}
        - name: y
          request: {refund()}
          expect: {{decision: deny}}
    ''')
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "policylang-test-limits-*"))) == before


def test_coverage_counts_the_steps_of_a_sequence(tmp_path):
    (tmp_path / "p.policy").write_text(POLICY)
    suite = tmp_path / "suite.yaml"
    suite.write_text(HEAD + textwrap.indent(textwrap.dedent(f'''
        - name: x
          sequence:
            - request: {refund()}
              expect: {{decision: allow}}
            - request: {{principal: {{id: "agent:a", kind: agent}}, action: read, resource: {{type: order}}}}
              expect: {{decision: allow}}
    ''').strip("\n"), "  ") + "\n")
    runner = tr.Runner(coverage=True)
    (res,) = runner.run([str(suite)])
    assert res.cases[0].passed, res.cases[0].summary()
    (cov,) = runner.coverage.values()
    assert cov.uncovered == []


def test_the_cli_runs_sequences_and_reports_the_failing_step(tmp_path):
    (tmp_path / "p.policy").write_text(POLICY)
    (tmp_path / "ok.yaml").write_text(HEAD + textwrap.indent(textwrap.dedent(f'''
        - name: three then refused
          sequence:
            - request: {refund()}
              repeat: 3
              expect: {{decision: allow}}
            - request: {refund()}
              expect: {{decision: deny}}
    ''').strip("\n"), "  ") + "\n")
    r = CliRunner().invoke(main, ["test", str(tmp_path / "ok.yaml")])
    assert r.exit_code == 0, r.output
    assert r.output.strip().endswith("1 passed, 0 failed")
    (tmp_path / "bad.yaml").write_text(HEAD + textwrap.indent(textwrap.dedent(f'''
        - name: expects a fourth allow
          sequence:
            - request: {refund()}
              repeat: 4
              expect: {{decision: allow}}
    ''').strip("\n"), "  ") + "\n")
    r = CliRunner().invoke(main, ["test", str(tmp_path / "bad.yaml"), "--junit", str(tmp_path / "j.xml")])
    assert r.exit_code == 1
    assert "at step 1, request 4 of the case" in r.output and "0 passed, 1 failed" in r.output
    assert 'message="step 1, request 4 of the case: expected decision allow, got deny"' in \
        (tmp_path / "j.xml").read_text()


def test_the_example_suite_passes():
    root = Path(__file__).resolve().parents[1]
    results = tr.Runner(coverage=True).run([str(root / "examples" / "support-refunds" / "tests")])
    assert all(s.error is None for s in results)
    passed, failed = tr.totals(results)
    assert failed == 0 and passed >= 10
