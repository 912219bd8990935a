"""Instructions per cached decision (a hit of the request cache) against instructions per
uncached decision, counted by valgrind's callgrind on the same stream (docs/engine.md#the-decision-cache).

    python -m benchmarks.bench_cache --scenario M
    python -m benchmarks.bench_cache --scenario M --wall   # also a wall-clock ratio, one process

Like :mod:`benchmarks.instructions` it runs a stream twice with N1 and N2 decisions after
the same load and warm-up and reports (total(N2) - total(N1)) / (N2 - N1), once with
``cache_size=0`` and once with the default cache after every request of the stream was
decided once (so every counted decision is a hit). The issue-20 target: a hit costs at
most a quarter of an uncached decision.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_CHILD = r"""
import pickle, sys
requests, text, cache_size = pickle.load(open(sys.argv[1], "rb"))
import policylang
engine = policylang.Engine(policylang.loads(text, name="scenario.policy"), cache_size=cache_size)
for r in requests[:int(sys.argv[3])]:
    engine.decide(r)
for i in range(int(sys.argv[2])):
    engine.decide(requests[i % len(requests)])
"""


def _count(tree: str, data: str, child: str, n: int, warmup: int) -> int:
    # a fixed hash seed: string hashing changes dict probing, hence the count, run to run
    env = dict(os.environ, PYTHONPATH=tree, PYTHONHASHSEED="0")
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          sys.executable, child, data, str(n), str(warmup)],
                         env=env, capture_output=True, text=True, check=True).stderr
    m = re.search(r"Collected\s*:\s*(\d+)", out)
    if not m:
        raise SystemExit(f"callgrind printed no total:\n{out[-2000:]}")
    return int(m.group(1))


def _per_decision(tree: str, requests: list, text: str, cache_size: int, warmup: int, n1: int, n2: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "stream.pkl")
        child = os.path.join(tmp, "child.py")
        with open(data, "wb") as f:
            pickle.dump((requests, text, cache_size), f)
        Path(child).write_text(_CHILD)
        a = _count(tree, data, child, n1, warmup)
        b = _count(tree, data, child, n2, warmup)
    return (b - a) / (n2 - n1)


def _wall(requests: list, text: str, rounds: int = 5) -> tuple[float, float]:
    """Median µs per decision, uncached and cached (all hits), interleaved in one process."""
    import policylang

    ps = policylang.loads(text, name="scenario.policy")
    plain, cached = policylang.Engine(ps, cache_size=0), policylang.Engine(ps)
    for r in requests:
        cached.decide(r)
    times: dict = {"plain": [], "cached": []}
    for _ in range(rounds):
        for name, engine in (("plain", plain), ("cached", cached)):
            decide = engine.decide
            start = time.perf_counter()
            for r in requests:
                decide(r)
            times[name].append((time.perf_counter() - start) / len(requests) * 1e6)
    return tuple(sorted(times[k])[rounds // 2] for k in ("plain", "cached"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="M", help="S, M or L (benchmarks/scenarios.py)")
    ap.add_argument("--tree", default=str(Path(__file__).resolve().parent.parent),
                    help="the checkout whose policylang is measured (default: this one)")
    ap.add_argument("--n1", type=int, default=1000)
    ap.add_argument("--n2", type=int, default=5000)
    ap.add_argument("--wall", action="store_true", help="also time both in one process (noisy)")
    args = ap.parse_args(argv)
    from benchmarks import scenarios

    sc = scenarios.scenario(args.scenario)
    warmup = len(sc.requests)  # every request decided once: plans built, cache filled
    plain = _per_decision(args.tree, sc.requests, sc.text, 0, warmup, args.n1, args.n2)
    hit = _per_decision(args.tree, sc.requests, sc.text, 10_000, warmup, args.n1, args.n2)
    print(f"scenario {args.scenario}: {plain:,.0f} instructions per uncached decision, "
          f"{hit:,.0f} per cache hit ({hit / plain:.2f} of uncached)")
    if args.wall:
        p, c = _wall(sc.requests, sc.text)
        print(f"wall clock (median of 5, one process): uncached {p:.2f} µs, hit {c:.2f} µs ({c / p:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
