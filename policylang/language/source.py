"""Source text and spans.

Every AST node and every diagnostic carries a :class:`Span`. Lines and columns are
1-based and columns count characters (not bytes). ``end_column`` is exclusive: the
column just after the last character. ``start``/``end`` are character offsets into
the source text, used by the formatter to find comments.
"""

from __future__ import annotations

from bisect import bisect_right


class Span:
    """A place in a policy file: immutable, compared and hashed by value.

    The six numbers are packed into one integer (one object instead of six, about half
    the memory of a span with a field each: a 10,000-rule set holds some 250,000 spans):
    bits 0-31 start, 32-63 line, 64-83 column, 84-103 end_column, 104-119 end_line - line,
    120- end - start. A span whose numbers do not fit those widths keeps a tuple. Attributes: ``path``,
    ``line``, ``column``, ``end_line``, ``end_column``, ``start``, ``end``.
    """

    __slots__ = ("_p", "path")

    def __init__(self, path: str, line: int, column: int, end_line: int, end_column: int,
                 start: int = 0, end: int = 0) -> None:
        dl, de = end_line - line, end - start
        if (0 <= start < 1 << 32 and 0 <= line < 1 << 32 and 0 <= column < 1 << 20
                and 0 <= end_column < 1 << 20 and 0 <= dl < 1 << 16 and 0 <= de < 1 << 24):
            packed = start | line << 32 | column << 64 | end_column << 84 | dl << 104 | de << 120
        else:
            packed = (line, column, end_line, end_column, start, end)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "_p", packed)

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot assign to field '{name}': Span is immutable")

    __delattr__ = __setattr__

    @property
    def line(self) -> int:
        p = self._p
        return p[0] if p.__class__ is tuple else (p >> 32) & 0xFFFFFFFF

    @property
    def column(self) -> int:
        p = self._p
        return p[1] if p.__class__ is tuple else (p >> 64) & 0xFFFFF

    @property
    def end_line(self) -> int:
        p = self._p
        return p[2] if p.__class__ is tuple else ((p >> 32) & 0xFFFFFFFF) + ((p >> 104) & 0xFFFF)

    @property
    def end_column(self) -> int:
        p = self._p
        return p[3] if p.__class__ is tuple else (p >> 84) & 0xFFFFF

    @property
    def start(self) -> int:
        p = self._p
        return p[4] if p.__class__ is tuple else p & 0xFFFFFFFF

    @property
    def end(self) -> int:
        p = self._p
        return p[5] if p.__class__ is tuple else (p & 0xFFFFFFFF) + (p >> 120)

    def _fields(self) -> tuple:
        return (self.path, self.line, self.column, self.end_line, self.end_column, self.start, self.end)

    def __eq__(self, other):
        if other.__class__ is not Span:
            return NotImplemented
        return self.path == other.path and self._p == other._p

    def __hash__(self) -> int:
        return hash((self.path, self._p))

    def __reduce__(self):
        return (Span, self._fields())

    def __repr__(self) -> str:
        path, line, column, end_line, end_column, start, end = self._fields()
        return (f"Span(path={path!r}, line={line!r}, column={column!r}, end_line={end_line!r}, "
                f"end_column={end_column!r}, start={start!r}, end={end!r})")

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"

    @staticmethod
    def join(first: Span, last: Span) -> Span:
        return Span(first.path, first.line, first.column, last.end_line, last.end_column,
                    first.start, last.end)


class SourceMap:
    """One file's path and line starts: what turns a node's packed offsets into its :class:`Span`.

    The fast parser (fastparse.py) gives each node of a file it parses this map and, in place
    of a :class:`Span` object, one integer: bits 0-23 the start offset, 24-47 the length
    (the end line is the line of the last character: no token runs over a line end, and
    a node ends with a token). A node's ``span`` property
    (nodes.py) makes the :class:`Span` from them when it is read, so a tree holds one small
    integer a node instead of a span object and its integer (about 50 bytes less a node,
    and one object fewer for the cyclic collector to scan: docs/engine.md#loading). The
    span made is the one the parser would have made; equal spans compare equal whichever
    way they were made.
    """

    __slots__ = ("path", "line_starts")

    #: a file's nodes are packed when it is shorter than this (else they keep :class:`Span` objects)
    TEXT_LIMIT = 1 << 24

    def __init__(self, path: str, line_starts) -> None:
        self.path = path
        self.line_starts = line_starts  # offset where each line starts (line 1 first)

    def span(self, packed: int) -> Span:
        """The Span of a node's packed offsets."""
        s = packed & 0xFFFFFF
        return self.at(s, s + (packed >> 24))

    def at(self, s: int, e: int) -> Span:
        """The Span from offset ``s`` to ``e`` (exclusive); it ends on the line of its last character."""
        ls = self.line_starts
        ln = bisect_right(ls, s)
        eln = bisect_right(ls, e - 1) if e > s else ln
        return Span(self.path, ln, s - ls[ln - 1] + 1, eln, e - ls[eln - 1] + 1, s, e)

    def __repr__(self) -> str:
        return f"SourceMap({self.path!r}, {len(self.line_starts)} lines)"


class SourcePart:
    """A part of a file that starts at offset ``base`` (a rule: the fast parser gives each
    rule's nodes one): packed offsets as :class:`SourceMap` packs them, the start taken
    from ``base``. Within a rule the same relative start and length come back rule after
    rule (rules of one shape), so the parser keeps one integer object per distinct packed
    value instead of one per node (docs/engine.md#loading); the Span made is the one the
    file's map makes of the absolute offsets."""

    __slots__ = ("map", "base")

    def __init__(self, map: SourceMap, base: int) -> None:  # noqa: A002 - the file's map
        self.map = map
        self.base = base

    @property
    def path(self) -> str:
        return self.map.path

    def span(self, packed: int) -> Span:
        """The Span of a node's packed offsets, relative to ``base``."""
        s = self.base + (packed & 0xFFFFFF)
        return self.map.at(s, s + (packed >> 24))

    def at(self, s: int, e: int) -> Span:
        """The Span from (absolute) offset ``s`` to ``e``: :meth:`SourceMap.at`."""
        return self.map.at(s, e)

    def __repr__(self) -> str:
        return f"SourcePart({self.map.path!r}, from offset {self.base})"


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
