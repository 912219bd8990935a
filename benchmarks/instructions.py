"""Instructions per decision, counted by valgrind's callgrind: a figure machine noise does
not change, so two trees (or two commits) can be compared on a shared machine.

    python -m benchmarks.instructions --scenario M            # this checkout
    python -m benchmarks.instructions --scenario M --tree DIR # another checkout (a worktree)

It runs the same stream twice under ``valgrind --tool=callgrind``, with N1 and N2 decisions
after the same load and warm-up, and reports (total(N2) - total(N1)) / (N2 - N1): the
instructions of one uncached decision, with start-up, load and warm-up cancelled out.
Needs ``valgrind`` (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import pickle, sys
requests, text = pickle.load(open(sys.argv[1], "rb"))
import policylang
engine = policylang.Engine(policylang.loads(text, name="scenario.policy"), cache_size=0)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="M", help="S, M or L (benchmarks/scenarios.py)")
    ap.add_argument("--tree", default=str(Path(__file__).resolve().parent.parent),
                    help="the checkout whose policylang is measured (default: this one)")
    ap.add_argument("--warmup", type=int, default=200,
                    help="requests decided before counting (plans are built lazily, so a "
                         "warm-up of every request counts steady-state decisions only)")
    ap.add_argument("--n1", type=int, default=1000)
    ap.add_argument("--n2", type=int, default=5000)
    args = ap.parse_args(argv)
    from benchmarks import scenarios
    sc = scenarios.scenario(args.scenario)
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "stream.pkl")
        child = os.path.join(tmp, "child.py")
        with open(data, "wb") as f:
            pickle.dump((sc.requests, sc.text), f)
        Path(child).write_text(_CHILD)
        a = _count(args.tree, data, child, args.n1, args.warmup)
        b = _count(args.tree, data, child, args.n2, args.warmup)
    per = (b - a) / (args.n2 - args.n1)
    print(f"scenario {args.scenario}: {per:,.0f} instructions per uncached decision "
          f"(tree {args.tree}, warm-up {args.warmup})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
