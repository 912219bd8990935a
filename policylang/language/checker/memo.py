"""What a check keeps for the next check of the same set (a reload; docs/engine.md#loading).

The per-rule stages — ``names`` and the expression walk (E002/E004/E005/W103 and the W107
and W108 inputs) — give each rule results that depend only on the rule's syntax tree and
on the set's *environment*: its declarations (constants, options, schema: every statement
that is not a rule), the files' relative paths and the entity files' kinds. A
:class:`CheckMemo` records those results by rule node; the next check reuses a rule's
results when the rule is the same node (its file did not change) and the environment is
made of the very same declaration nodes in the same order. Every set-wide check (``collect``'s
duplicate ids, constants folding, W104/W105/W107/W108/W113, the clauses stage) runs over
the whole set every time, so a check with a memo reports exactly what one without does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import nodes

#: a stage's slot of a memo entry that the stage has not filled
UNSET = object()


def environment(files: Sequence[nodes.PolicyFile], rel_paths: Mapping[str, str],
                entity_types: Iterable[str]) -> tuple:
    """The declaration nodes (in order), relative paths and entity kinds of a set."""
    decls = tuple(s for f in files for s in f.statements if s.__class__ is not nodes.Rule)
    return decls, tuple(sorted(rel_paths.items())), frozenset(entity_types)


@dataclass(eq=False)
class CheckMemo:
    env: tuple
    #: id(rule node) -> (rule node, names stage results, walk results); each results slot
    #: is None (nothing found) or a tuple, or UNSET when that stage did not run. A rule
    #: both stages found nothing in (most rules) is kept as the rule node alone: one
    #: object fewer per rule of a large set (:meth:`record`, :meth:`entry`)
    rules: dict[int, Any] = field(default_factory=dict)

    def matches(self, env: tuple) -> bool:
        decls, rel, kinds = env
        mine = self.env[0]
        return (len(mine) == len(decls) and all(a is b for a, b in zip(mine, decls))
                and self.env[1] == rel and self.env[2] == kinds)

    def entry(self, rule: nodes.Rule) -> tuple | None:
        """(rule, names results, walk results) recorded for this very node, or None."""
        e = self.rules.get(id(rule))
        if e is rule:
            return (rule, None, None)
        return e if e.__class__ is tuple and e[0] is rule else None

    def record(self, rule: nodes.Rule, names: Any = None, walk: Any = None, *, stage: str) -> None:
        """Record one stage's results for ``rule`` (``stage``: ``"names"`` or ``"walk"``),
        keeping what the other stage recorded."""
        e = self.entry(rule)
        if stage == "names":
            walk = e[2] if e is not None else UNSET
        else:
            names = e[1] if e is not None else UNSET
        self.rules[id(rule)] = rule if names is None and walk is None else (rule, names, walk)
