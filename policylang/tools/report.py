"""``policylang report PATH --controls``: a policy set's rules mapped to the OWASP Top 10
for Agentic Applications (2026), the NIST AI RMF 1.0 and CSA MAESTRO's layers
(docs/controls.md).

A rule covers a control either because it says so (an ``@tag`` naming the control,
docs/controls.md#tags) or because of what it does (docs/controls.md#inference: an approval
gate, a delegation or risk condition, a limit, a short grant …); each inference carries its
reason. Lint findings that weaken a rule (a rule that can never decide, an attribute the
caller can set …) are listed against the controls that rule covers and the controls the
lint itself concerns; a finding never counts as coverage. Controls no rule covers are
listed apart.

:func:`build_report` takes a loaded :class:`~policylang.language.policyset.PolicySet`;
:func:`render` gives Markdown, HTML (self-contained, every value escaped) or JSON
(docs/controls.md#json). Nothing here has process-wide effects; the solver-proven lints
are imported only when asked for and only if present.
"""

from __future__ import annotations

import bisect
import html
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..language import nodes
from ..language.errors import Diagnostic
from ..language.policyset import PolicySet, RuleInfo
from ..language.source import Span
from .controls import (
    FRAMEWORKS,
    MAESTRO,
    NIST,
    OWASP,
    Control,
    Framework,
    close_prefix,
    resolve_tag,
    shown_tag,
)

SCHEMA = "policylang.controls-report/1"

#: a grant whose ttl is at most this many seconds counts as short-lived (ASI03)
SHORT_GRANT_TTL = 15 * 60

#: diagnostic codes of the report's own checks of ``@tag`` values (docs/controls.md#tags)
TAG_CODES = {
    "R001": ("error", "Control tag naming no known control"),
    "R002": ("warning", "Tag prefix close to a control framework's"),
}

#: lint codes that weaken the rule they are on, and the controls each one concerns by
#: itself (docs/controls.md#lints)
WEAKENING_LINTS: dict[str, tuple[tuple[str, ...], str]] = {
    "W102": (("ASI02", "ASI03"), "an over-broad permit (every action on every resource) grants more than a task needs"),
    "W103": ((), ("an optional attribute read without a `has` guard raises for a request without it, so the "
                 "rule does not apply (a permit) or always holds (a forbid) for such requests")),
    "W104": ((), "the rule can never determine a decision: an unconditional forbid covers its whole target"),
    "W105": (("ASI09", "MANAGE 2"), "a high-impact action is permitted to agents with no approval gate covering it"),
    "W108": (("ASI03",), "the rule reads an attribute the caller can set, so the caller can switch it off"),
    "W109": (("ASI08",), "the limit has one counter for every request, so one caller can use up every caller's budget"),
    "W112": ((), ("a substring test between two string attributes is easily satisfied where list membership "
                 "may be meant")),
    # the solver-proven lints of `check --prove` (docs/analysis.md#proven-lints); its N201
    # notes ("not proven: …") weaken nothing and are not listed
    "W201": ((), "proven: the rule can never determine a decision"),
    "W202": ((), "proven: the permit is subsumed by another permit, so it adds nothing the other does not allow"),
    "W203": ((), "proven: a forbid blocks everything this permit allows"),
}

#: words in action and resource type names that name a kind of tool (docs/controls.md#inference)
NAME_WORDS: tuple[tuple[str, frozenset[str], str, tuple[str, ...]], ...] = (
    ("code execution", frozenset({"exec", "execute", "eval", "shell", "spawn", "subprocess", "command", "cmd",
                                  "script", "code", "run", "bash", "python", "sandbox"}),
     "unexpected code execution", ("ASI05",)),
    ("memory or context", frozenset({"memory", "memories", "context", "vector", "vectors", "embedding",
                                     "embeddings", "knowledge", "rag", "index"}),
     "poisoned memory or context", ("ASI06", "L2")),
    ("the supply chain", frozenset({"install", "package", "packages", "dependency", "dependencies", "plugin",
                                    "plugins", "registry", "publish", "extension", "extensions"}),
     "agentic supply chain changes", ("ASI04",)),
    ("agent-to-agent messaging", frozenset({"message", "messages", "handoff", "a2a", "delegate", "broadcast"}),
     "inter-agent communication", ("ASI07", "L7")),
)


@dataclass(frozen=True)
class Coverage:
    """One rule covering one control: by its ``@tag`` (``how == "tag"``) or inferred."""

    rule: RuleInfo
    how: str
    reason: str
    tag: str | None = None

    def to_dict(self) -> dict:
        return {"rule": self.rule.id, "path": self.rule.path, "line": self.rule.line,
                "column": self.rule.rule.span.column, "effect": self.rule.effect, "how": self.how,
                "tag": self.tag, "reason": self.reason}


@dataclass(frozen=True)
class Finding:
    """A lint finding that weakens a control."""

    code: str
    severity: str
    message: str
    path: str
    line: int
    column: int
    rule: str | None
    source: str  # "lint" or "proven"
    reason: str

    def to_dict(self) -> dict:
        return {"code": self.code, "severity": self.severity, "message": self.message, "path": self.path,
                "line": self.line, "column": self.column, "rule": self.rule, "source": self.source,
                "reason": self.reason}


@dataclass
class ControlsReport:
    path: str
    version: str
    rules: int
    coverage: dict[tuple[str, str], list[Coverage]] = field(default_factory=dict)
    findings: dict[tuple[str, str], list[Finding]] = field(default_factory=dict)
    #: the report's own diagnostics (R001, R002), sorted by position
    diagnostics: list[Diagnostic] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def rules_for(self, control: Control) -> list[Coverage]:
        return self.coverage.get((control.framework, control.id), [])

    def findings_for(self, control: Control) -> list[Finding]:
        return self.findings.get((control.framework, control.id), [])

    def covered(self, control: Control) -> bool:
        if self.rules_for(control):
            return True
        framework = _FRAMEWORK_OF[control.framework]
        return any(self.rules_for(c) for c in framework.controls if c.parent == control.id)

    def uncovered(self, framework: Framework) -> list[Control]:
        return [c for c in framework.controls if not self.covered(c)]

    @property
    def errors(self) -> int:
        return sum(1 for d in self.diagnostics if d.severity == "error")

    def to_dict(self) -> dict:
        frameworks = []
        for fw in FRAMEWORKS:
            controls = []
            for c in fw.controls:
                controls.append({"id": c.id, "title": c.title, "parent": c.parent, "covered": self.covered(c),
                                 "rules": [cov.to_dict() for cov in self.rules_for(c)],
                                 "findings": [f.to_dict() for f in self.findings_for(c)]})
            frameworks.append({"id": fw.key, "name": fw.name, "version": fw.version, "source": fw.source,
                               "controls": controls, "uncovered": [c.id for c in self.uncovered(fw)]})
        return {"schema": SCHEMA,
                "policy_set": {"path": self.path, "version": self.version, "rules": self.rules},
                "frameworks": frameworks,
                "diagnostics": [d.to_dict() for d in self.diagnostics],
                "notes": list(self.notes)}


_FRAMEWORK_OF = {fw.key: fw for fw in FRAMEWORKS}
_ANY_CONTROL = {c.id: c for fw in FRAMEWORKS for c in fw.controls}


# ------------------------------------------------------------------ tags

def _value_span(policy_set: PolicySet, ann: nodes.Annotation) -> Span:
    """The span of an annotation's string (where ``@tag("…")`` puts it), else the annotation's."""
    span = ann.span
    text = policy_set.sources.get(span.path)
    if text is None or not (0 <= span.start < span.end <= len(text)):
        return span
    quote = text.find('"', span.start, span.end)
    if quote < 0 or "\n" in text[span.start:quote]:
        return span
    close = text.rfind('"', quote + 1, span.end)
    if close < 0:
        return span
    col = span.column + (quote - span.start)
    return Span(span.path, span.line, col, span.line, col + (close + 1 - quote), quote, close + 1)


def _tag_coverage(policy_set: PolicySet, info: RuleInfo, report: ControlsReport) -> Iterable[tuple[Control, Coverage]]:
    for ann in info.rule.annotations:
        if ann.name != "tag" or ann.value is None:
            continue
        meaning = resolve_tag(ann.value)
        if meaning.kind == "control":
            c = meaning.control
            yield c, Coverage(info, "tag", f"tagged {shown_tag(ann.value)!r}", ann.value)
        elif meaning.kind == "unknown":
            report.diagnostics.append(_diagnostic("R001", f"unknown control in @tag: {meaning.problem} "
                                                          f"(docs/controls.md#tags)", _value_span(policy_set, ann)))
        else:
            hint = close_prefix(ann.value)
            if hint:
                report.diagnostics.append(_diagnostic(
                    "R002", f"tag {shown_tag(ann.value)!r} is not read as a control: its prefix is not a framework's; "
                            f"did you mean '{hint}:'? (docs/controls.md#tags)", _value_span(policy_set, ann)))


def _diagnostic(code: str, message: str, span: Span) -> Diagnostic:
    return Diagnostic(code, TAG_CODES[code][0], message, span)  # type: ignore[arg-type]


# ------------------------------------------------------------------ inference

_ROOTS_READ = ("delegation", "risk", "intent")


def _reads(rule: nodes.Rule) -> dict[str, set[str]]:
    """root name -> the attributes the rule's conditions read from it (empty: the root read
    whole), and ``"call:" + name`` for every function called. A name some quantifier of the
    condition binds is not read as a root anywhere in that condition (fewer claims, never
    more)."""
    out: dict[str, set[str]] = {}
    for cond in rule.conditions:
        found = list(nodes.walk(cond.expr))
        bound = {n.var for n in found if isinstance(n, nodes.Quantifier)}
        for node in found:
            if isinstance(node, nodes.Attr) and isinstance(node.obj, nodes.Name) and node.obj.name not in bound:
                out.setdefault(node.obj.name, set()).add(node.name)
            elif isinstance(node, nodes.Has) and isinstance(node.operand, nodes.Name) \
                    and node.operand.name not in bound:
                out.setdefault(node.operand.name, set()).add(node.name)
            elif isinstance(node, nodes.Call):
                out.setdefault("call:" + node.func, set())
            elif isinstance(node, nodes.Name) and node.name in _ROOTS_READ and node.name not in bound:
                out.setdefault(node.name, set())
    return out


def _words(name: str) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", name.lower()) if w}


def _target_text(rule: nodes.Rule) -> str:
    t = rule.target
    acts = "*" if t.actions is None else ", ".join(t.actions)
    res = "*" if t.resources is None else ", ".join(r.name for r in t.resources)
    return f"{acts} on {res}"


def _effect_word(rule: nodes.Rule) -> str:
    return {"permit": "permits", "forbid": "forbids", "require_approval": "gates"}[rule.effect]


Inference = list[tuple[tuple[str, ...], str]]


def infer(info: RuleInfo) -> Inference:
    """What a rule covers by what it does: (control ids, reason) pairs (docs/controls.md#inference)."""
    rule = info.rule
    what = _target_text(rule)
    guard = rule.effect in ("forbid", "require_approval")
    reads = _reads(rule)
    return (_by_effect(rule, what) + _by_delegation(reads.get("delegation", set()))
            + _by_signals(rule, reads, what, guard) + _by_bounds(rule) + (_by_names(rule) if guard else []))


def _by_effect(rule: nodes.Rule, what: str) -> Inference:
    """An approval gate is human oversight; a forbid, a guardrail outside the agent."""
    if rule.effect == "require_approval":
        by = ", ".join(rule.by.approvers) if rule.by else "an approver"
        return [(("ASI09", "MAP 3", "MANAGE 2", "L6"),
                 f"approval gate: a person ({by}) confirms {what} before it happens (human oversight)")]
    if rule.effect != "forbid":
        return []
    out: Inference = [(("L6",), f"a guardrail enforced outside the agent: forbids {what}")]
    if rule.target.actions is not None:
        out.append((("ASI02", "L3"), f"forbids the named actions {what}, bounding how tools are used"))
    return out


#: what reading each part of ``delegation`` covers
_DELEGATION_READS = (
    ("depth", ("ASI03", "ASI07", "L7"), "reads delegation.depth: bounds how far authority is passed on between agents"),
    ("root", ("ASI03", "L7"), ("reads delegation.root: ties the action to the principal at the root of the delegation "
                              "chain")),
    ("chain", ("ASI03", "ASI07", "L7"), "reads delegation.chain: checks every agent the request passed through"),
)


def _by_delegation(read: set[str]) -> Inference:
    return [(controls, reason) for part, controls, reason in _DELEGATION_READS if part in read]


def _by_signals(rule: nodes.Rule, reads: dict[str, set[str]], what: str, guard: bool) -> Inference:
    """Conditions on the risk signal, the declared intent and the network."""
    out: Inference = []
    if "risk" in reads:
        attrs = ", ".join(f"risk.{a}" for a in sorted(reads["risk"])) or "risk"
        out.append((("ASI01", "ASI10", "MANAGE 1", "L5"),
                    (f"reads {attrs}: acts on a risk signal measured at request time (detects a hijacked or rogue "
                    f"agent)")))
        if guard:
            out.append((("MANAGE 2",), (f"{_effect_word(rule)} {what} when the risk signal says so: a mechanism to "
                                       f"disengage an agent that behaves unexpectedly")))
    if "intent" in reads:
        attrs = ", ".join(f"intent.{a}" for a in sorted(reads["intent"])) or "intent"
        out.append((("ASI01", "L3"), (f"reads {attrs}: binds the action to the task the agent declared, so a "
                                     f"hijacked goal cannot widen it")))
    if "call:in_cidr" in reads:
        out.append((("L4",), "calls in_cidr: restricts where requests may come from or go to on the network"))
    return out


def _by_bounds(rule: nodes.Rule) -> Inference:
    """Limits (budgets, rate limits) and short-lived grants."""
    out: Inference = []
    for lim in rule.limits:
        measure = "count" if lim.measure == "count" else "sum(…)"
        window = "" if lim.window is None else f" per {_duration(lim.window)}"
        out.append((("ASI08", "MANAGE 2", "L4"),
                    f"limit {measure}{window}: bounds how much the rule allows, so a runaway loop or a cascade stops"))
    grant = rule.grant
    if grant is not None and grant.ttl <= SHORT_GRANT_TTL:
        out.append((("ASI03", "L6"), (f"grants scoped credentials for {_duration(grant.ttl)} only (short-lived, "
                                     f"least privilege)")))
    return out


def _by_names(rule: nodes.Rule) -> Inference:
    """A forbid or gate on an action or resource whose name says what kind of tool it is."""
    names = [("action", a) for a in (rule.target.actions or ())]
    names += [("resource type", r.name) for r in (rule.target.resources or ())]
    names += [("resource id", r.glob) for r in (rule.target.resources or ()) if r.glob]
    out: Inference = []
    for label, words, risk, controls in NAME_WORDS:
        hits = [(kind, n) for kind, n in names if _words(n) & words]
        if hits:
            kind, n = hits[0]
            out.append((controls, (f"{_effect_word(rule)} {kind} '{n}', which by its name is {label} "
                                  f"(guards against {risk})")))
    return out


def _duration(seconds: int) -> str:
    from ..language.words import format_duration
    return format_duration(seconds)


# ------------------------------------------------------------------ lints

def _rule_at(by_path: dict[str, list[RuleInfo]], starts: dict[str, list[int]], path: str,
             line: int) -> RuleInfo | None:
    """The rule whose text holds ``path:line`` (rules of a file do not overlap)."""
    i = bisect.bisect_right(starts.get(path, []), line) - 1
    if i < 0:
        return None
    info = by_path[path][i]
    return info if line <= info.rule.span.end_line else None


def _proven_findings(policy_set: PolicySet, report: ControlsReport) -> list[Diagnostic]:
    """The weakening lints among ``check --prove``'s (W201-W203), with a note of how it went."""
    try:
        import z3  # noqa: F401
    except ImportError:
        report.notes.append("solver-proven lints: not run (z3 is not installed; pip install 'policylang[analysis]')")
        return []
    from ..analysis.lints import proven_lints
    try:
        found = [d for d in proven_lints(policy_set) if d.code in WEAKENING_LINTS]
    except Exception as e:  # noqa: BLE001 - the report still stands on the checker's lints
        report.notes.append(f"solver-proven lints: failed ({type(e).__name__}: {e}); only the checker's lints "
                            f"are listed")
        return []
    report.notes.append(f"solver-proven lints: run ({len(found)} finding{'' if len(found) == 1 else 's'})")
    return found


# ------------------------------------------------------------------ the report

def build_report(policy_set: PolicySet, *, proven: bool = True, path: str | None = None) -> ControlsReport:
    """Map ``policy_set``'s rules to the three catalogues. ``proven``: also run the
    solver-proven lints when z3 and ``policylang.analysis.lints`` are present. ``path``:
    the set's path as the user gave it (default: the set's root)."""
    report = ControlsReport(path if path is not None else policy_set.root, policy_set.version,
                            len(policy_set.rules))
    seen: set[tuple] = set()

    def cover(control_id: str, cov: Coverage) -> None:
        c = _ANY_CONTROL[control_id]
        key = (c.id, cov.rule.id, cov.how, cov.reason)
        if key not in seen:
            seen.add(key)
            report.coverage.setdefault((c.framework, c.id), []).append(cov)

    rule_controls: dict[str, list[Control]] = {}
    for info in policy_set.rules:
        mine: list[Control] = []
        for control, cov in _tag_coverage(policy_set, info, report):
            cover(control.id, cov)
            mine.append(control)
        for ids, reason in infer(info):
            for cid in ids:
                cover(cid, Coverage(info, "inferred", reason))
                mine.append(_ANY_CONTROL[cid])
        rule_controls[info.id] = list(dict.fromkeys(mine))

    by_path: dict[str, list[RuleInfo]] = {}
    for info in policy_set.rules:
        by_path.setdefault(info.path, []).append(info)
    for infos in by_path.values():
        infos.sort(key=lambda i: i.rule.span.line)
    starts = {p: [i.rule.span.line for i in infos] for p, infos in by_path.items()}
    found: set[tuple] = set()

    def add_finding(control: Control, f: Finding) -> None:
        if (control.id, f) not in found:
            found.add((control.id, f))
            report.findings.setdefault((control.framework, control.id), []).append(f)

    lint_items = [(d, "lint") for d in policy_set.diagnostics if d.code in WEAKENING_LINTS]
    if proven:
        lint_items += [(x, "proven") for x in _proven_findings(policy_set, report)]
    else:
        report.notes.append("solver-proven lints: not run (--no-proven)")
    for d, source in lint_items:
        info = _rule_at(by_path, starts, d.path, d.line)
        own, why = WEAKENING_LINTS[d.code]
        f = Finding(d.code, str(d.severity), d.message, d.path, d.line, d.column, info.id if info else None,
                    source, why)
        targets = [_ANY_CONTROL[cid] for cid in own]
        if info is not None:
            targets += rule_controls.get(info.id, [])
        for control in dict.fromkeys(targets):
            add_finding(control, f)

    report.diagnostics.sort(key=Diagnostic.sort_key)
    return report


# ------------------------------------------------------------------ rendering

def render(report: ControlsReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n"
    if fmt == "html":
        return render_html(report)
    if fmt == "markdown":
        return render_markdown(report)
    raise ValueError(f"unknown format {fmt!r}")


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _md(text: str) -> str:
    """Plain text for Markdown: HTML and Markdown punctuation escaped, one line."""
    text = html.escape(" ".join(str(text).split()), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def _summary(report: ControlsReport, fw: Framework) -> tuple[int, int]:
    return len(fw.controls) - len(report.uncovered(fw)), len(fw.controls)


def render_markdown(report: ControlsReport) -> str:
    out = [f"# Controls report: {_md(report.path)}", "",
           (f"Policy set version `{report.version}`, {report.rules} rule{'' if report.rules == 1 else 's'}. "
           "Coverage is by `@tag` or inferred from what a rule does (docs/controls.md#inference); a lint finding "
           "never counts as coverage."), "",
           "| framework | covered | uncovered |", "| --- | --- | --- |"]
    for fw in FRAMEWORKS:
        covered, total = _summary(report, fw)
        out.append(f"| {_md(fw.name)} {_md(fw.version)} | {covered} of {total} | "
                   f"{_md(', '.join(c.id for c in report.uncovered(fw))) or '—'} |")
    out.append("")
    for d in report.diagnostics:
        out.append(f"- **{d.severity}[{d.code}]** {_md(d.header())}")
    if report.diagnostics:
        out.append("")
    for fw in FRAMEWORKS:
        out += [f"## {_md(fw.name)} {_md(fw.version)}", "", f"Source: <{fw.source}>", ""]
        for c in fw.controls:
            if not report.covered(c) and not report.findings_for(c):
                continue
            head = "###" if c.parent is None or fw is not NIST else "####"
            out += [f"{head} {_md(c.id)} {_md(c.title)}", ""]
            rules = report.rules_for(c)
            if not rules:
                out.append("- covered through its categories" if report.covered(c) else "- no rule covers it")
            for cov in rules:
                how = f"tag `{_md(cov.tag or '')}`" if cov.how == "tag" else f"inferred: {_md(cov.reason)}"
                out.append(f"- rule **{_md(cov.rule.id)}** ({_md(cov.rule.location)}, {cov.rule.effect}): {how}")
            for f in report.findings_for(c):
                where = f"{f.path}:{f.line}:{f.column}"
                rule = f" on rule **{_md(f.rule)}**" if f.rule else ""
                out.append(f"- finding {_md(f.code)} ({f.source}){rule} at {_md(where)}: {_md(f.message)} — "
                           f"weakens it because {_md(f.reason)}")
            out.append("")
        out += [f"### Uncovered: {_md(fw.name)}", ""]
        missing = report.uncovered(fw)
        out += [f"- {_md(c.id)} {_md(c.title)}" for c in missing] or ["- none"]
        out.append("")
    if report.notes:
        out += ["## Notes", ""] + [f"- {_md(n)}" for n in report.notes] + [""]
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#1b1f24;max-width:72rem}
table{border-collapse:collapse;margin:1rem 0}th,td{border:1px solid #d0d7de;padding:.35rem .6rem;text-align:left;
vertical-align:top}th{background:#f6f8fa}code{background:#f6f8fa;padding:0 .2rem}
.covered{color:#116329}.uncovered{color:#a40e26;font-weight:600}.finding{color:#9a6700}
.diag{color:#a40e26}ul{margin:.2rem 0;padding-left:1.2rem}
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def render_html(report: ControlsReport) -> str:
    p = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
         f'<title>Controls report: {_h(report.path)}</title>', f'<style>{_CSS}</style></head><body>',
         f'<h1>Controls report: <code>{_h(report.path)}</code></h1>',
         (f'<p>Policy set version <code>{_h(report.version)}</code>, {report.rules} rules. Coverage is by '
         f'<code>@tag</code> or inferred from what a rule does; a lint finding never counts as coverage.</p>'),
         '<table><tr><th>framework</th><th>covered</th><th>uncovered</th></tr>']
    for fw in FRAMEWORKS:
        covered, total = _summary(report, fw)
        p.append(f'<tr><td>{_h(fw.name)} {_h(fw.version)}</td><td>{covered} of {total}</td>'
                 f'<td>{_h(", ".join(c.id for c in report.uncovered(fw))) or "—"}</td></tr>')
    p.append('</table>')
    if report.diagnostics:
        p.append('<ul>' + "".join(f'<li class="diag">{_h(d.header())}</li>' for d in report.diagnostics) + '</ul>')
    for fw in FRAMEWORKS:
        p.append(f'<h2>{_h(fw.name)} {_h(fw.version)}</h2>')
        p.append(f'<p>Source: <a href="{_h(fw.source)}">{_h(fw.source)}</a></p>')
        p.append('<table><tr><th>control</th><th>covered by</th><th>findings</th></tr>')
        for c in fw.controls:
            state = "covered" if report.covered(c) else "uncovered"
            rules = "".join(
                f'<li><b>{_h(cov.rule.id)}</b> ({_h(cov.rule.location)}, {_h(cov.rule.effect)}): '
                + (f'tag <code>{_h(cov.tag)}</code>' if cov.how == "tag" else f'inferred: {_h(cov.reason)}')
                + '</li>' for cov in report.rules_for(c))
            if not rules:
                rules = "<li>through its categories</li>" if state == "covered" else "<li>no rule</li>"
            finds = "".join(
                f'<li class="finding">{_h(f.code)} ({_h(f.source)}) {_h(f.path)}:{f.line}:{f.column}'
                + (f' on <b>{_h(f.rule)}</b>' if f.rule else '')
                + f': {_h(f.message)} (weakens it: {_h(f.reason)})</li>' for f in report.findings_for(c))
            p.append(f'<tr><td class="{state}">{_h(c.id)} {_h(c.title)}</td><td><ul>{rules}</ul></td>'
                     f'<td><ul>{finds}</ul></td></tr>')
        p.append('</table>')
        missing = report.uncovered(fw)
        p.append(f'<h3>Uncovered: {_h(fw.name)}</h3><ul>'
                 + ("".join(f'<li class="uncovered">{_h(c.id)} {_h(c.title)}</li>' for c in missing) or "<li>none</li>")
                 + '</ul>')
    if report.notes:
        p.append('<h2>Notes</h2><ul>' + "".join(f'<li>{_h(n)}</li>' for n in report.notes) + '</ul>')
    p.append('</body></html>')
    return "\n".join(p) + "\n"


__all__ = ["FRAMEWORKS", "MAESTRO", "NIST", "OWASP", "SCHEMA", "SHORT_GRANT_TTL", "TAG_CODES", "WEAKENING_LINTS",
           "ControlsReport", "Coverage", "Finding", "build_report", "infer", "render", "render_html",
           "render_markdown"]
