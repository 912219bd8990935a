"""Fuzzing the front end, the engine's request handling and the decision service.

- generated valid policy sets round-trip through ``format_source`` and ``loads``
  (formatting is idempotent and never changes a decision);
- mutated real example policies (byte flips, deletions, duplications, splices) raise
  nothing but ``PolicyError`` from ``loads`` and ``format_source``;
- random and mutated JSON requests raise nothing but ``RequestError`` from ``decide``;
- the decision service answers 4xx, never 5xx, to mutated bodies.

Mutations are driven by ``random.Random`` with fixed seeds (reproducible: a failure
prints its seed and input); ``POLICYLANG_FUZZ_SCALE`` multiplies the input counts.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import policylang
from policylang import PolicyError, RequestError
from policylang.language.formatter import format_source

from policygen import policy_sets, requests

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SCALE = float(os.environ.get("POLICYLANG_FUZZ_SCALE", "1"))
COUNTS: dict[str, int] = {}


def n(base: int) -> int:
    return max(1, int(base * SCALE))


def example_sets() -> list[tuple[str, str]]:
    """Each example's .policy files concatenated in load order: one valid text per example."""
    out = []
    for d in sorted(p for p in EXAMPLES.iterdir() if (p / "policies").is_dir()):
        files = sorted((d / "policies").rglob("*.policy"))
        out.append((d.name, "\n".join(f.read_text() for f in files)))
    return out


EXAMPLE_TEXTS = example_sets()


# ------------------------------------------------------------------ fmt round trip
@settings(max_examples=n(80), deadline=None, suppress_health_check=list(HealthCheck))
@given(policy_sets(), st.lists(requests(), min_size=1, max_size=6))
def test_generated_policies_round_trip_through_fmt(text, reqs):
    try:
        ps = policylang.loads(text, name="gen.policy")
    except PolicyError:
        assume(False)
    COUNTS["fmt round trip"] = COUNTS.get("fmt round trip", 0) + 1
    once = format_source(text)
    assert format_source(once) == once, "formatting is idempotent"
    again = policylang.loads(once, name="gen.policy")
    a, b = policylang.Engine(ps, cache_size=0), policylang.Engine(again, cache_size=0)
    for req in reqs:
        da, db = a.decide(req).to_dict(), b.decide(req).to_dict()
        da.pop("policy_version"), db.pop("policy_version")
        assert da == db, (text, once, req)


def test_the_examples_round_trip_through_fmt():
    for name, text in EXAMPLE_TEXTS:
        once = format_source(text)
        assert format_source(once) == once, name
        policylang.loads(once, name=f"{name}.policy")


# ------------------------------------------------------------- mutated policy text
def mutate(rnd: random.Random, data: bytes, donors: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        if not b:
            b += rnd.choice(donors)[:64]
        op = rnd.randrange(7)
        i = rnd.randrange(len(b))
        j = min(len(b), i + rnd.randint(1, 40))
        if op == 0:                                  # flip a bit
            b[i] ^= 1 << rnd.randrange(8)
        elif op == 1:                                # a random byte
            b[i] = rnd.randrange(256)
        elif op == 2:                                # delete a run
            del b[i:j]
        elif op == 3:                                # duplicate a run
            b[i:i] = b[i:j]
        elif op == 4:                                # splice from another example
            donor = rnd.choice(donors)
            k = rnd.randrange(len(donor))
            b[i:i] = donor[k:k + rnd.randint(1, 80)]
        elif op == 5:                                # an interesting token
            b[i:i] = rnd.choice([b"(", b")", b"[", b"]", b'"', b"\\", b"\n", b"#", b"@id(", b"when ", b"not ",
                                 b"*", b"**", b" in ", b"1h30m", b"99999999999999999999", b"\x00", b"\xff",
                                 b"permit ", b"forbid ", b"require approval for ", b"grant ", b"const ",
                                 b"option ", b"any x in ", b".", b"has ", b"matches ", b"\t", b"\r"])
        else:                                        # swap two runs
            k = rnd.randrange(len(b))
            b[i:j], b[k:k] = b[k:k + (j - i)], b[i:j]
    return bytes(b)


def load_or_policy_error(text: str) -> bool:
    try:
        policylang.loads(text, name="mutant.policy")
        return True
    except PolicyError as e:
        assert e.diagnostics and all(d.code.startswith(("E", "W")) for d in e.diagnostics)
        return False


def test_mutated_example_policies_raise_only_policy_error():
    donors = [t.encode() for _, t in EXAMPLE_TEXTS]
    rnd = random.Random(20260801)
    loaded = failed = 0
    for i in range(n(3000)):
        src = rnd.choice(donors)
        mutant = mutate(rnd, src, donors)
        text = mutant.decode("utf-8", errors="replace") if rnd.random() < 0.9 else mutant.decode("latin-1")
        try:
            ok = load_or_policy_error(text)
            try:
                formatted = format_source(text)
            except PolicyError:
                formatted = None
            if ok and formatted is not None:
                policylang.loads(formatted, name="mutant.policy")
        except PolicyError:
            ok = False
        except Exception as e:  # pragma: no cover - the failure report
            raise AssertionError(f"case {i}: {type(e).__name__}: {e}\n--- input\n{text}") from e
        loaded += ok
        failed += not ok
    COUNTS["mutated policies"] = loaded + failed
    print(f"\nmutated policies: {loaded + failed} ({loaded} still load, {failed} PolicyError)")
    assert failed and loaded  # the mutations reach both sides


def test_mutated_policy_bytes_through_load(tmp_path):
    """Through the file loader too (invalid UTF-8 is a diagnostic, not a UnicodeDecodeError)."""
    donors = [t.encode() for _, t in EXAMPLE_TEXTS]
    rnd = random.Random(7)
    path = tmp_path / "m.policy"
    for i in range(n(300)):
        path.write_bytes(mutate(rnd, rnd.choice(donors), donors))
        try:
            policylang.load(str(path))
        except PolicyError as e:
            assert e.diagnostics
    COUNTS["mutated policy files"] = n(300)


# ---------------------------------------------------------------- random requests
def random_json(rnd: random.Random, depth: int = 0):
    roll = rnd.random()
    if depth > 3 or roll < 0.45:
        return rnd.choice([None, True, False, 0, -1, 1.5, 2**70, -0.0, float("inf"), float("nan"), "", "x",
                           "agent", "read", "repo", "\u0000", "\ud800", "a" * 1000, "..", "__class__"])
    if roll < 0.7:
        return [random_json(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]
    keys = ["id", "kind", "type", "name", "attrs", "score", "signals", "task_id", "a", "__proto__", ""]
    return {rnd.choice(keys): random_json(rnd, depth + 1) for _ in range(rnd.randint(0, 5))}


VALID = {"principal": {"id": "spiffe://acme.io/agents/coder", "kind": "agent", "attrs": {"tenant": "acme"}},
         "action": {"name": "read", "attrs": {}},
         "resource": {"type": "repo", "id": "acme/api", "attrs": {"owner": "acme"}},
         "context": {"ip": "10.1.2.3"}, "risk": {"score": 0.2, "signals": ["new_device"]},
         "delegation": [{"id": "user:alice", "kind": "human", "attrs": {}}],
         "intent": {"task_id": "T-42", "purpose": "fix-bug"}, "approval": "apr_7f3c"}


def mutate_request(rnd: random.Random, req):
    """Replace, delete or add one value somewhere in a copy of ``req``."""
    req = json.loads(json.dumps(req))
    node = req
    for _ in range(rnd.randint(0, 3)):
        if isinstance(node, dict) and node:
            key = rnd.choice(list(node))
            if isinstance(node[key], (dict, list)) and node[key]:
                node = node[key]
                continue
        elif isinstance(node, list) and node:
            i = rnd.randrange(len(node))
            if isinstance(node[i], (dict, list)) and node[i]:
                node = node[i]
                continue
        break
    if isinstance(node, dict):
        op = rnd.randrange(3)
        if op == 0 and node:
            del node[rnd.choice(list(node))]
        elif op == 1 and node:
            node[rnd.choice(list(node))] = random_json(rnd)
        else:
            node[rnd.choice(["x", "attrs", "id", "kind", "score"])] = random_json(rnd)
    elif isinstance(node, list):
        if node and rnd.random() < 0.5:
            node[rnd.randrange(len(node))] = random_json(rnd)
        else:
            node.append(random_json(rnd))
    return req


def test_random_and_mutated_requests_raise_only_request_error():
    engines = []
    for d in sorted(EXAMPLES.iterdir()):
        if (d / "policies").is_dir():
            ps = policylang.load(str(d / "policies"))
            engines += [policylang.Engine(ps, cache_size=0), policylang.Engine(ps, cache_size=128)]
    rnd = random.Random(42)
    decided = rejected = 0
    for i in range(n(20000)):
        req = random_json(rnd) if i % 4 == 0 else mutate_request(rnd, VALID)
        for engine in (engines[i % len(engines)],):
            try:
                d = engine.decide(req)
                json.dumps(d.to_dict(), allow_nan=False)
                decided += 1
            except RequestError as e:
                assert str(e)
                rejected += 1
            except Exception as e:  # pragma: no cover - the failure report
                raise AssertionError(f"case {i}: {type(e).__name__}: {e}\n--- request\n{req!r}") from e
    COUNTS["requests"] = decided + rejected
    print(f"\nrandom requests: {decided + rejected} ({decided} decided, {rejected} RequestError)")
    assert decided and rejected


# -------------------------------------------------------------- the decision service
@pytest.fixture(scope="module")
def client():
    from fastapi.testclient import TestClient
    from policylang.server.app import create_app
    app = create_app(str(EXAMPLES / "coding-agent" / "policies"), watch=False, handle_sighup=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


ENDPOINTS = {
    "/v1/decide": VALID,
    "/access/v1/evaluation": {"subject": {"type": "agent", "id": "spiffe://acme.io/agents/coder",
                                          "properties": {"tenant": "acme"}},
                              "action": {"name": "read"}, "resource": {"type": "repo", "id": "acme/api",
                                                                       "properties": {"owner": "acme"}},
                              "context": {"risk": {"score": 0.1}, "delegation": [{"type": "human", "id": "u"}]}},
    "/access/v1/evaluations": {"subject": {"type": "agent", "id": "spiffe://acme.io/agents/coder"},
                               "evaluations": [{"action": {"name": "read"}, "resource": {"type": "repo", "id": "x"}},
                                               {"action": {"name": "write"}}],
                               "options": {"evaluations_semantic": "deny_on_first_deny"}},
    "/access/v1/search/subject": {"subject": {"type": "agent"}, "action": {"name": "read"},
                                  "resource": {"type": "repo", "id": "acme/api"}, "page": {"limit": 2}},
    "/access/v1/search/resource": {"subject": {"type": "agent", "id": "spiffe://acme.io/agents/coder"},
                                   "action": {"name": "read"}, "resource": {"type": "repo"}},
    "/access/v1/search/action": {"subject": {"type": "agent", "id": "spiffe://acme.io/agents/coder"},
                                 "resource": {"type": "repo", "id": "acme/api"}},
}


def test_the_service_answers_4xx_never_5xx_to_mutated_bodies(client):
    rnd = random.Random(99)
    statuses: dict[int, int] = {}
    paths = list(ENDPOINTS)
    total = n(3000)
    for i in range(total):
        path = paths[i % len(paths)]
        base = ENDPOINTS[path]
        roll = rnd.random()
        headers = {"content-type": "application/json"}
        if roll < 0.5:
            body = json.dumps(mutate_request(rnd, base)).encode()
        elif roll < 0.65:
            body = json.dumps(random_json(rnd), allow_nan=True).encode()
        elif roll < 0.9:
            body = mutate(rnd, json.dumps(base).encode(), [json.dumps(b).encode() for b in ENDPOINTS.values()])
        else:
            body = json.dumps(base).encode()
            headers = rnd.choice([{}, {"content-type": "text/plain"}, {"content-type": "application/json; x"},
                                  {"content-type": "application/jsonx"}])
        r = client.post(path, content=body, headers=headers)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        assert r.status_code < 500, (path, body, r.status_code, r.text)
        if r.status_code >= 400:
            assert r.json()["error"]["status"] == r.status_code
    COUNTS["service bodies"] = total
    print(f"\nservice bodies: {total}, statuses {dict(sorted(statuses.items()))}")
    assert statuses.get(200) and statuses.get(400)
