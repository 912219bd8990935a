"""Globs (docs/language.md#expressions): one automaton, used both to match (the runtime: ``matches`` and
the ``id`` globs of targets, via :func:`policylang.evaluation.runtime.glob`) and to decide whether
one glob covers another (the checker's W104/W105, :func:`covers`).

``*`` is any run without ``/``, ``**`` any run, ``?`` one character other than ``/``;
everything else is literal. A pattern is a list of tokens; an automaton state is the
set of token positions still alive (:meth:`Glob._closure` skips over stars,
:meth:`Glob._step` consumes one character).
"""

from __future__ import annotations

import re


class Glob:
    """A compiled glob (docs/language.md#expressions): ``*`` any run without ``/``, ``**`` any run,
    ``?`` one character other than ``/``; everything else literal.

    Matching is linear in the input: a pattern with at most one wildcard run uses a
    regular expression (which cannot backtrack more than once per position); any other
    uses a lazily built DFA, one dictionary step per character.
    """

    __slots__ = ("pattern", "_re", "_tokens", "_classes", "_dfa", "_start", "_literal")

    def __init__(self, pattern: str):
        self.pattern = pattern
        tokens: list[tuple[str, str]] = []
        i = 0
        while i < len(pattern):
            c = pattern[i]
            if c == "*":
                if pattern.startswith("**", i):
                    tokens.append(("**", ""))
                    i += 2
                else:
                    tokens.append(("*", ""))
                    i += 1
                continue
            tokens.append(("?", "") if c == "?" else ("lit", c))
            i += 1
        self._tokens = tokens
        self._literal = pattern if all(t[0] == "lit" for t in tokens) else None
        stars = sum(1 for t in tokens if t[0] in ("*", "**"))
        self._re = None
        self._dfa = None
        if self._literal is None and stars <= 1:
            parts = []
            for kind, ch in tokens:
                parts.append({"*": "[^/]*", "**": ".*", "?": "[^/]"}.get(kind) or re.escape(ch))
            self._re = re.compile("".join(parts), re.DOTALL)
        elif self._literal is None:
            chars = sorted({ch for kind, ch in tokens if kind == "lit"} | {"/"})
            self._classes = {c: n for n, c in enumerate(chars)}
            self._dfa: dict[frozenset, dict[int, frozenset]] = {}
            self._start = self._closure({0})

    def _closure(self, states) -> frozenset:
        out, stack = set(states), list(states)
        while stack:
            s = stack.pop()
            if s < len(self._tokens) and self._tokens[s][0] in ("*", "**") and s + 1 not in out:
                out.add(s + 1)
                stack.append(s + 1)
        return frozenset(out)

    def _step(self, states: frozenset, cls: int, ch: str) -> frozenset:
        nxt = set()
        tokens = self._tokens
        for s in states:
            if s >= len(tokens):
                continue
            kind, lit = tokens[s]
            if kind == "lit":
                if lit == ch:
                    nxt.add(s + 1)
            elif kind == "?":
                if ch != "/":
                    nxt.add(s + 1)
            elif kind == "*":
                if ch != "/":
                    nxt.add(s)
            else:
                nxt.add(s)
        return self._closure(nxt)

    def match(self, s: str) -> bool:
        if self._literal is not None:
            return s == self._literal
        if self._re is not None:
            return self._re.fullmatch(s) is not None
        classes, dfa, other = self._classes, self._dfa, -1
        state = self._start
        # guard the DFA's size: a pathological pattern falls back to set simulation
        for ch in s:
            cls = classes.get(ch, other)
            row = dfa.get(state)
            if row is None:
                row = dfa[state] = {}
            nxt = row.get(cls)
            if nxt is None:
                # an "other" character behaves like any char not in the pattern
                nxt = self._step(state, cls, ch if cls != other else None)
                if len(dfa) < 4096:
                    row[cls] = nxt
            if not nxt:
                return False
            state = nxt
        return len(self._tokens) in state

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"


def covers(outer: str, inner: str, limit: int = 5000) -> bool:
    """True when every string glob ``inner`` matches is matched by glob ``outer``.

    The product of the two patterns' automata (:class:`Glob`'s tokens, closure and
    step), determinised on the fly over the characters that matter (each literal, ``/``
    and "any other", passed to the step as None). Patterns are short; past ``limit``
    states it answers False, which only costs a missed warning.
    """
    if outer == inner or outer.strip("*") == "" and "**" in outer:
        return True
    a, b = Glob(inner), Glob(outer)
    end_a, end_b = len(a._tokens), len(b._tokens)
    alphabet: list[str | None] = sorted({ch for kind, ch in a._tokens + b._tokens if kind == "lit"} | {"/"})
    alphabet.append(None)
    start = (a._closure({0}), b._closure({0}))
    seen = {start}
    stack = [start]
    while stack:
        sa, sb = stack.pop()
        if end_a in sa and end_b not in sb:
            return False
        for ch in alphabet:
            na = a._step(sa, 0, ch)
            if not na:
                continue
            nb = b._step(sb, 0, ch)
            pair = (na, nb)
            if pair not in seen:
                if len(seen) >= limit:
                    return False
                seen.add(pair)
                stack.append(pair)
    return True
