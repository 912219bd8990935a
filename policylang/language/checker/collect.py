"""Stage ``collect``: the declarations of the set — constants, options, schema, rule
ids — into ``ctx.const_decls``, ``ctx.option_decls``, ``ctx.options``, ``ctx.schema`` and
``ctx.rules``. Input: ``ctx.files``. Diagnostics: E005 (unknown schema type), E006
(duplicate rule id, constant, option; a constant named like a root), E007 (unknown
option or a bad option value)."""

from __future__ import annotations

from typing import Any, Sequence

from .. import nodes
from ..roots import NAMES as ROOTS
from ..policyset import ActionInfo, Options, RuleInfo, Schema
from .context import CheckContext, suggest
from .types import COLLECTION_TYPES, SCALAR_TYPES

OPTION_NAMES = ("max_ttl", "max_approval_ttl", "attenuate_delegation", "authoritative_entities")

def _type_errors(t: nodes.TypeRef, ctx: CheckContext) -> None:
    if t.name in COLLECTION_TYPES:
        if t.arg is None:
            ctx.report("E005", f"'{t.name}' needs an element type, e.g. {t.name}<string>", t.span)
        else:
            _type_errors(t.arg, ctx)
    elif t.name in SCALAR_TYPES:
        if t.arg is not None:
            ctx.report("E005", f"'{t.name}' takes no type argument", t.span)
    else:
        known = SCALAR_TYPES | COLLECTION_TYPES
        best = _TYPE_SYNONYMS.get(t.name.lower())
        near = suggest(t.name, known)
        if best is not None:  # `int`: another language's name for a type
            hint = f"; did you mean '{best}'? (the types are {_TYPE_LIST})"
        elif near:  # `strng`: a typo
            hint = near
        else:
            hint = f"; the types are {_TYPE_LIST}"
        ctx.report("E005", f"unknown type '{t.name}'{hint}", t.span)


#: type names of other languages, and the policylang type they mean (docs/language.md#schema)
_TYPE_SYNONYMS = {"int": "number", "integer": "number", "float": "number", "double": "number",
                  "decimal": "number", "long": "number", "num": "number", "str": "string",
                  "text": "string", "boolean": "bool", "array": "list", "timedelta": "duration"}
_TYPE_LIST = "string, number, bool, duration, set<T>, list<T>, and T? for an optional one"


def _fields(decl_fields: Sequence[nodes.FieldDecl] | None, ctx: CheckContext, into: dict) -> None:
    for f in decl_fields or ():
        _type_errors(f.type, ctx)
        into[f.name] = f.type


#: option -> (the literal kinds it accepts, must it be positive, the message when it is not)
_OPTION_VALUES: dict[str, tuple[tuple[str, ...], bool, str]] = {
    "max_ttl": (("duration", "int"), True, "option max_ttl needs a positive duration such as 1h"),
    "max_approval_ttl": (("duration", "int"), True,
                         "option max_approval_ttl needs a positive duration such as 24h"),
    "authoritative_entities": (("bool",), False, "option authoritative_entities needs true or false"),
    "attenuate_delegation": (("bool",), False, "option attenuate_delegation needs true or false"),
}


def _collect_const(ctx: CheckContext, s: nodes.Const) -> None:
    if s.name in ROOTS:
        ctx.report("E006", f"constant '{s.name}' has the name of a root", s.name_span)
    elif s.name in ctx.const_decls:
        first = ctx.const_decls[s.name].span
        ctx.report("E006", f"constant '{s.name}' is already defined at {first.path}:{first.line}", s.name_span)
    else:
        ctx.const_decls[s.name] = s


def _collect_option(ctx: CheckContext, s: nodes.Option, options: dict[str, Any]) -> None:
    if s.name not in OPTION_NAMES:
        ctx.report("E007", f"unknown option '{s.name}'{suggest(s.name, OPTION_NAMES)}", s.name_span)
        return
    if s.name in ctx.option_decls:
        first = ctx.option_decls[s.name].span
        ctx.report("E006", f"option '{s.name}' is already set at {first.path}:{first.line}", s.name_span)
        return
    ctx.option_decls[s.name] = s
    kinds, positive, message = _OPTION_VALUES[s.name]
    value = s.value
    if isinstance(value, nodes.Literal) and value.kind in kinds and (not positive or value.value > 0):
        options[s.name] = value.value
    else:
        ctx.report("E007", message, value.span)


def stage_collect(ctx: CheckContext) -> None:
    principals: dict[str, dict] = {}
    resources: dict[str, dict] = {}
    actions: dict[str, ActionInfo] = {}
    context: dict | None = None
    options: dict[str, Any] = {}
    auth_principals: set[str] = set()
    auth_resources: set[str] = set()

    for f in ctx.files:
        for s in f.statements:
            if isinstance(s, nodes.Const):
                _collect_const(ctx, s)
            elif isinstance(s, nodes.Option):
                _collect_option(ctx, s, options)
            elif isinstance(s, nodes.EntityDecl):
                target = principals if s.category == "principal" else resources
                _fields(s.fields, ctx, target.setdefault(s.name, {}))
                if s.authoritative:
                    (auth_principals if s.category == "principal" else auth_resources).add(s.name)
            elif isinstance(s, nodes.ActionDecl):
                attrs: dict = {}
                _fields(s.fields, ctx, attrs)
                for name in s.names:
                    prev = actions.get(name)
                    if prev is None:
                        actions[name] = ActionInfo(name, frozenset(s.on), attrs, s.high_impact, s)
                    else:
                        actions[name] = ActionInfo(name, prev.on | frozenset(s.on), {**prev.attrs, **attrs},
                                                   prev.high_impact or s.high_impact, prev.decl)
            elif isinstance(s, nodes.ContextDecl):
                context = {} if context is None else context
                _fields(s.fields, ctx, context)
            elif isinstance(s, nodes.Rule):
                explicit = s.annotation("id")
                rid = explicit if explicit is not None else f"{ctx.rel_paths.get(f.path, f.path)}:{s.span.line}"
                ctx.rules.append(RuleInfo(rid, s, len(ctx.rules), f.path, explicit is not None))

    seen: dict[str, RuleInfo] = {}
    for r in ctx.rules:
        if r.id in seen:
            first = seen[r.id]
            ann = next((a for a in r.rule.annotations if a.name == "id"), None)
            ctx.report("E006", f"rule id '{r.id}' is already used at {first.location}",
                       ann.span if ann else r.rule.head_span)
        else:
            seen[r.id] = r

    ctx.options = Options(**options)
    ctx.schema = Schema(principals, resources, actions, context,
                        frozenset(auth_principals), frozenset(auth_resources))

