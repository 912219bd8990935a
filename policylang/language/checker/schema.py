"""Stage ``schema``: targets and attribute reads against the declared schema, only for
the categories the set declares. Input: ``ctx.schema``, ``ctx.rules``, the walk's facts.
Diagnostics: E003 (a target kind, resource type or action not declared; an action used
on a type it is not declared for; an action declared on an undeclared type), E004 (an
attribute read that is not declared for the targeted kinds/types/actions)."""

from __future__ import annotations

from .. import nodes
from .context import CheckContext, did_you_mean, head_span, quoted_list
from .expressions import facts

def stage_schema(ctx: CheckContext) -> None:
    sch = ctx.schema
    if sch.empty:
        return
    if sch.resources:
        _actions_on_undeclared_types(ctx)
    _targets(ctx)
    ctx.diagnostics.extend(facts(ctx).schema)


def _actions_on_undeclared_types(ctx: CheckContext) -> None:
    """An action declared on a resource type the schema does not declare."""
    sch = ctx.schema
    for _f, decl in ctx.statements(nodes.ActionDecl):
        for t in decl.on:
            if t not in sch.resources:
                ctx.report("E003", f"action {quoted_list(decl.names)} is declared on resource type '{t}', "
                                   f"which is not declared{did_you_mean(t, sch.resources)}; add "
                                   f"`resource {t} {{ … }}` or fix the name", decl.span)


def _targets(ctx: CheckContext) -> None:
    """Target kinds, types and actions the schema does not declare."""
    sch = ctx.schema
    for info in ctx.rules:
        t = info.rule.target
        if sch.principals and t.subjects is not None:
            for ref in t.subjects:
                if ref.name not in sch.principals:
                    ctx.report("E003", f"principal kind '{ref.name}' is not declared in the schema"
                                       f"{did_you_mean(ref.name, sch.principals)}; declare it with "
                                       f"`principal {ref.name} {{ … }}` or fix the name",
                               head_span(ref.span, len(ref.name)))
        if sch.resources and t.resources is not None:
            for ref in t.resources:
                if ref.name not in sch.resources:
                    ctx.report("E003", f"resource type '{ref.name}' is not declared in the schema"
                                       f"{did_you_mean(ref.name, sch.resources)}; declare it with "
                                       f"`resource {ref.name} {{ … }}` or fix the name",
                               head_span(ref.span, len(ref.name)))
        if sch.actions and t.actions is not None:
            for name, span in zip(t.actions, t.action_spans):
                action = sch.actions.get(name)
                if action is None:
                    ctx.report("E003", f"action '{name}' is not declared in the schema"
                                       f"{did_you_mean(name, sch.actions)}; declare it with "
                                       f"`action {name} on <type>` or fix the name", span)
                elif t.resources is not None:
                    for ref in t.resources:
                        if ref.name not in action.on and (not sch.resources or ref.name in sch.resources):
                            ctx.report("E003", f"action '{name}' is not declared on resource type '{ref.name}' "
                                               f"(only on {quoted_list(sorted(action.on))}); add '{ref.name}' to "
                                               f"its `action … on` declaration or change the target", span)

