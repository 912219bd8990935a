"""Stage ``types``: static types (:mod:`.types`) from literals, constants, schema
attributes, function results and the fixed fields (``risk.score``, ``delegation.depth``
…), inferred by the expression walk. Input: the walk's facts. Diagnostics: E005 where
the known types cannot fit (``<`` between a string and a number, ``matches`` on a
non-string, ``in`` a number, a non-boolean condition or ``and``/``or``/``not`` operand, a
grant scope that is not a string …). An unknown type never errors."""

from __future__ import annotations

from .context import CheckContext
from .expressions import facts


def stage_types(ctx: CheckContext) -> None:
    ctx.diagnostics.extend(facts(ctx).types)
