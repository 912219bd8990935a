"""Instructions per decision, counted by valgrind's callgrind, for policylang and every
in-process peer on the same stream: a figure machine noise does not change, so two trees
(or two commits, or two engines) can be compared on a shared machine.

    python -m benchmarks.instructions --scenario M                     # policylang, this checkout
    python -m benchmarks.instructions --scenario M --tree DIR          # another checkout (a worktree)
    python -m benchmarks.instructions --scenario M --engine policylang,regorus,cel,cedar
    python -m benchmarks.instructions --scenario M --engine policylang,regorus --gate 5
    python -m benchmarks.instructions --scenario M --engine "policylang,policylang (cache hit)"

``policylang (cache hit)`` and ``policylang (decide_json cache hit)``
(``benchmarks.peers.VARIANTS``) are policylang with the default request cache, deciding
the request dicts and their JSON texts, warmed on the whole stream first: every counted
decision is a hit, so the ratio to ``policylang`` is a noise-free figure of what a hit
costs against a decision.

Each engine runs in its own process under ``valgrind --tool=callgrind``: it loads the
scenario through its adapter (``benchmarks/peers.py``, the same translation and calls
``compare.py`` times), decides ``--warmup`` requests of the stream (not counted), then
``--decisions`` requests from the start of the stream (cycling), in batches of ``--batch``
through ``Adapter.run``. Only those calls are counted: each runs as
``operator.call(adapter.run, batch)`` and callgrind collects only inside that C function
(``--collect-atstart=no --toggle-collect=_operator_call``), so start-up, load, warm-up
and the checking are outside the count, and each batch's decision objects are turned
into booleans (uncounted) and dropped before the next batch, so the live heap does not
grow with the number of decisions (a growing heap would make the garbage collector's
passes, hence the count, grow with it). The count divided by the number of decisions is
the figure. Every decision is checked against the scenario's expected one; a mismatch
fails the run (exit status 1). Needs a Python whose ``_operator_call`` symbol is not
stripped (python.org and pyenv builds keep it; the script says so otherwise).

``--cache-sim MIB`` also runs callgrind's cache simulation with a last-level cache of MIB
MiB (16-way, 64-byte lines; the first level is the machine's) and reports the simulated
data misses of each level per decision: the second noise-free figure. Two sets that run
the same instructions can still differ in time when one's data does not stay in a core's
cache (the L scenario's 10,000 rules, against a core's 1 MiB L2 here); a layout change is kept when it
cuts these misses (docs/engine.md#memory-locality).

A fixed ``PYTHONHASHSEED`` keeps string hashing, hence dict probing, the same run to run.
``--gate RATIO`` exits with status 1 when any peer's count per decision divided by
policylang's is below ``RATIO`` (policylang is measured whenever ``--gate`` is given), so a
CI job can require "at least RATIO times fewer instructions than each peer". ``--json FILE``
also writes the figures as JSON. Needs ``valgrind`` (Debian: ``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: the C function the counted calls run inside (``operator.call``): callgrind collects
#: only while in it (``--collect-atstart=no --toggle-collect``)
TOGGLE = "_operator_call"

#: the child: benchmarks from this checkout (by path), policylang from PYTHONPATH (the tree)
_CHILD = r"""
import importlib.util, json, os, pickle, sys
root, data, engine, warmup, n, batch = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:7])
spec = importlib.util.spec_from_file_location(
    "benchmarks", os.path.join(root, "benchmarks", "__init__.py"),
    submodule_search_locations=[os.path.join(root, "benchmarks")])
pkg = importlib.util.module_from_spec(spec)
sys.modules["benchmarks"] = pkg
spec.loader.exec_module(pkg)
from benchmarks.peers import ADAPTERS, VARIANTS
scn = pickle.load(open(data, "rb"))
reqs = scn.requests
adapter = (VARIANTS.get(engine) or ADAPTERS[engine])()
adapter.load(scn)
run = adapter.run
warm = [reqs[i:i + batch] for i in range(0, min(warmup, len(reqs)), batch)]
stream = [reqs[i % len(reqs)] for i in range(n)]
chunks = [stream[i:i + batch] for i in range(0, n, batch)]
for c in warm:
    run(c)
from operator import call  # callgrind collects only inside operator.call (--toggle-collect)
allowed, got = adapter.allowed, []
for c in chunks:
    got.extend(allowed(call(run, c)))  # each batch's own objects are freed before the next
want = [scn.expected(r) == "allow" for r in stream]
bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
print(json.dumps({"decisions": len(got), "mismatches": len(bad),
                  "first_mismatch": (json.dumps(stream[bad[0]]) if bad else "")}))
"""


def valgrind_available() -> bool:
    return shutil.which("valgrind") is not None


def cache_options(mib: int | None) -> list[str]:
    """callgrind's options for a simulated last-level cache of ``mib`` MiB (none: no
    simulation). valgrind wants a power-of-two number of sets, so ``mib`` is a power of two."""
    if mib is None:
        return []
    if mib < 1 or mib & (mib - 1):
        raise ValueError(f"--cache-sim wants a power of two of MiB (1, 2, 4, 8, ...), got {mib}")
    return ["--cache-sim=yes", f"--LL={mib * 1024 * 1024},16,64"]


def events(stderr: str) -> dict[str, int]:
    """callgrind's totals by event name (Ir, and with --cache-sim D1mr, DLmw, ...)."""
    names = re.search(r"Events\s*:\s*([A-Za-z0-9 ]+)", stderr)
    totals = re.search(r"Collected\s*:\s*([\d ]+)", stderr)
    if not totals:
        return {}
    values = [int(v) for v in totals.group(1).split()]
    keys = names.group(1).split() if names else ["Ir"]
    return dict(zip(keys, values))


def count(engine: str, data: str, child: str, tmp: str, *, tree: str, warmup: int,
          decisions: int, batch: int, cache_sim: int | None = None) -> dict:
    """Run one engine under callgrind; {'instructions', 'decisions', 'mismatches', ...}
    (and with ``cache_sim`` MiB, the simulated 'd1_misses' and 'll_misses' per decision)."""
    out_file = os.path.join(tmp, f"cg.{re.sub(r'[^A-Za-z0-9]+', '_', engine)}.out")
    # a fixed hash seed: string hashing changes dict probing, hence the count, run to run
    env = dict(os.environ, PYTHONPATH=tree, PYTHONHASHSEED="0")
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
         "--collect-atstart=no", f"--toggle-collect={TOGGLE}", *cache_options(cache_sim),
         sys.executable, child, str(ROOT), data, engine, str(warmup), str(decisions), str(batch)],
        env=env, cwd=tmp, capture_output=True, text=True, check=False)
    Path(out_file).unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{engine}: the child failed under callgrind (exit {proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    ev = events(proc.stderr)
    if "Ir" not in ev:
        raise RuntimeError(f"{engine}: callgrind printed no total:\n{proc.stderr[-2000:]}")
    total = ev["Ir"]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["decisions"] and total < 100 * result["decisions"]:
        raise RuntimeError(f"{engine}: callgrind collected {total:,} instructions for "
                           f"{result['decisions']:,} decisions: this Python's {TOGGLE} symbol is "
                           "probably stripped (a Python with its symbol table is needed)")
    n = max(1, result["decisions"])
    result.update(instructions=total, warmup=warmup, per_decision=total / n)
    if cache_sim is not None:
        result.update(cache_mib=cache_sim, d1_misses=(ev.get("D1mr", 0) + ev.get("D1mw", 0)) / n,
                      ll_misses=(ev.get("DLmr", 0) + ev.get("DLmw", 0)) / n)
    return result


def measure(scenario: str = "M", engines: list[str] | tuple[str, ...] = ("policylang",), *,
            tree: str | None = None, warmup: int = 200, decisions: int = 2000, batch: int = 16,
            caps: dict[str, int] | None = None, jobs: int = 2, seed: int | None = None,
            n_requests: int = 2_000, cache_sim: int | None = None, log=None) -> dict:
    """Count instructions per decision for each engine on one scenario's stream.

    ``caps``: {engine: N}, at most N warm-up and N measured decisions for that engine (the
    slow peers). ``cache_sim``: simulate a last-level cache of that many MiB (:func:`count`).
    Returns {"scenario", "engines": {name: {...}}, "ratios": {name: x / policylang}}.
    """
    cache_options(cache_sim)  # a bad size is refused before anything runs
    from benchmarks import scenarios as sc
    from benchmarks.peers import ADAPTERS, VARIANTS

    if not valgrind_available():
        raise RuntimeError("valgrind is not installed (Debian: apt-get install valgrind)")
    unknown = [e for e in engines if e not in ADAPTERS and e not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown engine(s) {unknown}; known: {', '.join([*ADAPTERS, *VARIANTS])}")
    kw = {} if seed is None else {"seed": seed}
    scn = sc.scenario(scenario, n_requests=n_requests, **kw)
    scn.text  # noqa: B018 - computed once here, pickled with the scenario
    caps = caps or {}
    out: dict = {"scenario": scenario, "rules": len(scn.rules), "tree": tree or str(ROOT),
                 "batch": batch, "engines": {}, "errors": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "scenario.pkl")
        child = os.path.join(tmp, "child.py")
        with open(data, "wb") as f:
            pickle.dump(scn, f)
        Path(child).write_text(_CHILD)

        def one(e: str):
            cap = caps.get(e)
            w, n = (warmup, decisions) if cap is None else (min(warmup, cap), min(decisions, cap))
            if e in VARIANTS:
                w = max(w, n_requests)  # every request decided once: each counted one is a hit
            if log:
                log(f"  callgrind {scenario} {e}: warm-up {w}, {n} decisions")
            return e, count(e, data, child, tmp, tree=tree or str(ROOT), warmup=w, decisions=n,
                            batch=batch, cache_sim=cache_sim)

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(one, e) for e in engines]
            for fut, e in zip(futures, engines):
                try:
                    name, res = fut.result()
                    out["engines"][name] = res
                except Exception as ex:  # noqa: BLE001 - one engine's failure is reported, not fatal
                    out["errors"][e] = str(ex)
                    if log:
                        log(f"  callgrind {scenario} {e}: {ex}")
    base = out["engines"].get("policylang")
    out["ratios"] = ({e: r["per_decision"] / base["per_decision"] for e, r in out["engines"].items()}
                     if base else {})
    return out


def markdown(result: dict) -> str:
    sim = any("ll_misses" in r for r in result["engines"].values())
    head = "| scenario | engine | instructions per decision | × policylang |"
    rule = "|---|---|---:|---:|"
    if sim:
        mib = next(r["cache_mib"] for r in result["engines"].values() if "cache_mib" in r)
        head += f" D1 misses per decision | LL ({mib} MiB) misses per decision |"
        rule += "---:|---:|"
    rows = [head + " decisions counted | warm-up | agreement |", rule + "---:|---:|---|"]
    for e, r in result["engines"].items():
        ratio = result["ratios"].get(e)
        agree = "all match" if not r["mismatches"] else f"**{r['mismatches']} MISMATCHES**"
        misses = f" {r['d1_misses']:,.1f} | {r['ll_misses']:,.2f} |" if sim else ""
        rows.append(f"| {result['scenario']} | {e} | {r['per_decision']:,.0f} | "
                    f"{_ratio(ratio)} |{misses} {r['decisions']:,} | "
                    f"{r['warmup']:,} | {agree} |")
    for e, err in result.get("errors", {}).items():
        dashes = " — | — |" if sim else ""
        rows.append(f"| {result['scenario']} | {e} | — | — |{dashes} — | — | {err.splitlines()[0]} |")
    return "\n".join(rows)


def _ratio(ratio: float | None) -> str:
    """A ratio to policylang as the table shows it (two decimals below 1: the cache hits)."""
    if ratio is None:
        return "—"
    return f"{ratio:.2f}×" if ratio < 1 else f"{ratio:.1f}×"


def _caps(items: list[str]) -> dict[str, int]:
    caps = {}
    for item in items:
        name, _, n = item.rpartition("=")
        if not name or not n.isdigit():
            raise argparse.ArgumentTypeError(f"--cap wants ENGINE=N, got {item!r}")
        caps[name] = int(n)
    return caps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.instructions",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="M", help="S, M or L (benchmarks/scenarios.py)")
    ap.add_argument("--engine", "--engines", dest="engines", default="policylang",
                    help="comma-separated adapters of benchmarks/peers.py (default policylang)")
    ap.add_argument("--tree", default=str(ROOT),
                    help="the checkout whose policylang is measured (default: this one)")
    ap.add_argument("--warmup", type=int, default=200,
                    help="requests decided before counting (plans are built lazily; a warm-up "
                         "of the whole stream counts steady-state decisions only)")
    ap.add_argument("--decisions", type=int, default=2000, help="decisions counted (default 2000)")
    ap.add_argument("--n1", type=int, default=None, help=argparse.SUPPRESS)  # the old two-run form:
    ap.add_argument("--n2", type=int, default=None, help=argparse.SUPPRESS)  # counts n2 - n1 decisions
    ap.add_argument("--requests", type=int, default=2000, help="requests in the stream (default 2000)")
    ap.add_argument("--batch", type=int, default=16, help="requests per Adapter.run call (default 16)")
    ap.add_argument("--cap", action="append", default=[], metavar="ENGINE=N",
                    help="at most N warm-up and N counted decisions for ENGINE (slow peers)")
    ap.add_argument("--jobs", type=int, default=2, help="engines counted at once (default 2)")
    ap.add_argument("--gate", type=float, default=None, metavar="RATIO",
                    help="exit 1 when a peer's count / policylang's count is below RATIO")
    ap.add_argument("--cache-sim", type=int, default=None, metavar="MIB",
                    help="also simulate a last-level cache of MIB MiB (a power of two) and report "
                         "the data misses per decision")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.n1 is not None or args.n2 is not None:
        args.decisions = (args.n2 if args.n2 is not None else 5000) - (args.n1 or 0)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.gate is not None and "policylang" not in engines:
        engines.insert(0, "policylang")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    try:
        res = measure(args.scenario.upper(), engines, tree=args.tree, warmup=args.warmup,
                      decisions=args.decisions, batch=args.batch, caps=_caps(args.cap),
                      jobs=args.jobs, n_requests=args.requests, cache_sim=args.cache_sim, log=log)
    except (RuntimeError, ValueError) as e:
        log(str(e))
        return 2
    pl = res["engines"].get("policylang")
    if pl and len(engines) == 1:  # the one-line form other scripts read
        print(f"scenario {args.scenario}: {pl['per_decision']:,.0f} instructions per uncached decision "
              f"(tree {args.tree}, warm-up {args.warmup})")
    print(markdown(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2), encoding="utf-8")
    status = 0
    if res["errors"]:
        status = 1
    for e, r in res["engines"].items():
        if r["mismatches"]:
            log(f"FAIL {e}: {r['mismatches']} decisions differ from the expected ones; first: "
                f"{r['first_mismatch']}")
            status = 1
    if args.gate is not None:
        if not pl:
            log("FAIL gate: policylang was not measured")
            return 1
        for e, ratio in res["ratios"].items():
            if e.startswith("policylang"):
                continue
            if ratio < args.gate:
                log(f"FAIL gate: {e} uses {ratio:.2f}× policylang's instructions per decision, "
                    f"below {args.gate:g}×")
                status = 1
            else:
                log(f"gate: {e} {ratio:.2f}× ≥ {args.gate:g}×")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
