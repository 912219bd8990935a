"""Stage ``lint``: warnings, which never stop a set from loading. Input: ``ctx.rules``,
``ctx.schema``, ``ctx.options``, ``ctx.const_decls``, ``ctx.entity_types`` and the walk's
facts (W103 findings, entity reads, used constants). Diagnostics: W101 (no ``@id``), W102
(``permit`` of ``*`` actions on ``*`` resources), W103 (an optional schema attribute read
without a ``has`` guard), W104 (a permit or gate whose whole target is covered by an
unconditional forbid), W105 (a ``high_impact`` action permitted to kind ``agent`` or ``*``
with no covering approval gate), W106 (no ``because``), W107 (an unused constant), W108
(a forbid or gate reads an entity attribute the caller can set).

The two cross-rule lints (W104, W105) look rules up in indexes built in one pass."""

from __future__ import annotations

from .. import nodes
from ..globs import covers as glob_covers
from ..policyset import RuleInfo
from .context import CheckContext, quoted_list
from .expressions import attr_path, facts

__all__ = ["glob_covers", "stage_lint"]


# ------------------------------------------------------------------ target coverage

def _ref_covers(outer: nodes.EntityRef, inner: nodes.EntityRef | None, category: str, kind: str | None = None) -> bool:
    """Does target entry ``outer`` match every request that ``inner`` matches?

    ``inner`` None stands for a ``*`` target restricted to ``kind``. A glob-less resource
    entry also matches requests without a ``resource.id``, which no glob matches.
    """
    name = inner.name if inner is not None else kind
    if outer.name != name:
        return False
    if outer.glob is None:
        return True
    inner_glob = inner.glob if inner is not None else None
    if inner_glob is None:
        return category == "principal" and glob_covers(outer.glob, "**")
    return glob_covers(outer.glob, inner_glob)


def _refs_cover(outer, inner, category: str) -> bool:
    if outer is None:
        return True
    if inner is None:
        return False
    return all(any(_ref_covers(o, i, category) for o in outer) for i in inner)


def _target_covers(outer: nodes.Target, inner: nodes.Target) -> bool:
    if outer.actions is not None and (inner.actions is None or not set(inner.actions) <= set(outer.actions)):
        return False
    return (_refs_cover(outer.subjects, inner.subjects, "principal")
            and _refs_cover(outer.resources, inner.resources, "resource"))


def _ref_keys(refs) -> set[str]:
    """The index keys of a target's subjects or resources: their kind/type names, or ``*``."""
    return {"*"} if refs is None else {r.name for r in refs}


def _action_keys(t: nodes.Target) -> set[str]:
    """The index keys of a target's actions: their names, or ``*``."""
    return {"*"} if t.actions is None else set(t.actions)


def _index_forbids(ctx: CheckContext):
    """The unconditional forbids (one per distinct target), indexed by subject kind, action
    and resource type (``*`` for a wildcard); None when there are none."""
    by_subject: dict[str, list[RuleInfo]] = {}
    by_action: dict[str, list[RuleInfo]] = {}
    by_resource: dict[str, list[RuleInfo]] = {}
    seen_targets: set[nodes.Target] = set()
    for info in ctx.rules:
        rule = info.rule
        if rule.effect != "forbid" or rule.conditions or rule.target in seen_targets:
            continue
        seen_targets.add(rule.target)
        t = rule.target
        for key in _ref_keys(t.subjects):
            by_subject.setdefault(key, []).append(info)
        for key in _action_keys(t):
            by_action.setdefault(key, []).append(info)
        for key in _ref_keys(t.resources):
            by_resource.setdefault(key, []).append(info)
    if not seen_targets:
        return None
    return by_subject, by_action, by_resource


def _bucket(index: dict[str, list], first: str | None) -> list:
    """The indexed rules that may cover a target whose first entry is ``first`` (None: ``*``)."""
    out = index.get("*", [])
    if first is not None:
        out = out + index.get(first, [])
    return out


def _lint_w104(ctx: CheckContext) -> None:
    """Permits and gates whose target an unconditional forbid covers."""
    indexes = _index_forbids(ctx)
    if indexes is None:
        return
    by_subject, by_action, by_resource = indexes
    for info in ctx.rules:
        rule = info.rule
        if rule.effect == "forbid":
            continue
        t = rule.target
        candidates = min(
            _bucket(by_subject, None if t.subjects is None else t.subjects[0].name),
            _bucket(by_action, None if t.actions is None else t.actions[0]),
            _bucket(by_resource, None if t.resources is None else t.resources[0].name),
            key=len,
        )
        covering = [f for f in candidates if _target_covers(f.rule.target, t)]
        if covering:
            f = min(covering, key=lambda r: r.index)
            which = f"'{f.id}' ({f.location})" if f.explicit_id else f"at {f.location}"
            what = "permit" if rule.effect == "permit" else "require approval rule"
            ctx.report("W104", f"this {what} can never determine a decision: the unconditional forbid "
                               f"{which} denies every request its target matches; narrow the "
                               f"forbid with a condition, or remove this rule", rule.head_span)


def _index_gates(ctx: CheckContext) -> dict[str, list[nodes.Target]]:
    """The targets of the approval gates (each distinct target once), by action (``*``
    for a wildcard)."""
    gates: dict[str, list[nodes.Target]] = {}
    seen: set[nodes.Target] = set()
    for info in ctx.rules:
        t = info.rule.target
        if info.rule.effect != "require_approval" or t in seen:
            continue
        seen.add(t)
        for key in _action_keys(t):
            gates.setdefault(key, []).append(t)
    return gates


def _gated(gates: dict[str, list[nodes.Target]], agent_ref, action: str, res_ref, res_type: str) -> bool:
    """Does some gate match every request of an agent (``agent_ref``, None: any agent) to
    ``action`` on ``res_ref`` (None: any resource of ``res_type``)?"""
    for g in gates.get("*", []) + gates.get(action, []):
        if g.subjects is not None and not any(_ref_covers(s, agent_ref, "principal", "agent") for s in g.subjects):
            continue
        if g.resources is not None and not any(_ref_covers(r, res_ref, "resource", res_type)
                                               for r in g.resources):
            continue
        return True
    return False


def _permitted_agents(t: nodes.Target) -> list | None:
    """The entries of a permit's target that let agents in (``[None]`` for ``*``); None
    when it permits no agent."""
    if t.subjects is None:
        return [None]
    agents = [r for r in t.subjects if r.name == "agent"]
    return agents or None


def _high_actions(t: nodes.Target, high: dict) -> list:
    """The high-impact actions a target names, each with the span to report it at."""
    if t.actions is None:
        return [(name, t.span) for name in high]
    return [(name, span) for name, span in zip(t.actions, t.action_spans) if name in high]


def _resource_refs(t: nodes.Target, on) -> list:
    """``(entry, type)`` for each resource type in ``on`` the target matches (entry None
    for a ``*`` target, one per type in sorted order)."""
    if t.resources is None:
        return [(None, typ) for typ in sorted(on)]
    return [(r, r.name) for r in t.resources if r.name in on]


def _lint_w105(ctx: CheckContext) -> None:
    """High-impact actions permitted to agents (or to anyone) with no covering gate."""
    high = {name: a for name, a in ctx.schema.actions.items() if a.high_impact}
    if not high:
        return
    gates = _index_gates(ctx)
    for info in ctx.rules:
        rule = info.rule
        t = rule.target
        if rule.effect != "permit":
            continue
        agents = _permitted_agents(t)
        if agents is None:
            continue
        for name, span in _high_actions(t, high):
            res = _resource_refs(t, high[name].on)
            missing = sorted({typ for agent in agents for ref, typ in res
                              if not _gated(gates, agent, name, ref, typ)})
            if missing:
                ctx.report("W105", f"high-impact action '{name}' is permitted to "
                                   f"{'any principal' if t.subjects is None else 'agents'} on "
                                   f"{quoted_list(missing)} with no `require approval` rule covering it; add "
                                   f"`require approval for agent to {name} on {missing[0]} by \"…\"`", span)


def _lint_w108(ctx: CheckContext) -> None:
    """W108: a forbid or gate reads an entity attribute that the request can set, for a
    kind/type the set's entity data has records for and that is not authoritative."""
    data = ctx.entity_types
    if not data or ctx.options.authoritative_entities:
        return
    sch = ctx.schema
    seen: set = set()
    for read in facts(ctx).entity_reads:
        info, node, span, category, kinds, name = (read.info, read.node, read.span, read.category,
                                                   read.kinds, read.name)
        if category == "principal":
            declared, authoritative, word = sch.principals, sch.authoritative_principals, "principal kind"
        else:
            declared, authoritative, word = sch.resources, sch.authoritative_resources, "resource type"
        candidates = kinds if kinds is not None else (tuple(declared) if declared else tuple(sorted(data)))
        exposed = [k for k in candidates if k in data and k not in authoritative]
        if not exposed:
            continue
        if isinstance(node, nodes.Has):
            base = attr_path(node.operand)
            shown = f"{base}.{name}" if base else name
        else:
            shown = attr_path(node) or name
        key = (info.index, shown)
        if key in seen:
            continue
        seen.add(key)
        what = "this forbid" if info.effect == "forbid" else "this approval gate"
        ctx.report("W108", f"{what} reads '{shown}', which the caller can set: request attributes override the "
                           f"stored entity data of {word} {quoted_list(exposed)}; declare "
                           f"`{category} {exposed[0]} authoritative {{ … }}` or set "
                           f"`option authoritative_entities = true`", span)


def _shares_resources(a: nodes.Target, b: nodes.Target) -> bool:
    if a.resources is None or b.resources is None:
        return True
    return bool({r.name for r in a.resources} & {r.name for r in b.resources})


def _covered_subject(gate: nodes.Target, permit: nodes.Target) -> nodes.EntityRef | None:
    """A subject of ``permit`` named by an id glob that ``gate`` gates too and does not
    name itself (the gate is written for a wider population)."""
    for ref in permit.subjects or ():
        if ref.glob is None:
            continue
        if gate.subjects is None:
            return ref
        for g in gate.subjects:
            if g.glob != ref.glob and _ref_covers(g, ref, "principal"):
                return ref
    return None


def _lint_w113(ctx: CheckContext) -> None:
    """W113: under ``attenuate_delegation`` a delegator is evaluated without the request's
    approval, so a gate that also covers a principal a permit names for the same action and
    resource type (the orchestrator of a sub-agent) denies every approved delegated call."""
    if not ctx.options.attenuate_delegation:
        return
    gates = [i for i in ctx.rules if i.rule.effect == "require_approval"]
    if not gates:
        return
    by_action: dict[str, list[RuleInfo]] = {}
    for info in ctx.rules:
        if info.rule.effect == "permit" and info.rule.target.subjects is not None:
            for key in _action_keys(info.rule.target):
                by_action.setdefault(key, []).append(info)
    for gate in gates:
        t = gate.rule.target
        keys = set(by_action) if t.actions is None else set(t.actions) | {"*"}
        found = None
        for key in sorted(keys):
            for permit in by_action.get(key, ()):
                if permit.index != gate.index and _shares_resources(t, permit.rule.target):
                    ref = _covered_subject(t, permit.rule.target)
                    if ref is not None:
                        found = (permit, ref)
                        break
            if found:
                break
        if found is None:
            continue
        permit, ref = found
        ctx.report("W113", f"under `attenuate_delegation` this gate also gates {ref.name} \"{ref.glob}\" "
                           f"(permitted by '{permit.id}') when it delegates; a delegator is evaluated without "
                           f"the request's approval, so an approved call of the agents it delegates to is "
                           f"denied; name in the gate only the principals that act, by an id glob that leaves "
                           f"\"{ref.glob}\" out", gate.rule.head_span)


def stage_lint(ctx: CheckContext) -> None:
    for info in ctx.rules:
        rule = info.rule
        t = rule.target
        if not info.explicit_id:
            ann = next((a for a in rule.annotations if a.name == "id"), None)
            if ann is not None:
                ctx.report("W101", f"@id has no value, so this rule gets the default id '{info.id}'; "
                                   f"write @id(\"a-stable-name\")", ann.span)
            else:
                ctx.report("W101", f"rule has no @id, so its id is '{info.id}', which changes when lines move; "
                                   f"add @id(\"a-stable-name\")", rule.head_span)
        if rule.effect == "permit" and t.actions is None and t.resources is None:
            ctx.report("W102", "permit of every action (*) on every resource (*) is over-broad authority; "
                               "name the actions and resource types", t.span)
        if rule.because is None:
            ctx.report("W106", "rule has no `because`; add because \"…\" so decisions can say why",
                       rule.head_span)
    ctx.diagnostics.extend(facts(ctx).lint)  # W103
    _lint_w104(ctx)
    _lint_w105(ctx)
    _lint_w108(ctx)
    _lint_w113(ctx)
    # W107: constants that no rule (see stage names) and no other constant uses
    used = set(ctx.used_constants) | facts(ctx).used_constants
    for name, decl in ctx.const_decls.items():
        for node in nodes.walk(decl.value):
            if isinstance(node, nodes.Name) and node.name != name:
                used.add(node.name)
    for name, decl in ctx.const_decls.items():
        if name not in used:
            ctx.report("W107", f"constant '{name}' is never used; remove it or use it in a rule", decl.name_span)

