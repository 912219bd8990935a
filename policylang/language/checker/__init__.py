"""Parsed files → a checked policy set (docs/language.md#what-the-checker-verifies).

The checker is a named, ordered list of stages (like OPA's compiler), one module each.
Each stage reads the shared :class:`~.context.CheckContext` (what earlier stages
collected) and appends diagnostics to it; none stops at the first
problem, and a later stage never repeats what an earlier one reported (an unknown name
has an unknown type, an undeclared kind is not checked for attributes). The loader
sorts the diagnostics by position at the end.

Every stage is linear in the size of the set: each walks every rule's expressions once,
and the two cross-rule lints (W104, W105) look rules up in indexes built in one pass.

Modules: :mod:`.context` (the context, the result, wording helpers), :mod:`.types`
(the typed static types), :mod:`.expressions` (the walk over rule expressions that infers
static types, whose facts the schema, types and lint stages report from; run once, by
the first of them), and one module per stage: :mod:`.collect`, :mod:`.constants`, :mod:`.names`,
:mod:`.schema`, :mod:`.typecheck` (the types stage), :mod:`.clauses`, :mod:`.lint`. Every
stage can be run on its own on a context that the stages before it have filled
(tests/test_checker_stages.py does).

Stages, in order:

``collect``
    Declarations: constants, options, schema, rule ids. E005 (unknown schema type),
    E006 (duplicate rule id, constant, option; a constant named like a root),
    E007 (unknown option or a bad option value).
``constants``
    Folds every constant (literals and constants defined before it only). E002, E005.
``names``
    Resolves every name in rule conditions and grant scopes: roots, constants and the
    quantifier variables in scope. E002 (unknown name, unknown function, an attribute of
    ``delegation`` other than ``chain``/``depth``/``root``; each with the closest known
    name), E005 (a function called with the wrong number of arguments).
``schema``
    Only for the categories the set declares (principal kinds, resource types,
    actions, context). E003 (a target kind, resource type or action not declared; an
    action used on a type it is not declared for; an action declared on an undeclared
    type), E004 (an attribute read on ``principal``/``resource``/``action``/``context``,
    ``delegation.root`` or a ``delegation.chain`` entity that is not declared for the
    targeted kinds/types/actions, or under ``*`` on any declared one).
``types``
    Static types from literals, constants, schema attributes, function results and the
    fixed fields (``risk.score``, ``delegation.depth`` …). E005 where the known types
    cannot fit (``<`` between a string and a number, ``matches`` on a non-string, ``in``
    a number, a non-boolean condition or ``and``/``or``/``not`` operand, a grant scope
    that is not a string …). An unknown type never errors.
``clauses``
    Rule clauses and annotations. E007 (``grant`` on a non-permit, ``by`` missing on
    ``require approval`` or present elsewhere, a second ``because``/``by``/``grant``, a
    grant ttl of zero or over ``option max_ttl``, a CIDR literal or constant in
    ``in_cidr`` that does not parse), E006 (a second ``@id`` on one rule).
    Its :mod:`.limits` part checks the ``limit`` clauses (docs/language.md#limits):
    E008 (a limit on a forbid or ``require approval`` rule, a bound that is not a
    non-negative number known when the set loads, a zero window, the same limit twice on
    one rule), W109 (a limit whose key reads nothing from the request: one counter for
    every request).
``lint``
    Warnings, which never stop a set from loading: W101 (no ``@id``), W102 (``permit``
    of ``*`` actions on ``*`` resources), W103 (an optional schema attribute read
    without a ``has`` guard in the same ``when``/``unless``), W104 (a permit or gate
    whose whole target is covered by an unconditional forbid), W105 (a ``high_impact``
    action permitted to kind ``agent`` or ``*`` with no covering approval gate), W106
    (no ``because``), W107 (a constant no rule or other constant uses).
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

from .. import nodes
from .clauses import stage_clauses
from .collect import OPTION_NAMES, stage_collect
from .constants import stage_constants
from .context import CheckContext, CheckResult, format_duration, suggest
from .lint import glob_covers, stage_lint
from .memo import CheckMemo, environment
from .names import stage_names
from .schema import stage_schema
from .typecheck import stage_types
from .types import StaticType, describe_type

__all__ = ["STAGES", "CheckContext", "CheckResult", "OPTION_NAMES", "StaticType", "check", "describe_type",
           "format_duration", "glob_covers", "suggest"]

#: the stages in order: (name, function)
STAGES: list[tuple[str, Callable[[CheckContext], None]]] = [
    ("collect", stage_collect),
    ("constants", stage_constants),
    ("names", stage_names),
    ("schema", stage_schema),
    ("types", stage_types),
    ("clauses", stage_clauses),
    ("lint", stage_lint),
]


def check(files: Sequence[nodes.PolicyFile], rel_paths: Mapping[str, str],
          entity_types: Iterable[str] = (), previous: CheckMemo | None = None) -> CheckResult:
    """Check a parsed set. ``entity_types``: the kinds and types its entity data has
    records for (W108 warns only about those). ``previous``: the memo of an earlier check
    of the set (``CheckResult.memo``): the per-rule results of rules it checked are reused
    when the declarations are the same nodes (:mod:`.memo`); the result is the same."""
    entity_types = frozenset(entity_types)
    ctx = CheckContext(files, rel_paths, entity_types=entity_types)
    env = environment(files, rel_paths, entity_types)
    ctx.new_memo = CheckMemo(env)
    if previous is not None and previous.matches(env):
        ctx.memo = previous
    for _name, stage in STAGES:
        stage(ctx)
    return CheckResult(tuple(ctx.rules), dict(ctx.constants), ctx.options, ctx.schema, tuple(ctx.diagnostics),
                       ctx.new_memo)
