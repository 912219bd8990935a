"""The fast parser (policylang/language/fastparse.py) against the LALR driver.

For every text: either the fast parser gives up (and ``parse`` falls back to the driver),
or both build the same tree -- equal nodes *and* equal spans, node by node (spans are
left out of node equality) -- and the fast parser never accepts a text the driver
rejects. ``parse`` with the fast path on gives exactly what it gives with it off: the
same tree and spans, or the same E001.
"""

from __future__ import annotations

import dataclasses
import random
import re
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lark import Lark
from policygen import MUTATION_PIECES, policy_sets
from policygen import mutate as _mutate

from policylang.language import fastparse as F
from policylang.language import nodes
from policylang.language import parser as P
from policylang.language.errors import PolicyError
from policylang.language.source import SourceMap, SourcePart, Span

ROOT = Path(__file__).resolve().parent.parent
_SPAN_FIELDS = ("span", "name_span", "head_span", "action_spans")

# mutation alphabet (as tests/test_parser_driver.py): characters and near-miss fragments
PIECES = MUTATION_PIECES + ["limit", "per", "count", "sum", "grant", "by"]


def mutate(rnd, text: str) -> str:
    return _mutate(rnd, text, PIECES)


def _policies_in(doc):
    """Every string under a ``policy``/``policies``/``text`` key of a YAML document."""
    out = []
    stack = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            for k, v in x.items():
                if k in ("policy", "policies", "text", "source") and isinstance(v, str):
                    out.append(v)
                else:
                    stack.append(v)
        elif isinstance(x, list):
            stack.extend(x)
    return out


def corpus() -> list[tuple[str, str]]:
    texts = []
    for base in ("examples", "tests/golden", "tests/data", "tests/conformance", "docs"):
        for f in sorted((ROOT / base).rglob("*.policy")):
            texts.append((str(f.relative_to(ROOT)), f.read_text(encoding="utf-8")))
    for f in sorted((ROOT / "tests" / "conformance").rglob("*.yaml")):
        for i, text in enumerate(_policies_in(yaml.safe_load(f.read_text(encoding="utf-8")))):
            texts.append((f"{f.relative_to(ROOT)}#{i}", text))
    return texts


CORPUS = corpus()


def all_spans(tree) -> list:
    """(class, span fields) of every node, pre-order."""
    out = []
    stack = [tree]
    while stack:
        x = stack.pop()
        if isinstance(x, nodes.Node):
            out.append((type(x).__name__,) + tuple(getattr(x, f, None) for f in _SPAN_FIELDS))
            for f in reversed(dataclasses.fields(x)):
                if f.name not in _SPAN_FIELDS:
                    stack.append(getattr(x, f.name))
        elif isinstance(x, tuple):
            stack.extend(reversed(x))
    return out


def slow(text, path="t.policy"):
    try:
        return P.parse(text, path, fast=False)
    except PolicyError as e:
        return e


def fast_only(text, path="t.policy"):
    try:
        return F.parse(text, path)
    except F.GiveUp:
        return None


def diag_key(err: PolicyError):
    return [(d.code, d.message, d.span, str(d)) for d in err.diagnostics]


def check(text: str, stats: dict | None = None) -> None:
    ref = slow(text)
    got = fast_only(text)
    if got is not None:
        assert isinstance(ref, nodes.PolicyFile), f"the fast parser accepts what the driver rejects: {text!r}"
        assert got == ref, f"different trees for {text!r}"
        assert all_spans(got) == all_spans(ref), f"different spans for {text!r}"
    # parse() with the fast path on: exactly what it gives with the fast path off
    try:
        default = P.parse(text, "t.policy", fast=True)
    except PolicyError as e:
        default = e
    if isinstance(ref, PolicyError):
        assert isinstance(default, PolicyError) and diag_key(default) == diag_key(ref), text
    else:
        assert default == ref and all_spans(default) == all_spans(ref), text
    if stats is not None:
        key = ("fast" if got is not None else "gave_up") + ("_valid" if isinstance(ref, nodes.PolicyFile) else "_invalid")
        stats[key] = stats.get(key, 0) + 1


def test_corpus_is_found_and_taken_by_the_fast_parser():
    assert len(CORPUS) >= 60
    stats: dict = {}
    for _name, text in CORPUS:
        check(text, stats)
    # the valid corpus texts are (nearly all) parsed by the fast path, not handed back
    assert stats.get("fast_valid", 0) >= 0.9 * (stats.get("fast_valid", 0) + stats.get("gave_up_valid", 0)), stats


def test_mutated_corpora():
    rnd = random.Random(20)
    stats: dict = {}
    texts = [t for _, t in CORPUS if t.strip()]
    for _ in range(1500):
        check(mutate(rnd, rnd.choice(texts)), stats)
    assert stats.get("fast_valid", 0) >= 50 and stats.get("gave_up_invalid", 0) >= 300, stats


def test_token_level_mutations():
    """Delete, duplicate and swap whole tokens of valid texts."""
    rnd = random.Random(7)
    stats: dict = {}
    valid = [t for _, t in CORPUS if isinstance(slow(t), nodes.PolicyFile) and t.strip()]
    for _ in range(1200):
        text = rnd.choice(valid)
        toks, starts, *_ = F._tokenize(text)
        toks, starts = toks[:-1], starts[:-1]
        if len(toks) < 2:
            continue
        i, j = sorted(rnd.sample(range(len(toks)), 2))
        pieces = [(starts[k], starts[k] + len(toks[k])) for k in (i, j)]
        (a0, a1), (b0, b1) = pieces
        op = rnd.randrange(3)
        if op == 0:  # delete
            text = text[:a0] + text[a1:]
        elif op == 1:  # duplicate
            text = text[:a1] + " " + text[a0:a1] + text[a1:]
        else:  # swap
            text = text[:a0] + text[b0:b1] + text[a1:b0] + text[a0:a1] + text[b1:]
        check(text, stats)
    assert stats.get("gave_up_invalid", 0) >= 300, stats


@settings(max_examples=80, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy_sets())
def test_generated_policies(text):
    stats: dict = {}
    check(text, stats)
    assert stats == {"fast_valid": 1}, f"the fast parser gives up on a generated policy: {text!r}"
    rnd = random.Random(text)
    for _ in range(3):
        check(mutate(rnd, text))


@pytest.mark.parametrize("name", ["M", "L"])
def test_benchmark_scenarios(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import scenarios

    text = scenarios.scenario(name).text
    ref = P.parse(text, f"{name}.policy", fast=False)
    got = F.parse(text, f"{name}.policy")
    assert got == ref
    assert all_spans(got) == all_spans(ref)


EDGE_CASES = [
    "",
    "# only a comment\n",
    "permit * to * on *",
    "permit * to for, on on x when context.for == principal.in",
    'permit a "x*", b to "read", write on repo "r/*", doc when principal has "a b" and resource has for',
    "permit a to b on c\nprincipal agent { a: string, b: set<string>?, }",
    "resource doc authoritative { owner: string }\ncontext { ip: ipaddr }",
    "high_impact action deploy, \"x\" on repo, doc { approver: string }\naction read on repo",
    "action read on repo\npermit a to read on repo",
    "const count = 1\nconst sum = [1,]\noption for = true\nconst L = []",
    "const in = 1",
    "permit a to b on c when for == 1",
    "permit a to b on c when count > sum(per, limit)",
    "permit a to b on c limit count <= 20 per principal.id per 1h",
    "permit a to b on c limit sum(action.amount) <= 5 + 1 per 1d",
    "permit a to b on c limit count <= per per 1h",
    "permit a to b on c limit count <= 1 per 1h per 1d",
    "permit a to b on c limit count <= 1 per x per y",
    "permit a to b on c limit count <= 1 per x per y per 1h",
    "permit a to b on c limit count <= 1 < 2",
    "require approval for a to b on c by \"ops\", \"sec\" because \"x\"",
    "require approval format to x on y",
    "permit a to b on c grant \"s:\" + resource.id, principal.a for 1h30m because \"r\"",
    "permit a to b on c grant x for 10",
    "@id(\"r1\") @for @x(\"\\u00e9\\n\") permit a to b on c",
    "@id(\"\\ud800\") permit a to b on c",
    "permit a to b on c when (a or b) or c and (d and e) and not not f",
    "permit a to b on c when ((a)) and (x.y)[0].z == -(-1) and - - 2 * 3 / 4 - 5 + 6",
    "permit a to b on c when any x in xs: all y in x.ys: y > 1 or y < 0",
    "permit a to b on c when not any x in xs: x",
    "permit a to b on c when (any x in xs: x) and true",
    "permit a to b on c when x not in [1, 2.5, \"a\", 10m, true, false, [],] and y matches \"a*\"",
    "permit a to b on c when a == b == c",
    "permit a to b on c when a not b",
    "permit a to b on c when a = b",
    "permit a to b on c when f(g(1), h()) in x[y[z]]",
    "permit a to b on c when x == 1.5m",
    "permit a to b on c when x == 10d5",
    "permit a to b on c when x == " + "9" * 301,
    "permit a to b on c when x == 'single'",
    "permit a to b on c when x && y",
    "permit a to b on c when x == \"unterminated",
    "permit a to b on c\r\n  when\tx\f== 1 # trailing\n# own line\n",
    "permit a to b on c when x \v== 1",
    "permit a to b on c when é == 1",
    "permit a to b on c unless x when y",
    "permit a to b on c because \"x\" when y",
    "permit a to b on c when x\npermit",
    "principal agent",
    "principal for { a: string }",
    "action foo { a: string }",
    "principal a, b on x",
    "context x { }",
    "permit a to b on c when " + "+".join(["1"] * 127),
    "permit a to b on c when " + "+".join(["1"] * 128),
    "permit a to b on c when " + "+".join(["1"] * 200),
    "permit a to b on c when " + "(" * 60 + "x" + ")" * 60,
    "permit a to b on c when " + "(" * 200 + "x" + ")" * 200,
    "permit a to b on c when " + "not " * 130 + "x",
    "permit a to b on c when " + " or ".join(["x"] * 300),
    "permit a to b on c when " + "x" + ".a" * 130,
    "permit a to b on c when x" + " " * 5000 + "$",
    "permit a to b on c when x" + " \t\n" * 100000 + "$",  # the tokenizer does not backtrack over blanks
    "permit a to b on c when x" + "\n# c" * 50000 + "\n!",
]


@pytest.mark.parametrize("text", EDGE_CASES)
def test_edge_cases(text):
    check(text)


def test_valid_edge_cases_are_taken_by_the_fast_parser():
    taken = [t for t in EDGE_CASES if fast_only(t) is not None]
    assert "permit * to for, on on x when context.for == principal.in" in taken
    assert "const count = 1\nconst sum = [1,]\noption for = true\nconst L = []" in taken
    assert len(taken) >= 20


def test_the_fast_parser_is_used_by_default_and_can_be_switched_off(monkeypatch):
    calls = []
    real = F.parse
    monkeypatch.setattr(F, "parse", lambda *a: calls.append(a) or real(*a))
    monkeypatch.setattr(P, "FAST_PARSE", True)
    P.parse("permit * to * on *")
    assert len(calls) == 1
    monkeypatch.setattr(P, "FAST_PARSE", False)
    P.parse("permit * to * on *")
    P.parse("permit * to * on *", fast=False)
    assert len(calls) == 1
    P.parse("permit * to * on *", fast=True)
    assert len(calls) == 2


def test_tokens_and_words_match_the_grammar_and_the_builder():
    lark = Lark(P.grammar_path().read_text(encoding="utf-8"), parser="lalr", lexer="basic")
    terms = {t.name: t for t in lark.terminals}
    samples = [chr(c) for c in range(0x180)] + ["10m", "1h30m", "1.5", "007", "a_1", "_", "1d5", "10mx"]
    samples += [f'"{c}"' for c in samples] + [f'"\\{c}"' for c in samples] + ['"\\u00e9"', '"\\u00g9"']
    for name, pattern in F.TOKEN_PATTERNS.items():
        theirs, ours = re.compile(terms[name].pattern.to_regexp()), re.compile(pattern)
        for s in samples:
            assert bool(theirs.fullmatch(s)) == bool(ours.fullmatch(s)), (name, s)
            m1, m2 = theirs.match(s), ours.match(s)
            assert (m1 and m1.end()) == (m2 and m2.end()), (name, s)
    punct = {t.pattern.value for t in lark.terminals
             if t.pattern.type == "str" and not t.pattern.value.isidentifier()}
    assert set(F.PUNCTUATION) == punct
    assert [len(p) for p in F.PUNCTUATION] == sorted((len(p) for p in F.PUNCTUATION), reverse=True)
    words = {t.pattern.value for t in lark.terminals if t.pattern.type == "str" and t.pattern.value.isidentifier()}
    assert F.KEYWORDS | F.CONTEXTUAL == words
    assert F.KEYWORDS == P.KEYWORDS and F.CONTEXTUAL == P.CONTEXTUAL and F.MAX_DEPTH == P.MAX_DEPTH


# ------------------------------------------------------------------ windows
# The text is tokenised a window at a time (fastparse.WINDOW), cut where a statement is
# sure to start. With tiny windows every blank line before a statement is a cut, so each
# text below is parsed across many windows; the trees and spans must still be the
# driver's, and a statement that runs on past a cut must still be read whole.

CROSSING = [
    # a cut point (a blank line, then a statement word) inside a statement
    "permit a to b on c when resource.\n\npermit == 1",
    "permit a to b on c when x.\n\nforbid\n\npermit d to e on f",
    "@id(\"r1\")\n\n@note(\"second\")\n\npermit a to b on c\n\n@id(\"r2\")\n\nforbid a to b on c",
    "@\n\npermit permit a to b on c",
    "permit a to b on c when [1,\n\n@]",  # a syntax error: the driver's E001, as whole
    "permit a to b on c\n\n\n\npermit d to e on f when g\n\n  \n\nforbid x to y on z",
    "const X = 1\n\npermit a to b on c when context.n == X\n\n# a comment\n\npermit d to e on f",
]


def _windows(monkeypatch, size: int) -> list:
    """Use windows of ``size`` characters; the (start, end) of every window tokenised."""
    seen: list = []
    real = F._Parser.window
    monkeypatch.setattr(F, "WINDOW", size)
    monkeypatch.setattr(F._Parser, "window", lambda self, pos, end: seen.append((pos, end)) or real(self, pos, end))
    return seen


@pytest.mark.parametrize("text", CROSSING)
def test_statements_across_window_cuts(monkeypatch, text):
    seen = _windows(monkeypatch, 1)
    check(text)
    assert len(seen) >= 2, seen  # the text was cut
    if isinstance(slow(text), nodes.PolicyFile):
        assert fast_only(text) is not None, "a valid text read across cuts is handed back"


def test_corpus_and_mutations_in_tiny_windows(monkeypatch):
    seen = _windows(monkeypatch, 8)
    rnd = random.Random(11)
    for _name, text in CORPUS:
        check(text)
        check(text.replace("\n", "\r\n"))  # a cut's blank line may hold a \r
        for _ in range(2):
            check(mutate(rnd, text))
    for text in EDGE_CASES:
        check(text)
    assert len(seen) > 2 * len(CORPUS)  # many texts were parsed in more than one window


def test_windows_keep_the_parse_peak_memory_down(monkeypatch):
    """Windows exist for memory (fastparse.WINDOW): what a 1,000-rule text's parse
    allocates beyond the tree it returns (its tokens and offsets) is a fraction of what
    tokenising it whole takes (tracemalloc counts bytes, not time)."""
    import tracemalloc

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import scenarios

    text = scenarios.scenario("M").text
    rules = text.count("\npermit") + text.count("\nforbid")
    assert rules >= 500 and len(text) > 8 * F.WINDOW

    def transient(window: int):
        monkeypatch.setattr(F, "WINDOW", window)
        tracemalloc.start()
        try:
            tree = F.parse(text, "M.policy")
            kept, peak = tracemalloc.get_traced_memory()
            return peak - kept, tree
        finally:
            tracemalloc.stop()

    default = F.WINDOW
    whole, tree_whole = transient(len(text))
    windowed, tree_windowed = transient(default)
    assert tree_windowed == tree_whole and all_spans(tree_windowed) == all_spans(tree_whole)
    assert windowed < 0.35 * whole, (windowed, whole)


# -- packed spans (source.SourceMap, docs/engine.md#loading) ---------------------------

def _tree_objects(tree) -> list:
    """Every object the tree holds, found through the collector's referents (what the
    collector itself sees), nodes and tuples followed."""
    import gc

    out, stack, seen = [], [tree], set()
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        out.append(x)
        if isinstance(x, (nodes.Node, tuple, SourcePart)):
            stack.extend(gc.get_referents(x))
    return out


def test_fast_parsed_nodes_hold_packed_offsets_not_span_objects():
    """The memory claim: a fast-parsed tree holds no Span object for its nodes, heads or
    action names (only the file's own span), so a 10k-rule set has no 200,000 spans for the
    collector to scan. Every span still reads equal to the LALR driver's."""
    import gc

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import scenarios

    text = scenarios.scenario("M").text
    got = F.parse(text, "M.policy")
    held = _tree_objects(got)
    spans = [x for x in held if isinstance(x, Span)]
    assert len(spans) <= 1, spans[:3]  # the PolicyFile's span
    maps = [x for x in held if isinstance(x, SourceMap)]
    assert len(maps) == 1  # one map for the file, shared by every node
    parts = [x for x in held if isinstance(x, SourcePart)]
    assert len(parts) == len(got.statements) and all(p.map is maps[0] for p in parts)  # one per rule
    packed = [x for x in held if x.__class__ is int and x >= 1 << 24]  # (each distinct object once)
    in_nodes = sum(1 for x in held if isinstance(x, nodes.Node) and nodes._SPAN_SLOT.__get__(x).__class__ is int)
    assert 0 < len(packed) < in_nodes / 5  # rules of one shape share their relative offsets
    assert not any(gc.is_tracked(x) for x in packed)
    ref = P.parse(text, "M.policy", fast=False)
    assert all_spans(got) == all_spans(ref)
    rule = next(s for s in got.statements if isinstance(s, nodes.Rule))
    assert isinstance(rule.span, Span) and isinstance(rule.head_span, Span)
    assert all(isinstance(s, Span) for s in rule.target.action_spans)
    assert rule.span.path == "M.policy" and text[rule.head_span.start:rule.head_span.end] == rule.effect


def test_packed_spans_survive_pickle_and_copy():
    import copy
    import pickle

    text = 'permit agent "a*" to read, write on doc when principal.dept == resource.dept\n'
    tree = F.parse(text, "t.policy")
    for other in (pickle.loads(pickle.dumps(tree)), copy.copy(tree), copy.deepcopy(tree)):
        assert other == tree and all_spans(other) == all_spans(tree)


def test_spans_not_packed_keep_span_objects(monkeypatch):
    """A file too long for packed offsets keeps Span objects; a node over many lines is
    packed like any other: the same spans either way."""
    long_rule = "permit * to read on doc when\n" + "  principal.a == 1 or\n" * 40 + "  true\n"
    text = "permit agent to read on doc when principal.a == 1\n\n" + long_rule
    ref = P.parse(text, "t.policy", fast=False)
    packed = F.parse(text, "t.policy")
    assert all(gc_slot_value(s).__class__ is int for s in packed.statements)  # 1 line, 42 lines
    assert packed.statements[1].span.end_line == 44 and packed.statements[1].span.line == 3
    monkeypatch.setattr(SourceMap, "TEXT_LIMIT", 10)
    big = F.parse(text, "t.policy")
    assert not any(x.__class__ is int and x >= 1 << 24 for x in _tree_objects(big))
    for tree in (packed, big):
        assert tree == ref and all_spans(tree) == all_spans(ref)


def gc_slot_value(node):
    """What the node's ``span`` slot holds (a Span, or packed offsets)."""
    return nodes._SPAN_SLOT.__get__(node)


def test_hand_built_nodes_keep_the_span_they_are_given():
    s = Span("x.policy", 2, 3, 2, 9, 10, 16)
    n = nodes.Name("principal", span=s)
    assert n.span is s and n._src is None
    assert n == nodes.Name("principal", span=Span("y", 1, 1, 1, 1))  # spans are never in equality


def _node_classes() -> list[type]:
    return [c for c in vars(nodes).values()
            if isinstance(c, type) and issubclass(c, nodes.Node) and c is not nodes.Node]


def _slots(obj) -> dict:
    """Every slot of ``obj`` (of its class and its bases), read through the slot itself."""
    out = {}
    for klass in type(obj).__mro__:
        for name in klass.__dict__.get("__slots__", ()):
            out[f"{klass.__name__}.{name}"] = klass.__dict__[name].__get__(obj) if name != "span" else \
                nodes._SPAN_SLOT.__get__(obj)
    return out


@pytest.mark.parametrize("cls", _node_classes(), ids=lambda c: c.__name__)
def test_a_node_maker_makes_what_the_class_makes(cls):
    """nodes.maker (the fast parser's way of making nodes) gives the very object the
    dataclass call gives: same class, every slot the same value, equal, same hash and
    repr, still frozen; its parameters are the positional fields, span, _src, then the
    other keyword-only fields."""
    fs = dataclasses.fields(cls)
    positional = [f for f in fs if not f.kw_only]
    others = [f for f in fs if f.kw_only and f.name not in ("span", "_src")]
    values = {f.name: (f"v-{f.name}", i) for i, f in enumerate(fs)}  # distinct, hashable, per field
    values["span"] = 123456789
    values["_src"] = SourceMap("t.policy", [0])
    made = nodes.maker(cls)(*[values[f.name] for f in positional], values["span"], values["_src"],
                            *[values[f.name] for f in others])
    ref = cls(*[values[f.name] for f in positional], span=values["span"], _src=values["_src"],
              **{f.name: values[f.name] for f in others})
    assert made.__class__ is cls
    assert _slots(made) == _slots(ref) and set(_slots(made)) >= {"Node.span", "Node._src"}
    assert made == ref and hash(made) == hash(ref) and repr(made) == repr(ref)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.span = 1  # type: ignore[misc]
    # a missing argument is an error, not a node with an unset slot
    with pytest.raises(TypeError):
        nodes.maker(cls)(*[values[f.name] for f in positional])


# ------------------------------------------------------------------ the tokeniser
# fastparse tokenises a window with one ``split``; the oracle below is the findall of
# (blanks-and-comments, token) pairs it replaced (what every tree test above was first
# checked with). Both must give the same tokens and offsets on any text.
_ORACLE = re.compile(
    r"((?:[ \t\r\n\f]++|#[^\n]*+)*+)("
    + "|".join(F.TOKEN_PATTERNS[k] for k in ("NAME", "DURATION", "DECIMAL", "INT", "STRING"))
    + "|" + "|".join(re.escape(p) for p in F.PUNCTUATION)
    + r"|\Z|[\s\S])"
)


def _oracle_tokens(text: str, pos: int, end: int):
    toks, starts, ends = [], [], []
    at = pos
    for blanks, tok in _ORACLE.findall(text, pos, end):
        at += len(blanks)
        toks.append(tok)
        starts.append(at)
        at += len(tok)
        ends.append(at)
        if tok == "":  # the end (findall may give a second, empty match there: the parser stops at the first)
            break
    return toks, starts, ends


_ALPHABET = list('ab_1.9"\\#\n\r\t\f\v \xa0é=<!-*@(),:[]{}') + ['10m', '1h30m', '2.5', '"x#y"', '# c\n', 'permit']


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_ALPHABET), max_size=40), st.integers(0, 5), st.integers(0, 5))
def test_the_split_tokeniser_gives_the_findall_tokens_and_offsets(pieces, cut_start, cut_end):
    text = "".join(pieces)
    pos = min(cut_start, len(text))
    end = max(pos, len(text) - cut_end)
    toks, starts, ends, _ = F._tokenize(text, pos, end, [])
    assert (toks, starts, ends) == _oracle_tokens(text, pos, end), repr(text[pos:end])
    assert toks[-1] == "" and starts[-1] == ends[-1] == end
