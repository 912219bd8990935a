"""The parser's own LALR driver (policylang/language/parser.py ``LalrDriver``) against stock ``Lark.parse``.

``LalrDriver`` reads Lark's private LALR tables (``lark.parser.parser.parser.parse_table``,
``lalr_analysis.Shift``) and runs them with its own loop and its own one-regex lexer. This
test builds, from the same grammar file,

* the stock parser: ``Lark(grammar, parser="lalr", lexer="contextual")``, building a tree;
* the driver over a tree-building Lark (no transformer, so Lark's default callbacks build
  ``lark.Tree`` nodes): the exact loop and lexer the project uses, minus the AST builder;

and, for every policy text of the corpora (``examples/**.policy``, ``tests/golden/**.policy``,
the ``policy:`` of each ``tests/conformance/*.yaml``), a deterministic sample of
``tests/policygen.py`` policies and a few hundred deterministic character mutations of all
of those, asserts that both accept or both reject, and that accepted texts give the same
tree (rule names, token types, values and positions); rejected texts must fail at the same
token or character, with the same kind of error. It also checks that the project's
``parse()`` rejects everything stock Lark rejects.

One difference is known and intended (documented in grammar/policy.lark's header): the
driver's scanner always takes the longest token, whatever the parser state; Lark's
contextual lexer only tries the terminals the state accepts, so where a state takes a
literal terminal but not the longer token the text starts with, it matches the literal as
a *prefix*: ``require approval format x to …`` lexes as ``FOR`` + ``NAME "mat"`` and is
accepted, the driver sees ``NAME "format"`` and rejects it; ``option x == 1`` fails on the
second ``=`` for Lark and on ``==`` for the driver. The test asserts that every
disagreement (accept/reject, or where a rejected text fails) is exactly this case. Lark
also reports a keyword that fits nowhere as its keyword terminal where the driver reports
a NAME (the same token; only the E001 wording differs).
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from lark import Lark, Token, Tree, UnexpectedInput, UnexpectedToken

from policylang.language import parser as P
from policylang.language.errors import PolicyError

sys.path.insert(0, str(Path(__file__).parent))
from policygen import MUTATION_PIECES, policy_sets
from policygen import mutate as _mutate

ROOT = Path(__file__).resolve().parent.parent
GRAMMAR = P.grammar_path().read_text(encoding="utf-8")

STOCK = Lark(GRAMMAR, parser="lalr", lexer="contextual", maybe_placeholders=False)
DRIVER = P.LalrDriver(Lark(GRAMMAR, parser="lalr", lexer="basic", maybe_placeholders=False))


def corpus() -> list[tuple[str, str]]:
    texts = []
    for base in ("examples", "tests/golden"):
        for f in sorted((ROOT / base).rglob("*.policy")):
            texts.append((str(f.relative_to(ROOT)), f.read_text(encoding="utf-8")))
    for f in sorted((ROOT / "tests" / "conformance").glob("*.yaml")):
        doc = yaml.safe_load(f.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and isinstance(doc.get("policy"), str):
            texts.append((str(f.relative_to(ROOT)), doc["policy"]))
    return texts


CORPUS = corpus()

# mutation alphabet: single characters and fragments that make near-miss tokens
def mutate(rnd, text: str) -> str:
    return _mutate(rnd, text, MUTATION_PIECES)


def norm(node):
    """A comparable form of a parse tree: Lark's ``Tree``/``Token`` or the driver's ``LexToken``."""
    if isinstance(node, Tree):
        return (node.data, tuple(norm(c) for c in node.children))
    if isinstance(node, (Token, P.LexToken)):
        return (node.type, node.value, node.start_pos, node.end_pos, node.line, node.column)
    raise AssertionError(f"unexpected node {node!r}")


def run(fn, text):
    try:
        return True, fn(text)
    except UnexpectedInput as e:
        return False, e


#: the literal (string) terminals: keywords and punctuation
LITERALS = {t.name: t.pattern.value for t in STOCK.terminals if t.pattern.type == "str"}


def split_by_lark(err) -> bool:
    """The known difference: the driver scans the longest token (NAME ``format``, ``==``)
    and the state cannot take it, but it can take a literal terminal that is a proper
    prefix of it (FOR, ``=``), which is what Lark's contextual lexer matches instead."""
    if not isinstance(err, UnexpectedToken) or err.token.type == "$END":
        return False
    value = err.token.value
    return any(t in LITERALS and value.startswith(LITERALS[t]) and value != LITERALS[t] for t in err.expected)


def error_site(err):
    if isinstance(err, UnexpectedToken):
        tok = err.token
        if tok.type == "$END":
            return ("token", "$END")
        # A keyword where neither it nor a NAME fits: Lark's contextual lexer falls back to
        # its root lexer and reports the keyword terminal (FOR), the driver reports a NAME
        # (the error message says "name 'for'" instead of "'for'"). Same token otherwise.
        kind = "NAME" if tok.value in P.KEYWORDS else tok.type
        return ("token", kind, tok.value, tok.start_pos)
    return ("character", err.pos_in_stream)


def compare(text: str, stats: dict) -> None:
    s_ok, s_val = run(STOCK.parse, text)
    d_ok, d_val = run(DRIVER.parse, text)
    if s_ok and d_ok:
        assert norm(s_val) == norm(d_val), f"different trees for {text!r}"
        stats["both_accept"] += 1
    elif not s_ok and not d_ok:
        stats["both_reject"] += 1
        if not split_by_lark(d_val):
            # the same first error, of the same kind, at the same place (Lark puts its $END
            # token on the last token, the driver at the end of the text: only the type counts)
            assert error_site(s_val) == error_site(d_val), f"different errors for {text!r}: {s_val} / {d_val}"
    elif s_ok and not d_ok:
        assert split_by_lark(d_val), f"stock Lark accepts, the driver rejects {text!r}: {d_val}"
        stats["split_by_lark"] += 1
    else:
        raise AssertionError(f"the driver accepts, stock Lark rejects {text!r}: {s_val}")
    if not s_ok:
        # the project's parse() (driver + AST builder) must reject it too
        with pytest.raises(PolicyError):
            P.parse(text)


def new_stats() -> dict:
    return {"both_accept": 0, "both_reject": 0, "split_by_lark": 0}


def test_corpus_is_found():
    names = [n for n, _ in CORPUS]
    assert any(n.startswith("examples/") for n in names)
    assert any(n.startswith("tests/golden/") for n in names)
    assert sum(n.startswith("tests/conformance/") for n in names) >= 5


def test_driver_matches_stock_lark_on_the_corpora():
    stats = new_stats()
    for _name, text in CORPUS:
        compare(text, stats)
    assert stats["both_accept"] >= 30, stats  # the corpora are mostly valid policies


def test_driver_matches_stock_lark_on_mutated_corpora():
    rnd = random.Random(12)
    stats = new_stats()
    texts = [t for _, t in CORPUS]
    for _ in range(600):
        compare(mutate(rnd, rnd.choice(texts)), stats)
    # the mutations hit both outcomes, so the comparison means something
    assert stats["both_accept"] >= 20 and stats["both_reject"] >= 100, stats


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy_sets())
def test_driver_matches_stock_lark_on_generated_policies(text):
    stats = new_stats()
    compare(text, stats)
    assert stats["both_accept"] == 1, f"a generated policy does not parse: {text!r}"
    rnd = random.Random(text)
    for _ in range(3):
        compare(mutate(rnd, text), stats)


@pytest.mark.parametrize("text", [
    "require approval format to x on y",  # FOR + NAME "mat" for stock Lark
    "permit a to read onrepo",            # ON + NAME "repo"
])
def test_known_difference_keyword_split_off_an_identifier(text):
    """Stock Lark's contextual lexer splits a keyword off the front of an identifier where
    NAME is not acceptable; the driver (and so the language) rejects the whole word."""
    s_ok, _ = run(STOCK.parse, text)
    d_ok, err = run(DRIVER.parse, text)
    assert s_ok, "stock Lark behaves differently from what the grammar header documents"
    assert not d_ok and split_by_lark(err)
    with pytest.raises(PolicyError, match="unexpected name"):
        P.parse(text)


def test_known_difference_short_punctuation_split_off():
    """Same rule for punctuation: where ``=`` fits and ``==`` does not, Lark splits ``==``
    into two ``=`` (and fails on the second); the driver fails on ``==`` itself. Both
    reject; only the error position differs by one character."""
    text = "option max_ttl == 10m"
    s_ok, s_err = run(STOCK.parse, text)
    d_ok, d_err = run(DRIVER.parse, text)
    assert not s_ok and not d_ok
    assert (s_err.token.value, s_err.token.start_pos) == ("=", 16)
    assert (d_err.token.value, d_err.token.start_pos) == ("==", 15) and split_by_lark(d_err)


def test_keywords_where_a_name_fits_are_names_in_both():
    text = "permit * to for, on on x when context.for == principal.in"
    s_ok, s_val = run(STOCK.parse, text)
    d_ok, d_val = run(DRIVER.parse, text)
    assert s_ok and d_ok and norm(s_val) == norm(d_val)
    assert re.search(r"'NAME', 'for'", repr(norm(d_val)))


def test_installed_lark_is_in_the_pinned_range_and_others_are_refused():
    import lark

    P.check_lark_version(lark.__version__)
    pin = re.search(r'"lark>=([0-9.]+),<([0-9.]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pin, "pyproject.toml pins lark with a lower and an upper bound"
    lo, hi = (tuple(int(x) for x in v.split(".")[:2]) for v in pin.groups())
    assert (lo, hi) == P.LARK_VERSIONS, "pyproject.toml and parser.LARK_VERSIONS disagree"
    for ok in ("1.2.1", "1.2.2", "1.3.0", "1.3.1"):
        P.check_lark_version(ok)
    for bad in ("1.1.9", "1.4.0", "2.0.0", "0.12.0"):
        with pytest.raises(RuntimeError, match=f"lark {re.escape(bad)} is installed"):
            P.check_lark_version(bad)
