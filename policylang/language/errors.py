"""Diagnostics and the exceptions of the public API.

Codes are stable (see docs/diagnostics.md and docs/language.md#what-the-checker-verifies). A diagnostic renders as::

    path:line:col: severity[CODE]: message
    <the source line>
        ^^^^
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Literal

from .source import Span, render_caret

Severity = Literal["error", "warning", "note"]

#: Every code with its severity and a one-line description (used by SARIF output).
CODES: dict[str, tuple[Severity, str]] = {
    "E001": ("error", "Syntax error"),
    "E002": ("error", "Unknown name"),
    "E003": ("error", "Kind, action or resource type not declared in the schema"),
    "E004": ("error", "Attribute not declared for the targeted kinds or types"),
    "E005": ("error", "Type error"),
    "E006": ("error", "Duplicate rule id, constant or option"),
    "E007": ("error", "Bad grant, by clause or option"),
    "E008": ("error", "Bad limit"),
    "E009": ("error", "Entity data does not have its declared type"),
    "W101": ("warning", "Rule without @id"),
    "W102": ("warning", "Over-broad permit (* actions on * resources)"),
    "W103": ("warning", "Optional attribute read without a has guard"),
    "W104": ("warning", "Rule that can never determine a decision"),
    "W105": ("warning", "High-impact action permitted to agents without an approval gate"),
    "W106": ("warning", "Rule without because"),
    "W107": ("warning", "Unused constant"),
    "W108": ("warning", "Forbid or gate reads an attribute the request can override"),
    "W109": ("warning", "Limit without a key from the request"),
    "W110": ("warning", "Entity data for an undeclared kind or type"),
    "W111": ("warning", "Entity data with an undeclared attribute"),
    "W112": ("warning", "Substring test between two string attributes"),
    "W113": ("warning", "Gate that also gates the delegators under attenuate_delegation"),
    # check --prove (policylang/analysis/lints.py, docs/analysis.md#proven-lints)
    "W201": ("warning", "Rule that can never determine a decision (proven)"),
    "W202": ("warning", "Permit subsumed by another permit (proven)"),
    "W203": ("warning", "Permit that a forbid always blocks (proven)"),
    "N201": ("note", "Rule whose lints are not proven"),
}


@dataclass(frozen=True, slots=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    span: Span
    #: the text of the source line, filled in by the loader for rendering
    line_text: str | None = field(default=None, compare=False)

    @classmethod
    def make(cls, code: str, message: str, span: Span) -> "Diagnostic":
        return cls(code, CODES[code][0], message, span)

    @property
    def path(self) -> str:
        return self.span.path

    @property
    def line(self) -> int:
        return self.span.line

    @property
    def column(self) -> int:
        return self.span.column

    @property
    def end_line(self) -> int:
        return self.span.end_line

    @property
    def end_column(self) -> int:
        return self.span.end_column

    def sort_key(self) -> tuple:
        return (self.span.path, self.span.line, self.span.column, self.code, self.message)

    def header(self) -> str:
        return f"{self.span.path}:{self.span.line}:{self.span.column}: {self.severity}[{self.code}]: {self.message}"

    def render(self) -> str:
        """The header line, then the source line and a caret (when the text is known)."""
        if self.line_text is None:
            return self.header()
        end = self.span.end_column if self.span.end_line == self.span.line else None
        return self.header() + "\n" + render_caret(self.line_text, self.span.column, end)

    def with_line_text(self, text: "str | list[str]") -> "Diagnostic":
        """A copy carrying its source line; ``text`` is the file's text or its lines
        (pass the lines when attaching many diagnostics to one file)."""
        lines = text.splitlines() if isinstance(text, str) else text
        line = lines[self.span.line - 1] if 1 <= self.span.line <= len(lines) else ""
        return replace(self, line_text=line)

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "path": self.span.path,
            "line": self.span.line,
            "column": self.span.column,
            "end_line": self.span.end_line,
            "end_column": self.span.end_column,
        }

    def __str__(self) -> str:
        return self.header()


def sort_diagnostics(diags: Iterable[Diagnostic]) -> list[Diagnostic]:
    return sorted(diags, key=Diagnostic.sort_key)


class PolicyError(ValueError):
    """A policy set that does not load. ``.diagnostics`` lists every error found."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics: list[Diagnostic] = sort_diagnostics(diagnostics)
        errors = [d for d in self.diagnostics if d.severity == "error"]
        shown = errors or self.diagnostics
        head = shown[0].header() if shown else "policy error"
        more = f" (and {len(shown) - 1} more)" if len(shown) > 1 else ""
        super().__init__(head + more)

    def render(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)


class RequestError(ValueError):
    """A malformed request. The message names the offending field; ``.field`` holds the
    field (a path such as ``context.a[2]``, or ``""`` for the request itself) and
    ``.reason`` what is wrong with it, so callers never parse the message."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}" if field else message)
