"""Issue 11: attacks on the audit log (findings 17 and 18).

Each test performs the attack and fails if it succeeds: a forged line that
``audit verify`` accepts, or a secret that reaches the log in clear.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from policylang.audit import AuditLog, record_hash, verify_file
from policylang.cli import main


def _deny_log(path):
    log = AuditLog(path, fsync=False)
    log.record("decide", request={"n": 0}, decision={"decision": "allow", "rules": ["r"]})
    log.record("decide", request={"n": 1}, decision={"decision": "deny", "rules": []})
    log.record("decide", request={"n": 2}, decision={"decision": "deny", "rules": []})
    return path.read_bytes().splitlines(keepends=True)


def _verify_cli(path):
    r = CliRunner().invoke(main, ["audit", "verify", str(path)])
    return r.exit_code, r.output


def test_a_duplicate_key_before_the_real_one_is_rejected(tmp_path):
    """A reader that keeps the first of two keys sees "allow"; json.loads keeps the
    last ("deny"), so the hash still matches. verify must not accept the line."""
    path = tmp_path / "audit.jsonl"
    lines = _deny_log(path)
    forged = lines[1].replace(b'{"decision":"deny"', b'{"decision":"allow","decision":"deny"', 1)
    assert forged != lines[1]
    path.write_bytes(lines[0] + forged + lines[2])
    result = verify_file(path)
    assert not result.ok and result.line == 2, result
    assert "duplicate key" in result.message
    code, out = _verify_cli(path)
    assert code == 1 and ":2: error:" in out


def test_a_duplicate_key_deep_inside_the_request_is_rejected(tmp_path):
    path = tmp_path / "audit.jsonl"
    lines = _deny_log(path)
    forged = lines[1].replace(b'"request":{"n":1}', b'"request":{"n":9,"n":1}', 1)
    assert forged != lines[1]
    path.write_bytes(lines[0] + forged + lines[2])
    result = verify_file(path)
    assert not result.ok and result.line == 2 and "duplicate key" in result.message


def _reordered(b: bytes) -> bytes:
    rec = json.loads(b)
    return json.dumps(dict(reversed(list(rec.items()))), separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("edit", [
    lambda b: b.replace(b'","', b'", "', 1),                 # whitespace a reader ignores
    lambda b: b.replace(b'"deny"', b'"\\u0064eny"', 1),     # an escape that decodes the same
    _reordered,                                              # keys in another order
], ids=["whitespace", "escape", "key-order"])
def test_a_line_that_is_not_its_canonical_form_is_rejected(tmp_path, edit):
    """Another spelling of the same record keeps its hash valid (the hash is over the
    parsed record); it is refused all the same: a line must be the bytes that were hashed."""
    path = tmp_path / "audit.jsonl"
    lines = _deny_log(path)
    forged = edit(lines[1].rstrip(b"\n")) + b"\n"
    assert forged != lines[1]
    rec = json.loads(forged)
    assert record_hash(rec) == rec["hash"], "the forgery keeps the hash valid"
    path.write_bytes(lines[0] + forged + lines[2])
    result = verify_file(path)
    assert not result.ok and result.line == 2, result
    assert "canonical" in result.message


def test_an_intact_log_still_verifies(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, fsync=False)
    log.record("decide", request={"é": "ü", "x": 1.5, "big": 2 ** 70, "ctl": "a\nb\u0000"})
    log.record("decide", request={"emoji": "\U0001f600", "neg": -0.0, "e": 1e300})
    assert verify_file(path).ok
    assert _verify_cli(path)[0] == 0


@pytest.mark.parametrize("key", ["Password", "PASSWORD", "API_KEY", "Api_Key", "pAsSwOrD"])
def test_redaction_ignores_case(tmp_path, key):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, redact=["password", "api_key"], fsync=False)
    secret = "s3cr3t-value-" + key
    log.record("decide", request={"principal": {"id": "bot", "kind": "agent", "attrs": {key: secret}},
                                  "context": {"headers": [{key: secret}]}},
               **{key.lower() + "_extra": None})
    log.record("issue", **{key: secret})
    text = path.read_text(encoding="utf-8")
    assert secret not in text, f"{key} was logged in clear"
    recs = [json.loads(x) for x in text.splitlines()]
    assert recs[0]["request"]["principal"]["attrs"][key] == "[redacted]"
    assert recs[1][key] == "[redacted]"


def test_redaction_keys_given_in_upper_case_match_lower_case_fields(tmp_path):
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, redact=["Authorization"], fsync=False)
    log.record("decide", request={"context": {"authorization": "Bearer abc.def"}})
    assert "Bearer abc.def" not in path.read_text(encoding="utf-8")
