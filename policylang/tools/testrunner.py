"""YAML test suites for policy sets: loading, running, coverage and JUnit XML (docs/cli.md).

A suite is a YAML file::

    policies: ../policies                      # a .policy file or directory, relative to this file
    entities: [../data/users.entities.json]    # optional: more entity data, relative to this file
    approved: [apr_ok]                         # optional: approval ids the approval checker accepts
    cases:
      - name: coder reads its own tenant's repo
        request: {principal: {...}, action: read, resource: {...}}
        expect:
          decision: allow                      # allow | deny | require_approval
          rules: [coder-reads-own-repos]       # optional; exact, in order
          reasons: [...]                       # optional; exact, in order
          approvers: [...]                     # optional; exact, in order
          grants: [{scopes: [...], ttl: 600}]  # optional; one entry per grant, each comparing
                                               # only the keys it gives (rule, scopes, ttl)
          errors: [{rule: some-rule}]          # optional (an extension): like grants, with
                                               # the keys rule and message
          limits: [{rule: r, outcome: refused}] # optional: like grants, with the keys of a
                                               # decision's limits entries
      - name: the 21st refund in an hour is refused   # a sequence (docs/cli.md#sequences)
        at: "2025-01-01T10:00:00Z"             # optional: the limit clock's start
        sequence:
          - request: {...}
            repeat: 20                         # optional: send it this many times
            expect: {decision: allow}          # compared on every one of them
          - advance: 59m                       # optional: move the clock first
            request: {...}
            release: true                      # optional: give each allow's reservation back
            expect: {decision: deny}

A set with ``limit`` clauses (docs/language.md#limits) gets, for each case, a fresh limit
store (SQLite in a temporary directory, removed after the case) and a clock that only
moves when a step says ``advance``; a sequence's steps share that store, so the n-th
request of a case can be refused.

Everything that can go wrong with a suite is a *failure with its reason*, never an
exception: a file that is not YAML, a missing or misspelt key, a request the engine
rejects, policies that do not load. The YAML is read with YAML 1.2-style scalars: only
``true``/``false`` are booleans (``no``, ``on`` stay strings) and dates stay strings, so a
request means what it says as JSON would.

Coverage: a rule *held* in a case when its target matched and its conditions held (or,
for a forbid or gate, its condition raised, which counts as holding: docs/language.md#evaluation-errors-fail-closed). Under
``option attenuate_delegation`` the evaluations of the delegators count too. Rules that
held only through an evaluation error are listed separately.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import yaml

from ..language.errors import PolicyError, RequestError
from ..language.policyset import merge_entities
from ..language.words import did_you_mean, parse_duration

SUITE_KEYS = ("policies", "entities", "approved", "cases", "description")
CASE_KEYS = ("name", "request", "expect", "description", "sequence", "at")
STEP_KEYS = ("name", "request", "expect", "repeat", "advance", "release")
EXPECT_KEYS = ("decision", "rules", "reasons", "grants", "approvers", "errors", "limits")
DECISIONS = ("allow", "deny", "require_approval")
GRANT_KEYS = ("rule", "scopes", "ttl")
ERROR_KEYS = ("rule", "message")
LIMIT_KEYS = ("rule", "limit", "key", "max", "used", "left", "window_end", "outcome", "needed", "reservation")
LIMIT_OUTCOMES = ("reserved", "replayed", "refused", "not_consumed", "error")
#: the limit clock of a case without ``at`` (docs/cli.md#sequences)
DEFAULT_CLOCK = "2025-01-01T00:00:00Z"
#: the most requests one case may send (the sum of its steps' ``repeat``)
MAX_SEQUENCE_REQUESTS = 100_000

_DURATION = re.compile(r"^(?:[0-9]+[dhms])+$")


# ---------------------------------------------------------------------------- YAML

class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2-style booleans, no timestamps and no duplicate keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _value in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                except TypeError:
                    continue
                if dup:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


class SuiteError(Exception):
    """A malformed suite; the message is the reason shown to the user."""


def _parse_yaml(text: str) -> tuple[Any, Any]:
    """(data, node) of a one-document YAML text; raises :class:`SuiteError`."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = e.problem or e.context or "malformed"
        raise SuiteError(f"not valid YAML: {problem}{where}") from None
    except yaml.YAMLError as e:
        raise SuiteError(f"not valid YAML: {e}") from None
    except RecursionError:
        raise SuiteError("not valid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return data, node


def _node_get(node: Any, key: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _case_lines(node: Any) -> list[int]:
    cases = _node_get(node, "cases")
    if isinstance(cases, yaml.SequenceNode):
        return [item.start_mark.line + 1 for item in cases.value]
    return []


# ---------------------------------------------------------------------------- results

@dataclass
class Mismatch:
    field: str
    expected: Any
    actual: Any


@dataclass
class CaseResult:
    suite: str
    name: str
    line: int | None
    passed: bool
    #: why the case could not be run (a malformed case or a rejected request)
    reason: str | None = None
    mismatches: list[Mismatch] = field(default_factory=list)
    expected_decision: str | None = None
    actual: dict | None = None
    explain: str | None = None
    seconds: float = 0.0
    #: for a sequence: which request differed ("step 2 (request 21 of the case)")
    step: str | None = None

    @property
    def where(self) -> str:
        return f"{self.suite}:{self.line}" if self.line else self.suite

    def summary(self) -> str:
        """One line: why it failed."""
        if self.passed:
            return "passed"
        if self.reason:
            return self.reason
        parts = []
        for m in self.mismatches:
            parts.append(f"expected {m.field} {_show(m.expected)}, got {_show(m.actual)}")
        return (f"{self.step}: " if self.step else "") + "; ".join(parts)


@dataclass
class SuiteResult:
    path: str
    policies: str | None = None
    cases: list[CaseResult] = field(default_factory=list)
    #: a malformed suite: the reason (the suite then counts as one failure)
    error: str | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        return sum(1 for c in self.cases if c.passed)

    @property
    def failed(self) -> int:
        return sum(1 for c in self.cases if not c.passed) + (1 if self.error is not None else 0)


@dataclass
class RuleCoverage:
    path: str
    rules: list  # RuleInfo, source order
    held: set[str] = field(default_factory=set)
    held_by_error: set[str] = field(default_factory=set)

    @property
    def uncovered(self) -> list:
        return [r for r in self.rules if r.id not in self.held and r.id not in self.held_by_error]

    @property
    def only_by_error(self) -> list:
        return [r for r in self.rules if r.id in self.held_by_error and r.id not in self.held]


# ---------------------------------------------------------------------------- finding suites

def find_suites(paths: Iterable[str]) -> tuple[list[str], list[SuiteResult]]:
    """The suite files under ``paths`` (a file as given; a directory's ``*.yaml``/``*.yml``,
    recursively, sorted), each once; plus a failure for each directory with none."""
    out: list[str] = []
    problems: list[SuiteResult] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)

    for given in paths:
        if os.path.isdir(given):
            found = []
            for root, dirs, files in os.walk(given):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(os.path.normpath(os.path.join(root, f)) for f in files
                             if f.endswith((".yaml", ".yml")) and not f.startswith("."))
            if not found:
                problems.append(SuiteResult(given, error=f"no test suites (*.yaml, *.yml) in {given}"))
            for p in sorted(found):
                add(p)
        else:
            add(given)
    return out, problems


# ---------------------------------------------------------------------------- validation helpers

def _unknown_keys(mapping: Mapping, known: tuple[str, ...], where: str) -> str | None:
    for key in mapping:
        if key not in known:
            return f"unknown key '{key}' in {where}{did_you_mean(key, known)}; known keys: {', '.join(known)}"
    return None


def _type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a mapping"
    return type(v).__name__


def _string_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list):
        raise SuiteError(f"{where} must be a list of strings, not {_type_name(value)}")
    for i, v in enumerate(value):
        if not isinstance(v, str):
            raise SuiteError(f"{where}[{i}] must be a string, not {_type_name(v)}")
    return list(value)


def _json_value(value: Any, where: str) -> Any:
    """A YAML value as JSON would give it; raises SuiteError for anything else."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, list):
        return [_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SuiteError(f"{where} has a key {k!r} that is not a string (quote it)")
            out[k] = _json_value(v, f"{where}.{k}")
        return out
    raise SuiteError(f"{where} is {_type_name(value)}, which is not a JSON value")


def _ttl(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SuiteError(f"{where} must be a number of seconds or a duration such as 10m, not {_type_name(value)}")
    if isinstance(value, int):
        return value
    if not _DURATION.match(value):
        raise SuiteError(f"{where} {value!r} is not a duration such as 10m or 1h30m")
    return parse_duration(value)


def _mapping_entries(value: Any, keys: tuple[str, ...], where: str):
    """``(where[i], entry)`` for each entry of a list of mappings with some of ``keys``;
    SuiteError naming the first one that is not."""
    if not isinstance(value, list):
        raise SuiteError(f"{where} must be a list, not {_type_name(value)}")
    for i, entry in enumerate(value):
        here = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise SuiteError(f"{here} must be a mapping with some of the keys {', '.join(keys)}")
        bad = _unknown_keys(entry, keys, here)
        if bad:
            raise SuiteError(bad)
        yield here, entry


def _partial_list(value: Any, keys: tuple[str, ...], where: str) -> list[dict]:
    """``grants``/``errors`` expectations: a list of mappings with a subset of ``keys``."""
    out = []
    for here, entry in _mapping_entries(value, keys, where):
        item: dict = {}
        for k, v in entry.items():
            if k == "ttl":
                item[k] = _ttl(v, f"{here}.ttl")
            elif k == "scopes":
                item[k] = _string_list(v, f"{here}.scopes")
            elif not isinstance(v, str):
                raise SuiteError(f"{here}.{k} must be a string, not {_type_name(v)}")
            else:
                item[k] = v
        out.append(item)
    return out


def parse_expect(value: Any) -> dict:
    """Validate a case's ``expect``; raises :class:`SuiteError`."""
    if not isinstance(value, dict):
        raise SuiteError(f"expect must be a mapping, not {_type_name(value)}")
    bad = _unknown_keys(value, EXPECT_KEYS, "expect")
    if bad:
        raise SuiteError(bad)
    if not value:
        raise SuiteError("expect names nothing to compare; give at least decision")
    out: dict = {}
    for key, v in value.items():
        if key == "decision":
            if v not in DECISIONS:
                raise SuiteError(f"expect.decision must be one of {', '.join(DECISIONS)}, not {_show(v)}")
            out[key] = v
        elif key in ("rules", "reasons", "approvers"):
            out[key] = _string_list(v, f"expect.{key}")
        elif key == "grants":
            out[key] = _partial_list(v, GRANT_KEYS, "expect.grants")
        elif key == "errors":
            out[key] = _partial_list(v, ERROR_KEYS, "expect.errors")
        elif key == "limits":
            out[key] = _limit_list(v, "expect.limits")
    return out


def _limit_list(value: Any, where: str) -> list[dict]:
    """``limits`` expectations: a list of mappings with some of :data:`LIMIT_KEYS`, each
    value as JSON would give it (``key`` may be a number, ``window_end`` null)."""
    out = []
    for here, entry in _mapping_entries(value, LIMIT_KEYS, where):
        item = _json_value(entry, here)
        for k in ("rule", "limit"):
            if k in item and not isinstance(item[k], str):
                raise SuiteError(f"{here}.{k} must be a string, not {_type_name(item[k])}")
        for k in ("max", "used", "left", "needed"):
            if k in item and (isinstance(item[k], bool) or not isinstance(item[k], (int, float))):
                raise SuiteError(f"{here}.{k} must be a number, not {_type_name(item[k])}")
        if "outcome" in item and item["outcome"] not in LIMIT_OUTCOMES:
            raise SuiteError(f"{here}.outcome must be one of {', '.join(LIMIT_OUTCOMES)}, not {_show(item['outcome'])}")
        out.append(item)
    return out


def compare(expect: Mapping, actual: Mapping) -> list[Mismatch]:
    """Mismatches of a decision dict (docs/requests.md#decision) against a parsed ``expect``."""
    out = []
    for key in EXPECT_KEYS:
        if key not in expect:
            continue
        want, got = expect[key], actual.get(key)
        if key in ("grants", "errors", "limits"):
            got = list(got or [])
            ok = len(want) == len(got) and all(
                all(k in g and g[k] == w[k] for k in w) for w, g in zip(want, got))
            if not ok:
                # the actual entries cut to the keys the expectation gives, when the counts agree
                shown = [{k: g.get(k) for k in w} for w, g in zip(want, got)] if len(got) == len(want) else got
                out.append(Mismatch(key, want, shown))
        elif want != got:
            out.append(Mismatch(key, want, got))
    return out


def _show(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v


# ---------------------------------------------------------------------------- running

class Runner:
    """Runs suites; loads each policy set once per run; collects coverage if asked."""

    def __init__(self, coverage: bool = False):
        self.coverage_enabled = coverage
        #: realpath of a policies PATH -> (PolicySet or None, error text or None)
        self._sets: dict[str, tuple[Any, str | None]] = {}
        #: realpath -> RuleCoverage, in first-use order
        self.coverage: dict[str, RuleCoverage] = {}

    # ------------------------------------------------------------ public

    def run(self, paths: Iterable[str]) -> list[SuiteResult]:
        suites, problems = find_suites(paths)
        return problems + [self.run_suite(p) for p in suites]

    def run_suite(self, path: str) -> SuiteResult:
        start = time.perf_counter()
        result = SuiteResult(path)
        try:
            self._run_suite(path, result)
        except SuiteError as e:
            result.error = str(e)
        except Exception as e:  # a bug of ours must still not become a traceback for the user
            result.error = f"internal error: {type(e).__name__}: {e} (please report this)"
        result.seconds = time.perf_counter() - start
        return result

    # ------------------------------------------------------------ internals

    def _run_suite(self, path: str, result: SuiteResult) -> None:
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise SuiteError(f"cannot read: {e.strerror or e}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise SuiteError(f"not UTF-8 (byte {e.start})") from None
        data, node = _parse_yaml(text)
        if not isinstance(data, dict):
            raise SuiteError("a suite must be a YAML mapping with the keys policies and cases"
                             + ("" if data is None else f", not {_type_name(data)}"))
        bad = _unknown_keys(data, SUITE_KEYS, "the suite")
        if bad:
            raise SuiteError(bad)
        for key in ("policies", "cases"):
            if key not in data:
                raise SuiteError(f"missing key '{key}'")
        base = os.path.dirname(path)
        policies = data["policies"]
        if not isinstance(policies, str) or not policies:
            raise SuiteError(f"policies must be a path (a string), not {_type_name(policies)}")
        policies_path = _relative_to(base, policies)
        result.policies = policies_path

        entity_files = data.get("entities")
        if entity_files is None:
            entity_files = []
        elif isinstance(entity_files, str):
            entity_files = [entity_files]
        entity_files = _string_list(entity_files, "entities")
        entities = self._entities([_relative_to(base, p) for p in entity_files])

        approved = data.get("approved")
        approved = set(_string_list(approved, "approved")) if approved is not None else None

        cases = data["cases"]
        if not isinstance(cases, list):
            raise SuiteError(f"cases must be a list, not {_type_name(cases)}")
        if not cases:
            raise SuiteError("cases is empty: a suite needs at least one case")

        policy_set = self._policy_set(policies_path)
        from ..evaluation.engine import Engine

        from ..evaluation.limits import set_has_limits

        checker = _approval_checker(approved) if approved is not None else None

        def new_engine(**limits):
            return Engine(policy_set, entities=entities, approvals=checker, strict=True, **limits)

        # a set with limits: each case gets its own engine over a fresh store (_LimitCase)
        engine = None if set_has_limits(policy_set) else new_engine()
        cov = self._coverage_for(policies_path, policy_set) if self.coverage_enabled else None

        lines = _case_lines(node)
        for i, case in enumerate(cases):
            line = lines[i] if i < len(lines) else None
            result.cases.append(self._run_case(path, i, line, case, engine, policy_set, entities, checker, cov,
                                               new_engine))

    def _entities(self, paths: list[str]) -> dict | None:
        if not paths:
            return None
        from ..language.loader import parse_entities

        merged: dict = {}
        for p in paths:
            try:
                with open(p, "rb") as f:
                    text = f.read().decode("utf-8")
            except OSError as e:
                raise SuiteError(f"entities file {p}: cannot read: {e.strerror or e}") from None
            except UnicodeDecodeError as e:
                raise SuiteError(f"entities file {p}: not UTF-8 (byte {e.start})") from None
            data, problem = parse_entities(text, p)
            if problem is not None:
                raise SuiteError(problem.header())
            merge_entities(merged, data)
        return merged

    def _policy_set(self, path: str):
        key = os.path.realpath(path)
        if key not in self._sets:
            from ..language.loader import load

            try:
                ps = load(path)
                err = None
                if not ps.files:
                    ps, err = None, f"policies {path}: no .policy files there"
            except PolicyError as e:
                errors = [d for d in e.diagnostics if d.severity == "error"]
                rendered = "\n".join(d.render() for d in errors)
                ps, err = None, f"policies {path} do not load ({len(errors)} error{'s' if len(errors) != 1 else ''}):\n{rendered}"
            self._sets[key] = (ps, err)
        ps, err = self._sets[key]
        if err is not None:
            raise SuiteError(err)
        return ps

    def _coverage_for(self, path: str, policy_set) -> RuleCoverage:
        key = os.path.realpath(path)
        if key not in self.coverage:
            self.coverage[key] = RuleCoverage(path, list(policy_set.rules))
        return self.coverage[key]

    def _run_case(self, suite: str, index: int, line: int | None, case: Any, engine, policy_set,
                  entities, checker, cov: RuleCoverage | None, new_engine: Callable | None = None) -> CaseResult:
        """One case. ``engine``: the suite's engine; None for a set with limits, whose
        case gets ``new_engine(limits=store, clock=clock)`` over a fresh store."""
        start = time.perf_counter()
        name = f"case {index + 1}"
        if isinstance(case, dict) and isinstance(case.get("name"), str) and case["name"].strip():
            name = case["name"]
        result = CaseResult(suite, name, line, False)
        limit_case = None
        try:
            if not isinstance(case, dict):
                raise SuiteError(f"a case must be a mapping with name, request and expect, not {_type_name(case)}")
            bad = _unknown_keys(case, CASE_KEYS, "the case")
            if bad:
                raise SuiteError(bad)
            if "name" not in case:
                raise SuiteError("missing key 'name'")
            if not isinstance(case["name"], str) or not case["name"].strip():
                raise SuiteError(f"name must be a non-empty string, not {_type_name(case['name'])}")
            steps = _parse_steps(case)
            start_at = _clock_start(case.get("at"))
            if engine is None:
                limit_case = _LimitCase(new_engine, start_at)
                engine = limit_case.engine
            self._run_steps(result, steps, engine, limit_case, policy_set, entities, checker, cov)
        except SuiteError as e:
            result.passed, result.reason = False, str(e)
        except Exception as e:
            result.passed = False
            result.reason = f"internal error: {type(e).__name__}: {e} (please report this)"
        finally:
            if limit_case is not None:
                limit_case.close()
        result.seconds = time.perf_counter() - start
        return result

    def _run_steps(self, result: CaseResult, steps: list["_Step"], engine, limit_case, policy_set, entities,
                   checker, cov: RuleCoverage | None) -> None:
        """Send each step's request ``repeat`` times; stop at the first that differs."""
        sequence = len(steps) > 1 or steps[0].repeat > 1 or steps[0].sequence
        n = 0
        for si, step in enumerate(steps):
            if step.advance and limit_case is not None:
                limit_case.now += step.advance
            result.expected_decision = step.expect.get("decision")
            for _ in range(step.repeat):
                n += 1
                where = f"step {si + 1}{f' ({step.name})' if step.name else ''}, request {n} of the case"
                try:
                    decision = engine.decide(step.request)
                except RequestError as e:
                    raise SuiteError(f"{where}: bad request: {e}" if sequence else f"bad request: {e}") from None
                actual = decision.to_dict()
                mismatches = compare(step.expect, actual)
                if step.release:
                    _release(engine, decision, where)
                if mismatches:
                    if cov is not None:
                        _record_coverage(cov, policy_set, step.request, entities, checker)
                    result.actual, result.mismatches = actual, mismatches
                    result.step = where if sequence else None
                    result.explain = _safe_explain(decision)
                    result.passed = False
                    return
                result.actual = actual
            if cov is not None:
                _record_coverage(cov, policy_set, step.request, entities, checker)
        result.passed = True

@dataclass
class _Step:
    request: dict
    expect: dict
    repeat: int = 1
    advance: int = 0
    release: bool = False
    name: str | None = None
    #: written as a sequence step (else a plain case's request/expect)
    sequence: bool = False


def _parse_steps(case: Mapping) -> list[_Step]:
    """A case's requests: its ``request``/``expect``, or its ``sequence`` (docs/cli.md#sequences)."""
    if "sequence" in case:
        for key in ("request", "expect"):
            if key in case:
                raise SuiteError(f"a case has either request and expect, or sequence, not both "
                                 f"(move '{key}' into a step of the sequence)")
        seq = case["sequence"]
        if not isinstance(seq, list) or not seq:
            raise SuiteError("sequence must be a non-empty list of steps, each with request and expect"
                             + ("" if isinstance(seq, list) else f", not {_type_name(seq)}"))
        steps = [_parse_step(item, f"sequence[{i}]") for i, item in enumerate(seq)]
        total = sum(s.repeat for s in steps)
        if total > MAX_SEQUENCE_REQUESTS:
            raise SuiteError(f"sequence sends {total} requests; at most {MAX_SEQUENCE_REQUESTS} per case")
        return steps
    for key in ("request", "expect"):
        if key not in case:
            raise SuiteError(f"missing key '{key}'")
    expect = parse_expect(case["expect"])
    return [_Step(_json_value(case["request"], "request"), expect)]


def _parse_step(item: Any, where: str) -> _Step:
    if not isinstance(item, dict):
        raise SuiteError(f"{where} must be a mapping with request and expect, not {_type_name(item)}")
    bad = _unknown_keys(item, STEP_KEYS, where)
    if bad:
        raise SuiteError(bad)
    for key in ("request", "expect"):
        if key not in item:
            raise SuiteError(f"{where}: missing key '{key}'")
    try:
        expect = parse_expect(item["expect"])
    except SuiteError as e:
        raise SuiteError(f"{where}.{e}") from None
    repeat = item.get("repeat", 1)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise SuiteError(f"{where}.repeat must be a whole number of at least 1, not {_show(repeat)}")
    advance = 0
    if "advance" in item:
        advance = _ttl(item["advance"], f"{where}.advance")
        if advance < 0:
            raise SuiteError(f"{where}.advance must not be negative")
    release = item.get("release", False)
    if not isinstance(release, bool):
        raise SuiteError(f"{where}.release must be true or false, not {_type_name(release)}")
    name = item.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise SuiteError(f"{where}.name must be a non-empty string, not {_type_name(name)}")
    return _Step(_json_value(item["request"], f"{where}.request"), expect, repeat, advance, release, name, True)


def _clock_start(value: Any) -> float:
    """A case's ``at``: an RFC 3339 time with a zone (``2025-01-01T10:00:00Z``)."""
    from datetime import datetime

    text = DEFAULT_CLOCK if value is None else value
    if not isinstance(text, str):
        raise SuiteError(f"at must be an RFC 3339 time such as {DEFAULT_CLOCK}, not {_type_name(text)}")
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise SuiteError(f"at {text!r} is not an RFC 3339 time such as {DEFAULT_CLOCK}") from None
    if t.tzinfo is None:
        raise SuiteError(f"at {text!r} has no time zone: write {text}Z for UTC")
    return t.timestamp()


class _LimitCase:
    """A fresh limit store for one case of a set with limits: SQLite in a temporary
    directory (removed by :meth:`close`), and the clock the case's steps move."""

    def __init__(self, new_engine: Callable, now: float):
        import tempfile

        from ..privilege.store.sqlite_store import SQLiteStore

        self.now = now
        self._dir = tempfile.TemporaryDirectory(prefix="policylang-test-limits-")
        # synchronous=normal: nothing here must survive a power cut, and a sequence of
        # many requests should not wait for an fsync each
        self.store = SQLiteStore(os.path.join(self._dir.name, "limits.db"), synchronous="normal")
        try:
            self.engine = new_engine(limits=self.store, clock=lambda: self.now)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        try:
            self.store.close()
        finally:
            self._dir.cleanup()


def _release(engine, decision, where: str) -> None:
    """A step's ``release: true``: give the allow's reservation back (docs/language.md#limits)."""
    from ..evaluation.limits import reservation_of

    rid = reservation_of(decision)
    if rid is None:
        return
    try:
        engine.release(rid)
    except Exception as e:
        raise SuiteError(f"{where}: the reservation could not be released: {e}") from None


def _relative_to(base: str, p: str) -> str:
    return os.path.normpath(p if os.path.isabs(p) else os.path.join(base, p))


def _approval_checker(approved: set[str]) -> Callable:
    def checker(approval_id: str, request: Any, approvers: list) -> bool:
        return approval_id in approved
    return checker


def _safe_explain(decision) -> str:
    try:
        return decision.explain()
    except Exception as e:  # the trace is a help, not the result
        return f"(no trace: {type(e).__name__}: {e})"


def _record_coverage(cov: RuleCoverage, policy_set, request: Mapping, entities, checker) -> None:
    from ..evaluation import interpreter
    from ..evaluation.decision import ALLOW, attenuate
    from ..evaluation.request import entity_lookup, parse_request

    def record(req, approvals):
        ts = interpreter.traces(policy_set, req)
        for t in ts:
            if t.held:
                (cov.held_by_error if t.error is not None else cov.held).add(t.info.id)
        return interpreter.combine_traces(policy_set, req, ts, approvals)

    req = parse_request(request, entity_lookup(policy_set.entities, entities), policy_set.entity_authority)
    decision = record(req, checker)
    if policy_set.options.attenuate_delegation and req.chain:
        # the delegators' rules count too, as far as the docs/language.md#delegation-attenuation loop evaluates them
        attenuate(decision, req.chain, lambda i: record(req.as_delegator(i), None).decision == ALLOW,
                  req.action.name, policy_set.version)


# ---------------------------------------------------------------------------- reports

def render_failure(case: CaseResult) -> str:
    """A failed case: where and what, expected vs actual, then the explain trace."""
    lines = [f"FAIL {case.where}: {case.name}"]
    if case.reason:
        lines.extend("  " + ln for ln in case.reason.splitlines())
        return "\n".join(lines)
    if case.step:
        lines.append(f"  at {case.step}")
    actual = case.actual or {}
    lines.append(f"  expected decision: {case.expected_decision or '(any)'}")
    lines.append(f"  actual decision:   {actual.get('decision')}")
    for m in case.mismatches:
        if m.field == "decision":
            continue
        lines.append(f"  expected {m.field}: {_show(m.expected)}")
        lines.append(f"  actual {m.field}:   {_show(m.actual)}")
    if case.explain:
        lines.append("  explain:")
        lines.extend("    " + ln for ln in case.explain.splitlines())
    return "\n".join(lines)


def render_suite_error(suite: SuiteResult) -> str:
    reason = suite.error or ""
    first, *rest = reason.splitlines() or [""]
    return "\n".join([f"FAIL {suite.path}: malformed suite: {first}"] + ["  " + ln for ln in rest])


def render_coverage(coverage: Iterable[RuleCoverage]) -> str:
    lines = []
    for cov in coverage:
        total = len(cov.rules)
        covered = total - len(cov.uncovered)
        lines.append(f"coverage of {cov.path}: {covered} of {total} rules held in some case")
        for r in cov.uncovered:
            lines.append(f"  {r.location}: {r.id} ({r.effect.replace('_', ' ')}) held in no case")
        for r in cov.only_by_error:
            lines.append(f"  {r.location}: {r.id} ({r.effect.replace('_', ' ')}) held only when its condition "
                         "raised (fail closed)")
    return "\n".join(lines)


def totals(results: Iterable[SuiteResult]) -> tuple[int, int]:
    passed = failed = 0
    for s in results:
        passed += s.passed
        failed += s.failed
    return passed, failed


def junit_xml(results: list[SuiteResult]) -> str:
    """JUnit XML (testsuites/testsuite/testcase/failure) for CI systems."""
    import xml.etree.ElementTree as ET

    passed, failed = totals(results)
    root = ET.Element("testsuites", {
        "name": "policylang", "tests": str(passed + failed), "failures": str(failed), "errors": "0",
        "time": f"{sum(s.seconds for s in results):.6f}",
    })
    for s in results:
        classname = _classname(s.path)
        tests = len(s.cases) + (1 if s.error is not None else 0)
        el = ET.SubElement(root, "testsuite", {
            "name": _xml_text(s.path), "tests": str(tests), "failures": str(s.failed), "errors": "0", "skipped": "0",
            "time": f"{s.seconds:.6f}", "file": s.path,
        })
        if s.error is not None:
            tc = ET.SubElement(el, "testcase", {"name": "(suite)", "classname": classname, "file": s.path,
                                                "time": "0"})
            first = s.error.splitlines()[0] if s.error else "malformed suite"
            f = ET.SubElement(tc, "failure", {"message": _xml_text(f"malformed suite: {first}"), "type": "MalformedSuite"})
            f.text = _xml_text(s.error)
        for c in s.cases:
            attrs = {"name": _xml_text(c.name), "classname": classname, "file": s.path, "time": f"{c.seconds:.6f}"}
            if c.line:
                attrs["line"] = str(c.line)
            tc = ET.SubElement(el, "testcase", attrs)
            if not c.passed:
                f = ET.SubElement(tc, "failure", {"message": _xml_text(c.summary()),
                                                  "type": "MalformedCase" if c.reason else "DecisionMismatch"})
                f.text = _xml_text(render_failure(c))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """Text that XML 1.0 can carry (control characters become U+FFFD)."""
    return _XML_INVALID.sub("\ufffd", text)


def _classname(path: str) -> str:
    stem = re.sub(r"\.ya?ml$", "", path.replace(os.sep, "/")).lstrip("./")
    return stem.replace("/", ".")
