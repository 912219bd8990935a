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
    #: per rule of the set, in order (``RuleInfo.index``): the rule node alone when both
    #: stages found nothing in it (most rules), else (rule node, names stage results, walk
    #: results), each results slot None (nothing found) or a tuple, or UNSET when that
    #: stage did not run; None where no stage recorded the rule. A list, not a dict by
    #: node: one pointer per rule (the 10,000-rule set's memo is 80 KB, not 600)
    rules: list = field(default_factory=list)
    #: id(rule node) -> its position in ``rules``: made on the first :meth:`entry` (a
    #: memo is read only when it is the next check's ``previous``)
    _at: dict | None = field(default=None, repr=False)

    def matches(self, env: tuple) -> bool:
        decls, rel, kinds = env
        mine = self.env[0]
        return (len(mine) == len(decls) and all(a is b for a, b in zip(mine, decls))
                and self.env[1] == rel and self.env[2] == kinds)

    def entry(self, rule: nodes.Rule) -> tuple | None:
        """(rule, names results, walk results) recorded for this very node, or None."""
        at = self._at
        if at is None:
            at = self._at = {id(e[0] if e.__class__ is tuple else e): i
                             for i, e in enumerate(self.rules) if e is not None}
        i = at.get(id(rule))
        if i is None:
            return None
        e = self.rules[i]
        if e is rule:
            return (rule, None, None)
        return e if e.__class__ is tuple and e[0] is rule else None

    def record(self, index: int, rule: nodes.Rule, names: Any = None, walk: Any = None, *,
               stage: str) -> None:
        """Record one stage's results for ``rule``, the set's rule at ``index``
        (``stage``: ``"names"`` or ``"walk"``), keeping what the other stage recorded."""
        rules = self.rules
        if index >= len(rules):
            rules.extend([None] * (index + 1 - len(rules)))
        e = rules[index]
        if e is not None and (e[0] if e.__class__ is tuple else e) is not rule:
            e = None  # (another rule at this place: a memo is filled by one check)
        elif e is rule:
            e = (rule, None, None)
        if stage == "names":
            walk = e[2] if e is not None else UNSET
        else:
            names = e[1] if e is not None else UNSET
        rules[index] = rule if names is None and walk is None else (rule, names, walk)
        self._at = None
