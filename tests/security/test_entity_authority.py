"""Issue 11, finding 3: request attributes must not override authoritative entity data.

The attack: entity data marks a resource classified, a forbid reads
``resource.classified``, and the caller sends ``attrs: {classified: false}`` for that
resource. Without authority the request's value wins (and the checker warns, W108);
with ``resource document authoritative { … }`` or ``option authoritative_entities =
true`` the stored record is the entity's whole set of attributes and the forbid holds,
in the compiled engine, the reference interpreter and policy test suites alike, for
principals, resources and delegation-chain entities.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import policylang
from policylang.evaluation import interpreter
from policylang.cli import main
from policylang.language.formatter import format_source
from policylang.language.loader import check_path
from policylang.language.parser import parse

RULES = """\
@id("no-classified")
forbid agent to read on document when resource.classified because "classified"
@id("no-suspended")
forbid agent to read on document when principal.suspended because "suspended"
@id("no-suspended-delegator")
forbid agent to read on document when any d in delegation.chain: d.suspended because "suspended delegator"
@id("read")
permit agent to read on document because "agents read documents"
"""

ENTITIES = {
    "document": {"secret": {"classified": True}, "empty": {}},
    "agent": {"mallory": {"suspended": True}, "bob": {"suspended": False}},
}

OPEN_SCHEMA = "resource document { classified: bool }\nprincipal agent { suspended: bool }\n"
TYPE_AUTHORITY = ("resource document authoritative { classified: bool }\n"
                  "principal agent authoritative { suspended: bool }\n")
SET_AUTHORITY = "option authoritative_entities = true\n" + OPEN_SCHEMA


def _set(tmp_path: Path, header: str) -> policylang.PolicySet:
    (tmp_path / "docs.policy").write_text(header + RULES, encoding="utf-8")
    (tmp_path / "docs.entities.json").write_text(json.dumps(ENTITIES), encoding="utf-8")
    return policylang.load(tmp_path)


def _req(resource="secret", rattrs=None, principal="bob", pattrs=None, chain=()):
    r = {"principal": {"id": principal, "kind": "agent", "attrs": pattrs or {}},
         "action": "read",
         "resource": {"type": "document", "id": resource, "attrs": rattrs or {}}}
    if chain:
        r["delegation"] = [{"id": i, "kind": "agent", "attrs": a} for i, a in chain]
    return r


def _decisions(ps, request, **kw):
    """The decision of the cached engine, the uncached engine and the interpreter."""
    return {
        "engine": policylang.Engine(ps, **kw).decide(request).decision,
        "engine-nocache": policylang.Engine(ps, cache_size=0, **kw).decide(request).decision,
        "interpreter": interpreter.decide(ps, request, **kw).decision,
    }


OPEN = {"classified": False}
ATTACKS = {
    "resource": _req(rattrs={"classified": False}),
    # "open" has no stored record: the request's classified=false stands for it
    "principal": _req(principal="mallory", pattrs={"suspended": False}, resource="open", rattrs=OPEN),
    "delegator": _req(resource="open", rattrs=OPEN, chain=[("mallory", {"suspended": False})]),
}


def test_without_authority_the_request_overrides_stored_data(tmp_path):
    """The documented default (and the finding): the request's value wins, which is why
    W108 warns about it."""
    ps = _set(tmp_path, OPEN_SCHEMA)
    assert ps.entity_authority is None
    assert set(_decisions(ps, ATTACKS["resource"]).values()) == {"allow"}


@pytest.mark.parametrize("header", [TYPE_AUTHORITY, SET_AUTHORITY], ids=["per-type", "set-option"])
@pytest.mark.parametrize("who", sorted(ATTACKS))
def test_caller_cannot_override_authoritative_stored_data(tmp_path, header, who):
    ps = _set(tmp_path, header)
    decisions = _decisions(ps, ATTACKS[who])
    assert set(decisions.values()) == {"deny"}, decisions
    # the same caller without the lie is denied too (the stored data is what decides)
    honest = (_req(resource="secret") if who == "resource"
              else _req(principal="mallory", resource="open", rattrs=OPEN) if who == "principal"
              else _req(resource="open", rattrs=OPEN, chain=[("mallory", {})]))
    assert set(_decisions(ps, honest).values()) == {"deny"}


@pytest.mark.parametrize("header", [TYPE_AUTHORITY, SET_AUTHORITY], ids=["per-type", "set-option"])
def test_authoritative_record_ignores_added_attributes_too(tmp_path, header):
    """An attribute the stored record lacks cannot be added by the request either: the
    stored record ({} for "empty") is the entity's whole set of attributes, so reading
    `classified` raises and the forbid fails closed."""
    ps = _set(tmp_path, header)
    for attrs in ({"classified": False}, {}):
        d = _decisions(ps, _req(resource="empty", rattrs=attrs))
        assert set(d.values()) == {"deny"}, (attrs, d)
    d = policylang.Engine(ps).decide(_req(resource="empty", rattrs={"classified": False}))
    assert "no-classified" in d.rules


def test_entities_without_a_stored_record_keep_request_attributes(tmp_path):
    ps = _set(tmp_path, TYPE_AUTHORITY)
    assert set(_decisions(ps, _req(resource="unstored", rattrs={"classified": False})).values()) == {"allow"}
    assert set(_decisions(ps, _req(resource="unstored", rattrs={"classified": True})).values()) == {"deny"}


def test_per_type_authority_covers_only_that_type(tmp_path):
    """`resource document authoritative` says nothing about agents: a principal's
    request attributes still win over its stored record (and W108 says so)."""
    header = "resource document authoritative { classified: bool }\nprincipal agent { suspended: bool }\n"
    ps = _set(tmp_path, header)
    assert set(_decisions(ps, ATTACKS["resource"]).values()) == {"deny"}
    assert set(_decisions(ps, ATTACKS["principal"]).values()) == {"allow"}
    _ps, diags = check_path(tmp_path)
    w108 = [d for d in diags if d.code == "W108"]
    assert {d.line for d in w108} == {6, 8}  # the principal forbid and the delegator forbid
    assert all("principal kind 'agent'" in d.message for d in w108)


def test_runtime_entities_are_authoritative_under_the_set_option():
    """Entity data given to the engine (not from files) is covered by the option too."""
    ps = policylang.loads("option authoritative_entities = true\n" + RULES, name="attack.policy")
    ents = {"document": {"secret": {"classified": True}}}
    attack = _req(rattrs={"classified": False})
    assert set(_decisions(ps, attack, entities=ents).values()) == {"deny"}
    getter = lambda kind, eid: ents.get(kind, {}).get(eid)  # noqa: E731
    assert policylang.Engine(ps, entities=getter).decide(attack).decision == "deny"


def test_policy_test_suites_see_authoritative_data(tmp_path):
    ps = _set(tmp_path, TYPE_AUTHORITY)
    suite = tmp_path / "attack.test.yaml"
    suite.write_text(json.dumps({"policies": str(tmp_path), "cases": [
        {"name": "lying caller", "request": ATTACKS["resource"], "expect": {"decision": "deny"}},
    ]}), encoding="utf-8")
    assert ps.entity_authority is not None
    out = CliRunner().invoke(main, ["test", str(suite)])
    assert out.exit_code == 0, out.output
    assert "1 passed, 0 failed" in out.output


# ------------------------------------------------------------------ W108 and syntax

def test_check_warns_w108_with_line_and_column(tmp_path):
    _set(tmp_path, OPEN_SCHEMA)
    out = CliRunner().invoke(main, ["check", str(tmp_path)])
    lines = [ln for ln in out.output.splitlines() if "warning[W108]" in ln]
    path = str(tmp_path / "docs.policy")
    # forbid on resource.classified: line 4 (two schema lines, then @id); the caret is
    # under the attribute's name
    assert any(ln.startswith(f"{path}:4:48: warning[W108]") and "'resource.classified'" in ln
               and "resource type 'document'" in ln for ln in lines), out.output
    assert any(ln.startswith(f"{path}:6:49: warning[W108]") and "'principal.suspended'" in ln for ln in lines)
    assert any(ln.startswith(f"{path}:8:68: warning[W108]") and "'d.suspended'" in ln for ln in lines)
    assert len(lines) == 3  # the permit reads nothing; each read is reported once


@pytest.mark.parametrize("header", [TYPE_AUTHORITY, SET_AUTHORITY], ids=["per-type", "set-option"])
def test_no_w108_when_stored_data_is_authoritative(tmp_path, header):
    _set(tmp_path, header)
    _ps, diags = check_path(tmp_path)
    assert [d for d in diags if d.code == "W108"] == []


def test_no_w108_without_entity_data():
    ps = policylang.loads(OPEN_SCHEMA + RULES, name="nodata.policy")
    assert [d for d in ps.diagnostics if d.code == "W108"] == []


def test_w108_for_gates_and_has_but_not_permits(tmp_path):
    text = ('@id("g")\nrequire approval for agent to read on document when resource has classified '
            'by "ops" because "g"\n'
            '@id("p")\npermit agent to read on document when resource.classified == false because "p"\n')
    (tmp_path / "g.policy").write_text(text, encoding="utf-8")
    (tmp_path / "g.entities.json").write_text(json.dumps(ENTITIES), encoding="utf-8")
    _ps, diags = check_path(tmp_path)
    w108 = [d for d in diags if d.code == "W108"]
    assert [(d.line, d.column) for d in w108] == [(2, 53)]
    assert "approval gate reads 'resource.classified'" in w108[0].message


def test_bad_option_value_and_bad_marker_are_errors():
    with pytest.raises(policylang.PolicyError) as e:
        policylang.loads('option authoritative_entities = "yes"\n')
    assert [d.code for d in e.value.diagnostics] == ["E007"]
    with pytest.raises(policylang.PolicyError) as e:
        policylang.loads("resource document authoritive { classified: bool }\n")
    d = e.value.diagnostics[0]
    assert d.code == "E001" and "'authoritative'" in d.message and (d.line, d.column) == (1, 19)


def test_authoritative_is_still_an_ordinary_name():
    ps = policylang.loads("resource authoritative { authoritative: number }\nconst authoritative = 1\n"
                          'permit agent to read on authoritative when resource.authoritative == authoritative\n')
    assert ps.schema.authoritative_resources == frozenset()
    assert "authoritative" in ps.schema.resources


def test_formatter_round_trips_the_marker():
    src = ("resource   document authoritative {classified: bool}\n"
           "principal agent  authoritative {  # who\n  suspended: bool, team: string }\n"
           "resource repo {}\n")
    out = format_source(src, "fmt.policy")
    assert out == ("resource document authoritative { classified: bool }\n"
                   "principal agent authoritative {  # who\n  suspended: bool,\n  team: string,\n}\n"
                   "resource repo {}\n")
    assert format_source(out) == out
    assert parse(out) == parse(src)
    assert [s.authoritative for s in parse(out).statements] == [True, True, False]
