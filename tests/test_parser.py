"""The parser (docs/language.md): every statement and expression form, precedence, spans, keywords
and the E001 messages a user sees."""

from __future__ import annotations

import pytest

from policylang.language import nodes as _ast
from policylang.language.errors import PolicyError
from policylang.language.parser import KEYWORDS, MAX_DEPTH, parse
from policylang.language.source import Span

_S0 = Span("<test>", 1, 1, 1, 1)


class _Nodes:
    """``ast`` with a placeholder span filled in: spans take no part in equality."""

    _EXTRA = {"Rule": ("head_span",), "Const": ("name_span",), "Option": ("name_span",)}

    def __getattr__(self, name):
        cls = getattr(_ast, name)
        if not (isinstance(cls, type) and issubclass(cls, _ast.Node)):
            return cls
        extra = {k: _S0 for k in self._EXTRA.get(name, ())}

        def make(*args, **kwargs):
            return cls(*args, span=_S0, **extra, **kwargs)
        return make


ast = _Nodes()
L = ast.Literal
N = ast.Name


def num(v):
    return L(v, "int")


def s(v):
    return L(v, "string")


def expr(src: str) -> ast.Expr:
    """The expression of ``when <src>`` in a minimal rule."""
    f = parse(f"permit agent to read on repo\n  when {src}\n", "t.policy")
    return f.statements[0].conditions[0].expr


def stmt(src: str):
    [st] = parse(src + "\n", "t.policy").statements
    return st


def syntax_error(src: str):
    with pytest.raises(PolicyError) as e:
        parse(src, "t.policy")
    [d] = e.value.diagnostics
    assert d.code == "E001" and d.severity == "error"
    return d


# ------------------------------------------------------------------ statements

def test_empty_file_and_comments_only():
    assert parse("", "t.policy").statements == ()
    assert parse("# just a comment\n\n   # another\n", "t.policy").statements == ()


def test_const_and_option():
    assert stmt("const MAX_RISK = 0.7") == ast.Const("MAX_RISK", L(0.7, "decimal"))
    assert stmt('const ENVS = ["prod", "prod-eu",]') == ast.Const("ENVS", ast.ListExpr((s("prod"), s("prod-eu"))))
    assert stmt("option max_ttl = 1h") == ast.Option("max_ttl", L(3600, "duration"))
    assert stmt("option attenuate_delegation = true") == ast.Option("attenuate_delegation", L(True, "bool"))


def test_schema_declarations():
    assert stmt("principal agent { tenant: string, roles: set<string>, trust: number?, }") == ast.EntityDecl(
        "principal", "agent", (
            ast.FieldDecl("tenant", ast.TypeRef("string")),
            ast.FieldDecl("roles", ast.TypeRef("set", ast.TypeRef("string"))),
            ast.FieldDecl("trust", ast.TypeRef("number", None, True)),
        ))
    assert stmt("resource repo { }") == ast.EntityDecl("resource", "repo", ())
    assert stmt("resource svc { deps: list<set<string>>? }").fields[0].type == ast.TypeRef(
        "list", ast.TypeRef("set", ast.TypeRef("string")), True)
    assert stmt("action read, list on repo, bucket") == ast.ActionDecl(("read", "list"), ("repo", "bucket"), None)
    assert stmt("high_impact action deploy on service { soft: bool }") == ast.ActionDecl(
        ("deploy",), ("service",), (ast.FieldDecl("soft", ast.TypeRef("bool")),), True)
    assert stmt("context { ticket: string?, ip: string? }") == ast.ContextDecl((
        ast.FieldDecl("ticket", ast.TypeRef("string", None, True)),
        ast.FieldDecl("ip", ast.TypeRef("string", None, True)),
    ))


def test_schema_statement_must_start_with_a_category_word():
    d = syntax_error("resourse repo { owner: string }\n")
    assert (d.line, d.column) == (1, 1)
    assert "expected 'principal' or 'resource'" in d.message and "'resourse'" in d.message


def test_full_rule():
    r = stmt('@id("x")\n@tag("owasp:A01")\n@draft\n'
             'require approval for agent "spiffe://a/*", human to read, "odd act" on repo "acme/**", bucket\n'
             '  when risk.score < 0.5\n  unless principal.id == "x"\n'
             '  by "sre-oncall", "release"\n  because "why"')
    assert r == ast.Rule(
        "require_approval",
        (ast.Annotation("id", "x"), ast.Annotation("tag", "owasp:A01"), ast.Annotation("draft", None)),
        ast.Target((ast.EntityRef("agent", "spiffe://a/*"), ast.EntityRef("human")), ("read", "odd act"),
                   (ast.EntityRef("repo", "acme/**"), ast.EntityRef("bucket"))),
        (ast.Condition("when", ast.Binary("<", ast.Attr(N("risk"), "score"), L(0.5, "decimal"))),
         ast.Condition("unless", ast.Binary("==", ast.Attr(N("principal"), "id"), s("x")))),
        (ast.By(("sre-oncall", "release")), ast.Because("why")),
    )
    assert r.annotation("tag") == "owasp:A01" and r.by.approvers == ("sre-oncall", "release")


def test_permit_with_grant_and_star_target():
    r = stmt('permit * to * on *\n  grant "repo:read:" + resource.id, "x" for 1h30m')
    assert r.effect == "permit"
    assert r.target == ast.Target(None, None, None)
    assert r.grant == ast.Grant((ast.Binary("+", s("repo:read:"), ast.Attr(N("resource"), "id")), s("x")), 5400)


def test_forbid_and_rules_need_no_terminator():
    f = parse('forbid * to * on * when delegation.depth > 3 because "deep"\n'
              'permit agent to read on repo const A = 1 permit human to list on repo', "t.policy")
    assert [type(x).__name__ for x in f.statements] == ["Rule", "Rule", "Const", "Rule"]
    assert f.statements[0].effect == "forbid"


def test_any_identifier_is_a_name_in_targets_after_dot_and_has():
    r = stmt("permit agent to delete, list, for, on on repo\n"
             "  when context.for == 1 and context.when == 2 and context has in and principal has \"odd-key\"")
    assert r.target.actions == ("delete", "list", "for", "on")
    a, b, c, d = r.conditions[0].expr.items
    assert a.left == ast.Attr(N("context"), "for")
    assert b.left == ast.Attr(N("context"), "when")
    assert c == ast.Has(N("context"), "in")
    assert d == ast.Has(N("principal"), "odd-key")


def test_roots_are_names():
    assert expr("principal == action") == ast.Binary("==", N("principal"), N("action"))
    assert expr("context.x and resource.y").items == (ast.Attr(N("context"), "x"), ast.Attr(N("resource"), "y"))


# ------------------------------------------------------------------ expressions

@pytest.mark.parametrize("src, tree", [
    ("1 + 2 * 3", ast.Binary("+", num(1), ast.Binary("*", num(2), num(3)))),
    ("(1 + 2) * 3", ast.Binary("*", ast.Binary("+", num(1), num(2)), num(3))),
    ("1 - 2 - 3", ast.Binary("-", ast.Binary("-", num(1), num(2)), num(3))),
    ("8 / 2 / 2", ast.Binary("/", ast.Binary("/", num(8), num(2)), num(2))),
    ("-x * 2", ast.Binary("*", ast.Unary("-", N("x")), num(2))),
    ("- -x", ast.Unary("-", ast.Unary("-", N("x")))),
    ("-a.b", ast.Unary("-", ast.Attr(N("a"), "b"))),
    ("a + 1 < b * 2", ast.Binary("<", ast.Binary("+", N("a"), num(1)), ast.Binary("*", N("b"), num(2)))),
    ("not a == b", ast.Unary("not", ast.Binary("==", N("a"), N("b")))),
    ("not not a", ast.Unary("not", ast.Unary("not", N("a")))),
    ("a or b and not c", ast.BoolOp("or", (N("a"), ast.BoolOp("and", (N("b"), ast.Unary("not", N("c"))))))),
    ("a and b or c", ast.BoolOp("or", (ast.BoolOp("and", (N("a"), N("b"))), N("c")))),
    ("a or b or c", ast.BoolOp("or", (N("a"), N("b"), N("c")))),
    ("(a or b) or c", ast.BoolOp("or", (ast.BoolOp("or", (N("a"), N("b"))), N("c")))),
    ("a and (b and c)", ast.BoolOp("and", (N("a"), ast.BoolOp("and", (N("b"), N("c")))))),
    ("x in [1, 2]", ast.Binary("in", N("x"), ast.ListExpr((num(1), num(2))))),
    ("x not in L", ast.Binary("not in", N("x"), N("L"))),
    ("x + 1 in L", ast.Binary("in", ast.Binary("+", N("x"), num(1)), N("L"))),
    ("not x in L", ast.Unary("not", ast.Binary("in", N("x"), N("L")))),
    ('resource.id matches "acme/**"', ast.Matches(ast.Attr(N("resource"), "id"), "acme/**")),
    ("principal has trust", ast.Has(N("principal"), "trust")),
    ('context has "odd-key"', ast.Has(N("context"), "odd-key")),
    ("a.b.c", ast.Attr(ast.Attr(N("a"), "b"), "c")),
    ('a["k"][0].z', ast.Attr(ast.Index(ast.Index(N("a"), s("k")), num(0)), "z")),
    ("len(x)", ast.Call("len", (N("x"),))),
    ("starts_with(a, \"p\")", ast.Call("starts_with", (N("a"), s("p")))),
    ("f()", ast.Call("f", ())),
    ("lower(x).y", ast.Attr(ast.Call("lower", (N("x"),)), "y")),
    ("[]", ast.ListExpr(())),
    ("[1, [2, 3,],]", ast.ListExpr((num(1), ast.ListExpr((num(2), num(3)))))),
    ("any x in L: x == 1 or y", ast.Quantifier("any", "x", N("L"),
                                                ast.BoolOp("or", (ast.Binary("==", N("x"), num(1)), N("y"))))),
    ("all x in a or b: x", ast.Quantifier("all", "x", ast.BoolOp("or", (N("a"), N("b"))), N("x"))),
    ("any x in L: all y in x: y", ast.Quantifier("any", "x", N("L"), ast.Quantifier("all", "y", N("x"), N("y")))),
    ("a and (any x in L: x)", ast.BoolOp("and", (N("a"), ast.Quantifier("any", "x", N("L"), N("x"))))),
    ("not (all x in L: x)", ast.Unary("not", ast.Quantifier("all", "x", N("L"), N("x")))),
])
def test_expression_forms_and_precedence(src, tree):
    assert expr(src) == tree


@pytest.mark.parametrize("src, value, kind", [
    ('"plain"', "plain", "string"),
    (r'"q\" b\\ s\/ \b\f\n\r\t"', 'q" b\\ s/ \b\f\n\r\t', "string"),
    (r'"\u00e9\u4e2d"', "é中", "string"),
    (r'"\ud83d\ude00"', "\U0001F600", "string"),
    ('"é 中 😀"', "é 中 😀", "string"),
    ("0", 0, "int"),
    ("42", 42, "int"),
    ("3.25", 3.25, "decimal"),
    ("45s", 45, "duration"),
    ("10m", 600, "duration"),
    ("2h", 7200, "duration"),
    ("1d", 86400, "duration"),
    ("1h30m", 5400, "duration"),
    ("1d2h3m4s", 93784, "duration"),
    ("true", True, "bool"),
    ("false", False, "bool"),
])
def test_literals(src, value, kind):
    assert expr(src) == L(value, kind)


@pytest.mark.parametrize("src, words", [
    ('"a\\q"', ["string"]),
    ('"tab\there"', ["string"]),
    ('"unterminated', ["string"]),
    ('"\\ud800"', ["unpaired", "surrogate"]),
    ("1e5 == 1", ["unexpected"]),
    (".5 == 1", ["unexpected"]),
    ("10mx == 1", ["unexpected"]),
    ("1 < 2 < 3", ["unexpected '<'"]),
    ("a == b == c", ["unexpected '=='"]),
    ("x matches y", ["unexpected name 'y'", "a string"]),
    ("a and any x in L: x", ["quantifier", "must be in parentheses"]),
    ("not all x in L: x", ["quantifier", "must be in parentheses"]),
    ("f(1,)", ["unexpected ')'", "an expression"]),
])
def test_malformed_expressions_are_e001(src, words):
    d = syntax_error(f"permit agent to read on repo\n  when {src}\n")
    assert d.line == 2
    for w in words:
        assert w in d.message, d.message


def test_keywords_are_reserved():
    assert KEYWORDS == frozenset(
        "permit forbid require approval for to on when unless grant by because const option high_impact "
        "and or not in matches has any all true false".split())
    for kw in ("for", "all", "true", "when", "has"):
        d = syntax_error(f"const {kw} = 1\n")
        assert (d.line, d.column) == (1, 7)
        assert f"'{kw}' is a reserved keyword" in d.message
    d = syntax_error("permit agent to read on repo when any in in L: true\n")
    assert "'in' is a reserved keyword and cannot name a variable" in d.message
    d = syntax_error("permit agent to read on repo when for == 1\n")
    assert (d.line, d.column) == (1, 35)
    assert "'for' is a reserved keyword" in d.message
    d = syntax_error("permit agent to read on repo when x == to(1)\n")
    assert "'to' is a reserved keyword" in d.message


def test_root_names_are_not_keywords():
    assert stmt("const intent_limit = 1").name == "intent_limit"
    assert expr("intent.purpose == \"x\"").left == ast.Attr(N("intent"), "purpose")


# ------------------------------------------------------------------ E001 messages

@pytest.mark.parametrize("src, line, col, words", [
    ('permit agent to read on repo\n  when resource.owner = "a"\n', 2, 23,
     ["unexpected '='", "expected", "use '=='"]),
    ("permit agent read on repo\n", 1, 14, ["unexpected name 'read'", "'to'"]),
    ("permit agent to read\n", 2, 1, ["unexpected end of file", "'on'"]),
    ("permit agent to read on repo when\n", 2, 1, ["unexpected end of file", "an expression"]),
    ("permit agent to read on repo grant \"x\"\n", 2, 1, ["end of file", "'for'"]),
    ("permit agent to read on repo by\n", 2, 1, ["end of file", "a string"]),
    ("const = 3\n", 1, 7, ["unexpected '='", "a name"]),
    ("@id(x)\npermit agent to read on repo\n", 1, 5, ["unexpected name 'x'", "a string"]),
    ("permit agent to read on repo\n  when a $ b\n", 2, 10, ["unexpected character '$'"]),
    ("principal agent { tenant string }\n", 1, 26, ["unexpected name 'string'", "':'"]),
    ("permit agent to read on repo }\n", 1, 30, ["unexpected '}'", "'when'", "a new statement"]),
])
def test_e001_says_what_was_expected_and_found(src, line, col, words):
    d = syntax_error(src)
    assert (d.line, d.column) == (line, col), d.header()
    for w in words:
        assert w in d.message, d.message
    assert d.path == "t.policy"
    assert d.line_text is not None


def test_e001_columns_count_characters_not_bytes():
    d = syntax_error('const A = "é中😀" +\n')
    assert (d.line, d.column) == (2, 1)
    d = syntax_error('const A = ["é中😀", $]\n')
    assert (d.line, d.column) == (1, 19)


def test_only_the_first_syntax_error_is_reported():
    with pytest.raises(PolicyError) as e:
        parse("const = 1\nconst = 2\n", "t.policy")
    assert len(e.value.diagnostics) == 1


def test_deep_nesting_limit_is_e001():
    ok = "(" * (MAX_DEPTH - 2) + "1" + ")" * (MAX_DEPTH - 2)
    assert parse(f"const A = {ok}\n", "t.policy")
    d = syntax_error("const A = " + "not " * (MAX_DEPTH + 5) + "true\n")
    assert "nests more than" in d.message


# ------------------------------------------------------------------ spans

def test_spans_on_nodes():
    text = ('@id("r")\npermit agent "a/*" to read, "odd" on repo\n'
            '  when resource.owner == principal.tenant\n  because "why"\n')
    r = parse(text, "t.policy").statements[0]

    def at(span: Span) -> tuple:
        return (span.line, span.column, span.end_line, span.end_column)

    def src(span: Span) -> str:
        return text[span.start:span.end]

    assert at(r.span) == (1, 1, 4, 16)
    assert src(r.head_span) == "permit"
    assert src(r.annotations[0].span) == '@id("r")'
    assert src(r.target.span) == 'agent "a/*" to read, "odd" on repo'
    assert src(r.target.subjects[0].span) == 'agent "a/*"'
    assert [src(sp) for sp in r.target.action_spans] == ["read", '"odd"']
    cond = r.conditions[0]
    assert src(cond.span) == "when resource.owner == principal.tenant"
    assert at(cond.expr.span) == (3, 8, 3, 42)
    assert src(cond.expr.left.span) == "resource.owner"
    assert src(cond.expr.right.obj.span) == "principal"
    assert src(r.clauses[0].span) == 'because "why"'
    assert r.span.path == "t.policy"


def test_require_approval_head_span_covers_three_words():
    r = parse("require approval for agent to read on repo by \"x\"\n", "t.policy").statements[0]
    assert (r.head_span.column, r.head_span.end_column) == (1, 21)


def test_span_of_a_multiline_parenthesised_expression_covers_the_parentheses():
    e = parse("const A = (1 +\n  2)\n", "t.policy").statements[0].value
    assert (e.span.line, e.span.column, e.span.end_line, e.span.end_column) == (1, 11, 2, 5)


def test_spans_are_excluded_from_equality_hash_and_repr():
    a = parse('permit agent to read on repo when x == 1 because "w"\n', "a.policy")
    b = parse('\n\n# moved\npermit   agent to read\n  on repo\n    when (x == 1)\n  because "w"\n', "b.policy")
    assert a.statements == b.statements
    assert hash(a.statements[0]) == hash(b.statements[0])
    assert a.statements[0].span != b.statements[0].span
    assert "Span" not in repr(a.statements[0])
