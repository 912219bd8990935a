"""SARIF 2.1.0 rendering of diagnostics, for ``policylang check --format sarif``.

The log has one run. ``tool.driver`` names policylang, its version and every diagnostic
code as a reporting rule (id, short and full description, default level, help URI into
docs/diagnostics.md); each diagnostic becomes a result with ``ruleId`` = code, ``level``
= severity and one physical location: the path as the user gave it (relative, forward
slashes, percent-encoded where a URI needs it) and the 1-based region. Columns count
Unicode code points (``run.columnKind``), as policylang's columns do; ``endColumn`` is
exclusive in both.

This is the shape GitHub code scanning accepts (``github/codeql-action/upload-sarif``):
see docs/ci.md. Only the standard library is used, so ``check`` stays fast.
"""

from __future__ import annotations

import os
import posixpath
from typing import Iterable
from urllib.parse import quote

from ..language.errors import CODES, Diagnostic

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

#: Where the project lives; the rules' help links point into its docs/diagnostics.md.
#: (The project has no other public home yet; change this one constant when it moves.)
INFORMATION_URI = "https://github.com/policylang/policylang"
HELP_URI = INFORMATION_URI + "/blob/main/docs/diagnostics.md"

#: Longer texts for each code (docs/language.md#what-the-checker-verifies), shown by code-scanning UIs next to a result.
FULL_DESCRIPTIONS: dict[str, str] = {
    "E001": "The file does not parse (the message says what was expected), cannot be read, is not UTF-8, "
            "or an entity data file is not JSON of the shape {\"<kind or type>\": {\"<id>\": {attrs}}}.",
    "E002": "A name that is not a root (principal, action, resource, context, risk, delegation, intent), "
            "a constant, a quantifier variable or a built-in function. The message suggests the closest "
            "known name.",
    "E003": "A principal kind, action or resource type that the schema does not declare (only checked once "
            "the set declares at least one of that category), or an action used on a type it is not "
            "declared for.",
    "E004": "An attribute that the schema does not declare for the kinds or types the rule targets (under a "
            "* target: on any declared kind or type).",
    "E005": "A type error both of whose operand types are known statically, such as a string compared with "
            "< to a number, a condition that is not a boolean, or an unknown schema type.",
    "E006": "A rule id, constant or option defined twice in the policy set, or a constant named like a root.",
    "E008": "A limit on a forbid or require approval rule, a bound read from the request, a negative or "
            "non-finite bound, a zero window, or the same limit twice on one rule.",
    "E009": "An attribute in an entity data file whose value is not of the type the schema declares for "
            "its kind or type (null only for an optional field).",
    "E007": "A grant on a rule that is not a permit, a require approval rule without `by`, a grant ttl over "
            "the set's max_ttl, a CIDR literal that does not parse, or an unknown option or option value.",
    "W101": "A rule without @id gets the id <file>:<line>, which changes whenever lines move; decisions, "
            "audit records and tests that name it break.",
    "W102": "A permit of every action (*) on every resource (*) grants standing authority far beyond any "
            "one task.",
    "W103": "An attribute that the schema declares optional is read without a `has` guard before it (in "
            "the same condition, or in an earlier condition of the rule that must hold); when it is absent "
            "the condition raises and the rule fails closed.",
    "W104": "The rule can never determine a decision, for example a permit or approval gate whose whole "
            "target is covered by an unconditional forbid.",
    "W105": "A high_impact action is permitted to agents (or to every kind) and no require approval rule "
            "covers that kind, action and resource type.",
    "W106": "A rule without `because`: its decisions cannot say why they were made.",
    "W107": "A constant that no rule and no other constant uses.",
    "W108": "A forbid or approval gate reads an entity attribute that the request's attrs can override, "
            "for a kind or type the set's entity data has records for and that is not declared "
            "authoritative: a caller can send a different value and get past the rule.",
    "W109": "A limit without a key from the request: every request the rule applies to shares one counter.",
    "W110": "Entity data for a kind or type the schema declares as neither a principal kind nor a resource "
            "type: no rule reads it (usually a typo).",
    "W111": "Entity data with an attribute its kind or type does not declare: a rule reading the declared "
            "name does not see it.",
    "W112": "A substring test (`in`) between two attributes the schema types as strings, where a list "
            "membership was probably meant.",
    "W113": "Under attenuate_delegation, an approval gate that also applies to the delegators of a "
            "principal, so an approved call is still denied by the gate on the delegator.",
    "W201": "check --prove: the solver proved that the rule never determines a decision: no request satisfies "
            "its target and conditions, or every request it holds for is denied by a forbid (the exact "
            "version of W104; docs/analysis.md#proven-lints).",
    "W202": "check --prove: the solver proved that another permit with the same grant allows every request "
            "this permit allows (it is subsumed by, or equivalent to, the permit the message names).",
    "W203": "check --prove: the solver proved that the forbid the message names denies every request this "
            "permit allows, so the permit is dead.",
    "N201": "check --prove: the rule is not checked by the solver (it uses a construct the encoding does not "
            "express exactly, one the list bound changes, numeric arithmetic, or the solver gave up), so no "
            "proven lint is claimed for it.",
}

_LEVEL = {"error": "error", "warning": "warning", "note": "note"}


def artifact_uri(path: str) -> str:
    """The path as given, as a relative URI reference with forward slashes.

    ``./a/b`` becomes ``a/b``; an absolute path inside the working directory is made
    relative to it (code scanning resolves URIs against the repository root); any other
    absolute path becomes a ``file://`` URI.
    """
    p = path.replace(os.sep, "/") if os.sep != "/" else path
    if os.path.isabs(path):
        try:
            rel = os.path.relpath(path)
        except ValueError:  # another drive on Windows
            rel = None
        if rel is None or rel == ".." or rel.startswith(".." + os.sep):
            return "file://" + quote(p if p.startswith("/") else "/" + p, safe="/:")
        p = rel.replace(os.sep, "/")
    p = posixpath.normpath(p)
    return quote(p, safe="/")


def _rule(code: str) -> dict:
    severity, short = CODES[code]
    return {
        "id": code,
        "name": _rule_name(short),
        "shortDescription": {"text": short},
        "fullDescription": {"text": FULL_DESCRIPTIONS.get(code, short)},
        "defaultConfiguration": {"level": _LEVEL[severity]},
        "helpUri": f"{HELP_URI}#{code.lower()}",
        "help": {"text": f"{code}: {FULL_DESCRIPTIONS.get(code, short)} See {HELP_URI}#{code.lower()}"},
        "properties": {"tags": ["policylang", "error" if severity == "error" else "lint"]},
    }


def _rule_name(short: str) -> str:
    """A PascalCase name from the short description (SARIF's optional ``rule.name``)."""
    words = "".join(c if c.isalnum() else " " for c in short).split()
    return "".join(w[:1].upper() + w[1:] for w in words)


def _region(d: Diagnostic) -> dict:
    region = {"startLine": max(1, d.line), "startColumn": max(1, d.column)}
    end_line, end_column = d.end_line, d.end_column
    if end_line > d.line or (end_line == d.line and end_column > d.column):
        region["endLine"] = end_line
        region["endColumn"] = end_column
    return region


def _context_region(d: Diagnostic) -> dict | None:
    """The whole source line, for viewers that show context around the region."""
    if d.line_text is None or d.line < 1:
        return None
    return {"startLine": d.line, "endLine": d.line, "snippet": {"text": d.line_text}}


def _result(d: Diagnostic, rule_index: dict[str, int]) -> dict:
    physical = {"artifactLocation": {"uri": artifact_uri(d.path)}, "region": _region(d)}
    context = _context_region(d)
    if context is not None:
        physical["contextRegion"] = context
    result = {
        "ruleId": d.code,
        "level": _LEVEL.get(d.severity, "warning"),
        "message": {"text": d.message},
        "locations": [{"physicalLocation": physical}],
    }
    if d.code in rule_index:
        result["ruleIndex"] = rule_index[d.code]
    return result


def sarif_log(diagnostics: Iterable[Diagnostic], version: str | None = None) -> dict:
    """The SARIF 2.1.0 log (a JSON-ready dict) for ``diagnostics``."""
    if version is None:
        from .. import __version__ as version
    codes = list(CODES)
    rule_index = {code: i for i, code in enumerate(codes)}
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {
                "driver": {
                    "name": "policylang",
                    "informationUri": INFORMATION_URI,
                    "version": version,
                    "semanticVersion": version,
                    "rules": [_rule(code) for code in codes],
                }
            },
            "columnKind": "unicodeCodePoints",
            "results": [_result(d, rule_index) for d in diagnostics],
        }],
    }
