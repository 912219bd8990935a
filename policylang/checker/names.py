"""Stage ``names``: resolves every name in rule conditions and grant scopes — roots,
constants and the quantifier variables in scope — by running the expression walk
(:mod:`.expressions`, which keeps its facts in ``ctx.facts`` for the later stages).
Input: ``ctx.rules``, ``ctx.schema``, ``ctx.constants``. Diagnostics: E002 (unknown name,
unknown function, an attribute of ``delegation`` other than ``chain``/``depth``/``root``;
each with the closest known name), E005 (a function called with the wrong number of
arguments)."""

from __future__ import annotations

from .context import CheckContext
from .expressions import run_walk


def stage_names(ctx: CheckContext) -> None:
    ctx.diagnostics.extend(run_walk(ctx).names)
