"""Hypothesis strategies: random policy sets and requests over a small shared vocabulary,
so that generated rules actually apply to generated requests (and often raise)."""

from __future__ import annotations

import json

from hypothesis import strategies as st

KINDS = ["agent", "human"]
ACTIONS = ["read", "write", "deploy"]
TYPES = ["repo", "doc"]
ATTRS = ["a", "b", "tags"]
STRINGS = ["x", "y", "acme", "a/b", ""]

scalar_lit = st.one_of(
    st.sampled_from(STRINGS).map(json.dumps),
    st.integers(-2, 3).map(str),
    st.sampled_from(["0.5", "1.0", "2.25"]),
    st.sampled_from(["true", "false"]),
    st.sampled_from(["10m", "1h30m"]),
)


def _paths():
    return st.one_of(
        st.builds(lambda r, a: f"{r}.{a}", st.sampled_from(["principal", "resource", "context", "action"]),
                  st.sampled_from(ATTRS)),
        st.sampled_from(["principal.id", "principal.kind", "resource.id", "resource.type", "action.name",
                         "risk.score", "risk.signals", "intent.task_id", "delegation.depth",
                         "delegation.root.kind", "delegation.root.id", "delegation.root.a", "K", "L"]),
    )


def _values(depth: int):
    base = st.one_of(scalar_lit, PATHS)
    if depth <= 0:
        return base
    sub = _values(depth - 1)
    return st.one_of(
        base,
        st.lists(sub, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.builds(lambda a, op, b: f"({a} {op} {b})", sub, st.sampled_from(["+", "-", "*", "/"]), sub),
        st.builds(lambda f, a: f"{f}({a})", st.sampled_from(["len", "lower", "upper"]), sub),
        st.builds(lambda a, i: f"{a}[{i}]", sub, st.sampled_from(["0", "1", '"a"'])),
        st.builds(lambda a: f"-{a}", sub),
    )


PATHS = _paths()
VALUES = _values(1)


def _conditions(depth: int):
    v = VALUES
    atom = st.one_of(
        st.builds(lambda a, op, b: f"{a} {op} {b}", v, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), v),
        st.builds(lambda a, op, b: f"{a} {op} {b}", v, st.sampled_from(["in", "not in"]), v),
        st.builds(lambda a, n: f"{a} has {n}", st.sampled_from(["principal", "resource", "context", "risk",
                                                                "intent", "principal.a", "delegation.root"]),
                  st.sampled_from(ATTRS + ["score", '"odd-key"'])),
        st.builds(lambda a, g: f"{a} matches {json.dumps(g)}", v, st.sampled_from(["*", "a*", "**", "?", "x", "*/*"])),
        st.builds(lambda f, a, b: f"{f}({a}, {b})", st.sampled_from(["starts_with", "ends_with"]), v, v),
        st.builds(lambda a, c: f"in_cidr({a}, {json.dumps(c)})", v, st.sampled_from(["10.0.0.0/8", "::1/128"])),
        st.sampled_from(["true", "false", "principal.a", "context.b"]),
    )
    if depth <= 0:
        return atom
    sub = _conditions(depth - 1)
    return st.one_of(
        atom,
        st.builds(lambda a, op, b: f"({a} {op} {b})", sub, st.sampled_from(["and", "or"]), sub),
        st.builds(lambda a: f"not ({a})", sub),
        st.builds(lambda q, c, b: f"({q} x in {c}: {b})", st.sampled_from(["any", "all"]),
                  st.sampled_from(["delegation.chain", "principal.tags", "[1, 2]", "context.a"]),
                  st.sampled_from(['x.kind == "human"', 'x == 1', "x", 'x.a == "x"', 'x has a'])),
    )


def _refs(names):
    return st.one_of(
        st.just("*"),
        st.lists(st.builds(lambda n, g: n + (f" {json.dumps(g)}" if g else ""), st.sampled_from(names),
                           st.sampled_from([None, None, "*", "a*", "**", "x"])), min_size=1, max_size=2)
        .map(", ".join),
    )


CONDITIONS = _conditions(2)


@st.composite
def rules(draw, n: int):
    effect = draw(st.sampled_from(["permit", "permit", "forbid", "require approval for"]))
    subjects = draw(_refs(KINDS))
    actions = draw(st.one_of(st.just("*"), st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=2,
                                                      unique=True).map(", ".join)))
    resources = draw(_refs(TYPES))
    lines = []
    if draw(st.booleans()):
        lines.append(f'@id("r{n}")')
    lines.append(f"{effect} {subjects} to {actions} on {resources}")
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["when", "when", "unless"]))
        lines.append(f"  {kind} {draw(CONDITIONS)}")
    if effect == "permit" and draw(st.booleans()):
        scopes = draw(st.lists(st.one_of(st.just('"s:" + resource.type'), st.just('"fixed"'),
                                         st.just("principal.a"), st.just('"r:" + resource.id')),
                               min_size=1, max_size=2))
        lines.append(f"  grant {', '.join(scopes)} for {draw(st.sampled_from(['1m', '10m', '1h']))}")
    if effect.startswith("require"):
        lines.append(f'  by {", ".join(json.dumps(x) for x in draw(st.lists(st.sampled_from(["ops", "sec"]), min_size=1, max_size=2)))}')
    if draw(st.booleans()):
        lines.append(f'  because "reason {n}"')
    return "\n".join(lines)


@st.composite
def policy_sets(draw):
    head = ['const K = "x"', "const L = [1, \"x\", true]"]
    if draw(st.booleans()):
        head.append("option attenuate_delegation = true")
    body = [draw(rules(i)) for i in range(draw(st.integers(1, 6)))]
    return "\n".join(head) + "\n\n" + "\n\n".join(body) + "\n"


json_value = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 3), st.sampled_from([0.5, 1.0, 2.25]),
    st.sampled_from(STRINGS), st.lists(st.sampled_from(STRINGS + [1]), max_size=3),
    st.just({"a": "x"}), st.just("10.1.2.3"), st.just("::1"),
)
attrs = st.dictionaries(st.sampled_from(ATTRS + ["odd-key"]), json_value, max_size=3)


@st.composite
def entities(draw, kinds):
    return {"id": draw(st.sampled_from(["x", "a1", "a/b", "acme"])), "kind": draw(st.sampled_from(kinds)),
            "attrs": draw(attrs)}


@st.composite
def requests(draw):
    req = {
        "principal": draw(entities(KINDS)),
        "action": draw(st.one_of(st.sampled_from(ACTIONS + ["other"]),
                                 st.builds(lambda n, a: {"name": n, "attrs": a}, st.sampled_from(ACTIONS), attrs))),
        "resource": {"type": draw(st.sampled_from(TYPES + ["other"])), "attrs": draw(attrs)},
    }
    if draw(st.booleans()):
        req["resource"]["id"] = draw(st.sampled_from(["x", "acme/api", "a1"]))
    if draw(st.booleans()):
        req["context"] = draw(attrs)
    if draw(st.booleans()):
        r = {"score": draw(st.sampled_from([0, 0.1, 0.5, 0.95, 1]))}
        if draw(st.booleans()):
            r["signals"] = draw(st.lists(st.sampled_from(["x", "new_device"]), max_size=2))
        req["risk"] = r
    if draw(st.booleans()):
        req["delegation"] = draw(st.lists(entities(KINDS), max_size=3))
    if draw(st.booleans()):
        req["intent"] = {"task_id": draw(st.sampled_from(["T-1", "T-2"]))}
    if draw(st.booleans()):
        req["approval"] = draw(st.sampled_from(["ok", "nope"]))
    return req


# ------------------------------------------------------------------ hostile requests
# The same requests with their values disguised as what Python callers often pass
# (StrEnum/IntEnum members, str/int/float subclasses, Mapping and Sequence types that
# are not dict and list, tuples), plus empty and long delegation chains and deeply
# nested values. ``hostile_requests()`` draws ``(disguised, plain)``: both must get the
# same decision, from either evaluator, cached or not.

import enum
from collections import UserDict, UserList
from collections.abc import Mapping, Sequence


class GenStr(str):
    def __repr__(self):  # a constant repr: a cache key built from repr() would collide
        return "GenStr"


class GenInt(int):
    pass


class GenFloat(float):
    pass


class Word(enum.StrEnum):
    X = "x"
    Y = "y"
    ACME = "acme"
    AB = "a/b"
    EMPTY = ""
    HUMAN = "human"
    AGENT = "agent"
    READ = "read"
    REPO = "repo"


class Num(enum.IntEnum):
    M2 = -2
    M1 = -1
    ZERO = 0
    ONE = 1
    TWO = 2
    THREE = 3


class GenMap(Mapping):
    def __init__(self, data):
        self._d = dict(data)

    def __getitem__(self, k):
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)


class GenSeq(Sequence):
    def __init__(self, items):
        self._items = list(items)

    def __getitem__(self, i):
        return self._items[i]

    def __len__(self):
        return len(self._items)


_WORDS = {m.value: m for m in Word}


def _disguise(rnd, v):
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, str):
        how = rnd.choice(["plain", "sub", "enum"])
        if how == "enum" and v in _WORDS:
            return _WORDS[v]
        return GenStr(v) if how != "plain" else v
    if isinstance(v, int):
        how = rnd.choice(["plain", "sub", "enum"])
        if how == "enum" and -2 <= v <= 3:
            return Num(v)
        return GenInt(v) if how != "plain" else v
    if isinstance(v, float):
        return GenFloat(v) if rnd.random() < 0.5 else v
    if isinstance(v, dict):
        inner = {k: _disguise(rnd, x) for k, x in v.items()}
        return rnd.choice([dict, GenMap, UserDict])(inner)
    if isinstance(v, list):
        inner = [_disguise(rnd, x) for x in v]
        return rnd.choice([list, GenSeq, UserList, tuple])(inner)
    return v


def _deep(levels: int):
    v: object = "x"
    for _ in range(levels):
        v = {"a": v}
    return v


@st.composite
def hostile_requests(draw):
    """(disguised request, the plain request it stands for)."""
    req = draw(requests())
    shape = draw(st.sampled_from(["as is", "as is", "empty chain", "long chain", "deep"]))
    if shape == "empty chain":
        req["delegation"] = []
    elif shape == "long chain":
        # up to the cap and one past it (refused, naming `delegation`, by both)
        n = draw(st.sampled_from([8, 64, 65]))
        kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=2))
        attrs_ = draw(attrs)
        req["delegation"] = [{"id": f"d{i}", "kind": kinds[i % len(kinds)], "attrs": attrs_} for i in range(n)]
    elif shape == "deep":
        # context is level 1: context.a holding `levels` objects is 1 + levels deep
        levels = draw(st.sampled_from([2, 62, 63, 64, 65, 400]))
        req["context"] = {**req.get("context", {}), "a": _deep(levels)}
    plain = json.loads(json.dumps(req))
    # one drawn random makes every disguise choice (a draw per value overruns long chains)
    return _disguise(draw(st.randoms(use_true_random=False)), req), plain


# ------------------------------------------------------------------ text mutations

#: the pieces ``mutate`` inserts: every punctuation and operator character, digits,
#: letters, and words of the grammar (callers add more)
MUTATION_PIECES = list(" \n\t.,:;=<>!+-*/@?()[]{}\"#_0123456789azAZ") + [
    "for", "to", "on", "in", "not", "and", "or", "when", "has", "any", "all", "==", "10m", "1.5",
    '"x"', "principal", "permit", "@id(", "é", "\\",
]


def mutate(rnd, text: str, pieces=MUTATION_PIECES) -> str:
    """One to three random edits of a policy text: delete a short run, insert one of
    ``pieces``, or delete the whitespace at a place (gluing two words together)."""
    for _ in range(rnd.randint(1, 3)):
        i = rnd.randrange(len(text) + 1)
        op = rnd.random()
        if op < 0.4 and text:  # delete a short run
            text = text[:i] + text[i + rnd.randint(1, 4):]
        elif op < 0.8:  # insert a piece
            text = text[:i] + rnd.choice(pieces) + text[i:]
        else:  # delete the whitespace here (glues two words together)
            j = i
            while j < len(text) and text[j] in " \t\n":
                j += 1
            text = text[:i] + text[j:]
    return text
