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
CASE_KEYS = ("name", "request", "expect", "description")
EXPECT_KEYS = ("decision", "rules", "reasons", "grants", "approvers", "errors")
DECISIONS = ("allow", "deny", "require_approval")
GRANT_KEYS = ("rule", "scopes", "ttl")
ERROR_KEYS = ("rule", "message")

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
        return "; ".join(parts)


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


def _partial_list(value: Any, keys: tuple[str, ...], where: str) -> list[dict]:
    """``grants``/``errors`` expectations: a list of mappings with a subset of ``keys``."""
    if not isinstance(value, list):
        raise SuiteError(f"{where} must be a list, not {_type_name(value)}")
    out = []
    for i, entry in enumerate(value):
        here = f"{where}[{i}]"
        if not isinstance(entry, dict):
            raise SuiteError(f"{here} must be a mapping with some of the keys {', '.join(keys)}")
        bad = _unknown_keys(entry, keys, here)
        if bad:
            raise SuiteError(bad)
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
    return out


def compare(expect: Mapping, actual: Mapping) -> list[Mismatch]:
    """Mismatches of a decision dict (docs/requests.md#decision) against a parsed ``expect``."""
    out = []
    for key in EXPECT_KEYS:
        if key not in expect:
            continue
        want, got = expect[key], actual.get(key)
        if key in ("grants", "errors"):
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

        checker = _approval_checker(approved) if approved is not None else None
        engine = Engine(policy_set, entities=entities, approvals=checker, strict=True)
        cov = self._coverage_for(policies_path, policy_set) if self.coverage_enabled else None

        lines = _case_lines(node)
        for i, case in enumerate(cases):
            line = lines[i] if i < len(lines) else None
            result.cases.append(self._run_case(path, i, line, case, engine, policy_set, entities, checker, cov))

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
                  entities, checker, cov: RuleCoverage | None) -> CaseResult:
        start = time.perf_counter()
        name = f"case {index + 1}"
        if isinstance(case, dict) and isinstance(case.get("name"), str) and case["name"].strip():
            name = case["name"]
        result = CaseResult(suite, name, line, False)
        try:
            if not isinstance(case, dict):
                raise SuiteError(f"a case must be a mapping with name, request and expect, not {_type_name(case)}")
            bad = _unknown_keys(case, CASE_KEYS, "the case")
            if bad:
                raise SuiteError(bad)
            for key in ("name", "request", "expect"):
                if key not in case:
                    raise SuiteError(f"missing key '{key}'")
            if not isinstance(case["name"], str) or not case["name"].strip():
                raise SuiteError(f"name must be a non-empty string, not {_type_name(case['name'])}")
            expect = parse_expect(case["expect"])
            result.expected_decision = expect.get("decision")
            request = _json_value(case["request"], "request")
            try:
                decision = engine.decide(request)
            except RequestError as e:
                raise SuiteError(f"bad request: {e}") from None
            actual = decision.to_dict()
            result.actual = actual
            result.mismatches = compare(expect, actual)
            result.passed = not result.mismatches
            if not result.passed:
                result.explain = _safe_explain(decision)
            if cov is not None:
                _record_coverage(cov, policy_set, request, entities, checker)
        except SuiteError as e:
            result.passed, result.reason = False, str(e)
        except Exception as e:
            result.passed = False
            result.reason = f"internal error: {type(e).__name__}: {e} (please report this)"
        result.seconds = time.perf_counter() - start
        return result


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
