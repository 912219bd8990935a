"""Load and faults against a live ``policylang serve`` on loopback.

Four phases, each against its own server (started with the test harness's
``LiveServer`` and ``RedisServer`` helpers):

1. ``saturation``: client threads POST /v1/decide back to back for S seconds; every
   request must be answered 200; latency percentiles are recorded.
2. ``reload``: the same load while the policy file is rewritten every second (two
   valid versions alternate); no request may fail and several versions must be seen.
3. ``sigkill``: the service runs with ``--audit FILE``; mid-load it is SIGKILLed. Every
   decision that was acknowledged (a 200 reached the client) must be in the audit log,
   and ``policylang audit verify`` must accept the chain.
4. ``redis``: the service runs with ``--store redis://…``; opening approval tickets
   needs Redis. Redis is stopped mid-run: those requests fail closed (503, never 2xx
   nor another 5xx) while plain decisions keep answering 200; Redis is restarted and
   the service recovers by itself.

    python benchmarks/load_faults.py --seconds 60 [--threads 8] [--json results.json]

Exit 1 when a phase fails its checks. ``tests/test_load_faults.py`` runs it for a few
seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from redis_fixture import REDIS_SERVER, RedisServer  # noqa: E402
from test_server_harness import LiveServer  # noqa: E402

POLICY_A = '''
@id("readers-read")
permit agent to read on repo
  when resource.owner == principal.tenant
  grant "repo:read:" + resource.id for 10m
  because "agents read their tenant's repositories"

@id("prod-deploys-need-a-human")
require approval for agent to deploy on service
  when resource.env == "prod"
  by "sre-oncall"
  because "production deploys are high impact"

@id("deployers-deploy")
permit agent to deploy on service
  because "agents deploy"
'''
POLICY_B = POLICY_A.replace('"agents deploy"', '"agents deploy (v2)"') + '''
@id("no-risky")
forbid * to * on *
  when risk.score > 0.9
  because "too risky"
'''
ENTITIES = {"human": {"user:alice": {"groups": ["sre-oncall"]}}}


def read_request(i: int, marker: str = "") -> dict:
    return {"principal": {"id": f"agent:{i % 50}", "kind": "agent", "attrs": {"tenant": "acme"}},
            "action": "read", "resource": {"type": "repo", "id": f"acme/r{i % 200}", "attrs": {"owner": "acme"}},
            "context": {"marker": marker or str(i)}, "risk": {"score": (i % 10) / 10},
            "delegation": [{"id": "user:alice", "kind": "human"}]}


DEPLOY = {"principal": {"id": "agent:deployer", "kind": "agent"}, "action": "deploy",
          "resource": {"type": "service", "id": "payments", "attrs": {"env": "prod"}},
          "delegation": [{"id": "user:alice", "kind": "human"}]}


def percentiles(lat: list[float]) -> dict:
    if not lat:
        return {}
    s = sorted(lat)

    def p(q):
        return round(s[min(len(s) - 1, int(q * len(s)))] * 1000, 2)
    return {"p50_ms": p(0.50), "p90_ms": p(0.90), "p99_ms": p(0.99), "p999_ms": p(0.999),
            "max_ms": round(s[-1] * 1000, 2)}


class Load:
    """``threads`` client threads calling ``job(client, i)`` until stopped."""

    def __init__(self, url: str, threads: int, job):
        self.url, self.job, self.n = url, job, threads
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.lat: list[float] = []
        self.ok = 0
        self.failures: list[str] = []
        self.statuses: dict[int, int] = {}
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]

    def _run(self, k: int) -> None:
        i = k
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self.stop_flag.is_set():
                t0 = time.perf_counter()
                try:
                    result = self.job(client, i)
                except Exception as e:  # a transport error: counted by the caller's rules
                    result = ("error", f"{type(e).__name__}: {e}")
                dt = time.perf_counter() - t0
                with self.lock:
                    status = result[0]
                    self.statuses[status] = self.statuses.get(status, 0) + 1
                    if result[1] is None:
                        self.ok += 1
                        self.lat.append(dt)
                    else:
                        self.failures.append(str(result[1])[:300])
                i += self.n

    def start(self) -> "Load":
        self.started = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> dict:
        self.stop_flag.set()
        for t in self.threads:
            t.join(60)
        elapsed = time.monotonic() - self.started
        return {"requests": self.ok + len(self.failures), "ok": self.ok, "failed": len(self.failures),
                "rps": round((self.ok + len(self.failures)) / elapsed, 1),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=str)},
                "latency": percentiles(self.lat), "first_failures": self.failures[:5]}


def decide_job(client: httpx.Client, i: int):
    r = client.post("/v1/decide", json=read_request(i))
    if r.status_code != 200 or r.json().get("decision") not in ("allow", "deny"):
        return r.status_code, f"{r.status_code} {r.text[:200]}"
    return 200, None


def write_policy(directory: Path, text: str) -> None:
    tmp = directory / ".policy.tmp"
    tmp.write_text(text)
    os.replace(tmp, directory / "main.policy")


def make_set(base: Path) -> Path:
    d = base / "policies"
    d.mkdir(parents=True, exist_ok=True)
    write_policy(d, POLICY_A)
    (d / "people.entities.json").write_text(json.dumps(ENTITIES))
    return d


# ----------------------------------------------------------------------- the phases
def phase_saturation(base: Path, seconds: float, threads: int) -> dict:
    with LiveServer(make_set(base / "sat"), "--poll-interval", "0") as server:
        load = Load(server.url, threads, decide_job).start()
        time.sleep(seconds)
        res = load.stop()
    res["passed"] = res["failed"] == 0 and res["ok"] > 0
    return res


def phase_reload(base: Path, seconds: float, threads: int) -> dict:
    pdir = make_set(base / "reload")
    versions: set[str] = set()

    def job(client, i):
        r = client.post("/v1/decide", json=read_request(i))
        if r.status_code != 200:
            return r.status_code, f"{r.status_code} {r.text[:200]}"
        versions.add(r.json()["policy_version"])
        return 200, None

    reloads = 0
    with LiveServer(pdir, "--poll-interval", "0.2") as server:
        load = Load(server.url, threads, job).start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(1)
            reloads += 1
            write_policy(pdir, POLICY_B if reloads % 2 else POLICY_A)
        time.sleep(1.5)
        res = load.stop()
        health = server.client.get("/healthz").json()
    res.update(rewrites=reloads, versions_seen=len(versions), last_reload_ok=health["last_reload"]["ok"])
    res["passed"] = res["failed"] == 0 and res["ok"] > 0 and len(versions) >= 2 and health["last_reload"]["ok"]
    return res


def phase_sigkill(base: Path, seconds: float, threads: int) -> dict:
    pdir = make_set(base / "kill")
    audit = base / "kill" / "audit.jsonl"
    acked: set[str] = set()
    ack_lock = threading.Lock()

    def job(client, i):
        marker = f"m{i}"
        try:
            r = client.post("/v1/decide", json=read_request(i, marker))
        except httpx.HTTPError as e:   # after the kill: not acknowledged, so not counted as lost
            return "refused", None if killed.is_set() else f"{type(e).__name__}: {e}"
        if r.status_code != 200:
            return r.status_code, f"{r.status_code} {r.text[:200]}"
        with ack_lock:
            acked.add(marker)
        return 200, None

    killed = threading.Event()
    with LiveServer(pdir, "--poll-interval", "0", "--audit", str(audit)) as server:
        load = Load(server.url, threads, job).start()
        time.sleep(seconds)
        killed.set()
        server.signal(signal.SIGKILL)
        server.proc.wait(10)
        time.sleep(0.5)
        res = load.stop()
    lines = audit.read_bytes().split(b"\n")
    logged, torn = set(), 0
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            torn += 1
            continue
        marker = ((rec.get("request") or {}).get("context") or {}).get("marker")
        if marker:
            logged.add(marker)
    lost = sorted(acked - logged)
    verify = subprocess.run([sys.executable, "-c", "from policylang.cli import main; main()", "audit", "verify",
                             str(audit)], capture_output=True, text=True, timeout=120)
    res.update(acknowledged=len(acked), audit_records=len(logged), lost=len(lost), lost_sample=lost[:5],
               unacknowledged_logged=len(logged - acked), torn_lines=torn, verify_exit=verify.returncode,
               verify_output=(verify.stdout + verify.stderr).strip()[-300:])
    res["passed"] = res["failed"] == 0 and not lost and len(acked) > 0 and verify.returncode == 0
    return res


def phase_redis(base: Path, seconds: float, threads: int) -> dict:
    if REDIS_SERVER is None:
        return {"skipped": "redis-server binary not found on PATH (apt-get install redis-server)", "passed": True}
    pdir = make_set(base / "redis")
    redis = RedisServer(str(base / "redis" / "data")).start()
    state = {"down": False}
    log: list[tuple[float, str, int]] = []
    lock = threading.Lock()

    def job(client, i):
        if i % 2:
            return decide_job(client, i)
        started = time.monotonic()   # classified by when the request was sent
        r = client.post("/v1/approvals", json={"request": DEPLOY})
        with lock:
            log.append((started, "down" if state["down"] else "up", r.status_code))
        if r.status_code == 201:
            return 201, None
        if r.status_code == 503 and r.json()["error"]["status"] == 503:
            return 503, None   # failing closed is the expected answer while Redis is away
        return r.status_code, f"{r.status_code} {r.text[:200]}"

    try:
        with LiveServer(pdir, "--poll-interval", "0", "--store", redis.url, "--create-store") as server:
            load = Load(server.url, threads, job).start()
            third = max(1.0, seconds / 3)
            time.sleep(third)
            redis.stop(kill=True)
            stopped_at = time.monotonic()
            state["down"] = True
            time.sleep(third)
            restarting_at = time.monotonic()
            redis.start()
            restarted_at = time.monotonic()
            state["down"] = False
            time.sleep(third)
            res = load.stop()
            # a request sent after Redis died (and not just before it came back) must not open a ticket
            during = [s for t, _, s in log if stopped_at + 0.05 < t < restarting_at - 0.2]
            after = [(t, s) for t, _, s in log if t > restarted_at]
            recovered = [t for t, s in after if s == 201]
            last_503 = max((t for t, s in after if s == 503), default=restarted_at)
    finally:
        redis.stop(kill=True)
    res.update(during_outage={str(s): during.count(s) for s in sorted(set(during))},
               outage_s=round(restarting_at - stopped_at, 2), recovered_after_s=round(min(recovered) - restarted_at, 3) if recovered else None,
               last_503_after_restart_s=round(last_503 - restarted_at, 3))
    res["passed"] = (res["failed"] == 0 and bool(during) and all(s == 503 for s in during) and bool(recovered)
                     and last_503 < (min(recovered) if recovered else 0) + 0.01)
    return res


PHASES = {"saturation": phase_saturation, "reload": phase_reload, "sigkill": phase_sigkill, "redis": phase_redis}


def run(seconds: float, threads: int, phases=tuple(PHASES)) -> dict:
    results = {"seconds": seconds, "threads": threads, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="policylang-load-") as tmp:
        for name in phases:
            started = time.monotonic()
            results[name] = PHASES[name](Path(tmp), seconds, threads)
            results[name]["wall_s"] = round(time.monotonic() - started, 1)
            print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    results["passed"] = all(results[p]["passed"] for p in phases)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60, help="length of each phase's load")
    ap.add_argument("--threads", type=int, default=8, help="client threads")
    ap.add_argument("--phase", action="append", choices=list(PHASES), help="run only these phases")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    results = run(args.seconds, args.threads, tuple(args.phase or PHASES))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
