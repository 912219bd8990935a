"""A hand-written recursive-descent parser for valid policy text (the fast path of
:func:`policylang.language.parser.parse`).

It builds exactly the tree the LALR driver builds (the same nodes, field values and
spans) for the inputs it accepts, and gives up (:class:`GiveUp`) on anything else: a
syntax error, an unexpected token, a keyword where it is not sure how the LALR driver's
contextual keywords would read it, a literal the builder would reject, an expression
nested deeper than the builder allows. ``parse`` then runs the LALR driver, which
produces the tree or the usual E001, so the diagnostics never come from here.

Tokens: the grammar's terminal patterns (grammar/policy.lark) in one regex, applied
with ``split`` to a window of the text at a time (:data:`WINDOW`; no token spans a
line: strings and comments cannot hold a newline). The split gives the blanks between
the tokens and the tokens; the blanks and the comments are dropped, and a character no
terminal matches is a one-character token no rule accepts (so it is given up on). A
token is its text: the parser tells names, numbers, strings and punctuation apart by the
text itself.
"""

from __future__ import annotations

import json
import re
import sys
from array import array
from itertools import accumulate

from . import nodes
from .source import SourceMap, SourcePart, Span
from .words import parse_duration

__all__ = ["TOKEN_PATTERNS", "GiveUp", "parse"]

#: keep in step with parser.py (the builder's reserved words and its depth limit)
MAX_DEPTH = 128
KEYWORDS = frozenset((
    "permit", "forbid", "require", "approval", "for", "to", "on", "when", "unless", "grant", "by", "because",
    "const", "option", "high_impact", "and", "or", "not", "in", "matches", "has", "any", "all", "true", "false",
))
CONTEXTUAL = frozenset({"limit", "count", "sum", "per"})
_WORDS = KEYWORDS | CONTEXTUAL

#: the grammar's regexp terminals, in the LALR scanner's order (tests compare them with
#: the grammar file); the punctuation follows, longest first
TOKEN_PATTERNS = {
    "DURATION": r"(?:[0-9]+[dhms])+(?![A-Za-z0-9_])",
    "DECIMAL": r"[0-9]+\.[0-9]+",
    "INT": r"[0-9]+",
    "NAME": r"[A-Za-z_][A-Za-z0-9_]*",
    "STRING": r'"(?:[^"\\\x00-\x1f\x7f]|\\["\\\/bfnrt]|\\u[0-9a-fA-F]{4})*"',
}
PUNCTUATION = ("==", "!=", "<=", ">=", "<", ">", "=", "+", "-", "*", "/", "@", "?", "(", ")",
               "[", "]", "{", "}", ",", ".", ":")
#: the alternatives are tried in turn, so the commonest come first: a name, then ".", ","
#: and a string. That changes no match: no other terminal starts with a letter, "_", '"'
#: or those two characters, and the rest keep their order (durations before decimals
#: before integers; punctuation longest first)
_FIRST = (TOKEN_PATTERNS["NAME"], re.escape("."), re.escape(","), TOKEN_PATTERNS["STRING"])
#: One alternative per token, for ``split``: a comment (dropped after), the terminals,
#: then any other character but a blank (a one-character token no rule accepts). What
#: ``split`` leaves between two tokens is then only blanks (space, tab, CR, LF, FF).
_TOKENS = re.compile(
    r"(#[^\n]*+|"
    + "|".join(_FIRST)
    + "|" + "|".join(v for k, v in TOKEN_PATTERNS.items() if k not in ("NAME", "STRING"))
    + "|" + "|".join(re.escape(p) for p in PUNCTUATION if p not in (".", ","))
    + r"|[^ \t\r\n\f])"
)
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_DIGITS = frozenset("0123456789")
_CMP = frozenset(("==", "!=", "<=", ">=", "<", ">"))
_SCHEMA = frozenset(("principal", "resource", "action", "context"))
_CLAUSE_OR_STATEMENT = frozenset(("when", "unless", "grant", "by", "because", "limit", "permit", "forbid",
                                  "require", "const", "option", "high_impact", "@", ""))

_intern = sys.intern
_setattr = object.__setattr__


#: the node makers (nodes.maker: the class's object without its dataclass __init__), one
#: per node class this parser makes: ``_make_Attr(obj, name, span, _src)`` …
_make_Literal = nodes.maker(nodes.Literal)
_make_Name = nodes.maker(nodes.Name)
_make_Attr = nodes.maker(nodes.Attr)
_make_Index = nodes.maker(nodes.Index)
_make_Call = nodes.maker(nodes.Call)
_make_Unary = nodes.maker(nodes.Unary)
_make_Binary = nodes.maker(nodes.Binary)
_make_BoolOp = nodes.maker(nodes.BoolOp)
_make_Matches = nodes.maker(nodes.Matches)
_make_Has = nodes.maker(nodes.Has)
_make_Quantifier = nodes.maker(nodes.Quantifier)
_make_ListExpr = nodes.maker(nodes.ListExpr)
_make_TypeRef = nodes.maker(nodes.TypeRef)
_make_FieldDecl = nodes.maker(nodes.FieldDecl)
_make_EntityDecl = nodes.maker(nodes.EntityDecl)
_make_ActionDecl = nodes.maker(nodes.ActionDecl)
_make_ContextDecl = nodes.maker(nodes.ContextDecl)
_make_Annotation = nodes.maker(nodes.Annotation)
_make_EntityRef = nodes.maker(nodes.EntityRef)
_make_Target = nodes.maker(nodes.Target)
_make_Condition = nodes.maker(nodes.Condition)
_make_Grant = nodes.maker(nodes.Grant)
_make_By = nodes.maker(nodes.By)
_make_Because = nodes.maker(nodes.Because)
_make_Limit = nodes.maker(nodes.Limit)
_make_Rule = nodes.maker(nodes.Rule)


class GiveUp(Exception):
    """The fast parser is not sure: the caller parses the text with the LALR driver."""


def _tokenize(text: str, pos: int = 0, endpos: int | None = None, line_starts=None):
    """``(tokens, starts, ends, line_starts)`` of ``text[pos:endpos]`` (offsets into
    ``text``); the tokens end with an ``""`` sentinel at ``endpos``.

    ``split`` of that piece of text gives ``[blanks, token, blanks, token, …, blanks]``
    (one list of strings: no tuple per token, the dearest part of a ``findall`` of
    ``(blanks, token)`` pairs); the offsets are the running sum of the pieces' lengths.
    Comments are tokens of the split, dropped here (only where the piece holds a
    ``#``). A character no terminal takes is a one-character token the parser never
    accepts."""
    end = len(text) if endpos is None else endpos
    piece = text[pos:end]
    parts = _TOKENS.split(piece)
    toks = parts[1::2]
    # a list, not an array: a window's few thousand offsets are small, and an array
    # converts each item through PyArg_Parse (a tenth of the parse's instructions)
    cum = list(accumulate(map(len, parts), initial=pos))
    del parts
    starts = cum[1:-1:2]  # (the last item is where the blanks after the last token end)
    ends = cum[2::2]
    if "#" in piece:  # comments (or a "#" in a string): drop the comment tokens
        kept = [k for k, t in enumerate(toks) if t[:1] != "#"]
        if len(kept) != len(toks):
            toks = [toks[k] for k in kept]
            starts = [starts[k] for k in kept]
            ends = [ends[k] for k in kept]
    toks.append("")
    starts.append(end)
    ends.append(end)
    return toks, starts, ends, _line_starts(text) if line_starts is None else line_starts


def _line_starts(text: str) -> array:
    """The offset where each line of ``text`` starts (4-byte items when they fit: the
    10,000-rule set's 60,000 lines are 240 KB, not 480)."""
    code = "I" if len(text) < 2**32 - 1 and array("I").itemsize >= 4 else "q"
    return array(code, accumulate((len(line) + 1 for line in text.split("\n")), initial=0))


#: The text is tokenised a window at a time, not whole (docs/engine.md#loading): a
#: window ends where a statement is sure to start (a blank line, then ``@``, ``permit``
#: or ``forbid`` at the start of a line), at least this many characters on. A 10,000-rule
#: text (1.6 MB) is some 330,000 tokens; whole, their strings and offsets are about 45 MB
#: live while the tree is built, and the tree's nodes land between them in memory, so
#: the process keeps most of those 45 MB after they are freed (about 30 MB more resident
#: memory for the 10k set than with windows). A statement that runs past its window's
#: end (only text no formatter writes can do that) is parsed again with the rest of the
#: text as its window.
WINDOW = 16_384
_CUT = re.compile(r"\n[ \t\r\f]*\n(?=@|(?:permit|forbid)(?![A-Za-z0-9_]))")


def _cut(text: str, pos: int) -> int:
    """Where the window from ``pos`` ends: the next sure statement start at least
    :data:`WINDOW` characters on, or the end of the text."""
    if len(text) - pos <= 2 * WINDOW:
        return len(text)
    m = _CUT.search(text, pos + WINDOW)
    return m.end() if m is not None else len(text)


def _height(node) -> int:
    """Nodes on the longest path down from ``node`` (the builder's expression depth)."""
    best = 0
    stack = [(node, 1)]
    children = nodes.children
    while stack:
        n, d = stack.pop()
        best = max(best, d)
        for k in children(n):
            stack.append((k, d + 1))
    return best


class _Parser:
    __slots__ = ("base", "end", "ends", "i", "ls", "map", "nest", "packs", "path", "small", "src", "starts",
                 "text", "toks")

    def __init__(self, text: str, path: str) -> None:
        self.path = path
        self.text = text
        self.ls = ls = _line_starts(text)
        #: the file's map; ``src`` is what the nodes being made get as ``_src``: the map,
        #: or within a rule the rule's SourcePart, whose offsets start at ``base``
        self.map = self.src = SourceMap(path, ls)
        self.base = 0
        #: packed value -> its one integer object (nodes of one shape share them)
        self.packs: dict = {}
        self.small = len(text) < SourceMap.TEXT_LIMIT
        self.window(0, _cut(text, 0))
        self.nest = 0

    def window(self, pos: int, end: int) -> None:
        """Tokenise ``text[pos:end]`` (the current window) and start at its first token."""
        self.toks, self.starts, self.ends, _ = _tokenize(self.text, pos, end, self.ls)
        self.end = end
        self.i = 0

    # -- helpers ---------------------------------------------------------------
    def span(self, i: int, j: int) -> Span:
        """The span from the start of token ``i`` to the end of token ``j``, as a Span object."""
        return self.src.at(self.starts[i], self.ends[j])

    def sp(self, i: int, j: int):
        """A node's own span from token ``i`` to token ``j``: packed offsets for the file's
        :class:`SourceMap` (the node's ``_src``) where they fit, else a :class:`Span`."""
        if self.small:
            s = self.starts[i]
            v = (s - self.base) | (self.ends[j] - s) << 24  # SourceMap.span's layout
            return self.packs.setdefault(v, v)
        return self.span(i, j)

    def expect(self, tok: str) -> int:
        i = self.i
        if self.toks[i] != tok:
            raise GiveUp(f"expected {tok!r}")
        self.i = i + 1
        return i

    def name_any(self) -> str:
        """A NAME where the grammar takes nothing else identifier-shaped (any word)."""
        i = self.i
        t = self.toks[i]
        if t[:1] not in _NAME_START:
            raise GiveUp("expected a name")
        self.i = i + 1
        return _intern(t)

    def name_plain(self) -> str:
        """A NAME that is no keyword (where a keyword could be read as one)."""
        i = self.i
        t = self.toks[i]
        if t[:1] not in _NAME_START or t in _WORDS:
            raise GiveUp("expected a plain name")
        self.i = i + 1
        return _intern(t)

    def string_at(self, i: int) -> str:
        raw = self.toks[i]
        if raw[:1] != '"' or len(raw) < 2:
            raise GiveUp("expected a string")
        value = raw[1:-1] if "\\" not in raw else json.loads(raw)
        if not value.isascii() and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            raise GiveUp("unpaired surrogate")
        return _intern(value) if len(value) <= 64 else value

    def string(self) -> str:
        i = self.i
        value = self.string_at(i)
        self.i = i + 1
        return value

    # -- file and statements ----------------------------------------------------
    def file(self) -> nodes.PolicyFile:
        statements = []
        add = statements.append
        size = len(self.text)
        first = last = None  # offsets: where the file's first token starts, where its last ends
        while True:
            toks = self.toks
            i = self.i
            t = toks[i]
            if t == "":
                if self.end >= size:
                    break
                self.window(self.end, _cut(self.text, self.end))  # the next window (a statement starts it)
                continue
            if first is None:
                first = self.starts[i]
            try:
                add(self.statement(t))
            except (GiveUp, IndexError):
                if self.end >= size:
                    raise
                # the statement may run on past the window: again, with the rest of the
                # text as its window (a syntax error then gives up there, as without windows)
                self.nest = 0
                self.window(self.starts[i], size)
                continue
            last = self.ends[self.i - 1]
        path = self.path
        span = Span(path, 1, 1, 1, 1, 0, 0) if first is None else self.src.at(first, last)
        return nodes.PolicyFile(path, tuple(statements), span=span)

    def statement(self, t: str):
        """The statement that starts with token ``t`` (the current one)."""
        if t in ("permit", "forbid", "require", "@"):
            return self.rule()
        if t == "const" or t == "option":
            return self.const_or_option(t)
        if t == "high_impact" or t == "action":
            return self.action_decl()
        if t == "principal" or t == "resource":
            return self.entity_decl()
        if t == "context":
            return self.context_decl()
        raise GiveUp("not a statement start")

    def const_or_option(self, kw: str):
        i0 = self.i
        self.i = i0 + 1
        ni = self.i
        if kw == "const":
            name = self.name_plain() if self.toks[ni] not in CONTEXTUAL else self.name_any()
        else:
            name = self.name_any()
        self.expect("=")
        value = self.top_expr()
        span = self.span(i0, self.i - 1)
        cls = nodes.Const if kw == "const" else nodes.Option
        return cls(name, value, span=span, name_span=self.span(ni, ni))

    def field_block(self):
        self.expect("{")
        toks = self.toks
        fields = []
        while toks[self.i] != "}":
            fi = self.i
            name = self.name_plain()
            self.expect(":")
            typ = self.type_ref()
            fields.append(_make_FieldDecl(name, typ, self.sp(fi, self.i - 1), self.src))
            if toks[self.i] == ",":
                self.i += 1
            elif toks[self.i] != "}":
                raise GiveUp("expected ',' or '}'")
        self.i += 1
        return tuple(fields)

    def type_ref(self):
        i0 = self.i
        name = self.name_plain()
        toks = self.toks
        arg = None
        optional = False
        if toks[self.i] == "<":
            self.i += 1
            arg = self.type_ref()
            self.expect(">")
        if toks[self.i] == "?":
            self.i += 1
            optional = True
        return _make_TypeRef(name, arg, optional, self.sp(i0, self.i - 1), self.src)

    def entity_decl(self):
        i0 = self.i
        cat = self.toks[i0]
        self.i = i0 + 1
        name = self.name_plain()
        marker = False
        if self.toks[self.i] == "authoritative":
            self.i += 1
            marker = True
        if self.toks[self.i] != "{":
            raise GiveUp("expected '{'")
        fields = self.field_block()
        return _make_EntityDecl(cat, name, fields, marker, self.sp(i0, self.i - 1), self.src)

    def _action_ref(self):
        t = self.toks[self.i]
        if t[:1] == '"':
            return self.string()
        return self.name_plain()

    def action_decl(self):
        i0 = self.i
        toks = self.toks
        high_impact = toks[i0] == "high_impact"
        self.i = i0 + 1
        if high_impact:
            self.expect("action")
        names = [self._action_ref()]
        while toks[self.i] == ",":
            self.i += 1
            names.append(self._action_ref())
        self.expect("on")
        types = [self.name_plain()]
        while toks[self.i] == ",":
            self.i += 1
            types.append(self.name_plain())
        fields = self.field_block() if toks[self.i] == "{" else None
        return _make_ActionDecl(tuple(names), tuple(types), fields, high_impact, self.sp(i0, self.i - 1),
                                self.src)

    def context_decl(self):
        i0 = self.i
        self.i = i0 + 1
        if self.toks[self.i] != "{":
            raise GiveUp("expected '{'")
        fields = self.field_block()
        return _make_ContextDecl(fields, self.sp(i0, self.i - 1), self.src)

    # -- rules --------------------------------------------------------------------
    def rule(self):
        """A rule; its nodes' offsets are relative to its start (source.SourcePart)."""
        if not self.small:
            return self._rule()
        self.base = self.starts[self.i]
        self.src = SourcePart(self.map, self.base)
        try:
            return self._rule()
        finally:
            self.src = self.map
            self.base = 0

    def _rule(self):
        toks = self.toks
        i0 = self.i
        annotations = []
        while toks[self.i] == "@":
            ai = self.i
            self.i += 1
            name = self.name_any()
            value = None
            if toks[self.i] == "(":
                self.i += 1
                value = self.string()
                self.expect(")")
            annotations.append(_make_Annotation(name, value, self.sp(ai, self.i - 1), self.src))
        hi = self.i
        head = toks[hi]
        if head == "permit" or head == "forbid":
            effect = "permit" if head == "permit" else "forbid"  # the constant, not the token's copy
            self.i = hi + 1
        elif head == "require":
            self.i = hi + 1
            self.expect("approval")
            self.expect("for")
            effect = "require_approval"
        else:
            raise GiveUp("expected a rule head")
        head_span = self.sp(hi, self.i - 1)
        target = self.target()
        conditions = []
        while True:
            t = toks[self.i]
            if t == "when" or t == "unless":
                ci = self.i
                self.i += 1
                expr = self.top_expr()
                conditions.append(_make_Condition("when" if t == "when" else "unless", expr,
                                                  self.sp(ci, self.i - 1), self.src))
            else:
                break
        clauses = []
        while True:
            t = toks[self.i]
            if t == "grant":
                clauses.append(self.grant())
            elif t == "by":
                ci = self.i
                self.i += 1
                names = [self.string()]
                while toks[self.i] == ",":
                    self.i += 1
                    names.append(self.string())
                clauses.append(_make_By(tuple(names), self.sp(ci, self.i - 1), self.src))
            elif t == "because":
                ci = self.i
                self.i += 1
                text = self.string()
                clauses.append(_make_Because(text, self.sp(ci, self.i - 1), self.src))
            elif t == "limit":
                clauses.append(self.limit())
            else:
                break
        t = toks[self.i]
        if t not in _CLAUSE_OR_STATEMENT and t not in _SCHEMA:
            raise GiveUp("unexpected token after a rule")
        return _make_Rule(effect, tuple(annotations), target, tuple(conditions), tuple(clauses),
                          self.sp(i0, self.i - 1), self.src, head_span)

    def _refs(self):
        """subjects / resources: ``*`` or ``NAME [STRING] ("," NAME [STRING])*``."""
        toks = self.toks
        if toks[self.i] == "*":
            self.i += 1
            return None
        refs = []
        while True:
            ri = self.i
            name = self.name_any()
            glob = None
            if toks[self.i][:1] == '"':
                glob = self.string()
            refs.append(_make_EntityRef(name, glob, self.sp(ri, self.i - 1), self.src))
            if toks[self.i] != ",":
                return tuple(refs)
            self.i += 1

    def target(self):
        toks = self.toks
        i0 = self.i
        subjects = self._refs()
        self.expect("to")
        if toks[self.i] == "*":
            self.i += 1
            actions = None
            spans = ()
        else:
            names = []
            spans = []
            while True:
                ai = self.i
                t = toks[ai]
                if t[:1] == '"':
                    names.append(self.string())
                else:
                    names.append(self.name_any())
                spans.append(self.sp(ai, ai))
                if toks[self.i] != ",":
                    break
                self.i += 1
            # one tuple per distinct list of names, and of packed offsets (rules share them)
            packs = self.packs
            actions = tuple(names)
            actions = packs.setdefault(("a", actions), actions)
            spans = tuple(spans)
            if self.small:
                spans = packs.setdefault(("s", spans), spans)
        self.expect("on")
        resources = self._refs()
        return _make_Target(subjects, actions, resources, self.sp(i0, self.i - 1), self.src, spans)

    def grant(self):
        gi = self.i
        self.i += 1
        scopes = [self.top_expr()]
        toks = self.toks
        while toks[self.i] == ",":
            self.i += 1
            scopes.append(self.top_expr())
        self.expect("for")
        di = self.i
        d = toks[di]
        if d[:1] not in _DIGITS or d[-1] not in "dhms" or len(d) > 300:
            raise GiveUp("expected a duration")
        self.i = di + 1
        return _make_Grant(tuple(scopes), parse_duration(d), self.sp(gi, di), self.src)

    def limit(self):
        toks = self.toks
        li = self.i
        self.i += 1
        m = toks[self.i]
        if m == "count":
            self.i += 1
            measure, amount = "count", None
        elif m == "sum":
            self.i += 1
            self.expect("(")
            amount = self.top_expr()
            self.expect(")")
            measure = "sum"
        else:
            raise GiveUp("expected count or sum")
        self.expect("<=")
        i0 = self.i
        bound = self.sum_()
        self.check_depth(bound, i0)
        pers = []
        while toks[self.i] == "per":
            self.i += 1
            pers.append(self.top_expr())
        key = window = None
        if len(pers) > 2:
            raise GiveUp("too many per parts")
        if pers and _is_duration(pers[-1]):
            window = pers.pop().value
        if len(pers) == 2:
            raise GiveUp("the second per takes a window")
        if pers:
            key = pers[0]
            if _is_duration(key):
                raise GiveUp("two windows")
        return _make_Limit(measure, amount, bound, key, window, self.sp(li, self.i - 1), self.src)

    # -- expressions --------------------------------------------------------------
    def check_depth(self, node, i0: int) -> None:
        # a node of depth d spans at least d tokens: only long expressions are measured
        if self.i - i0 > MAX_DEPTH and _height(node) > MAX_DEPTH:
            raise GiveUp("nests too deeply")

    def top_expr(self):
        i0 = self.i
        node = self.expr()
        self.check_depth(node, i0)
        return node

    def expr(self):
        self.nest += 1
        if self.nest > 40:
            raise GiveUp("nests deeply")
        toks = self.toks
        i0 = self.i
        t = toks[i0]
        if t == "any" or t == "all":
            self.i = i0 + 1
            vi = self.i
            if toks[vi] in KEYWORDS:
                raise GiveUp("keyword as a variable")
            var = self.name_any()
            self.expect("in")
            coll = self.or_()
            self.expect(":")
            body = self.expr()
            node = _make_Quantifier(t, var, coll, body, self.sp(i0, self.i - 1), self.src)
        else:
            node = self.or_()
        self.nest -= 1
        return node

    def or_(self):
        i0 = self.i
        first = self.and_()
        toks = self.toks
        if toks[self.i] != "or":
            return first
        items = [first]
        while toks[self.i] == "or":
            self.i += 1
            items.append(self.and_())
        return _make_BoolOp("or", tuple(items), self.sp(i0, self.i - 1), self.src)

    def and_(self):
        i0 = self.i
        toks = self.toks
        # not_() inline for an operand without "not"
        first = self.comparison() if toks[i0] != "not" else self.not_()
        if toks[self.i] != "and":
            return first
        items = [first]
        while toks[self.i] == "and":
            self.i += 1
            items.append(self.comparison() if toks[self.i] != "not" else self.not_())
        return _make_BoolOp("and", tuple(items), self.sp(i0, self.i - 1), self.src)

    def not_(self):
        toks = self.toks
        i0 = self.i
        if toks[i0] != "not":
            return self.comparison()
        j = i0
        while toks[j] == "not":
            j += 1
        self.i = j
        node = self.comparison()
        end = self.i - 1
        for k in range(j - 1, i0 - 1, -1):
            node = _make_Unary("not", node, self.sp(k, end), self.src)
        return node

    def comparison(self):
        i0 = self.i
        left = self.sum_()
        toks = self.toks
        t = toks[self.i]
        if t in _CMP:
            self.i += 1
            right = self.sum_()
            # the operator interned: a token's own string would be kept once per node
            return _make_Binary(_intern(t), left, right, self.sp(i0, self.i - 1), self.src)
        if t == "in":
            self.i += 1
            right = self.sum_()
            return _make_Binary("in", left, right, self.sp(i0, self.i - 1), self.src)
        if t == "not":
            if toks[self.i + 1] != "in":
                raise GiveUp("not without in")
            self.i += 2
            right = self.sum_()
            return _make_Binary("not in", left, right, self.sp(i0, self.i - 1), self.src)
        if t == "matches":
            self.i += 1
            pattern = self.string()
            return _make_Matches(left, pattern, self.sp(i0, self.i - 1), self.src)
        if t == "has":
            self.i += 1
            if toks[self.i][:1] == '"':
                name = self.string()
            else:
                name = self.name_any()
            return _make_Has(left, name, self.sp(i0, self.i - 1), self.src)
        return left

    def sum_(self):
        i0 = self.i
        toks = self.toks
        # product() and unary() inline for an operand that starts with no "-" (most do):
        # two calls fewer per operand, the same nodes and spans
        left = self.postfix() if toks[i0] != "-" else self.unary()
        t = toks[self.i]
        if t == "*" or t == "/":
            left = self._product_from(i0, left)
            t = toks[self.i]
        while t == "+" or t == "-":
            self.i += 1
            right = self.product()
            left = _make_Binary(t, left, right, self.sp(i0, self.i - 1), self.src)
            t = toks[self.i]
        return left

    def product(self):
        i0 = self.i
        return self._product_from(i0, self.unary())

    def _product_from(self, i0: int, left):
        """The product whose first operand, ``left``, started at token ``i0``."""
        toks = self.toks
        t = toks[self.i]
        while t == "*" or t == "/":
            self.i += 1
            right = self.unary()
            left = _make_Binary(t, left, right, self.sp(i0, self.i - 1), self.src)
            t = toks[self.i]
        return left

    def unary(self):
        toks = self.toks
        i0 = self.i
        if toks[i0] != "-":
            return self.postfix()
        j = i0
        while toks[j] == "-":
            j += 1
        self.i = j
        node = self.postfix()
        end = self.i - 1
        for k in range(j - 1, i0 - 1, -1):
            node = _make_Unary("-", node, self.sp(k, end), self.src)
        return node

    def postfix(self):
        toks = self.toks
        i0 = self.i
        node = self.atom()
        t = toks[self.i]
        while t == "." or t == "[":
            self.i += 1
            if t == ".":
                name = self.name_any()
                node = _make_Attr(node, name, self.sp(i0, self.i - 1), self.src)
            else:
                idx = self.expr()
                self.expect("]")
                node = _make_Index(node, idx, self.sp(i0, self.i - 1), self.src)
            t = toks[self.i]
        return node

    def atom(self):
        toks = self.toks
        i = self.i
        t = toks[i]
        c = t[:1]
        if c in _NAME_START:
            if t in KEYWORDS:
                if t == "true" or t == "false":
                    self.i = i + 1
                    return _make_Literal(t == "true", "bool", self.sp(i, i), self.src)
                raise GiveUp("keyword in an expression")
            self.i = i + 1
            if toks[i + 1] == "(":
                self.i = i + 2
                args = []
                if toks[self.i] != ")":
                    args.append(self.expr())
                    while toks[self.i] == ",":
                        self.i += 1
                        args.append(self.expr())
                self.expect(")")
                return _make_Call(_intern(t), tuple(args), self.sp(i, self.i - 1), self.src)
            return _make_Name(_intern(t), self.sp(i, i), self.src)
        if c == '"':
            self.i = i + 1
            return _make_Literal(self.string_at(i), "string", self.sp(i, i), self.src)
        if c in _DIGITS:
            self.i = i + 1
            last = t[-1]
            if last in "dhms":
                if len(t) > 300:
                    raise GiveUp("long duration")
                return _make_Literal(parse_duration(t), "duration", self.sp(i, i), self.src)
            if "." in t:
                value = float(t)
                if value == float("inf"):
                    raise GiveUp("decimal out of range")
                return _make_Literal(value, "decimal", self.sp(i, i), self.src)
            if len(t) > 300:
                raise GiveUp("long integer")
            return _make_Literal(int(t), "int", self.sp(i, i), self.src)
        if t == "(":
            self.i = i + 1
            inner = self.expr()
            self.expect(")")
            # the node's span covers its parentheses (as the LALR builder's `paren`)
            _setattr(inner, "span", self.sp(i, self.i - 1))
            return inner
        if t == "[":
            self.i = i + 1
            items = []
            while toks[self.i] != "]":
                items.append(self.expr())
                if toks[self.i] == ",":
                    self.i += 1
                elif toks[self.i] != "]":
                    raise GiveUp("expected ',' or ']'")
            self.i += 1
            return _make_ListExpr(tuple(items), self.sp(i, self.i - 1), self.src)
        raise GiveUp("expected an expression")


def _is_duration(node) -> bool:
    return node.__class__ is nodes.Literal and node.kind == "duration"


def parse(text: str, path: str = "<policy>") -> nodes.PolicyFile:
    """The tree of a valid ``text``; :class:`GiveUp` where the fast parser is not sure."""
    try:
        return _Parser(text, path).file()
    except (IndexError, RecursionError, ValueError, TypeError, AttributeError) as e:
        # IndexError: a token read past the end sentinel; ValueError: json/int/float;
        # TypeError/AttributeError: not a str (the LALR path reports it as it always did)
        raise GiveUp(str(e)) from None
