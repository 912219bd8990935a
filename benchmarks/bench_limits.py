"""Decisions per second with a limit (docs/language.md#limits), on the embedded SQLite
store and on Redis, compared with the same policy without the limit.

    python -m benchmarks.bench_limits                  # SQLite, and Redis if redis-server is on PATH
    python -m benchmarks.bench_limits --n 5000 --threads 4

Every decision of the limited streams reserves in the store (a limited decision is never
cached): SQLite runs one ``BEGIN IMMEDIATE`` transaction per decision (``synchronous``
full, the default, and normal), Redis one Lua script over loopback. The Redis server is
started here on a free loopback port (append-only file, ``appendfsync everysec``) and
stopped at the end. Figures are wall-clock on this machine, single process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import policylang
from policylang.privilege.store import open_store

LIMITED = '''@id("refunds")
permit agent to refund on order
  when action.amount > 0
  limit sum(action.amount) <= 1000000000 per intent.task_id
  limit count <= 1000000000 per principal.id per 1h
  because "bench"
'''
PLAIN = LIMITED.replace("  limit sum(action.amount) <= 1000000000 per intent.task_id\n", "").replace(
    "  limit count <= 1000000000 per principal.id per 1h\n", "")


def _requests(n: int) -> list[dict]:
    return [{"principal": {"kind": "agent", "id": f"agent-{i % 50}"},
             "action": {"name": "refund", "attrs": {"amount": 1 + i % 20}},
             "resource": {"type": "order", "id": f"o-{i}"}, "intent": {"task_id": f"task-{i % 200}"}}
            for i in range(n)]


def _run(engine, requests, threads: int) -> float:
    for r in requests[:200]:  # warm-up
        engine.decide(r)
    start = time.perf_counter()
    if threads <= 1:
        for r in requests:
            assert engine.decide(r).decision == "allow"
    else:
        with ThreadPoolExecutor(threads) as pool:
            assert all(d.decision == "allow" for d in pool.map(engine.decide, requests))
    return len(requests) / (time.perf_counter() - start)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=3000)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    requests = _requests(a.n)
    rows = []
    plain = policylang.Engine(policylang.loads(PLAIN), cache_size=0)
    rows.append(("no limit (uncached)", _run(plain, requests, a.threads)))
    limited = policylang.loads(LIMITED)
    with tempfile.TemporaryDirectory() as d:
        for sync in ("full", "normal"):
            store = open_store(f"sqlite:///{os.path.join(d, sync + '.db')}", synchronous=sync)
            rows.append((f"limit, sqlite synchronous={sync}",
                         _run(policylang.Engine(limited, limits=store), requests, a.threads)))
            store.close()
        if shutil.which("redis-server"):
            sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
            from redis_fixture import RedisServer

            server = RedisServer(os.path.join(d, "redis"), fsync="everysec").start()
            try:
                store = open_store(server.url)
                rows.append(("limit, redis (loopback)", _run(policylang.Engine(limited, limits=store), requests,
                                                             a.threads)))
                store.close()
            finally:
                server.stop()
        else:
            print("redis-server not on PATH: Redis skipped", file=sys.stderr)
    print(f"{a.n} decisions, {a.threads} thread(s)")
    for name, rate in rows:
        print(f"  {name:34s} {rate:10,.0f} decisions/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
