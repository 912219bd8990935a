"""The canonical layout of policy files (``policylang fmt``; docs/formatting.md).

The formatter prints the syntax tree back in one fixed layout and puts every comment
back where it was. Comments are not in the tree, so they are found in the source text
(:func:`scan_comments`) and attached by position to the printed lines:

* the output is a sequence of *units*, one per printed line of code (an annotation, a
  rule head, a condition, a clause, a constant, one item of a broken list …), each
  knowing the stretch of source text ``[start, end)`` it came from;
* an own-line comment goes above the first unit that starts after it;
* a trailing comment (code before it on its line) stays at the end of the line of the
  last unit that starts before it;
* a comment *inside* a unit that is printed on one line (say, after ``grant "a" +``
  with ``resource.id`` on the next line) is moved above that line; a comment between
  the operands of a condition's ``and``/``or`` chain instead keeps the chain broken,
  one operand a line, and so does one inside a constant list or a field block.

Comments therefore keep their order, and a second run changes nothing. The result is
checked before it is returned: it must parse to an equal tree, keep the same comments
in the same order, and format to itself; otherwise :class:`FormatterError` is raised
instead of returning a wrong text.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from decimal import Decimal

from . import nodes
from .parser import parse
from .words import format_duration

__all__ = ["format_source", "format_tree", "scan_comments", "Comment", "FormatterError", "WIDTH",
           "string_literal", "decimal_literal", "duration_literal", "expr"]

#: Lines longer than this are broken where the layout allows it (see docs/formatting.md).
WIDTH = 100
#: One level of indentation.
INDENT = 2

_WS = " \t\r\n\f"  # the grammar's whitespace
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# a string literal (possibly unterminated at a newline), a comment, or an opening brace
_SCAN = re.compile(r'"(?:[^"\\\n]|\\.)*"?|#[^\n]*|\{')


class FormatterError(RuntimeError):
    """An internal error: the formatted text would not mean the same as the input.

    Never raised for bad input (that is a :class:`~policylang.language.errors.PolicyError`); it
    means a bug in the formatter, and the file must be left as it was.
    """


@dataclass(frozen=True, slots=True)
class Comment:
    start: int  # offset of the '#'
    end: int  # offset where the comment ends (its newline, or the end of the text)
    text: str  # '#' and the rest of the line, trailing whitespace removed
    own_line: bool  # only whitespace before it on its line


def scan_comments(text: str) -> list[Comment]:
    """Every ``#`` comment of ``text``, in order (string literals are skipped)."""
    out = []
    for m in _SCAN.finditer(text):
        tok = m.group()
        if not tok.startswith("#"):
            continue
        start = m.start()
        line_start = text.rfind("\n", 0, start) + 1
        own = not text[line_start:start].strip(_WS)
        out.append(Comment(start, m.end(), tok.rstrip(" \t\r\f"), own))
    return out


# ------------------------------------------------------------------ expressions

# Precedence levels, lowest first (docs/language.md#expressions).
_QUANT, _OR, _AND, _NOT, _CMP, _ADD, _MUL, _NEG, _POSTFIX, _ATOM = range(10)


def string_literal(s: str) -> str:
    """``s`` as a double-quoted literal with JSON escapes; no raw non-printable character."""
    if s.isprintable() and '"' not in s and "\\" not in s:
        return f'"{s}"'
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif not ch.isprintable():
            cp = ord(ch)
            if cp > 0xFFFF:
                cp -= 0x10000
                out.append(f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}")
            else:
                out.append(f"\\u{cp:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_SHORT_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}


def decimal_literal(f: float) -> str:
    """A ``[0-9]+.[0-9]+`` spelling of ``f`` that reads back as the same float."""
    if math.isinf(f):
        return "1" + "0" * 309 + ".0"  # any literal past the largest double reads as inf
    r = repr(f)
    if "e" in r or "E" in r:
        r = format(Decimal(r), "f")
    if "." not in r:
        r += ".0"
    return r


#: ``5400`` -> ``1h30m``; ``0`` -> ``0s`` (the one duration table is in words.py)
duration_literal = format_duration


def _literal(e: nodes.Literal) -> str:
    kind, v = e.kind, e.value
    if kind == "string":
        return string_literal(v)
    if kind == "bool":
        return "true" if v else "false"
    if kind == "int":
        return str(v)
    if kind == "decimal":
        return decimal_literal(v)
    if kind == "duration":
        return duration_literal(v)
    raise FormatterError(f"unknown literal kind {kind!r}")


def _word(s: str) -> str:
    """A name where the grammar takes a NAME or a STRING (actions, ``has``)."""
    return s if _IDENT.fullmatch(s) else string_literal(s)


def expr(e: nodes.Expr, need: int = _QUANT) -> str:
    """``e`` on one line, parenthesised when its precedence is below ``need``."""
    printer = _PRINTERS.get(type(e))
    if printer is None:
        raise FormatterError(f"cannot print {type(e).__name__}")
    s, prec = printer(e)
    return f"({s})" if prec < need else s


# Each printer returns the text and the precedence level of the node it printed.


def _p_unary(e: nodes.Unary) -> tuple[str, int]:
    if e.op == "not":
        return "not " + expr(e.operand, _NOT), _NOT
    if isinstance(e.operand, nodes.Unary) and e.operand.op == "-":
        return f"-({expr(e.operand)})", _NEG  # not "--1"
    return "-" + expr(e.operand, _NEG), _NEG


# operator -> (its level, level its left operand needs, level its right operand needs);
# comparisons do not associate, so both of their operands need the additive level
_BINARY = {"+": (_ADD, _ADD, _MUL), "-": (_ADD, _ADD, _MUL), "*": (_MUL, _MUL, _NEG), "/": (_MUL, _MUL, _NEG)}
_COMPARISON = (_CMP, _ADD, _ADD)


def _p_binary(e: nodes.Binary) -> tuple[str, int]:
    prec, left, right = _BINARY.get(e.op, _COMPARISON)
    return f"{expr(e.left, left)} {e.op} {expr(e.right, right)}", prec


def _p_boolop(e: nodes.BoolOp) -> tuple[str, int]:
    # an item that is itself a chain (even of the same operator: the author grouped it,
    # and it is a node of its own) gets parentheses
    prec, need = (_OR, _AND) if e.op == "or" else (_AND, _NOT)
    return f" {e.op} ".join([expr(i, need) for i in e.items]), prec


_PRINTERS = {
    nodes.Literal: lambda e: (_literal(e), _ATOM),
    nodes.Name: lambda e: (e.name, _ATOM),
    nodes.ListExpr: lambda e: ("[" + ", ".join([expr(i) for i in e.items]) + "]", _ATOM),
    nodes.Attr: lambda e: (f"{expr(e.obj, _POSTFIX)}.{e.name}", _POSTFIX),
    nodes.Index: lambda e: (f"{expr(e.obj, _POSTFIX)}[{expr(e.index)}]", _POSTFIX),
    nodes.Call: lambda e: (f"{e.func}(" + ", ".join([expr(a) for a in e.args]) + ")", _POSTFIX),
    nodes.Unary: _p_unary,
    nodes.Binary: _p_binary,
    nodes.BoolOp: _p_boolop,
    nodes.Matches: lambda e: (f"{expr(e.operand, _ADD)} matches {string_literal(e.pattern)}", _CMP),
    nodes.Has: lambda e: (f"{expr(e.operand, _ADD)} has {_word(e.name)}", _CMP),
    nodes.Quantifier: lambda e: (f"{e.kind} {e.var} in {expr(e.collection, _OR)}: {expr(e.body)}", _QUANT),
}


# ------------------------------------------------------------------ statements


@dataclass(slots=True)
class _Unit:
    """One printed line of code (a long rule head: three) and the source stretch it came from."""

    indent: int
    text: str
    start: int
    end: int
    first: bool = False  # first line of a statement (blank lines may precede it)
    comment_indent: int | None = None
    leading: list[Comment] = field(default_factory=list)
    trailing: Comment | None = None


class _Printer:
    def __init__(self, text: str, comments: list[Comment]):
        self.text = text
        self.comments = comments
        self.comment_starts = [c.start for c in comments]
        self.units: list[_Unit] = []

    # -- helpers -------------------------------------------------------------------
    def unit(self, indent: int, text: str, start: int, end: int, **kw) -> None:
        self.units.append(_Unit(indent, text, start, end, **kw))

    def has_comment(self, start: int, end: int) -> bool:
        """Is there a comment starting in ``[start, end)``?"""
        i = bisect_left(self.comment_starts, start)
        return i < len(self.comment_starts) and self.comment_starts[i] < end

    def open_brace(self, start: int, end: int) -> int:
        for m in _SCAN.finditer(self.text, start, end):
            if m.group() == "{":
                return m.start()
        raise FormatterError("no '{' found in a declaration with fields")

    # -- statements ----------------------------------------------------------------
    def statement(self, st: nodes.Statement) -> None:
        if isinstance(st, nodes.Rule):
            self.rule(st)
        elif isinstance(st, nodes.Const):
            self.assignment(st, f"const {st.name} = ", st.value)
        elif isinstance(st, nodes.Option):
            self.assignment(st, f"option {st.name} = ", st.value)
        elif isinstance(st, nodes.EntityDecl):
            self.declaration(st, f"{st.category} {st.name}" + (" authoritative" if st.authoritative else ""),
                             st.fields)
        elif isinstance(st, nodes.ActionDecl):
            head = ("high_impact " if st.high_impact else "") + "action "
            head += ", ".join(_word(n) for n in st.names) + " on " + ", ".join(st.on)
            self.declaration(st, head, st.fields)
        elif isinstance(st, nodes.ContextDecl):
            self.declaration(st, "context", st.fields)
        else:
            raise FormatterError(f"cannot print {type(st).__name__}")

    def assignment(self, st, head: str, value: nodes.Expr) -> None:
        s, e = st.span.start, st.span.end
        flat = head + expr(value)
        if isinstance(value, nodes.ListExpr) and value.items and (
            len(flat) > WIDTH or self.has_comment(value.span.start + 1, value.span.end)
        ):
            # one item a line, with a trailing comma
            vs, ve = value.span.start, value.span.end
            self.unit(0, head + "[", s, vs + 1, first=True)
            for item in value.items:
                self.unit(INDENT, expr(item) + ",", item.span.start, item.span.end)
            self.unit(0, "]", ve - 1, ve, comment_indent=INDENT)
        else:
            self.unit(0, flat, s, e, first=True)

    def declaration(self, st, head: str, fields) -> None:
        s, e = st.span.start, st.span.end
        if fields is None:
            self.unit(0, head, s, e, first=True)
            return
        if not fields:
            self.unit(0, head + " {}", s, e, first=True)
            return
        texts = [f"{f.name}: {_type(f.type)}" for f in fields]
        flat = head + " { " + ", ".join(texts) + " }"
        brace = self.open_brace(s, e)
        if len(flat) <= WIDTH and not self.has_comment(brace + 1, e):
            self.unit(0, flat, s, e, first=True)
            return
        self.unit(0, head + " {", s, brace + 1, first=True)
        for f, t in zip(fields, texts):
            self.unit(INDENT, t + ",", f.span.start, f.span.end)
        self.unit(0, "}", e - 1, e, comment_indent=INDENT)

    def rule(self, r: nodes.Rule) -> None:
        first = True
        for a in r.annotations:
            text = f"@{a.name}" if a.value is None else f"@{a.name}({string_literal(a.value)})"
            self.unit(0, text, a.span.start, a.span.end, first=first)
            first = False
        head = {"permit": "permit", "forbid": "forbid", "require_approval": "require approval for"}[r.effect]
        t = r.target
        actions = "*" if t.actions is None else ", ".join(_word(a) for a in t.actions)
        text = f"{head} {_refs(t.subjects)} to {actions} on {_refs(t.resources)}"
        if len(text) > WIDTH:  # too long: "to …" and "on …" go on lines of their own
            pad = " " * (2 * INDENT)
            text = f"{head} {_refs(t.subjects)}\n{pad}to {actions}\n{pad}on {_refs(t.resources)}"
        self.unit(0, text, r.head_span.start, t.span.end, first=first)
        for c in r.conditions:
            self.condition(c)
        for c in r.clauses:
            if isinstance(c, nodes.Grant):
                text = "grant " + ", ".join(expr(x) for x in c.scopes) + " for " + duration_literal(c.ttl)
            elif isinstance(c, nodes.By):
                text = "by " + ", ".join(string_literal(x) for x in c.approvers)
            elif isinstance(c, nodes.Because):
                text = "because " + string_literal(c.text)
            elif isinstance(c, nodes.Limit):
                text = limit_text(c)
            else:
                raise FormatterError(f"cannot print {type(c).__name__}")
            self.unit(INDENT, text, c.span.start, c.span.end)

    def condition(self, c: nodes.Condition) -> None:
        e = c.expr
        flat = f"{c.kind} {expr(e)}"
        # A comment between the first and the last operand keeps the chain broken, so it
        # stays between them. (Not up to the condition's end: that may be a closing
        # parenthesis, and a comment before it ends up after the last operand.)
        if isinstance(e, nodes.BoolOp) and (
            INDENT + len(flat) > WIDTH or self.has_comment(e.items[0].span.end, e.items[-1].span.end)
        ):
            # one operand a line, the operator first
            need = _AND if e.op == "or" else _NOT
            items = e.items
            self.unit(INDENT, f"{c.kind} {expr(items[0], need)}", c.span.start, items[0].span.end)
            for item in items[1:]:
                self.unit(2 * INDENT, f"{e.op} {expr(item, need)}", item.span.start, item.span.end)
        else:
            self.unit(INDENT, flat, c.span.start, c.span.end)

    # -- comments and lines ----------------------------------------------------------
    def attach_comments(self) -> list[Comment]:
        """Give each comment a place; returns the comments that go after the last line."""
        units = self.units
        starts = [u.start for u in units]
        eof: list[Comment] = []
        last = (-1, 0)
        for c in self.comments:
            i = bisect_right(starts, c.start) - 1
            if i < 0:
                pos = (0, 0)
            elif c.start < units[i].end:
                pos = (i, 0)  # inside a line's code: above that line
            elif not c.own_line:
                pos = (i, 1)  # at the end of that line
            else:
                pos = (i + 1, 0)  # above the next line
            pos = max(pos, last)  # never reorder comments
            if pos[1] == 1 and units[pos[0]].trailing is not None:
                pos = (pos[0] + 1, 0)
            last = pos
            if pos[0] >= len(units):
                eof.append(c)
            elif pos[1] == 0:
                units[pos[0]].leading.append(c)
            else:
                units[pos[0]].trailing = c
        return eof

    def blank_before(self, pos: int) -> bool:
        """Did the author leave an empty line right before offset ``pos``?"""
        text = self.text
        q = pos
        while q > 0 and text[q - 1] in _WS:
            q -= 1
        return text.count("\n", q, pos) >= 2

    def lines(self) -> str:
        eof = self.attach_comments()
        out: list[tuple[str, str | None] | None] = []  # (code, trailing comment); None: blank

        def blank():
            if out and out[-1] is not None:
                out.append(None)

        for u in self.units:
            ci = " " * (u.indent if u.comment_indent is None else u.comment_indent)
            inside = False
            for c in u.leading:
                if c.start < u.start:
                    if u.first and self.blank_before(c.start):
                        blank()
                else:  # moved up from inside the line's code
                    if u.first and not inside and self.blank_before(u.start):
                        blank()
                    inside = True
                out.append((ci + c.text, None))
            if u.first and not inside and self.blank_before(u.start):
                blank()
            *above, last_line = (" " * u.indent + u.text).split("\n")  # a rule head may take three
            out.extend((line, None) for line in above)
            out.append((last_line, u.trailing.text if u.trailing else None))
        for c in eof:
            if self.blank_before(c.start):
                blank()
            out.append((c.text, None))
        return _render(out)


def _render(entries) -> str:
    """Join the lines; align the trailing comments of consecutive lines."""
    lines: list[str] = []
    run: list[tuple[str, str]] = []

    def flush():
        if run:
            col = max(len(code) for code, _ in run) + 2
            lines.extend(code.ljust(col) + comment for code, comment in run)
            run.clear()

    for entry in entries:
        if entry is None:
            flush()
            lines.append("")
            continue
        code, comment = entry
        if comment is None:
            flush()
            lines.append(code)
        elif len(code) > WIDTH:
            flush()
            lines.append(code + "  " + comment)
        else:
            run.append((code, comment))
    flush()
    return "\n".join(lines) + "\n" if lines else ""


def _type(t: nodes.TypeRef) -> str:
    s = t.name
    if t.arg is not None:
        s += f"<{_type(t.arg)}>"
    return s + ("?" if t.optional else "")


def _refs(refs) -> str:
    if refs is None:
        return "*"
    return ", ".join(r.name if r.glob is None else f"{r.name} {string_literal(r.glob)}" for r in refs)


# ------------------------------------------------------------------ entry points


def format_tree(tree: nodes.PolicyFile, text: str) -> str:
    """Print ``tree`` (parsed from ``text``) in the canonical layout, with ``text``'s comments.

    No checks: :func:`format_source` is the safe entry point.
    """
    p = _Printer(text, scan_comments(text))
    for st in tree.statements:
        p.statement(st)
    return p.lines()


def format_source(text: str, path: str = "<policy>") -> str:
    """``text`` in the canonical layout.

    Raises :class:`~policylang.language.errors.PolicyError` (one E001) when ``text`` does not
    parse, and :class:`FormatterError` if the result would not be equivalent (a bug).
    """
    from .errors import PolicyError

    tree = parse(text, path)
    out = format_tree(tree, text)
    if out == text:
        return out
    try:
        again = parse(out, path)
    except PolicyError as e:
        raise FormatterError(_bug(path, f"the formatted text does not parse ({e})")) from None
    if again != tree:
        raise FormatterError(_bug(path, "the formatted text parses to a different policy"))
    if [c.text for c in scan_comments(out)] != [c.text for c in scan_comments(text)]:
        raise FormatterError(_bug(path, "formatting lost or reordered a comment"))
    if format_tree(again, out) != out:
        raise FormatterError(_bug(path, "formatting the result again changes it"))
    return out


def _bug(path: str, what: str) -> str:
    return f"{path}: internal error: {what}; this is a formatter bug, please report it"


def limit_text(c: nodes.Limit) -> str:
    """The canonical text of a limit clause (also how decisions and explanations name it)."""
    measure = "count" if c.measure == "count" else f"sum({expr(c.amount)})"
    text = f"limit {measure} <= {expr(c.bound)}"
    if c.key is not None:
        text += f" per {expr(c.key)}"
    if c.window is not None:
        text += f" per {duration_literal(c.window)}"
    return text
