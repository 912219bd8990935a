"""The checked policy set: the typed output of loading and checking, the input of the
compiler. It is immutable once built; the engine compiles it once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from . import nodes
from .errors import Diagnostic


@dataclass(frozen=True, slots=True)
class RuleInfo:
    """A rule with its resolved identity and place in the set."""

    id: str
    rule: nodes.Rule
    #: position in source order across the whole set (files in sorted path order)
    index: int
    #: the path shown to users (as given + relative path inside a directory set)
    path: str
    explicit_id: bool

    @property
    def effect(self) -> str:
        return self.rule.effect

    @property
    def line(self) -> int:
        return self.rule.span.line

    @property
    def location(self) -> str:
        return f"{self.path}:{self.rule.span.line}"

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(a.value for a in self.rule.annotations if a.name == "tag" and a.value is not None)


@dataclass(frozen=True)
class ActionInfo:
    name: str
    on: frozenset[str]
    attrs: Mapping[str, nodes.TypeRef]
    high_impact: bool
    decl: nodes.ActionDecl


@dataclass(frozen=True)
class Schema:
    """Declared kinds, types, actions and context attributes (empty when undeclared)."""

    principals: Mapping[str, Mapping[str, nodes.TypeRef]] = field(default_factory=dict)
    resources: Mapping[str, Mapping[str, nodes.TypeRef]] = field(default_factory=dict)
    actions: Mapping[str, ActionInfo] = field(default_factory=dict)
    context: Mapping[str, nodes.TypeRef] | None = None
    #: principal kinds / resource types declared ``authoritative``
    authoritative_principals: frozenset[str] = frozenset()
    authoritative_resources: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.principals or self.resources or self.actions or self.context is not None)


@dataclass(frozen=True)
class Options:
    max_ttl: int = 3600
    attenuate_delegation: bool = False
    #: ``option authoritative_entities = true``: stored entity data is authoritative for
    #: every kind and type (docs/language.md#authoritative-entity-data)
    authoritative_entities: bool = False
    #: the longest lifetime an approval ticket may be opened with (seconds)
    max_approval_ttl: int = 24 * 3600


@dataclass(frozen=True)
class EntityAuthority:
    """Which entities' stored data replaces the request's attributes.

    An entity of an authoritative kind (principals and delegation-chain entries) or type
    (resources) that has a stored record gets exactly the stored attributes: whatever
    ``attrs`` the request sends for it are ignored. Entities without a stored record keep
    the request's attributes.
    """

    all: bool = False
    principals: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()

    def principal(self, kind: str) -> bool:
        return self.all or kind in self.principals

    def resource(self, type_: str) -> bool:
        return self.all or type_ in self.resources


@dataclass(frozen=True)
class PolicySet:
    """What :func:`policylang.load` returns."""

    root: str
    files: tuple[nodes.PolicyFile, ...]
    #: display path -> source text (policy files)
    sources: Mapping[str, str]
    rules: tuple[RuleInfo, ...]
    #: folded constant values by name
    constants: Mapping[str, Any]
    options: Options
    schema: Schema
    #: entity data from ``*.entities.json`` files: {kind or type: {id: attrs}}
    entities: Mapping[str, Mapping[str, dict]]
    #: every diagnostic found (only warnings when loading succeeded)
    diagnostics: tuple[Diagnostic, ...]
    version: str
    #: what the checker keeps for an incremental reload of this set (load(previous=));
    #: not part of the set's value
    check_memo: Any = field(default=None, compare=False, repr=False)

    @property
    def entity_authority(self) -> EntityAuthority | None:
        """What :func:`policylang.evaluation.request.parse_parts` needs to know about authoritative
        entity data; ``None`` when nothing is authoritative (the request's attributes win)."""
        sch = self.schema
        if not (self.options.authoritative_entities or sch.authoritative_principals
                or sch.authoritative_resources):
            return None
        return EntityAuthority(self.options.authoritative_entities, sch.authoritative_principals,
                               sch.authoritative_resources)

    def rule(self, rule_id: str) -> RuleInfo | None:
        for r in self.rules:
            if r.id == rule_id:
                return r
        return None

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "warning")

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.severity == "error")


def merge_entities(target: dict, data: Mapping) -> dict:
    """Merge the entity map ``data`` (``{kind: {id: attrs}}``) into ``target``, ``data``
    winning per id (a record is replaced whole, never merged attribute by attribute), and
    return ``target``. The one merge of entity maps: files of a set, ``--entities`` files,
    suites' entity files and the engine's sources all combine this way."""
    for kind, ids in data.items():
        target.setdefault(kind, {}).update(ids)
    return target
