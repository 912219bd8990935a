"""Source text and spans.

Every AST node and every diagnostic carries a :class:`Span`. Lines and columns are
1-based and columns count characters (not bytes). ``end_column`` is exclusive: the
column just after the last character. ``start``/``end`` are character offsets into
the source text, used by the formatter to find comments.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    path: str
    line: int
    column: int
    end_line: int
    end_column: int
    start: int = 0
    end: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"

    @staticmethod
    def join(first: "Span", last: "Span") -> "Span":
        return Span(first.path, first.line, first.column, last.end_line, last.end_column,
                    first.start, last.end)


def offset_of(text: str, line: int, column: int) -> int:
    """Character offset of a 1-based line/column in ``text`` (clamped)."""
    pos = 0
    for _ in range(line - 1):
        nl = text.find("\n", pos)
        if nl < 0:
            return len(text)
        pos = nl + 1
    return min(pos + column - 1, len(text))


def render_caret(line_text: str, column: int, end_column: int | None = None, width_limit: int = 120) -> str:
    """The source line and a caret line under ``column`` (1-based).

    Long lines are shown as a window around the column, marked with ``…``.
    """
    line_text = line_text.replace("\t", " ")
    width = 1
    if end_column is not None and end_column > column:
        width = max(1, min(end_column - column, len(line_text) - column + 1))
    lead = column - 1
    if len(line_text) > width_limit:
        start = max(0, lead - width_limit // 2)
        shown = line_text[start:start + width_limit]
        prefix = "…" if start > 0 else ""
        suffix = "…" if start + width_limit < len(line_text) else ""
        lead = lead - start + len(prefix)
        line_text = prefix + shown + suffix
        width = min(width, max(1, width_limit - (lead - len(prefix))))
    return f"{line_text}\n{' ' * lead}{'^' * width}"
