"""Entity data is checked against the schema (E009, W110, W111) with the JSON position."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import policylang
from policylang.cli import main

DATA = Path(__file__).parent / "data" / "entity_check"
SCHEMA = (DATA / "schema.policy").read_text()


def test_check_reports_every_entity_problem_at_its_json_position():
    """Golden: the exact text, file:line:column and caret of each diagnostic."""
    r = CliRunner().invoke(main, ["check", "--strict", "tests/data/entity_check"])
    assert r.exit_code == 1
    assert r.output == (DATA / "check.expected").read_text()


def _load(tmp_path, entities: dict):
    (tmp_path / "s.policy").write_text(SCHEMA)
    (tmp_path / "e.entities.json").write_text(json.dumps(entities, indent=1))
    return policylang.load(tmp_path)


def test_a_wrong_type_is_an_error_and_the_set_does_not_load(tmp_path):
    with pytest.raises(policylang.PolicyError) as e:
        _load(tmp_path, {"order": {"o1": {"total": "480", "owner": "bob"}}})
    (d,) = e.value.diagnostics
    assert d.code == "E009" and d.path.endswith("e.entities.json") and d.line == 4
    assert "'total' is declared number" in d.message


@pytest.mark.parametrize("value,ok", [
    (480, True), (4.5, True), (True, False), ("480", False), (None, False), ([1], False)])
def test_number_fields(tmp_path, value, ok):
    ents = {"order": {"o1": {"total": value, "owner": "bob"}}}
    if ok:
        assert _load(tmp_path, ents).entities["order"]["o1"]["total"] == value
    else:
        with pytest.raises(policylang.PolicyError, match="E009"):
            _load(tmp_path, ents)


def test_optional_fields_may_be_null_and_sets_check_their_items(tmp_path):
    ps = _load(tmp_path, {"agent": {"a": {"region": "eu", "trust": None, "roles": ["x", "y"]}}})
    assert ps.entities["agent"]["a"]["roles"] == ["x", "y"]
    with pytest.raises(policylang.PolicyError, match=r"item 1 is a number \(3\)"):
        _load(tmp_path, {"agent": {"a": {"region": "eu", "roles": ["x", 3]}}})


def test_unknown_attributes_and_kinds_are_warnings_with_a_suggestion(tmp_path):
    ps = _load(tmp_path, {"agent": {"a": {"regoin": "eu"}}, "oder": {"o": {}}})
    codes = {d.code: d.message for d in ps.diagnostics}
    assert "did you mean 'region'?" in codes["W111"]
    assert "did you mean 'order'?" in codes["W110"]


def test_without_a_schema_entity_data_is_not_checked(tmp_path):
    (tmp_path / "s.policy").write_text('@id("r")\npermit agent to read on repo\n  because "reads"\n')
    (tmp_path / "e.entities.json").write_text(json.dumps({"agent": {"a": {"anything": [1, {"x": 2}]}}}))
    ps = policylang.load(tmp_path)
    assert not [d for d in ps.diagnostics if d.code in ("E009", "W110", "W111")]


def test_every_example_entity_file_matches_its_schema():
    for policies in sorted(Path("examples").glob("*/policies")):
        r = CliRunner().invoke(main, ["check", "--strict", str(policies)])
        assert "E009" not in r.output and "W110" not in r.output and "W111" not in r.output, r.output
