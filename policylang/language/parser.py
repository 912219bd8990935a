"""Text → AST.

The LALR parser is built once per process (Lark's grammar analysis is cached on disk
too) and runs with an inline transformer, so no intermediate parse tree is built and
no step recurses over the input: a 20,000-deep expression costs a diagnostic, not a
``RecursionError``. The first syntax error stops the parse and becomes an E001
:class:`~policylang.language.errors.Diagnostic` inside a :class:`~policylang.language.errors.PolicyError`.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
import threading
from pathlib import Path

import lark
from lark import Lark, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken
from lark.parsers.lalr_analysis import Shift

from . import fastparse, nodes
from .errors import Diagnostic, PolicyError
from .source import Span, offset_of
from .words import closest, parse_duration

#: The Lark versions the driver (:class:`LalrDriver`) is tested with (tests/test_parser_driver.py
#: compares it with ``Lark.parse``). It reads Lark's private LALR tables, so any other
#: version is refused; keep this in step with the ``lark`` line of pyproject.toml.
LARK_VERSIONS = ((1, 2), (1, 4))  # lower bound inclusive, upper exclusive


def check_lark_version(version: str) -> None:
    """Raise :class:`RuntimeError` unless ``version`` is within :data:`LARK_VERSIONS`."""
    (lo, hi) = LARK_VERSIONS
    parts = tuple(int(m) for m in re.findall(r"\d+", version)[:2])
    if not (lo <= parts < hi):
        raise RuntimeError(
            f"policylang's parser reads Lark's private LALR tables and is tested with "
            f"lark>={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}; lark {version} is installed"
        )


#: Deepest expression nesting accepted (docs/language.md#tokens asks for at least 100).
MAX_DEPTH = 128

KEYWORDS = frozenset(
    "permit forbid require approval for to on when unless grant by because const option "
    "high_impact and or not in matches has any all true false".split()
)


def grammar_path() -> Path:
    """The grammar file: inside the installed package, or the checkout's ``grammar/``."""
    package = Path(__file__).resolve().parent.parent  # policylang/
    for candidate in (package / "grammar" / "policy.lark", package.parent / "grammar" / "policy.lark"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("policylang grammar (policy.lark) not found next to the package")


class LexToken:
    """A token: lighter than ``lark.Token`` (not a ``str`` subclass), same attributes."""

    __slots__ = ("type", "value", "start_pos", "line", "column", "end_line", "end_column", "end_pos")

    def __init__(self, type, value, start_pos, line, column, end_line, end_column, end_pos):
        self.type = type
        self.value = value
        self.start_pos = start_pos
        self.line = line
        self.column = column
        self.end_line = end_line
        self.end_column = end_column
        self.end_pos = end_pos

    def __repr__(self) -> str:
        return f"LexToken({self.type}, {self.value!r})"


class _SyntaxProblem(Exception):
    """Raised from inside the transformer; becomes an E001."""

    def __init__(self, message: str, span: Span):
        super().__init__(message)
        self.message = message
        self.span = span


class _Builder:
    """Inline LALR callbacks: children in, AST nodes out (one rule at a time)."""

    def __init__(self) -> None:
        self.path = "<policy>"
        self.depth: dict[int, int] = {}

    # -- helpers ---------------------------------------------------------------
    def _tok_span(self, t: LexToken) -> Span:
        return Span(self.path, t.line, t.column, t.end_line, t.end_column, t.start_pos, t.end_pos)

    def _span(self, first, last=None) -> Span:
        """The span from the start of ``first`` to the end of ``last`` (tokens or nodes)."""
        if last is None:
            last = first
        if first.__class__ is LexToken:
            line, col, start = first.line, first.column, first.start_pos
        else:
            sp = first.span
            line, col, start = sp.line, sp.column, sp.start
        if last.__class__ is LexToken:
            return Span(self.path, line, col, last.end_line, last.end_column, start, last.end_pos)
        sp = last.span
        return Span(self.path, line, col, sp.end_line, sp.end_column, start, sp.end)

    def _expr(self, node, *kids):
        depth = self.depth
        d = 1
        for k in kids:
            kd = depth.get(id(k), 1) + 1
            if kd > d:
                d = kd
        if d > MAX_DEPTH:
            raise _SyntaxProblem(f"expression nests more than {MAX_DEPTH} levels deep; split it up", node.span)
        depth[id(node)] = d
        return node

    def _string(self, t: LexToken) -> str:
        raw = t.value
        # without a backslash the literal is its text: the STRING terminal admits no control
        # character, so json.loads would return exactly the characters between the quotes
        value = raw[1:-1] if "\\" not in raw else json.loads(raw)
        if not value.isascii() and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
            raise _SyntaxProblem("string contains an unpaired \\u surrogate escape", self._tok_span(t))
        # one object per distinct short string (ids, departments … repeat across rules)
        return sys.intern(value) if len(value) <= 64 else value

    def _check_not_keyword(self, t: LexToken, what: str) -> None:
        if t.value in KEYWORDS:
            raise _SyntaxProblem(f"'{t.value}' is a reserved keyword and cannot name a {what}", self._tok_span(t))

    # -- file and statements ----------------------------------------------------
    def start(self, kids):
        statements = kids[0] if kids else []
        span = Span(self.path, 1, 1, 1, 1, 0, 0)
        if statements:
            span = Span.join(statements[0].span, statements[-1].span)
        return nodes.PolicyFile(self.path, tuple(statements), span=span)

    def statements(self, kids):
        if len(kids) == 1:
            return [kids[0]]
        kids[0].append(kids[1])
        return kids[0]

    exprs = statements

    def const_decl(self, kids):
        kw, name, _eq, value = kids
        self._check_not_keyword(name, "constant")
        return nodes.Const(name.value, value, span=self._span(kw, value), name_span=self._tok_span(name))

    def option_decl(self, kids):
        kw, name, _eq, value = kids
        return nodes.Option(name.value, value, span=self._span(kw, value), name_span=self._tok_span(name))

    def _expect_word(self, t: LexToken, allowed: tuple[str, ...]) -> None:
        if t.value not in allowed:
            want = " or ".join(f"'{a}'" for a in allowed)
            best = _keyword_for(t.value, set(allowed) | {"permit", "forbid", "require", "const", "option"})
            hint = f"; did you mean '{best}'?" if best else ""
            raise _SyntaxProblem(f"expected {want} to start a schema declaration, found '{t.value}'{hint}",
                                 self._tok_span(t))

    def entity_decl(self, kids):
        cat, name, *marker, block = kids
        self._expect_word(cat, ("principal", "resource"))
        if marker and marker[0].value != "authoritative":
            raise _SyntaxProblem(f"expected '{{' or 'authoritative' after {cat.value} {name.value}, "
                                 f"found '{marker[0].value}'", self._tok_span(marker[0]))
        return nodes.EntityDecl(cat.value, name.value, block.fields, bool(marker),
                              span=self._span(cat, block.close))

    def _action_decl(self, kids, high_impact):
        first = kids[0]
        word = kids[1] if high_impact else kids[0]
        self._expect_word(word, ("action",))
        rest = kids[2:] if high_impact else kids[1:]
        names = [k[0] for k in rest if isinstance(k, tuple)]
        types = [k for k in rest if isinstance(k, LexToken) and k.type == "NAME"]
        block = rest[-1] if isinstance(rest[-1], _Block) else None
        last = block.close if block else types[-1]
        return nodes.ActionDecl(tuple(names), tuple(t.value for t in types), block.fields if block else None,
                              high_impact, span=self._span(first, last))

    def action_decl(self, kids):
        return self._action_decl(kids, False)

    def high_impact_action_decl(self, kids):
        return self._action_decl(kids, True)

    def context_decl(self, kids):
        word, block = kids
        self._expect_word(word, ("context",))
        return nodes.ContextDecl(block.fields, span=self._span(word, block.close))

    def type_name(self, kids):
        return kids[0]

    def field_block(self, kids):
        return _Block(tuple(k for k in kids if isinstance(k, nodes.FieldDecl)), kids[-1])

    def field(self, kids):
        name, typ = kids
        return nodes.FieldDecl(name.value, typ, span=self._span(name, typ))

    def type_ref(self, kids):
        name = kids[0]
        arg = next((k for k in kids[1:] if isinstance(k, nodes.TypeRef)), None)
        optional = any(isinstance(k, LexToken) and k.type == "QMARK" for k in kids)
        return nodes.TypeRef(name.value, arg, optional, span=self._span(name, kids[-1]))

    # -- rules --------------------------------------------------------------------
    def annotation(self, kids):
        at, name = kids[0], kids[1]
        value = self._string(kids[3]) if len(kids) > 3 else None
        return nodes.Annotation(name.value, value, span=self._span(at, kids[-1]))

    def permit(self, kids):
        return ("permit", self._span(kids[0]))

    def forbid(self, kids):
        return ("forbid", self._span(kids[0]))

    def require_approval(self, kids):
        return ("require_approval", self._span(kids[0], kids[-1]))

    def rule(self, kids):
        i = 0
        annotations = []
        while isinstance(kids[i], nodes.Annotation):
            annotations.append(kids[i])
            i += 1
        effect, head_span = kids[i]
        target = kids[i + 1]
        rest = kids[i + 2:]
        conditions = tuple(k for k in rest if isinstance(k, nodes.Condition))
        clauses = tuple(k for k in rest if not isinstance(k, nodes.Condition))
        first = annotations[0].span if annotations else head_span
        last = rest[-1].span if rest else target.span
        return nodes.Rule(effect, tuple(annotations), target, conditions, clauses,
                        span=Span.join(first, last), head_span=head_span)

    def target(self, kids):
        subjects, _to, actions, _on, resources = kids
        acts, act_spans, _first, _last = actions
        return nodes.Target(subjects[0], acts, resources[0], span=Span.join(subjects[2], resources[3]),
                          action_spans=act_spans)

    def _refs(self, kids):
        if len(kids) == 1 and isinstance(kids[0], LexToken) and kids[0].type == "STAR":
            s = self._span(kids[0])
            return (None, None, s, s)
        return (tuple(kids), kids[0], kids[0].span, kids[-1].span)

    def subjects(self, kids):
        return self._refs(kids)

    def resources(self, kids):
        return self._refs(kids)

    def entity_ref(self, kids):
        name = kids[0]
        glob = self._string(kids[1]) if len(kids) > 1 else None
        return nodes.EntityRef(name.value, glob, span=self._span(name, kids[-1]))

    def actions(self, kids):
        if len(kids) == 1 and isinstance(kids[0], LexToken) and kids[0].type == "STAR":
            s = self._span(kids[0])
            return (None, (), s, s)
        names = tuple(k[0] for k in kids)
        spans = tuple(k[1] for k in kids)
        return (names, spans, spans[0], spans[-1])

    def action_ref(self, kids):
        t = kids[0]
        value = self._string(t) if t.type == "STRING" else t.value
        return (value, self._tok_span(t))

    def when(self, kids):
        return nodes.Condition("when", kids[1], span=self._span(kids[0], kids[1]))

    def unless(self, kids):
        return nodes.Condition("unless", kids[1], span=self._span(kids[0], kids[1]))

    def grant_clause(self, kids):
        kw, scopes, _for, dur = kids
        return nodes.Grant(tuple(scopes), parse_duration(dur.value), span=self._span(kw, dur))

    def by_clause(self, kids):
        kw, *names = kids
        return nodes.By(tuple(self._string(n) for n in names), span=self._span(kw, names[-1]))

    def limit_count(self, kids):
        return ("count", None, kids[0])

    def limit_sum(self, kids):
        return ("sum", kids[2], kids[3])

    def limit_per(self, kids):
        return kids[1]

    def limit_clause(self, kids):
        kw, (measure, amount, _last), _le, bound, *pers = kids
        key = window = None
        if len(pers) > 2:
            raise _SyntaxProblem("a limit has at most two `per` parts: the key, then the window "
                                 "(limit count <= 20 per principal.id per 1h)", pers[2].span)
        if pers and _is_duration(pers[-1]):
            window = pers.pop().value
        if len(pers) == 2:
            raise _SyntaxProblem("the second `per` of a limit takes a window, a duration such as 1h or 1d",
                                 pers[1].span)
        if pers:
            key = pers[0]
            if _is_duration(key):  # `per 1h per 1d`
                raise _SyntaxProblem("a limit has one window; the first `per` names the key", key.span)
        return nodes.Limit(measure, amount, bound, key, window, span=self._span(kw, kids[-1]))

    def because_clause(self, kids):
        kw, text = kids
        return nodes.Because(self._string(text), span=self._span(kw, text))

    # -- expressions --------------------------------------------------------------
    def quantifier(self, kids):
        kw, var, _in, coll, body = kids
        self._check_not_keyword(var, "variable")
        return self._expr(nodes.Quantifier(kw.value, var.value, coll, body, span=self._span(kw, body)), coll, body)

    def or_op(self, kids):
        return self._boolop("or", kids[0], kids[2])

    def and_op(self, kids):
        return self._boolop("and", kids[0], kids[2])

    def _boolop(self, op, left, right):
        # An and/or chain is one node; while its chain is open (not yet closed by
        # parentheses or the end of the parse) it grows in place, so a chain of n terms
        # costs O(n), not O(n^2).
        rdepth = self.depth.get(id(right), 1)
        if isinstance(left, nodes.BoolOp) and left.op == op and id(left) in self._open:
            self._open[id(left)][1].append(right)
            object.__setattr__(left, "span", Span.join(left.span, right.span))
            node = left
            d = max(self.depth[id(node)], rdepth + 1)
        else:
            node = nodes.BoolOp(op, (), span=Span.join(left.span, right.span))
            self._open[id(node)] = (node, [left, right])
            d = 1 + max(self.depth.get(id(left), 1), rdepth)
        self.depth[id(node)] = d
        if d > MAX_DEPTH:
            raise _SyntaxProblem(f"expression nests more than {MAX_DEPTH} levels deep; split it up", node.span)
        return node

    def _close(self, node) -> None:
        entry = self._open.pop(id(node), None)
        if entry is not None:
            object.__setattr__(entry[0], "items", tuple(entry[1]))

    def close_all(self) -> None:
        for node, items in self._open.values():
            object.__setattr__(node, "items", tuple(items))
        self._open.clear()

    def not_op(self, kids):
        return self._expr(nodes.Unary("not", kids[1], span=self._span(kids[0], kids[1])), kids[1])

    def neg(self, kids):
        return self._expr(nodes.Unary("-", kids[1], span=self._span(kids[0], kids[1])), kids[1])

    def compare(self, kids):
        left, op, right = kids
        return self._expr(nodes.Binary(op.value, left, right, span=self._span(left, right)), left, right)

    arith = compare

    def in_op(self, kids):
        left, _in, right = kids
        return self._expr(nodes.Binary("in", left, right, span=self._span(left, right)), left, right)

    def not_in_op(self, kids):
        left, _not, _in, right = kids
        return self._expr(nodes.Binary("not in", left, right, span=self._span(left, right)), left, right)

    def matches(self, kids):
        left, _kw, pat = kids
        return self._expr(nodes.Matches(left, self._string(pat), span=self._span(left, pat)), left)

    def has(self, kids):
        left, _kw, name = kids
        value = self._string(name) if name.type == "STRING" else name.value
        return self._expr(nodes.Has(left, value, span=self._span(left, name)), left)

    def attr(self, kids):
        obj, name = kids
        return self._expr(nodes.Attr(obj, name.value, span=self._span(obj, name)), obj)

    def index(self, kids):
        obj, _l, idx, r = kids
        return self._expr(nodes.Index(obj, idx, span=self._span(obj, r)), obj, idx)

    def string(self, kids):
        return nodes.Literal(self._string(kids[0]), "string", span=self._span(kids[0]))

    def integer(self, kids):
        t = kids[0]
        if len(t.value) > 300:
            raise _SyntaxProblem("integer literal is too long (more than 300 digits)", self._span(t))
        return nodes.Literal(int(t.value), "int", span=self._span(t))

    def decimal(self, kids):
        t = kids[0]
        value = float(t.value)
        if value == float("inf"):
            raise _SyntaxProblem("decimal literal is out of range", self._span(t))
        return nodes.Literal(value, "decimal", span=self._span(t))

    def duration(self, kids):
        t = kids[0]
        if len(t.value) > 300:
            raise _SyntaxProblem("duration literal is too long", self._span(t))
        return nodes.Literal(parse_duration(t.value), "duration", span=self._span(t))

    def true(self, kids):
        return nodes.Literal(True, "bool", span=self._span(kids[0]))

    def false(self, kids):
        return nodes.Literal(False, "bool", span=self._span(kids[0]))

    def name(self, kids):
        # The contextual lexer hands a keyword over as a NAME where the keyword itself
        # cannot follow (`when for == 1`); keywords are reserved, so that is an E001.
        word = kids[0].value
        if word in ("any", "all"):
            raise _SyntaxProblem(f"a quantifier used as an operand (of 'not', 'and', 'or', a comparison …) "
                                 f"must be in parentheses: ({word} x in …: …)", self._tok_span(kids[0]))
        if word in KEYWORDS:
            raise _SyntaxProblem(f"'{word}' is a reserved keyword and cannot be used as a name",
                                 self._tok_span(kids[0]))
        return nodes.Name(kids[0].value, span=self._span(kids[0]))

    def call(self, kids):
        name, r = kids[0], kids[-1]
        self._check_not_keyword(name, "function")
        args = tuple(kids[2]) if len(kids) == 4 else ()
        return self._expr(nodes.Call(name.value, tuple(args), span=self._span(name, r)), *args)

    def paren(self, kids):
        inner = kids[1]
        # a parenthesised and/or chain is a unit: close it so nothing flattens into it
        self._close(inner)
        # the node's span covers its parentheses, so source excerpts stay balanced
        object.__setattr__(inner, "span", self._span(kids[0], kids[2]))
        return inner

    def list(self, kids):
        items = tuple(kids[1]) if len(kids) == 3 else ()
        return self._expr(nodes.ListExpr(items, span=self._span(kids[0], kids[-1])), *items)

    def reset(self, path: str) -> None:
        self.path = path
        self.depth = {}
        self._open: dict[int, tuple[nodes.BoolOp, list]] = {}


def _is_duration(node) -> bool:
    return node.__class__ is nodes.Literal and node.kind == "duration"


class _Block:
    """A ``{ field: type, … }`` block and its closing brace (for the span)."""

    __slots__ = ("fields", "close")

    def __init__(self, fields, close):
        self.fields = fields
        self.close = close


class LalrDriver:
    """Lark's LALR tables driven by a tight loop, with a one-regex contextual lexer.

    Lark compiles the grammar (grammar/policy.lark) into LALR(1) tables and the rule
    callbacks; this class only runs them, about twice as fast as ``Lark.parse`` on large
    files because (1) the lexer scans with a single compiled alternation of the grammar's
    own terminal patterns and only asks the parser state whether an identifier is a
    keyword *here* (what the contextual lexer does for this grammar), and (2) the
    unit reductions of the precedence chain (``?expr: or_expr`` …) skip Lark's callback
    wrappers. Errors are Lark's own ``UnexpectedToken`` / ``UnexpectedCharacters``.

    It reads Lark's *private* internals (``lark.parser.parser.parser``: ``parse_table``,
    ``callbacks``; ``lalr_analysis.Shift``; ``rule.options.expand1``), hence
    :data:`LARK_VERSIONS`. tests/test_parser_driver.py checks that it accepts the same
    texts as ``Lark(..., lexer="contextual").parse`` and builds the same trees, with one
    known difference: this scanner always takes the longest token, so where a state takes
    a keyword (or ``=``) but not a NAME (or ``==``), Lark's contextual lexer splits the
    literal off the front of the longer token (``require approval format …`` → FOR + NAME
    ``mat``, accepted) and this scanner does not (NAME ``format``: an error).
    A new regexp terminal in the grammar must be added to ``regex_order`` below.
    """

    def __init__(self, lark: Lark) -> None:
        terms = {t.name: t for t in lark.terminals}
        regex_order = ["WS", "COMMENT", "DURATION", "DECIMAL", "INT", "NAME", "STRING"]
        parts = [f"(?P<{n}>{terms[n].pattern.to_regexp()})" for n in regex_order]
        self.keywords: dict[str, str] = {}
        punct = []
        for t in lark.terminals:
            if t.name in regex_order:
                continue
            if t.pattern.value.isidentifier():
                self.keywords[t.pattern.value] = t.name
            else:
                punct.append(t)
        punct.sort(key=lambda t: -len(t.pattern.value))
        parts += [f"(?P<{t.name}>{re.escape(t.pattern.value)})" for t in punct]
        self.scanner = re.compile("|".join(parts))

        lalr = lark.parser.parser.parser
        table = lalr.parse_table
        reductions = {}
        for rule, callback in lalr.callbacks.items():
            unit = rule.options.expand1 and len(rule.expansion) == 1 and not rule.alias
            reductions[rule] = (len(rule.expansion), str(rule.origin.name), None if unit else callback)
        # Plain str keys (Lark's may be Token objects, whose __eq__ is Python code), and
        # each reduce action carries its (size, goto symbol, callback) directly.
        self.states = {
            st: {str(k): (act, arg if act is Shift else reductions[arg]) for k, (act, arg) in row.items()}
            for st, row in table.states.items()
        }
        self.start_state = table.start_states["start"]
        self.end_state = table.end_states["start"]

    def parse(self, text: str, probe: list | None = None):
        """Parse ``text``. With a ``probe`` list, every token is appended to it with the
        parser state it met (before any reduction): the error path re-parses a failed text
        that way to find the word that started the trouble (:func:`_syntax_diagnostic`)."""
        states, keywords, end_state = self.states, self.keywords, self.end_state
        intern = sys.intern
        match = self.scanner.match
        state_stack = [self.start_state]
        value_stack: list = []
        pos, line, line_start, n = 0, 1, 0, len(text)
        while True:
            # ---- next token
            if pos < n:
                m = match(text, pos)
                if m is None:
                    allowed = {k for k in states[state_stack[-1]] if k.isupper()}
                    raise UnexpectedCharacters(text, pos, line, pos - line_start + 1, allowed=allowed)
                kind = m.lastgroup
                end = m.end()
                if kind == "WS":
                    nl = text.count("\n", pos, end)
                    if nl:
                        line += nl
                        line_start = text.rfind("\n", pos, end) + 1
                    pos = end
                    continue
                if kind == "COMMENT":
                    pos = end
                    continue
                value = m.group()
                if kind == "NAME":
                    value = intern(value)  # names repeat: one string object each
                    kw = keywords.get(value)
                    if kw is not None and kw in states[state_stack[-1]]:
                        kind = kw
                col = pos - line_start + 1
                token = LexToken(kind, value, pos, line, col, line, col + (end - pos), end)
                pos = end
            else:
                col = pos - line_start + 1
                token = LexToken("$END", "", pos, line, col, line, col, pos)
            # ---- feed it
            ttype = token.type
            if probe is not None:
                probe.append((token, state_stack[-1]))
            while True:
                try:
                    action, arg = states[state_stack[-1]][ttype]
                except KeyError:
                    expected = {k for k in states[state_stack[-1]] if k.isupper()}
                    if ttype == "NAME" and token.value in CONTEXTUAL:
                        # a contextual keyword that fits nowhere here: reported as its
                        # keyword terminal, as Lark's contextual lexer does (`per` → PER)
                        token.type = keywords[token.value]
                    raise UnexpectedToken(token, expected) from None
                if action is Shift:
                    state_stack.append(arg)
                    value_stack.append(token)
                    break
                size, origin, callback = arg
                if callback is None:
                    # a unit reduction of the precedence chain (?expr: or_expr …): the value
                    # stays where it is, only the state changes
                    state_stack[-1] = states[state_stack[-2]][origin][1]
                    continue
                if size:
                    children = value_stack[-size:]
                    del state_stack[-size:]
                    del value_stack[-size:]
                else:
                    children = []
                value = children[0] if callback is None else callback(children)
                state_stack.append(states[state_stack[-1]][origin][1])
                value_stack.append(value)
                if token.type == "$END" and state_stack[-1] == end_state:
                    return value_stack[-1]


_lock = threading.Lock()
_builder = _Builder()
_driver: LalrDriver | None = None


def _get_parser() -> LalrDriver:
    global _driver
    if _driver is None:
        check_lark_version(lark.__version__)
        lark_parser = Lark(
            grammar_path().read_text(encoding="utf-8"),
            parser="lalr",
            lexer="basic",
            transformer=_builder,
            maybe_placeholders=False,
            cache=True,  # Lark keeps the grammar analysis in the temp dir: faster start-up
        )
        _driver = LalrDriver(lark_parser)
    return _driver


# ----------------------------------------------------------------------- errors

_FRIENDLY = {
    "NAME": "a name",
    "STRING": "a string",
    "INT": "an integer",
    "DECIMAL": "a decimal",
    "DURATION": "a duration such as 10m",
    "$END": "end of file",
    "DOT": "'.'",
    "COMMA": "','",
    "COLON": "':'",
}
_PUNCT = {
    "EQ": "==", "NE": "!=", "LE": "<=", "GE": ">=", "LESSTHAN": "<", "MORETHAN": ">",
    "EQUALS": "=", "PLUS": "+", "MINUS": "-", "STAR": "*", "SLASH": "/", "AT": "@",
    "QMARK": "?", "LPAR": "(", "RPAR": ")", "LSQB": "[", "RSQB": "]", "LBRACE": "{",
    "RBRACE": "}",
}
#: identifier-shaped terminals that are keywords only where the grammar takes them (not reserved)
CONTEXTUAL = frozenset({"limit", "count", "sum", "per"})
_STATEMENT = {"CONST", "OPTION", "PERMIT", "FORBID", "REQUIRE", "AT", "HIGH_IMPACT"}
_OPERATOR = {"EQ", "NE", "LE", "GE", "LESSTHAN", "MORETHAN", "PLUS", "MINUS", "STAR", "SLASH",
             "IN", "NOT", "MATCHES", "HAS", "AND", "OR", "LSQB", "DOT"}
_EXPR = {"NAME", "STRING", "INT", "DECIMAL", "DURATION", "TRUE", "FALSE", "LPAR", "LSQB",
         "MINUS", "NOT", "ANY", "ALL"}


def _describe(term: str) -> str:
    if term in _FRIENDLY:
        return _FRIENDLY[term]
    if term in _PUNCT:
        return f"'{_PUNCT[term]}'"
    if term.isupper() and (term.lower() in KEYWORDS or term.lower() in CONTEXTUAL):
        return f"'{term.lower()}'"
    return term


def describe_expected(expected) -> str:
    exp = set(expected)
    parts: list[str] = []
    if {"PERMIT", "FORBID", "REQUIRE"} <= exp:
        exp -= _STATEMENT | {"NAME"}
        tail = "a new statement"
    else:
        tail = None
    if {"PLUS", "STAR", "EQ"} <= exp:
        exp -= _OPERATOR
        parts.append("an operator")
    if {"STRING", "INT", "NAME", "LPAR", "LSQB"} <= exp:
        exp -= _EXPR
        parts.append("an expression")
    parts.extend(sorted(_describe(t) for t in exp if t != "$END"))
    if tail:
        parts.append(tail)
    if "$END" in exp:
        parts.append("end of file")
    if not parts:
        return "something else"
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


def _found(tok) -> str:
    if tok.type == "$END":
        return "end of file"
    text = tok.value if len(tok.value) <= 30 else tok.value[:27] + "..."
    if tok.type == "NAME":
        return f"name '{text}'"
    if tok.type == "STRING":
        return f"string {text}"
    return f"'{text}'"


#: words other languages use where policylang has a keyword (checked after the keyword's
#: case: `AND` → `and`)
_SYNONYMS = {"if": "when", "where": "when", "only_if": "when", "except": "unless", "but": "unless",
             "reason": "because", "since": "because", "&&": "and", "||": "or", "&": "and", "|": "or",
             "!": "not", "contains": "in", "approve": "approval", "deny": "forbid", "allow": "permit"}
#: statement-start words of a schema declaration (docs/language.md#schema)
_SCHEMA_WORDS = frozenset({"principal", "resource", "action", "context"})
#: terminals that always begin a statement: a backward search for the misread word stops there
_STATEMENT_START = frozenset({"PERMIT", "FORBID", "REQUIRE", "CONST", "OPTION", "HIGH_IMPACT", "AT"})
#: tokens that begin an operand: a name right before one was likely meant as a keyword
_OPERAND_START = frozenset({"NAME", "STRING", "INT", "DECIMAL", "DURATION", "LPAR", "LSQB"})


def _state_keywords(driver: "LalrDriver", state) -> set[str]:
    """The keywords (reserved or contextual) the parser takes in ``state``."""
    row = driver.states[state]
    return {word for word, term in driver.keywords.items() if term in row}


def _keyword_for(word: str, candidates: set[str]) -> str | None:
    """The keyword ``word`` was probably meant to be, among ``candidates``, or None."""
    if word in candidates:
        return None
    low = word.lower()
    if low in candidates:
        return low
    syn = _SYNONYMS.get(low)
    if syn is not None and syn in candidates:
        return syn
    # a little stricter than words.closest (0.6): `contians` is not `const`
    close = difflib.get_close_matches(low, sorted(candidates), n=1, cutoff=0.65)
    if close:
        return close[0]
    near = closest(low, _SYNONYMS)
    if near is not None and _SYNONYMS[near] in candidates:
        return _SYNONYMS[near]
    return None


def _did_you_mean(word: str, best: str) -> str:
    if best == "in" and word.lower() not in ("in", "inn", "ni"):
        return "did you mean 'in'? (membership reads `\"x\" in resource.tags`)"
    return f"did you mean '{best}'?"


def _misread_word(e: UnexpectedToken, probe: list, driver: "LalrDriver"):
    """``(token, message)`` for a word that was meant as a keyword, or None.

    Three shapes (docs/diagnostics.md#e001): the offending token is itself a name where a
    keyword fits (`permit agent too read`); a name after a rule was read as the start of a
    schema declaration (`becuase "x"`, `unles …`, `… AND …`: the parser only fails a few
    tokens later, on the `@` of the next rule or a `.`); a name in an expression is directly
    followed by another operand (`when nto resource.archived`).
    """
    tok = e.token
    if tok.type == "NAME":
        best = _keyword_for(tok.value, {w for w, t in driver.keywords.items() if t in e.expected})
        if best is not None:
            return tok, f"unexpected {_found(tok)}; {_did_you_mean(tok.value, best)}"
    # the tokens before the offending one, back to the start of its statement
    index = len(probe) - 1
    while index >= 0 and probe[index][0] is not tok:
        index -= 1
    if index < 0:
        return None
    for i in range(index - 1, -1, -1):
        t, state = probe[i]
        if t.type in _STATEMENT_START:
            return None
        if t.type != "NAME":
            continue
        row = driver.states[state]
        keywords = _state_keywords(driver, state)
        if "PERMIT" in row and t.value in _SCHEMA_WORDS:
            if i < index - 1:
                return None  # a schema declaration that got under way: its own error
            continue  # `nto resource.x`: the name before it may be the misread word
        if "PERMIT" in row:
            # only principal/resource/action/context start a statement with a name: any
            # other word here is a mistake, whatever the parser made of it afterwards
            best = _keyword_for(t.value, keywords)
            if best is not None:
                return t, f"unknown word '{t.value}'; {_did_you_mean(t.value, best)}"
            expected = {k for k in row if k.isupper() and k != "NAME"}
            return t, f"unexpected {_found(t)}; expected {describe_expected(expected)}"
        if probe[i + 1][0].type in _OPERAND_START:
            best = _keyword_for(t.value, keywords)
            if best is not None:
                return t, f"unknown word '{t.value}'; {_did_you_mean(t.value, best)}"
    return None


def _character_hint(text: str, pos: int) -> tuple[str, int] | None:
    """``(message, length)`` for a character other languages use: `&&`, `||`, `!`, `'…'`."""
    ch = text[pos] if 0 <= pos < len(text) else ""
    if ch in "&|":
        op = ch * 2 if text.startswith(ch * 2, pos) else ch
        word = _SYNONYMS[op]
        return f"'{op}' is not an operator; did you mean '{word}'?", len(op)
    if ch == "!":
        return "'!' is not an operator; did you mean 'not' (or '!=')?", 1
    if ch == "'":
        end = text.find("'", pos + 1)
        newline = text.find("\n", pos + 1)
        if end != -1 and (newline == -1 or end < newline) and end - pos <= 60:
            inner = text[pos + 1:end]
            return (f"strings are written in double quotes: {json.dumps(inner, ensure_ascii=False)}, "
                    f"not '{inner}'"), end - pos + 1
        return "strings are written in double quotes (\"…\"), not single quotes", 1
    return None


def _syntax_diagnostic(e: UnexpectedInput, text: str, path: str, probe: list | None = None,
                       driver: "LalrDriver | None" = None) -> Diagnostic:
    misread = None
    if isinstance(e, UnexpectedToken) and probe is not None and driver is not None:
        misread = _misread_word(e, probe, driver)
    if misread is not None:
        tok, msg = misread
        line, col, length = tok.line, tok.column, max(1, len(tok.value))
    elif isinstance(e, UnexpectedToken):
        tok = e.token
        expected = e.expected
        if tok.type == "$END":
            line, col = _end_position(text)
            msg = f"unexpected end of file; expected {describe_expected(expected)}"
            length = 1
        else:
            line, col = tok.line, tok.column
            msg = f"unexpected {_found(tok)}; expected {describe_expected(expected)}"
            length = max(1, len(tok.value.split("\n")[0]))
            if tok.type == "EQUALS" and "EQ" in expected:
                msg += " (use '==' to compare)"
    elif isinstance(e, UnexpectedCharacters):
        line, col = e.line, e.column
        ch = text[e.pos_in_stream] if 0 <= e.pos_in_stream < len(text) else ""
        hint = _character_hint(text, e.pos_in_stream)
        length = 1
        if hint is not None:
            msg, length = hint
        elif ch == '"':
            msg = "unterminated string, a raw control character or a bad escape inside a string"
        elif ch.isdigit():
            msg = "malformed number or duration (durations look like 45s, 10m, 1h30m)"
        else:
            shown = repr(ch) if ch.isprintable() and ch else f"U+{ord(ch):04X}" if ch else "?"
            msg = f"unexpected character {shown}"
        if e.allowed and hint is None:
            msg += f"; expected {describe_expected(e.allowed)}"
    elif isinstance(e, UnexpectedEOF):
        line, col = _end_position(text)
        msg = f"unexpected end of file; expected {describe_expected(e.expected)}"
        length = 1
    else:  # pragma: no cover - lark has no other kinds
        line, col, msg, length = 1, 1, str(e), 1
    start = offset_of(text, line, col)
    return Diagnostic.make("E001", msg, Span(path, line, col, line, col + length, start, start + length))


def _end_position(text: str) -> tuple[int, int]:
    lines = text.split("\n")
    return len(lines), len(lines[-1]) + 1


#: try the recursive-descent parser of policylang/language/fastparse.py first: it builds the
#: same tree for the valid texts it takes and gives up on the rest (then the LALR driver runs)
FAST_PARSE = True


def parse(text: str, path: str = "<policy>", *, fast: bool | None = None) -> nodes.PolicyFile:
    """Parse one policy file. Raises :class:`PolicyError` holding a single E001.

    ``fast``: use the fast parser first (default :data:`FAST_PARSE`); ``False``: the LALR
    driver only (tests compare the two)."""
    if FAST_PARSE if fast is None else fast:
        try:
            return fastparse.parse(text, path)
        except fastparse.GiveUp:
            pass
    with _lock:
        parser = _get_parser()
        _builder.reset(path)
        try:
            tree = parser.parse(text)
            _builder.close_all()
            return tree
        except UnexpectedInput as e:
            # the error path only: parse again, noting each token's parser state, to find a
            # misread keyword a few tokens before the one that failed
            probe: list = []
            _builder.reset(path)
            try:
                parser.parse(text, probe)
            except (UnexpectedInput, _SyntaxProblem):
                pass
            if isinstance(e, UnexpectedToken) and probe and probe[-1][0] is not e.token:
                # the same failure, as tokens of the second parse
                e = UnexpectedToken(probe[-1][0], e.expected)
            diag = _syntax_diagnostic(e, text, path, probe, parser)
        except _SyntaxProblem as e:
            diag = Diagnostic.make("E001", e.message, e.span)
        except RecursionError:  # defensive: nothing here recurses, but never crash
            diag = Diagnostic.make("E001", "policy nests too deeply", Span(path, 1, 1, 1, 2, 0, 1))
        finally:
            _builder.reset(path)
    raise PolicyError([diag.with_line_text(text)])
