"""The checker's shared state: :class:`CheckContext` (what the stages read and
write), :class:`CheckResult` (what :func:`policylang.language.checker.check` returns) and the
helpers every stage uses to word and place a diagnostic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from .. import nodes
from ..errors import Diagnostic
from ..policyset import Options, RuleInfo, Schema
from ..source import Span
from ..words import did_you_mean, did_you_mean_clause, format_duration  # noqa: F401  (re-exported for the stages)

if TYPE_CHECKING:
    from .expressions import ExprFacts


@dataclass
class CheckContext:
    files: Sequence[nodes.PolicyFile]
    #: display path -> path relative to the set root (for default rule ids)
    rel_paths: Mapping[str, str]
    diagnostics: list[Diagnostic] = field(default_factory=list)
    constants: dict[str, Any] = field(default_factory=dict)
    const_decls: dict[str, nodes.Const] = field(default_factory=dict)
    options: Options = field(default_factory=Options)
    option_decls: dict[str, nodes.Option] = field(default_factory=dict)
    schema: Schema = field(default_factory=Schema)
    rules: list[RuleInfo] = field(default_factory=list)
    #: constants some rule reads (filled by the names stage and the expression walk)
    used_constants: set[str] = field(default_factory=set)
    #: what the expression walk found (see :mod:`.expressions`), once a stage has asked for it
    facts: ExprFacts | None = None
    #: the kinds and types the set's entity data files have records for (for W108)
    entity_types: frozenset[str] = frozenset()
    #: ``(in_cidr call, quantifier variables in scope)`` of every condition and grant scope,
    #: in walk order (filled by the names stage; None until it ran)
    cidr_calls: list | None = None
    #: the previous check's per-rule results, when its environment is this one's (see .memo)
    memo: Any = None
    #: this check's per-rule results, for the next check
    new_memo: Any = None

    def report(self, code: str, message: str, span: Span) -> None:
        self.diagnostics.append(Diagnostic.make(code, message, span))

    def statements(self, kind: type | tuple[type, ...]) -> Iterable[tuple[nodes.PolicyFile, Any]]:
        for f in self.files:
            for s in f.statements:
                if isinstance(s, kind):
                    yield f, s


@dataclass(frozen=True)
class CheckResult:
    rules: tuple[RuleInfo, ...]
    constants: Mapping[str, Any]
    options: Options
    schema: Schema
    diagnostics: tuple[Diagnostic, ...]
    #: the per-rule results for the next check of this set (:class:`.memo.CheckMemo`)
    memo: Any = None


#: ``"; did you mean 'x'?"`` (end of a message) — the one suggestion search is in words.py
suggest = did_you_mean_clause


# ------------------------------------------------------------------ spans and words

def head_span(span: Span, length: int) -> Span:
    """The first ``length`` characters of ``span`` (a name that starts a node)."""
    return Span(span.path, span.line, span.column, span.line, span.column + length,
                span.start, span.start + length)


def tail_span(span: Span, length: int) -> Span:
    """The last ``length`` characters of ``span`` (a name that ends a node)."""
    return Span(span.path, span.end_line, max(1, span.end_column - length), span.end_line, span.end_column,
                max(0, span.end - length), span.end)


def quoted_list(names: Iterable[str]) -> str:
    return ", ".join(f"'{n}'" for n in names)

