"""The tamper-evident audit trail (docs/zero-standing-privilege.md Audit) and `policylang audit verify`."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner

import policylang
from policylang.audit import GENESIS, AuditError, AuditLog, verify_file
from policylang.cli import main


@pytest.fixture
def log_path(tmp_path):
    return tmp_path / "audit.jsonl"


def spec_hash(rec: dict) -> str:
    """The hash exactly as docs/zero-standing-privilege.md words it."""
    body = {k: v for k, v in rec.items() if k != "hash"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_log(path, n=5):
    log = AuditLog(path)
    return [log.record("decide", request={"n": i}, latency_us=i) for i in range(n)]


def lines(path):
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


def cli(*args):
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


class Dec:
    def to_dict(self):
        return {"decision": "allow", "rules": ["r"], "reasons": ["because"],
                "grants": [{"rule": "r", "scopes": ["s"], "ttl": 60}], "approvers": [], "errors": [],
                "delegation_path": ["user:alice", "bot"], "policy_version": "sha256:v"}


# -- records ---------------------------------------------------------------------------------


def test_record_shape_and_chain(log_path):
    log = AuditLog(log_path, redact=["password", "token"])
    req = {"principal": {"id": "bot", "kind": "agent", "attrs": {"password": "p"}},
           "context": {"headers": [{"token": "t", "ok": "é"}]}, "action": "read"}
    first = log.record("decide", request=req, decision=Dec(), latency_us=42)
    second = log.record("issue", request=req, decision=Dec(), tokens=["abc"])
    recs = [json.loads(x) for x in lines(log_path)]
    assert recs == [first, second]
    r = recs[0]
    assert r["event"] == "decide" and r["latency_us"] == 42 and r["tokens"] == []
    assert r["time"].endswith("Z") and len(r["id"]) == 32
    assert {k: r[k] for k in Dec().to_dict()} == Dec().to_dict()
    assert r["request"]["principal"]["attrs"]["password"] == "[redacted]"
    assert r["request"]["context"]["headers"][0] == {"token": "[redacted]", "ok": "é"}
    assert req["principal"]["attrs"]["password"] == "p", "the caller's request is not modified"
    assert r["prev"] == GENESIS and r["hash"] == spec_hash(r)
    assert recs[1]["prev"] == r["hash"] and recs[1]["hash"] == spec_hash(recs[1])
    assert recs[1]["tokens"] == ["abc"]
    assert "é" in lines(log_path)[0], "serialised with ensure_ascii=False"


def test_non_finite_numbers_are_never_written(log_path):
    rec = AuditLog(log_path).record("decide", request={"context": {"x": float("nan"), "y": float("-inf")}})
    assert rec["request"]["context"] == {"x": "NaN", "y": "-Infinity"}
    assert "NaN," not in log_path.read_text() and verify_file(log_path).ok


def test_extra_fields_may_not_shadow_the_record(log_path):
    with pytest.raises(AuditError):
        AuditLog(log_path).record("revoke", hash="0" * 64)


def test_a_failed_write_raises(tmp_path):
    with pytest.raises(AuditError):
        AuditLog(tmp_path / "no-such-dir" / "a.jsonl").record("decide")
    bad = tmp_path / "corrupt.jsonl"
    bad.write_text("this is not a record\n")
    with pytest.raises(AuditError, match="not valid"):
        AuditLog(bad).record("decide")  # never chains onto something it cannot read


def test_chain_continues_across_writers(log_path):
    write_log(log_path, 2)
    AuditLog(log_path).record("revoke", jti="ab")
    AuditLog(log_path).record("revoke", jti="cd")
    result = verify_file(log_path)
    assert result.ok and result.records == 4


# -- the engine ---------------------------------------------------------------------------------

POLICY = '''
@id("r")
permit agent to read on repo
  grant "repo:read:" + resource.id for 5m
  because "agents read"
'''

REQ = {"principal": {"id": "bot", "kind": "agent", "attrs": {"api_key": "sekrit"}}, "action": "read",
       "resource": {"type": "repo", "id": "acme/api"}}


def test_engine_decisions_are_recorded(log_path):
    engine = policylang.Engine(policylang.loads(POLICY), audit=AuditLog(log_path, redact=["api_key"]))
    d = engine.decide(REQ)
    rec = json.loads(lines(log_path)[0])
    assert rec["event"] == "decide" and rec["decision"] == "allow" and rec["rules"] == ["r"]
    assert rec["grants"] == d.to_dict()["grants"] and rec["policy_version"] == d.policy_version
    assert rec["request"]["principal"]["attrs"]["api_key"] == "[redacted]"
    assert isinstance(rec["latency_us"], int)


def test_a_failed_audit_write_makes_decide_raise(tmp_path):
    engine = policylang.Engine(policylang.loads(POLICY), audit=AuditLog(tmp_path / "gone" / "a.jsonl"))
    with pytest.raises(AuditError):
        engine.decide(REQ)


# -- tampering ----------------------------------------------------------------------------------


def rewrite(path, new_lines):
    path.write_text("".join(new_lines), encoding="utf-8")


def test_intact(log_path):
    recs = write_log(log_path)
    r = verify_file(log_path)
    assert r.ok and r.records == 5 and r.head == recs[-1]["hash"]
    code, out = cli("audit", "verify", str(log_path))
    assert code == 0 and "ok, 5 records" in out


def test_empty_log_is_intact(log_path):
    log_path.write_text("")
    assert verify_file(log_path).ok


def _altered(ls):
    rec = json.loads(ls[2])
    rec["decision"] = "allow"
    ls[2] = json.dumps(rec) + "\n"
    return ls


def _altered_and_rehashed(ls):
    rec = json.loads(ls[2])
    rec["request"] = {"n": 999}
    rec["hash"] = spec_hash(rec)
    # written in the canonical form: a line in any other spelling is refused on its own
    ls[2] = json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n"
    return ls


@pytest.mark.parametrize("tamper, line, words", [
    (_altered, 3, "altered"),
    (_altered_and_rehashed, 4, "chain broken"),              # its successor no longer links
    (lambda ls: ls[:2] + ls[3:], 3, "chain broken"),          # dropped
    (lambda ls: ls[:2] + [ls[1]] + ls[2:], 3, "chain broken"),  # inserted (a replay)
    (lambda ls: ls[:2] + [ls[3], ls[2]] + ls[4:], 3, "chain broken"),  # reordered
    (lambda ls: ls[1:], 1, "does not start"),                 # first record dropped
    (lambda ls: ls[:2] + ["\n"] + ls[2:], 3, "empty line"),
    (lambda ls: ls[:1] + ["{not json\n"] + ls[1:], 2, "not a JSON record"),
    (lambda ls: ls[:1] + ["[1, 2]\n"] + ls[1:], 2, "not a JSON object"),
    (lambda ls: ls[:1] + [ls[1].replace('"hash":"', '"hash":"x')] + ls[2:], 2, "no valid hash"),
    (lambda ls: ls[:1] + ['{"hash": "%s", "x": NaN}\n' % ("0" * 64)] + ls[1:], 2, "serialised"),
])
def test_tampering_is_found_and_the_line_named(log_path, tamper, line, words):
    write_log(log_path)
    rewrite(log_path, tamper(lines(log_path)))
    r = verify_file(log_path)
    assert not r.ok and r.line == line and words in r.message
    code, out = cli("audit", "verify", str(log_path))
    assert code == 1
    assert f"{log_path}:{line}: error:" in out and len(out.strip().splitlines()) == 1


def test_cut_off_tail_needs_the_anchored_head(log_path):
    recs = write_log(log_path)
    rewrite(log_path, lines(log_path)[:3])
    assert verify_file(log_path).ok, "a chain cannot see a cut-off tail by itself"
    r = verify_file(log_path, head=recs[-1]["hash"])
    assert not r.ok and r.line == 4 and "cut off" in r.message
    code, out = cli("audit", "verify", str(log_path), "--head", recs[-1]["hash"])
    assert code == 1 and f"{log_path}:4: error:" in out
    # an anchor inside the chain holds; records after it are later appends
    assert verify_file(log_path, head=recs[1]["hash"]).ok
    assert cli("audit", "verify", str(log_path), "--head", recs[2]["hash"].upper())[0] == 0


def test_head_on_an_empty_log(log_path):
    log_path.write_text("")
    r = verify_file(log_path, head="a" * 64)
    assert not r.ok and r.line == 1


@pytest.mark.parametrize("args, code", [
    (["audit", "verify"], 2), (["audit", "verify", "/no/such/file"], 2),
    (["audit", "verify", "{log}", "--head", "xyz"], 2), (["audit", "verify", "{log}", "--bogus"], 2),
])
def test_cli_usage(log_path, args, code):
    write_log(log_path, 1)
    assert cli(*[a.replace("{log}", str(log_path)) for a in args])[0] == code


def test_binary_garbage_is_a_finding_not_a_crash(log_path):
    write_log(log_path, 2)
    with open(log_path, "ab") as f:
        f.write(b"\xff\xfe\x00garbage\n")
    code, out = cli("audit", "verify", str(log_path))
    assert code == 1 and ":3: error: not UTF-8" in out


# -- crashes -------------------------------------------------------------------------------


def test_an_interrupted_write_is_reported_then_set_aside(log_path):
    write_log(log_path, 3)
    with open(log_path, "ab") as f:
        f.write(b'{"event":"decide","request":{"n":')  # a writer died here
    r = verify_file(log_path)
    assert r.ok and r.records == 3 and r.torn_line == 4
    code, out = cli("audit", "verify", str(log_path))
    assert code == 0 and ":4: warning: incomplete last record" in out
    AuditLog(log_path).record("revoke", jti="ab")  # the next writer repairs, then appends
    r = verify_file(log_path)
    assert r.ok and r.records == 4 and r.torn_line is None
    assert (log_path.parent / "audit.jsonl.torn").read_bytes().startswith(b'{"event":"decide"')


def test_a_whole_record_missing_only_its_newline_counts(log_path):
    write_log(log_path, 2)
    rewrite(log_path, [*lines(log_path)[:-1], lines(log_path)[-1].rstrip("\n")])
    r = verify_file(log_path)
    assert r.ok and r.records == 2 and r.torn_line is None


WRITER = textwrap.dedent("""
    import sys
    from policylang.audit import AuditLog
    log = AuditLog(sys.argv[1], fsync=sys.argv[3] == "1")
    pad = "x" * int(sys.argv[2])
    i = 0
    while True:
        log.record("decide", request={"i": i, "pad": pad}, latency_us=i)
        i += 1
        if i == 3:
            print("ready", flush=True)
""")


def _count(path) -> int:
    with open(path, "rb") as f:
        return f.read().count(b"\n")


@pytest.mark.parametrize("pad, fsync", [(1024 * 1024, "0"), (200, "1")])
def test_sigkill_mid_write_leaves_a_verifiable_log(log_path, pad, fsync):
    """A real process, killed with SIGKILL while it appends, never leaves a log that
    verification rejects, and the next writer continues the chain."""
    for round_ in range(3):
        before = _count(log_path) if log_path.exists() else 0
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(log_path), str(pad), fsync],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout.readline().strip() == b"ready", proc.stderr.read().decode()
            time.sleep(0.05 + 0.03 * round_)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        r = verify_file(log_path)
        assert r.ok, f"round {round_}: line {r.line}: {r.message}"
        assert r.records >= before + 3
        code, out = cli("audit", "verify", str(log_path))
        assert code == 0, out
        AuditLog(log_path).record("revoke", jti="ab")  # a restarted service appends
        after = verify_file(log_path)
        assert after.ok and after.records == r.records + 1 and after.torn_line is None


CONCURRENT = textwrap.dedent("""
    import sys
    from policylang.audit import AuditLog
    log = AuditLog(sys.argv[1], fsync=False)
    for i in range(int(sys.argv[2])):
        log.record("decide", request={"writer": sys.argv[3], "i": i})
""")


def test_several_processes_share_one_chain(log_path):
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(log_path), "60", str(n)])
             for n in range(4)]
    for p in procs:
        assert p.wait(timeout=60) == 0
    r = verify_file(log_path)
    assert r.ok and r.records == 240


def test_log_file_is_not_world_readable(log_path):
    write_log(log_path, 1)
    assert os.stat(log_path).st_mode & 0o007 == 0


# -- properties ------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(_values, min_size=1, max_size=4))
def test_any_request_is_logged_and_verifies(tmp_path, requests):
    path = tmp_path / f"p{os.getpid()}-{time.monotonic_ns()}.jsonl"
    log = AuditLog(path, redact=["password"], fsync=False)
    for req in requests:
        rec = log.record("decide", request=req)
        assert rec["hash"] == spec_hash(rec)
    r = verify_file(path)
    assert r.ok and r.records == len(requests)
