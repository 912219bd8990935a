"""Issue 17: the errors a policy author meets say where the mistake is and what was meant.

Point 1: a misspelt or foreign keyword is reported at the word itself, with a did-you-mean
(the parser used to read `becuase "…"` as the start of a schema declaration and fail
lines later); `&&`, `||`, `!`, single quotes and `int` get hints.
Point 5: a runtime error names the expression that failed and the values it had
(``EvalError.detail``, shown by ``explain``).
Points 3 and 4 (checker precision, attenuation gates) are in tests/test_checker.py.
"""

from __future__ import annotations

import pytest

import policylang
from policylang.evaluation import interpreter
from policylang.evaluation.runtime import EvalError, operand_detail
from policylang.language.errors import PolicyError
from policylang.language.parser import parse

HEAD = "permit agent to read on repo\n"


def syntax_error(text: str):
    with pytest.raises(PolicyError) as info:
        parse(text, "support.policy")
    (d,) = info.value.diagnostics
    assert d.code == "E001"
    return d


# ------------------------------------------------------------------ point 1

@pytest.mark.parametrize("text, line, col, message", [
    # the cases: reported at the word, two lines above where the parser failed
    ('@id("a")\n' + HEAD + '  when resource.x == 1\n  becuase "x"\n\n@id("b")\n' + HEAD,
     4, 3, "unknown word 'becuase'; did you mean 'because'?"),
    (HEAD + "  unles resource.archived\n", 2, 3, "unknown word 'unles'; did you mean 'unless'?"),
    (HEAD + "  if resource.archived\n", 2, 3, "unknown word 'if'; did you mean 'when'?"),
    (HEAD + "  when resource.x == 1 AND risk.score < 2\n", 2, 24, "unknown word 'AND'; did you mean 'and'?"),
    (HEAD + "  when resource.x == 1 OR risk.score < 2\n", 2, 24, "unknown word 'OR'; did you mean 'or'?"),
    (HEAD + "  whn resource.x == 1\n", 2, 3, "unknown word 'whn'; did you mean 'when'?"),
    (HEAD + '  when resource.x == 1\n  grnat "x" for 1m\n', 3, 3, "unknown word 'grnat'; did you mean 'grant'?"),
    (HEAD + '  becuase "x"\n', 2, 3, "unknown word 'becuase'; did you mean 'because'?"),
    (HEAD + "  when context hass ticket\n", 2, 16, "unknown word 'hass'; did you mean 'has'?"),
    (HEAD + "  when nto resource.archived\n", 2, 8, "unknown word 'nto'; did you mean 'not'?"),
    ("permitt agent to read on repo\n", 1, 1, "unknown word 'permitt'; did you mean 'permit'?"),
    (HEAD + '  because "x"\n\nforbd agent to read on repo\n', 4, 1, "unknown word 'forbd'; did you mean 'forbid'?"),
    # the offending token itself is the misspelt keyword
    ("permit agent too read on repo\n", 1, 14, "unexpected name 'too'; did you mean 'to'?"),
    ("permit agent to read onn repo\n", 1, 22, "unexpected name 'onn'; did you mean 'on'?"),
    ("require aproval for agent to read on repo\n", 1, 9, "unexpected name 'aproval'; did you mean 'approval'?"),
    # a word after a rule that no keyword is close to: still reported at the word
    (HEAD + '  when resource.x == 1\n  frobnicate "x"\n', 3, 3, "unexpected name 'frobnicate'; expected "),
])
def test_a_misread_keyword_is_reported_at_the_word(text, line, col, message):
    d = syntax_error(text)
    assert (d.line, d.column) == (line, col), d.header()
    assert d.message.startswith(message), d.message


def test_the_caret_covers_the_word():
    d = syntax_error(HEAD + '  when resource.x == 1\n  becuase "x"\n')
    assert (d.line, d.column, d.end_line, d.end_column) == (3, 3, 3, 10)
    assert d.render().endswith("\n  becuase \"x\"\n  ^^^^^^^")


def test_contains_suggests_in_with_its_order():
    d = syntax_error(HEAD + '  when resource.tags contians "x"\n')
    assert (d.line, d.column) == (2, 22)
    assert "did you mean 'in'?" in d.message and '"x" in resource.tags' in d.message


@pytest.mark.parametrize("src, col, message, width", [
    ("resource.x == 1 && risk.score < 2", 24, "'&&' is not an operator; did you mean 'and'?", 2),
    ("resource.x == 1 || risk.score < 2", 24, "'||' is not an operator; did you mean 'or'?", 2),
    ("resource.x == 1 & risk.score < 2", 24, "'&' is not an operator; did you mean 'and'?", 1),
    ("!resource.archived", 8, "'!' is not an operator; did you mean 'not' (or '!=')?", 1),
    ("resource.env == 'prod'", 24, "strings are written in double quotes: \"prod\", not 'prod'", 6),
    ("resource.env == 'prod", 24, "strings are written in double quotes (\"…\"), not single quotes", 1),
])
def test_characters_of_other_languages_get_a_hint(src, col, message, width):
    d = syntax_error(HEAD + f"  when {src}\n")
    assert (d.line, d.column, d.end_column - d.column) == (2, col, width), d.header()
    assert d.message == message


def test_legitimate_schema_declarations_are_not_blamed():
    d = syntax_error(HEAD + "  when resource.x == 1\n\nprincipal agent { a string }\n")
    assert (d.line, d.column) == (4, 21) and d.message == "unexpected name 'string'; expected ':'"
    # a misspelt schema word is the builder's own E001, now with a suggestion
    d = syntax_error(HEAD + "  when resource.x == 1\n\nresourse repo { a: string }\n")
    assert (d.line, d.column) == (4, 1)
    assert d.message.endswith("found 'resourse'; did you mean 'resource'?")


def test_a_name_that_only_extends_a_keyword_keeps_the_unexpected_name_wording():
    # tests/test_parser_driver.py: `format` is a NAME here, not FOR + "mat"
    d = syntax_error("require approval format to x on y\n")
    assert d.message.startswith("unexpected name 'format'")


def test_valid_policies_still_parse():
    parse(HEAD + '  when resource.x == 1 and not resource.archived\n  because "x"\n', "ok.policy")


def test_unknown_type_lists_the_types_and_suggests_number():
    from policylang.language.loader import build

    _ps, diags = build([("s.policy", "s.policy", "principal agent { level: int, name: strng, x: blob }\n")], [],
                       ".", raise_errors=False)
    messages = [(d.code, d.column, d.message) for d in diags]
    assert messages[0] == ("E005", 26, "unknown type 'int'; did you mean 'number'? (the types are string, "
                                       "number, bool, duration, set<T>, list<T>, and T? for an optional one)")
    assert messages[1] == ("E005", 37, "unknown type 'strng'; did you mean 'string'?")
    assert messages[2][2] == ("unknown type 'blob'; the types are string, number, bool, duration, set<T>, "
                              "list<T>, and T? for an optional one")


# ------------------------------------------------------------------ point 5

POLICY = '''
@id("calm")
permit agent to read on repo
  when resource.owner == "a" and risk.score <= context.limit
  because "calm agents read"

@id("names")
forbid agent to read on repo
  when resource.owner.first == "x"
  because "odd"

@id("flag")
permit agent to read on repo
  when resource.flag
  because "flagged repositories are readable"
'''

REQUEST = {"principal": {"id": "agent:a", "kind": "agent"}, "action": {"name": "read"},
           "resource": {"type": "repo", "id": "r1", "attrs": {"owner": "a", "flag": ["yes"]}},
           "risk": {"score": 0.5}, "context": {"limit": "high"}}


def test_the_decision_message_names_the_expression_and_values_alike_in_both_evaluators():
    ps = policylang.loads(POLICY, name="t.policy")
    engine = policylang.Engine(ps, cache_size=0).decide(REQUEST).to_dict()["errors"]
    cached = policylang.Engine(ps).decide(REQUEST).to_dict()["errors"]
    reference = interpreter.decide(ps, REQUEST).to_dict()["errors"]
    assert engine == reference == cached
    assert {"rule": "calm", "message": "'<=' needs two numbers or two strings, got number and string "
                                       "(at risk.score <= context.limit: risk.score is 0.5 (number), "
                                       "context.limit is \"high\" (string))"} in engine
    assert {"rule": "flag", "message": "condition must be a boolean, got list "
                                       "(at resource.flag: resource.flag is ['yes'] (list))"} in engine


def test_explain_names_the_expression_and_the_values():
    ps = policylang.loads(POLICY, name="t.policy")
    text = policylang.Engine(ps).decide(REQUEST).explain()
    lines = text.splitlines()
    i = next(n for n, l in enumerate(lines) if "'<=' needs two numbers" in l)
    assert lines[i + 1].strip() == ('at risk.score <= context.limit: risk.score is 0.5 (number), '
                                    'context.limit is "high" (string)')
    assert ('at resource.owner.first: resource.owner is "a" (string)') in text
    assert 'at resource.flag: resource.flag is [\'yes\'] (list)' in text


def test_detail_of_a_literal_operand_shows_only_its_value():
    ps = policylang.loads('permit agent to read on repo\n  when resource.n + "s" == "x"\n', name="t.policy")
    req = {**REQUEST, "resource": {"type": "repo", "id": "r", "attrs": {"n": 1}}}
    (t,) = interpreter.traces(ps, _parsed(ps, req), trace=True)
    assert t.conditions[0].error_detail == 'resource.n + "s": resource.n is 1 (number), "s" (string)'


def _parsed(ps, req):
    from policylang.evaluation.request import entity_lookup, parse_request
    return parse_request(req, entity_lookup(ps.entities, None), ps.entity_authority)


def test_detail_is_bounded():
    long_text = "x" * 500
    detail = operand_detail("a." + "b" * 200 + " <= 1", [("a." + "b" * 200, long_text), (None, 1)])
    assert len(detail) < 200
    assert detail.startswith("a.bbb") and "…" in detail


def test_eval_error_keeps_its_message_as_str():
    e = EvalError("division by zero", "a / b: a is 1 (number), b is 0 (number)")
    assert str(e) == "division by zero" and e.detail.startswith("a / b")
