"""policylang against its peers on the same scenarios (issue 7), plus the issue-2/3 figures.

    python -m benchmarks.compare                      # S, M, L; every installed engine
    python -m benchmarks.compare --write-docs         # also docs/performance.md + .png
    python -m benchmarks.compare --engines policylang,cedar --scenarios M --budget 1

Peers come from the optional ``bench`` extra (``pip install -e '.[bench]'``); a peer that
is not installed is skipped with a message. What it does:

1. Builds S, M and L from one seed (``benchmarks/scenarios.py``), each with one request
   stream, and the decision every engine must give on each request (a plain evaluator of
   the scenario's rules).
2. Loads every engine (timed: translate + parse + index/compile).
3. Runs every engine on the identical stream, in batches of ``--batch`` requests, round
   robin across engines (so noise from the shared machine spreads over all of them), until
   each has spent ``--budget`` seconds or ``--max-passes`` passes (at least one full pass).
   The timed call goes from the plain request dicts to the engine's own decision objects;
   a batch's time divided by its size is one sample of "µs per decision". Median and p99
   are over those samples, decisions/s over all timed decisions.
4. Checks every decision of every pass against the expected one. One mismatch fails the
   run (exit status 1) and is printed; it is never averaged away.
5. Issue 20 (unless ``--no-figures``/``--no-issue20``): a cache hit at M against the
   uncached median (the same dict, and a fresh equal dict), the load of the 10,000-rule set
   (L) for policylang, cedar, regorus and cel, a one-file reload of L written as ~100
   files (with the incremental API when ``policylang.load``/``Engine`` take ``previous=``),
   resident memory growth for L in a fresh process per engine; with ``--instructions`` (or
   ``--write-docs`` when valgrind is installed) instructions per decision from
   ``benchmarks/instructions.py`` (callgrind); with ``--service`` (or ``--write-docs`` when
   wrk is installed) policylang serve against the Cerbos PDP from
   ``benchmarks/service_compare.py``; and a table of the issue's targets, met or not.
6. Prints markdown tables (and with ``--write-docs`` writes docs/performance.md and the
   log-scale plot docs/performance.png).

The slow pure-Python peers take tens of ms a decision at L and every engine does at
least one full pass: ``--cap-l ENGINE=N`` limits one of them to the first N requests at L
(default ``py-abac=500``; the table says so). A full ``--write-docs`` takes about 10-15
minutes on a quiet 2-core machine.

Compare ratios within one run: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/compare.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"

from benchmarks import scenarios as sc
from benchmarks.peers import ADAPTERS, PEERS, Adapter, PolicylangAdapter

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "performance.md"
PLOT = ROOT / "docs" / "performance.png"

TARGETS = {
    "speedup_m": 20.0,        # best peer median at M / policylang median at M, at least
    "growth_lm": 1.3,         # policylang median L / median M, at most
    "decide_1k_us": 5.0,      # uncached decide median at 1,000 rules, at most
    "cache_hit_us": 1.5,      # cached decide (hit) median, at most
    "compile_10k_s": 3.0,     # Engine construction of 10,000 rules, at most
    "parse_check_10k_s": 3.0, # loads (parse + check) of 10,000 rules, at most
}


# --------------------------------------------------------------------------- timing
@dataclass
class Result:
    engine: str
    scenario: str
    rules: int
    load_s: float = float("nan")
    samples_us: list[float] = field(default_factory=list, repr=False)
    #: the same batches timed in process CPU time (not inflated by preemption)
    cpu_samples_us: list[float] = field(default_factory=list, repr=False)
    decisions: int = 0
    timed_s: float = 0.0
    passes: int = 0
    mismatches: int = 0
    first_mismatch: str = ""
    error: str = ""
    #: decided only the first ``capped`` requests of the stream (0: all of it)
    capped: int = 0

    @property
    def median_us(self) -> float:
        return statistics.median(self.samples_us) if self.samples_us else float("nan")

    @property
    def p99_us(self) -> float:
        return percentile(self.samples_us, 99)

    @property
    def cpu_p99_us(self) -> float:
        return percentile(self.cpu_samples_us, 99)

    @property
    def per_s(self) -> float:
        return self.decisions / self.timed_s if self.timed_s else float("nan")

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("samples_us")
        d.pop("cpu_samples_us")
        d.update(median_us=self.median_us, p99_us=self.p99_us, cpu_p99_us=self.cpu_p99_us,
                 cpu_median_us=statistics.median(self.cpu_samples_us) if self.cpu_samples_us else None,
                 decisions_per_s=self.per_s,
                 samples=len(self.samples_us))
        return d


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def batches(reqs: list, size: int) -> list[list]:
    return [reqs[i:i + size] for i in range(0, len(reqs), size)]


def timed_pass(adapter: Adapter, chunks: list[list], res: Result, expected: list[bool],
               requests: list[dict]) -> None:
    """One timed pass over the whole stream; every decision is checked afterwards."""
    clock, cpu = time.perf_counter_ns, time.process_time_ns
    run, allowed = adapter.run, adapter.allowed
    got: list[bool] = []
    total = 0
    gc.collect()
    for chunk in chunks:
        c0 = cpu()
        t0 = clock()
        raw = run(chunk)
        t1 = clock()
        c1 = cpu()
        total += t1 - t0
        res.samples_us.append((t1 - t0) / len(chunk) / 1e3)
        res.cpu_samples_us.append((c1 - c0) / len(chunk) / 1e3)
        got.extend(allowed(raw))
    res.timed_s += total / 1e9
    res.decisions += len(got)
    res.passes += 1
    bad = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]
    if len(got) != len(expected):
        bad = bad or [min(len(got), len(expected))]
    if bad:
        res.mismatches += len(bad)
        if not res.first_mismatch:
            i = bad[0]
            res.first_mismatch = (f"request #{i}: expected {'allow' if expected[i] else 'deny'}, "
                                  f"got {'allow' if i < len(got) and got[i] else 'deny'}: "
                                  f"{json.dumps(requests[i])}")


def run_scenario(scn: sc.Scenario, adapters: dict[str, Adapter], args, log,
                 caps: dict[str, int] | None = None) -> dict[str, Result]:
    """``caps``: {engine: N}, that engine decides only the first N requests of the stream
    (the slowest peers at L; said so in the tables)."""
    expected_all = [e == "allow" for e in scn.expected_all()]
    caps = caps or {}
    stream = {name: (scn.requests[:caps[name]], expected_all[:caps[name]]) if name in caps
              else (scn.requests, expected_all) for name in adapters}
    chunks_of = {name: batches(reqs, args.batch) for name, (reqs, _) in stream.items()}
    results: dict[str, Result] = {}
    live: dict[str, Adapter] = {}
    for name, adapter in adapters.items():
        chunks = chunks_of[name]
        res = results[name] = Result(name, scn.name, len(scn.rules))
        if name in caps:
            res.capped = len(stream[name][0])
        gc.collect()
        t0 = time.perf_counter()
        try:
            adapter.load(scn)
        except Exception as e:  # noqa: BLE001 - a peer that cannot express the scenario is reported
            res.error = f"load failed: {type(e).__name__}: {e}"
            log(f"  {name}: {res.error}")
            continue
        res.load_s = time.perf_counter() - t0
        if getattr(adapter, "share", None) is not None:
            res.load_s = float("nan")  # reuses another row's engine: no load of its own
        try:  # warm-up: one batch, untimed (first-call costs, lazy imports)
            adapter.allowed(adapter.run(chunks[0]))
        except Exception as e:  # noqa: BLE001 - reported, the run goes on
            res.error = f"run failed: {type(e).__name__}: {e}"
            log(f"  {name}: {res.error}")
            continue
        live[name] = adapter
        log(f"  {name}: " + ("shares the engine loaded above" if res.load_s != res.load_s
                             else f"loaded in {res.load_s * 1e3:.0f} ms"))
    while live:
        for name in list(live):
            res = results[name]
            try:
                timed_pass(live[name], chunks_of[name], res, stream[name][1], stream[name][0])
            except Exception as e:  # noqa: BLE001 - reported, the run goes on
                res.error = f"run failed: {type(e).__name__}: {e}"
                log(f"  {name}: {res.error}")
                del live[name]
                continue
            if res.timed_s >= args.budget or res.passes >= args.max_passes:
                del live[name]
                log(f"  {name}: {res.passes} pass(es), median {res.median_us:.1f} µs, "
                    f"{res.mismatches} mismatches")
    return results


# --------------------------------------------------------------------------- issue 2/3
def issue3_figures(args, log) -> dict:
    """parse+check of 10k rules, compile 10k, uncached decide at 10/1k/10k, cache hit."""
    import policylang

    def median_time(fn, rounds):
        """(median CPU seconds, median wall seconds, result). On a shared machine the
        process's CPU time is the steadier measure of the work; both are reported."""
        cpu, wall = [], []
        for _ in range(rounds):
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            out = fn()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - t0)
        return statistics.median(cpu), statistics.median(wall), out

    fig: dict = {"rounds": args.rounds}
    l_scn = sc.issue3_set(10_000, seed=args.seed, n_requests=args.requests)
    fig["parse_check_10k_s"], fig["parse_check_10k_wall_s"], ps10k = median_time(
        lambda: policylang.loads(l_scn.text, name="issue3-10000.policy"), args.rounds)
    log(f"  parse+check 10k (issue-3 set): {fig['parse_check_10k_s']:.2f} s")
    varied = sc.varied_policy_text(10_000, seed=args.seed)
    fig["parse_check_10k_varied_s"], fig["parse_check_10k_varied_wall_s"], _ = median_time(
        lambda: policylang.loads(varied, name="varied.policy"), args.rounds)
    log(f"  parse+check 10k (varied): {fig['parse_check_10k_varied_s']:.2f} s")
    fig["compile_10k_s"], fig["compile_10k_wall_s"], _ = median_time(
        lambda: policylang.Engine(ps10k, cache_size=0), args.rounds)
    log(f"  compile 10k: {fig['compile_10k_s']:.2f} s")

    class _Cached(PolicylangAdapter):
        """Default decision cache, warmed with the whole stream: every timed call is a hit."""

        def load(self, scn):
            self.engine = policylang.Engine(policylang.loads(scn.text, name=f"{scn.name}.policy"))
            for r in scn.requests:
                self.engine.decide(r)

    decide = {}
    for n in sc.ISSUE3_SIZES:
        scn = l_scn if n == 10_000 else sc.issue3_set(n, seed=args.seed, n_requests=args.requests)
        adapters: dict[str, Adapter] = {"uncached": PolicylangAdapter()}
        if n == 1_000:
            adapters["cached"] = _Cached()
        res = run_scenario(scn, adapters, args, lambda *_: None)
        for k, r in res.items():
            decide[f"{k}_{n}"] = r.summary()
        if n == 1_000:
            c = adapters["cached"].engine.counters
            fig["cache_hits"], fig["cache_misses"] = c.cache_hits, c.cache_misses
        log(f"  decide uncached at {n}: median {res['uncached'].median_us:.2f} µs")
    fig["decide"] = decide
    fig["decide_1k_us"] = decide["uncached_1000"]["median_us"]
    fig["decide_10_us"] = decide["uncached_10"]["median_us"]
    fig["decide_10k_us"] = decide["uncached_10000"]["median_us"]
    fig["ratio_10k_1k"] = fig["decide_10k_us"] / fig["decide_1k_us"]
    fig["cache_hit_us"] = decide["cached_1000"]["median_us"]
    fig["mismatches"] = sum(d["mismatches"] for d in decide.values())
    return fig


# --------------------------------------------------------------------------- issue 20
ISSUE20 = {
    "vs_regorus": 5.0,        # regorus compiled median / policylang median, at M and at L, at least
    "cache_hit_share": 0.25,  # cached decide (hit) median / uncached median at M, at most
    "reload_one_file_s": 0.150,  # one changed file of the 10k set in ~100 files, at most
    "rss_growth_mb": 30.0,    # resident memory growth for the 10k set, at most
    "service_vs_cerbos": 8.0, # policylang serve decisions/s / the Cerbos PDP's, at least
    "service_p50_ms": 0.15,   # p50 of a single check on one connection (wrk -c1 -t1), at most
}


def _median_cpu_wall(fn, rounds: int):
    """(median CPU s, median wall s, last result) of ``rounds`` calls.

    The previous round's result is dropped (and collected) before the next call starts, so
    every round loads into the same process state: a set left alive from the round before
    would only make the collector's full passes walk a dead 10k-rule set, a cost a fresh
    process loading its policies never pays (and one only engines whose sets are Python
    objects would be charged)."""
    cpu, wall, out = [], [], None
    for _ in range(rounds):
        out = None
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    return statistics.median(cpu), statistics.median(wall), out


def _check(engine, scn: sc.Scenario) -> int:
    """Decide the whole stream with ``engine``; the number of decisions that differ from
    the scenario's expected ones (every figure below is checked so)."""
    want = scn.expected_all()
    return sum(engine.decide(r).decision != w for r, w in zip(scn.requests, want, strict=True))


def cache_figures(args, log) -> dict:
    """At M: uncached decide, a cache hit on the same request dict, and a hit on a fresh
    dict equal to a decided one (what a service sees), timed round robin in batches."""
    import copy

    import policylang
    scn = sc.scenario("M", seed=args.seed, n_requests=args.requests)
    ps = policylang.loads(scn.text, name="M.policy")
    uncached = policylang.Engine(ps, cache_size=0)
    cached = policylang.Engine(ps)  # the default cache
    want = scn.expected_all()
    mismatches = 0
    bodies = [json.dumps(r).encode() for r in scn.requests]  # what a service receives
    for r, b, w in zip(scn.requests, bodies, want, strict=True):  # warm the caches: every request once
        mismatches += cached.decide(r).decision != w
        mismatches += cached.decide_json(b).decision != w
    hits0, misses0 = cached.counters.cache_hits, cached.counters.cache_misses
    samples: dict[str, list[float]] = {"uncached": [], "same": [], "fresh": [], "json": []}
    clock = time.perf_counter_ns
    chunks = batches(list(range(len(scn.requests))), args.batch)
    spent = 0.0
    passes = 0
    while passes < 1 or (spent < args.budget and passes < args.max_passes):
        fresh = copy.deepcopy(scn.requests)  # new dicts, equal to the decided ones (untimed)
        for idx in chunks:
            for kind, eng, reqs in (("uncached", uncached, scn.requests), ("same", cached, scn.requests),
                                    ("fresh", cached, fresh), ("json", cached, bodies)):
                decide = eng.decide_json if kind == "json" else eng.decide
                batch = [reqs[i] for i in idx]
                t0 = clock()
                got = [decide(r) for r in batch]
                t1 = clock()
                samples[kind].append((t1 - t0) / len(batch) / 1e3)
                spent += (t1 - t0) / 1e9
                mismatches += sum(d.decision != want[i] for d, i in zip(got, idx, strict=True))
        passes += 1
    c = cached.counters
    fig = {k: statistics.median(v) for k, v in samples.items()}
    fig.update(passes=passes, mismatches=mismatches, hits=c.cache_hits - hits0,
               misses_after_warmup=c.cache_misses - misses0)
    fig["share_same"] = fig["same"] / fig["uncached"]
    fig["share_fresh"] = fig["fresh"] / fig["uncached"]
    fig["share_json"] = fig["json"] / fig["uncached"]
    log(f"  cache at M: uncached {fig['uncached']:.2f} µs, hit (same dict) {fig['same']:.2f} µs, "
        f"hit (fresh equal dict) {fig['fresh']:.2f} µs, decide_json hit {fig['json']:.2f} µs")
    return fig


def load_figures(args, log, avail: dict) -> dict:
    """Load of the 10k-rule set (L) from its text, for policylang and the native peers,
    medians of ``--rounds`` in one run: policylang ``loads`` + ``Engine``; cedar
    ``PolicySet.from_str`` (and with its ``Entities``); regorus ``compile_from_modules``
    (compiled) and ``Engine.add_policy``/``add_data_json``; cel ``cel.compile`` of every
    condition + the index. Each peer's text is translated before the clock starts."""
    import policylang
    from benchmarks import peers as pe
    scn = sc.scenario("L", seed=args.seed, n_requests=args.requests)
    text = scn.text
    fig: dict = {}
    rows: dict[str, tuple] = {}
    def pl_load():
        return policylang.Engine(policylang.loads(text, name="L.policy"), cache_size=0)
    rows["policylang"] = _median_cpu_wall(pl_load, args.rounds)[:2]
    # the same, with the collector threshold the CLI sets for its process (policylang serve,
    # check …): the library never changes it, so the row above is what an embedder gets
    from policylang.cli import GC_GEN0_THRESHOLD
    saved = gc.get_threshold()
    gc.set_threshold(max(saved[0], GC_GEN0_THRESHOLD), *saved[1:])
    try:
        rows["policylang (CLI, serve)"] = _median_cpu_wall(pl_load, args.rounds)[:2]
    finally:
        gc.set_threshold(*saved)
    if avail.get("cedar", (False,))[0]:
        import cedarpy
        ctext, etext = pe.CedarAdapter.policy_text(scn), pe.CedarAdapter.entities_json(scn)
        rows["cedar"] = _median_cpu_wall(lambda: cedarpy.PolicySet.from_str(ctext), args.rounds)[:2]
        rows["cedar (+ entities)"] = _median_cpu_wall(
            lambda: (cedarpy.PolicySet.from_str(ctext), cedarpy.Entities.from_json_str(etext)), args.rounds)[:2]
    if avail.get("regorus", (False,))[0]:
        import regorus
        rego, data = pe.RegorusAdapter.policy_and_data(scn)
        djson = json.dumps(data)
        def compiled():
            vm = regorus.Rvm()
            vm.load_program(regorus.Program.compile_from_modules(
                djson, [("bench.rego", rego)], [pe.RegorusAdapter.entry]))
            vm.set_data_json(djson)
            return vm
        rows["regorus"] = _median_cpu_wall(compiled, args.rounds)[:2]

        def interp():
            e = regorus.Engine()
            e.add_policy("bench.rego", rego)
            e.add_data_json(djson)
            return e
        rows["regorus (interpreted)"] = _median_cpu_wall(interp, args.rounds)[:2]
    if avail.get("cel", (False,))[0]:
        rows["cel"] = _median_cpu_wall(lambda: pe.CelAdapter().load(scn), args.rounds)[:2]
    fig["rows"] = {k: {"cpu_s": c, "wall_s": w} for k, (c, w) in rows.items()}
    for k, (c, w) in rows.items():
        log(f"  load L, {k}: {c:.2f} s CPU ({w:.2f} s wall)")
    return fig


def _incremental_api() -> tuple[bool, bool]:
    """(``policylang.load`` takes ``previous=``, ``Engine`` takes ``previous=``)."""
    import inspect

    import policylang

    def takes(fn) -> bool:
        try:
            return "previous" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            return False
    return takes(policylang.load), takes(policylang.Engine)


def reload_figures(args, log, n_files: int = 100) -> dict:
    """L written as ~``n_files`` files of about 100 rules; load + Engine; then, each round,
    one file changes (one rule's threshold) and the set is reloaded: with the incremental
    API when policylang has it (``load(path, previous=old_set)``, ``Engine(new_set,
    previous=old_engine)``), otherwise a full load + Engine (said so). Every reloaded engine
    decides the whole stream against the changed scenario's expected answers."""
    import dataclasses
    import tempfile

    import policylang
    scn = sc.scenario("L", seed=args.seed, n_requests=args.requests)
    rules = list(scn.rules)
    per = -(-len(rules) // n_files)
    inc_load, inc_engine = _incremental_api()
    if inc_load and inc_engine:
        mode = "incremental: `load(path, previous=old_set)` + `Engine(new_set, previous=old_engine)`"
    elif inc_engine:
        mode = "full reload of the files (`load` takes no `previous`) + `Engine(new_set, previous=old_engine)`"
    elif inc_load:
        mode = "`load(path, previous=old_set)` + a full `Engine(new_set)` (`Engine` takes no `previous`)"
    else:
        mode = "full reload (no incremental API): `load(path)` + `Engine(new_set)`"
    cpu, wall = [], []
    mismatches = 0
    with tempfile.TemporaryDirectory(prefix="reload-L-") as tmp:
        root = Path(tmp)

        def write(i: int, chunk: list) -> None:
            (root / f"rules-{i:03d}.policy").write_text(
                f"# part {i} of scenario L\n" + "\n".join(r.to_policy() for r in chunk), encoding="utf-8")

        parts = [rules[i:i + per] for i in range(0, len(rules), per)]
        for i, chunk in enumerate(parts):
            write(i, chunk)
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        old_set = policylang.load(root)
        old_engine = policylang.Engine(old_set, cache_size=0)
        full_cpu, full_wall = time.process_time() - c0, time.perf_counter() - t0
        mismatches += _check(old_engine, scn)
        target = 0  # the file that changes: the first one (permits only)
        for k in range(args.rounds):
            changed = list(parts[target])
            changed[0] = dataclasses.replace(changed[0], risk_below=round(0.51 + 0.02 * k, 2))
            parts[target] = changed
            write(target, changed)
            gc.collect()
            c0, t0 = time.process_time(), time.perf_counter()
            new_set = policylang.load(root, previous=old_set) if inc_load else policylang.load(root)
            new_engine = (policylang.Engine(new_set, cache_size=0, previous=old_engine) if inc_engine
                          else policylang.Engine(new_set, cache_size=0))
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - t0)
            now = dataclasses.replace(scn, rules=tuple(r for part in parts for r in part), _index={})
            now.__dict__.pop("text", None)
            mismatches += _check(new_engine, now)
            old_set, old_engine = new_set, new_engine
    fig = {"files": len(parts), "rules_per_file": per, "mode": mode,
           "incremental": inc_load and inc_engine, "cpu_s": statistics.median(cpu),
           "wall_s": statistics.median(wall), "full_load_cpu_s": full_cpu, "full_load_wall_s": full_wall,
           "rounds": args.rounds, "mismatches": mismatches}
    log(f"  one-file reload of L ({len(parts)} files): {fig['cpu_s'] * 1e3:.0f} ms CPU "
        f"({fig['wall_s'] * 1e3:.0f} ms wall); {mode}")
    return fig


_RSS_CHILD = r"""
import gc, json, sys
sys.path.insert(0, sys.argv[1])
from benchmarks import scenarios as sc
from benchmarks.peers import ADAPTERS
engine, seed = sys.argv[2], int(sys.argv[3])

def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

scn = sc.scenario("L", seed=seed, n_requests=50)
scn.text
adapter = ADAPTERS[engine]()
mod = {"policylang": "policylang", "cedar": "cedarpy", "regorus": "regorus",
       "regorus (interpreted)": "regorus", "cel": "cel"}.get(engine)
if mod:
    __import__(mod)  # the library itself is not the set's cost
if engine == "policylang":  # its evaluation modules are imported on first use of Engine
    import policylang
    policylang.Engine, policylang.loads
gc.collect()
before = rss_kb()
adapter.load(scn)
got = adapter.allowed(adapter.run(scn.requests[:1]))
gc.collect()
after = rss_kb()
ok = got == [scn.expected(scn.requests[0]) == "allow"]
print(json.dumps({"before_kb": before, "after_kb": after, "agrees": ok}))
"""


def rss_figures(args, log, engines: list[str]) -> dict:
    """Resident memory growth for the 10k set, each engine in a fresh process: RSS after
    the scenario is built and the engine's library imported, against RSS after load, the
    engine ready and one decision (``/proc/self/status`` VmRSS, after a ``gc.collect()``).
    Linux only."""
    import subprocess
    if not Path("/proc/self/status").exists():
        return {"skipped": "no /proc/self/status (not Linux)"}
    out: dict = {}
    for e in engines:
        proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, str(ROOT), e, str(args.seed)],
                              capture_output=True, text=True, check=False, cwd=str(ROOT))
        if proc.returncode != 0:
            out[e] = {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
            log(f"  RSS {e}: {out[e]['error']}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        r["growth_mb"] = (r["after_kb"] - r["before_kb"]) / 1024
        out[e] = r
        log(f"  RSS growth for L, {e}: {r['growth_mb']:.1f} MB")
    return out


def instruction_figures(args, log, engines: list[str]) -> dict:
    """``benchmarks/instructions.py`` as a subprocess, once per scenario of
    ``--instructions-scenarios``; its JSON per scenario, or why it was skipped."""
    import shutil
    import subprocess
    import tempfile
    if shutil.which("valgrind") is None:
        return {"skipped": "valgrind is not installed"}
    out: dict = {}
    for scen in [s.strip().upper() for s in args.instructions_scenarios.split(",") if s.strip()]:
        with tempfile.TemporaryDirectory() as tmp:
            jpath = Path(tmp) / "instructions.json"
            cmd = [sys.executable, "-m", "benchmarks.instructions", "--scenario", scen,
                   "--engine", ",".join(engines), "--json", str(jpath), "--requests", str(args.requests),
                   "--warmup", str(args.instructions_warmup), "--decisions", str(args.instructions_decisions)]
            for cap in args.instructions_cap:
                cmd += ["--cap", cap]
            log(f"  callgrind at {scen}: {', '.join(engines)}")
            proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, check=False)
            if not jpath.exists():
                out[scen] = {"error": (proc.stderr.strip() or "no output")[-1500:]}
                log(f"  instructions at {scen} failed: {out[scen]['error']}")
                continue
            out[scen] = json.loads(jpath.read_text())
            for e, r in out[scen]["engines"].items():
                log(f"  instructions at {scen}, {e}: {r['per_decision']:,.0f} per decision")
    return out


def service_figures(args, log) -> dict:
    """benchmarks/service_compare.py (policylang serve against the Cerbos PDP under wrk),
    when it is there; ``{"skipped": why}`` otherwise."""
    try:
        from benchmarks import service_compare
    except ImportError as e:
        return {"skipped": f"benchmarks/service_compare.py does not import ({e})"}
    if not hasattr(service_compare, "measure") or not hasattr(service_compare, "markdown"):
        return {"skipped": "benchmarks/service_compare.py has no measure()/markdown()"}
    cores = [int(c) for c in args.service_cores.split(",") if c.strip()]
    log(f"  service: {args.service_seconds:g} s per stream on {cores} core(s)")
    try:
        res = service_compare.measure(args.service_seconds, cores)
    except Exception as e:  # noqa: BLE001 - the rest of the page is still worth writing
        return {"skipped": f"service_compare.measure failed: {type(e).__name__}: {e}"}
    res["_markdown"] = service_compare.markdown(res)
    return res


def issue20_rows(all_res: dict[str, dict[str, Result]], x: dict) -> tuple[str, dict]:
    """The Done-when targets of issue 20: measured value and met / not met."""
    rows, checks = [], {}
    ins = x.get("instructions") or {}
    for s in ("M", "L"):
        pl, rg = all_res.get(s, {}).get("policylang"), all_res.get(s, {}).get("regorus")
        if pl and rg and pl.samples_us and rg.samples_us:
            ratio = rg.median_us / pl.median_us
            checks[f"vs_regorus_{s}"] = ratio >= ISSUE20["vs_regorus"]
            rows.append(f"| {s} median ≥ {ISSUE20['vs_regorus']:g}× faster than regorus (compiled) | "
                        f"{ratio:.1f}× ({fmt_us(rg.median_us)} vs {fmt_us(pl.median_us)} µs) | "
                        f"{ok(checks[f'vs_regorus_{s}'])} |")
        else:
            rows.append(f"| {s} median ≥ {ISSUE20['vs_regorus']:g}× faster than regorus (compiled) | not measured | — |")
        r = (ins.get(s) or {}).get("ratios", {}).get("regorus")
        if r is not None:
            checks[f"instructions_vs_regorus_{s}"] = r >= ISSUE20["vs_regorus"]
            rows.append(f"| instructions per decision at {s}: regorus / policylang ≥ {ISSUE20['vs_regorus']:g} "
                        f"(callgrind) | {r:.1f}× | {ok(checks[f'instructions_vs_regorus_{s}'])} |")
    c = x.get("cache")
    if c:
        for key, label in (("share_fresh", "`decide`, a fresh dict equal to a decided one"),
                           ("share_same", "`decide`, the same request dict"),
                           ("share_json", "`decide_json`, the same JSON bytes (a service's request)")):
            if key not in c:
                continue
            flag = c[key] <= ISSUE20["cache_hit_share"]
            checks[f"cache_{key}"] = flag
            rows.append(f"| cache hit at M ({label}) ≤ ¼ of the uncached median | "
                        f"{c[key]:.2f} ({fmt_us(c[key.removeprefix('share_')])} vs "
                        f"{fmt_us(c['uncached'])} µs) | {ok(flag)} |")
    for key, label in (("policylang (cache hit)", "`decide`, the same request dict"),
                       ("policylang (decide_json cache hit)", "`decide_json`, the same JSON bytes")):
        r = (ins.get("M") or {}).get("ratios", {}).get(key)
        if r is not None:
            flag = r <= ISSUE20["cache_hit_share"]
            checks[f"instructions_{key}"] = flag
            rows.append(f"| cache hit at M ({label}) ≤ ¼ of a decision's instructions (callgrind) | "
                        f"{r:.2f} | {ok(flag)} |")
    ld = (x.get("load") or {}).get("rows", {})
    if "policylang" in ld and "cedar" in ld:
        p, ce = ld["policylang"]["cpu_s"], ld["cedar"]["cpu_s"]
        checks["load_vs_cedar"] = p <= ce
        rows.append(f"| load of the 10k-rule set ≤ Cedar's (`PolicySet.from_str`), CPU | "
                    f"{p:.2f} s vs {ce:.2f} s | {ok(checks['load_vs_cedar'])} |")
    rl = x.get("reload")
    if rl and "cpu_s" in rl:
        checks["reload"] = rl["cpu_s"] <= ISSUE20["reload_one_file_s"]
        rows.append(f"| one-file reload of the 10k set ({rl['files']} files) ≤ "
                    f"{ISSUE20['reload_one_file_s'] * 1e3:.0f} ms, CPU | {rl['cpu_s'] * 1e3:.0f} ms "
                    f"({'incremental' if rl['incremental'] else 'full reload: no incremental API'}) | "
                    f"{ok(checks['reload'])} |")
    rss = (x.get("rss") or {}).get("policylang")
    if rss and "growth_mb" in rss:
        checks["rss"] = rss["growth_mb"] <= ISSUE20["rss_growth_mb"]
        rows.append(f"| resident memory growth, 10k set ≤ {ISSUE20['rss_growth_mb']:g} MB | "
                    f"{rss['growth_mb']:.1f} MB | {ok(checks['rss'])} |")
    sv = x.get("service") or {}
    for n, run in (sv.get("runs") or {}).items():
        for kind in ("single", "batch"):
            r = (run.get("ratio") or {}).get(kind)
            if r is None:
                continue
            flag = r >= ISSUE20["service_vs_cerbos"]
            checks[f"service_{kind}_{n}"] = flag
            rows.append(f"| service decisions/s ≥ {ISSUE20['service_vs_cerbos']:g}× the Cerbos PDP's "
                        f"({kind} checks, {n} core(s)) | {r:.1f}× | {ok(flag)} |")
        for kind, r in (run.get("ratio_uncached") or {}).items():
            rows.append(f"| (not a target) the same with policylang's caches off, `--cache-size 0` ({kind} "
                        f"checks, {n} core(s)) | {r:.1f}× | — |")
        one = ((run.get("policylang") or {}).get("single_c1") or {}).get("p50_ms")
        if one is not None:
            flag = one <= ISSUE20["service_p50_ms"]
            checks[f"service_p50_{n}"] = flag
            rows.append(f"| service p50 of a single check on one connection ≤ {ISSUE20['service_p50_ms']:g} ms "
                        f"({n} core(s)) | {one:.3f} ms | {ok(flag)} |")
    if "skipped" in sv:
        rows.append(f"| service decisions/s ≥ {ISSUE20['service_vs_cerbos']:g}× the Cerbos PDP's | "
                    f"skipped: {sv['skipped']} | — |")
    return "| target (issue 20) | measured | |\n|---|---|---|\n" + "\n".join(rows), checks


def issue20_tables(x: dict) -> str:
    """The issue-20 figures as markdown (instructions, cache, load, reload, memory, service)."""
    out = []
    ins = x.get("instructions")
    if ins is not None:
        out += ["### Instructions per decision (callgrind)", ""]
        if "skipped" in ins:
            out += [f"Skipped: {ins['skipped']}.", ""]
        else:
            from benchmarks.instructions import markdown as ins_md
            for scen, res in ins.items():
                out += [f"Error at {scen}: {res['error']}" if "error" in res else ins_md(res), ""]
            out += [("Counted by `python -m benchmarks.instructions` (valgrind's callgrind): each engine in "
                    "its own process decides a warm-up of the stream, then the counted decisions from the "
                    "start of the stream in batches of 16 through the same adapter `run` that is timed "
                    "above; only those calls are counted (each runs inside `operator.call`, and callgrind "
                    "collects only there: `--collect-atstart=no --toggle-collect=_operator_call`), "
                    "with `PYTHONHASHSEED=0`. "
                    "The count is the same whatever else runs on the machine, so these ratios can be "
                    "gated (`--gate RATIO`). Every counted decision is checked against the expected one."),
                    ""]
    c = x.get("cache")
    if c:
        out += ["### Decision cache at M", "",
                "| call | median µs | share of uncached |", "|---|---:|---:|",
                f"| `decide`, `cache_size=0` | {fmt_us(c['uncached'])} | 1.00 |",
                f"| `decide`, cache hit, the same request dict | {fmt_us(c['same'])} | {c['share_same']:.2f} |",
                (f"| `decide`, cache hit, a fresh dict equal to a decided one | {fmt_us(c['fresh'])} | "
                f"{c['share_fresh']:.2f} |"),
                (f"| `decide_json`, cache hit, the same JSON bytes | {fmt_us(c['json'])} | "
                 f"{c['share_json']:.2f} |" if "json" in c else ""), "",
                (f"The default cache, warmed with the whole stream; then the three calls round robin per "
                f"batch, {c['passes']} pass(es) (fresh dicts are deep copies made before the clock starts). "
                f"{c['hits']:,} hits and {c['misses_after_warmup']:,} misses after the warm-up."), ""]
    ld = x.get("load")
    if ld:
        out += ["### Load of the 10,000-rule set (L)", "",
                "| engine | what is timed | CPU s | wall s |", "|---|---|---:|---:|"]
        what = {"policylang": "`loads(text)` + `Engine(set)`",
                "policylang (CLI, serve)": ("the same, with the collector's young-generation threshold the "
                                            "CLI sets for its own process (`policylang.cli.GC_GEN0_THRESHOLD`)"),
                "cedar": "`PolicySet.from_str(text)`",
                "cedar (+ entities)": "`PolicySet.from_str` + `Entities.from_json_str` (5,000 resources, 2,000 users)",
                "regorus": "`Program.compile_from_modules(data, [rego], [entry])` + `Rvm` `load_program`, `set_data_json`",
                "regorus (interpreted)": "`Engine()` + `add_policy` + `add_data_json`",
                "cel": "`cel.compile` of each condition + the (action, type) index"}
        for k, r in ld["rows"].items():
            out.append(f"| {k} | {what.get(k, '')} | {r['cpu_s']:.2f} | {r['wall_s']:.2f} |")
        out += ["", ("Medians of `--rounds` rounds; each peer's text is translated before the clock starts; "
                "each round's result is dropped and collected before the next round starts, so no "
                "round loads beside a set an earlier one built."), ""]
    rl = x.get("reload")
    if rl and "cpu_s" in rl:
        out += ["### One-file reload of the 10,000-rule set", "",
                "| figure | CPU ms | wall ms |", "|---|---:|---:|",
                (f"| first load of the {rl['files']} files + `Engine` | {rl['full_load_cpu_s'] * 1e3:,.0f} | "
                f"{rl['full_load_wall_s'] * 1e3:,.0f} |"),
                (f"| reload after one file changed (median of {rl['rounds']}) | {rl['cpu_s'] * 1e3:,.0f} | "
                f"{rl['wall_s'] * 1e3:,.0f} |"), "",
                (f"L written as {rl['files']} files of {rl['rules_per_file']} rules; each round changes one "
                f"rule's threshold in one file. Mode: {rl['mode']}. Every reloaded engine decided the whole "
                f"stream against the changed set's expected answers ({rl['mismatches']} mismatches)."), ""]
    rss = x.get("rss")
    if rss:
        out += ["### Resident memory for the 10,000-rule set", ""]
        if "skipped" in rss:
            out += [f"Skipped: {rss['skipped']}.", ""]
        else:
            out += ["| engine | RSS before MB | RSS after MB | growth MB |", "|---|---:|---:|---:|"]
            for e, r in rss.items():
                if "error" in r:
                    out.append(f"| {e} | — | — | {r['error']} |")
                else:
                    out.append(f"| {e} | {r['before_kb'] / 1024:.1f} | {r['after_kb'] / 1024:.1f} | "
                               f"{r['growth_mb']:.1f} |")
            out += ["", ("Each engine in a fresh process: RSS (`VmRSS`) once the scenario is built and the "
                    "engine's library imported (for policylang `policylang.Engine` and `policylang.loads` "
                    "touched, which import its evaluation modules on first use), and again after the "
                    "adapter's load (translation, parse, index), one decision and a `gc.collect()`."), ""]
    sv = x.get("service")
    if sv is not None:
        out += ["### Service: policylang serve against the Cerbos PDP", ""]
        out += [sv["_markdown"] if "_markdown" in sv else f"Skipped: {sv.get('skipped', 'not run')}.", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- output
def fmt_us(x: float) -> str:
    if math.isnan(x):
        return "—"
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def fmt_ms(s: float) -> str:
    if math.isnan(s):
        return "—"
    return f"{s * 1e3:,.0f}" if s >= 0.01 else f"{s * 1e3:.2f}"


def ok(flag: bool) -> str:
    return "**met**" if flag else "**missed**"


def tables(all_res: dict[str, dict[str, Result]], engines: list[str]) -> str:
    scen = list(all_res)
    out = []
    # summary: medians per scenario, L/M, speed-up
    head = "| engine | " + " | ".join(f"{s} median µs (p99)" for s in scen)
    if "M" in scen and "L" in scen:
        head += " | L/M"
    out.append(head + " |")
    ncols = 1 + len(scen) + (1 if ("M" in scen and "L" in scen) else 0)
    out.append("|---|" + "---:|" * (ncols - 1))
    for e in engines:
        row = [e]
        for s in scen:
            r = all_res[s].get(e)
            if r is None or r.error or not r.samples_us:
                row.append(r.error.split(":")[0] if r and r.error else "—")
            else:
                row.append(f"{fmt_us(r.median_us)} ({fmt_us(r.p99_us)})")
        if "M" in scen and "L" in scen:
            m, l = all_res["M"].get(e), all_res["L"].get(e)
            row.append(f"{l.median_us / m.median_us:.2f}" if m and l and m.samples_us and l.samples_us else "—")
        out.append("| " + " | ".join(row) + " |")
    out.append("")
    # detail
    out.append("| scenario | rules | engine | median µs | p99 µs | p99 CPU µs | decisions/s | load ms | passes | × policylang median | agreement |")
    out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in scen:
        base = all_res[s].get("policylang")
        for e in engines:
            r = all_res[s].get(e)
            if r is None:
                continue
            if r.error:
                out.append(f"| {s} | {r.rules:,} | {e} | — | — | — | — | — | — | — | {r.error} |")
                continue
            rel = (r.median_us / base.median_us) if base and base.samples_us else float("nan")
            agree = "all match" if not r.mismatches else f"**{r.mismatches} MISMATCHES**"
            if r.capped:
                agree += f" (first {r.capped:,} requests only, `--cap-l`)"
            rel_s = f"{rel:.1f}×" if not math.isnan(rel) else "—"
            out.append(f"| {s} | {r.rules:,} | {e} | {fmt_us(r.median_us)} | {fmt_us(r.p99_us)} | "
                       f"{fmt_us(r.cpu_p99_us)} | {r.per_s:,.0f} | {fmt_ms(r.load_s)} | {r.passes} | {rel_s} | {agree} |")
    return "\n".join(out)


def target_rows(all_res: dict[str, dict[str, Result]], fig: dict | None) -> tuple[str, dict]:
    rows, checks = [], {}
    m = all_res.get("M", {})
    pl_m = m.get("policylang")
    peers_m = [r for n, r in m.items() if n in PEERS and r.samples_us and not r.error]
    if pl_m and pl_m.samples_us and peers_m:
        best = min(peers_m, key=lambda r: r.median_us)
        ratio = best.median_us / pl_m.median_us
        checks["speedup_m"] = ratio >= TARGETS["speedup_m"]
        rows.append(f"| median at M ≥ {TARGETS['speedup_m']:.0f}× lower than the best peer ({best.engine}) | "
                    f"{ratio:.1f}× ({fmt_us(best.median_us)} vs {fmt_us(pl_m.median_us)} µs) | {ok(checks['speedup_m'])} |")
    l = all_res.get("L", {}).get("policylang")
    if pl_m and l and pl_m.samples_us and l.samples_us:
        g = l.median_us / pl_m.median_us
        checks["growth_lm"] = g <= TARGETS["growth_lm"]
        rows.append(f"| L/M median growth ≤ {TARGETS['growth_lm']} | {g:.2f} | {ok(checks['growth_lm'])} |")
    if fig:
        for key, label, unit, val in (
            ("decide_1k_us", "decide median, uncached, 1,000 rules", "µs", fig["decide_1k_us"]),
            ("cache_hit_us", "decide median, cache hit", "µs", fig["cache_hit_us"]),
            ("compile_10k_s", "compile (Engine construction), 10,000 rules, CPU", "s", fig["compile_10k_s"]),
            ("parse_check_10k_s", "parse + check, 10,000 rules (issue-3 set), CPU", "s", fig["parse_check_10k_s"]),
            ("parse_check_10k_s", "parse + check, 10,000 rules (varied set), CPU", "s", fig["parse_check_10k_varied_s"]),
        ):
            flag = val <= TARGETS[key]
            checks[label] = flag
            shown = fmt_us(val) if unit == "µs" else f"{val:.2f}"
            rows.append(f"| {label} ≤ {TARGETS[key]} {unit} | {shown} {unit} | {ok(flag)} |")
    text = "| target | measured | |\n|---|---|---|\n" + "\n".join(rows)
    return text, checks


def figures_table(fig: dict) -> str:
    d = fig["decide"]
    rows = [
        "| figure | value |",
        "|---|---|",
        f"| parse + check, 10,000 rules (issue-3 set, `loads`): CPU (wall) | {fig['parse_check_10k_s']:.2f} s ({fig['parse_check_10k_wall_s']:.2f} s) |",
        f"| parse + check, 10,000 rules (varied language): CPU (wall) | {fig['parse_check_10k_varied_s']:.2f} s ({fig['parse_check_10k_varied_wall_s']:.2f} s) |",
        f"| compile, 10,000 rules (`Engine(...)`): CPU (wall) | {fig['compile_10k_s']:.2f} s ({fig['compile_10k_wall_s']:.2f} s) |",
    ]
    for n in sc.ISSUE3_SIZES:
        r = d[f"uncached_{n}"]
        rows.append(f"| decide uncached, {n:,} rules: median (p99) | {fmt_us(r['median_us'])} µs "
                    f"({fmt_us(r['p99_us'])} µs) |")
    rows.append(f"| ratio 10,000 / 1,000 rules (uncached medians) | {fig['ratio_10k_1k']:.2f} |")
    r = d["cached_1000"]
    rows.append(f"| decide, cache hit (1,000 rules): median (p99) | {fmt_us(r['median_us'])} µs "
                f"({fmt_us(r['p99_us'])} µs) |")
    if "cache_hits" in fig:
        rows.append(f"| cache hits / misses during that run | {fig['cache_hits']:,} / {fig['cache_misses']:,} |")
    return "\n".join(rows) + (f"\n\nTimes in seconds are medians of {fig['rounds']} rounds, as process CPU "
                               "time (the steadier measure on a shared machine; it is what the targets "
                               "are judged on) and wall time.")


def plot(all_res: dict[str, dict[str, Result]], engines: list[str], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:  # noqa: BLE001 - pragma: no cover
        print(f"matplotlib not available ({e}); no plot written", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for e in engines:
        pts = [(r.rules, r.median_us) for s in all_res for r in [all_res[s].get(e)]
               if r and r.samples_us and not r.error]
        if not pts:
            continue
        xs, ys = zip(*pts)
        kw = {"linewidth": 2.6, "color": "black"} if e == "policylang" else {"linewidth": 1.4}
        ax.plot(xs, ys, marker="o", label=e, **kw)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rules in the policy set (S, M, L)")
    ax.set_ylabel("median µs per decision (log)")
    ax.set_title("Median decision latency vs rule count (lower is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def versions(names: list[str]) -> dict[str, str]:
    from importlib import metadata
    out = {}
    for n in names:
        pkg = ADAPTERS[n].package if n in ADAPTERS else n
        try:
            out[n] = f"{pkg} {metadata.version(pkg)}"
        except metadata.PackageNotFoundError:
            out[n] = f"{pkg} (not installed)"
    return out


_LOAD_AT_START = os.getloadavg() if hasattr(os, "getloadavg") else None


def machine() -> str:
    text = (f"Python {platform.python_version()} on {platform.system()} {platform.machine()}, "
            f"{os.cpu_count()} CPUs")
    if _LOAD_AT_START:
        text += f", load average {_LOAD_AT_START[0]:.1f} when the run started"
    return text


def render_doc(all_res, engines, fig, checks_table, avail, args, cmd, plotted, x=None, t20_table="") -> str:
    vers = versions([e for e in ADAPTERS])
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    installed = [f"- **{n}** ({vers[n]}): " + ("installs and imports; used" if avail[n][0] else f"skipped — {avail[n][1]}")
                 for n in PEERS]
    s = [
        "# Performance",
        "",
        "<!-- Generated by `python -m benchmarks.compare --write-docs`; rerun it rather than editing numbers by hand. -->",
        "",
        f"Measured {now} on {machine()} (a shared, noisy machine: read the ratios, not the absolute numbers).",
        f"Command: `{cmd}`.",
        "",
        "## policylang against its peers (issue 7)",
        "",
        ("Three scenarios built from one seed (`benchmarks/scenarios.py`, seed "
        f"{args.seed}, {args.requests:,} requests each):"),
        "",
        "- **S**: 10 RBAC rules — a role (of 5) may do some of 6 actions on one of 5 resource types.",
        ("- **M**: 1,000 permits `permit * to A on T when principal.dept == D and risk.score < H and "
        "resource.owner == principal.tenant` (A of 50 actions, T of 20 types, D of 20 departments, "
        "H in 0.50–0.95) plus 10 forbids (risk above 0.9; four action+department pairs; five types "
        "with risk above 0.6). 2,000 users and 5,000 resources; about 80% of the requests target a "
        "rule, the rest are random; about half are allowed."),
        "- **L**: the same with 10,000 permits.",
        "",
        ("Every engine decides the identical request stream and every decision is checked against "
        "the scenario's plain evaluator (and so against every other engine); a single mismatch "
        "fails the run. Times are per decision, from the plain request dict to the engine's own "
        f"decision object, measured in batches of {args.batch} (batch time / batch size is one "
        "sample; median and p99 are over samples; engines run round robin so the machine's noise "
        f"spreads over all of them; each gets about {args.budget:g} s or {args.max_passes} passes, "
        "and at least one full pass). Load time is translation + parsing + indexing/compiling, once."),
        "",
        tables(all_res, engines),
        "",
    ]
    s += [
        ("p99 is over batch samples, so one scheduler preemption inside a batch lifts a whole sample: "
        "on a loaded shared machine the wall-clock p99 mostly measures the machine. *p99 CPU* times "
        "the same batches in process CPU time, which a preemption does not inflate (garbage "
        "collection and cold caches still show). The medians are the figures to compare."),
        "",
    ]
    if plotted:
        s += ["![median latency vs rule count, log scale](performance.png)", "",
              ("S is the RBAC family and M, L the ABAC family, so the S→M segment changes the kind of "
              "rules as well as their number; M→L is the same family at ten times the size."), ""]
    s += [
        "How each engine is set up (each at its best as far as we know it; see `benchmarks/peers.py`):",
        "",
        ("- **policylang**: `policylang.loads(text)` then `Engine(policies, cache_size=0)`; the timed "
        "call is `engine.decide(request_dict)` returning a `Decision`. `policylang (decide_many)` is "
        "the same engine through its batch call."),
        ("- **cedar** (cedarpy): `PolicySet.from_str` and `Entities` parsed once, `is_authorized_batch` "
        "per batch. Risk is a Cedar `decimal`. A Cedar request cannot carry attributes, so Cedar reads "
        "them from its pre-parsed entity store (equal to the request's attrs). Cedar has no policy "
        "index: every policy is evaluated per request, hence the linear growth."),
        ("- **casbin** (pycasbin): `FastEnforcer` with `cache_key_order` on (action, type), its "
        "policy index; `*` targets are expanded to one row per (action, type) so the index holds "
        "them; numeric thresholds; `batch_enforce`; its per-request log line disabled."),
        ("- **oso**: one Polar rule per rule shape over a table of ground facts, so Polar's rule index "
        "on ground arguments selects candidates; `query_rule_once`."),
        ("- **vakt**: `MemoryStorage` + `RulesChecker` + `Guard.is_allowed_check`, a custom `Rule` for "
        "`resource.owner == principal.tenant`. No index in memory: every policy is checked."),
        ("- **py-abac**: `MemoryStorage` + `PDP` (deny-overrides), the action as the policy target, "
        "`EqualsAttribute` for the owner test, `AccessRequest` built directly. No index in memory."),
        ("- **regorus** (gordon-to-regorus, Microsoft's Rego in Rust): Rego written for speed — the rules "
        "are data indexed by action and type (`data.t0[input.action][input.resource.type]` is the list of "
        "that bucket's condition tuples), one rule body per rule shape iterating only its bucket, "
        "`allow if { not deny; permit }`. `regorus` is the compiled RVM program "
        "(`Program.compile_from_modules`, one `Rvm`; per request `set_input_json` of the request and "
        "`execute`); `regorus (interpreted)` is the `Engine` on the same Rego and data (`set_input` of "
        "the request dict, `eval_rule`)."),
        ("- **cel** (common-expression-language, CEL in Rust): each rule's condition compiled once "
        "(`cel.compile`), a dict index {(action, type): (forbids, permits)} with the `*` rules merged "
        "into every bucket; per request one `cel.Context` of the request's fields as flat variables "
        "(building a context costs about 2 µs per variable, nested maps far more), the forbids then the "
        "permits, stopping at the first that holds."),
        "",
        "Peers (the optional `bench` extra, `pip install -e '.[bench]'`), on Python 3.11 here:",
        "",
        *installed,
        "",
        ("Install note: `oso` 0.27 declares `cffi~=1.15` while `cryptography` ≥ 48 (the `credentials` "
        "extra) wants `cffi>=2`; pip reports the conflict, but oso works with cffi 2 in practice."),
        "",
    ]
    if fig:
        s += [
            "## Issue 2 and 3 figures",
            "",
            ("The issue-3 sets are the ABAC family above with 10, 1,000 and 10,000 permits (+10 "
            "forbids; 1,000 is M and 10,000 is L). Uncached is `cache_size=0`; the cache hit is the "
            "default cache warmed with the whole stream first. Parse + check is `policylang.loads`; "
            "the varied set is `varied_policy_text(10_000)`, using most of the language."),
            "",
            figures_table(fig),
            "",
        ]
    if x:
        s += ["## Issue 20 figures: native engines, cache, load, reload, memory, service", "",
              issue20_tables(x), ""]
    s += [
        "## Targets",
        "",
        "policylang's targets (measured here; the engine team optimises):",
        "",
        checks_table,
        "",
    ]
    if t20_table:
        s += ["The targets of issue 20 (performance against native engines):", "", t20_table, ""]
    s += [
        "## How to rerun",
        "",
        "```sh",
        "pip install -e '.[dev,bench]'",
        "python -m benchmarks.compare --write-docs      # peers + issue-2/3 figures, rewrites this page and the plot",
        "python -m benchmarks.compare --scenarios M --engines policylang,casbin --budget 1   # a quick look",
        "python -m benchmarks.instructions --scenario M --engine policylang,regorus,cel --gate 5   # callgrind counts, gated",
        "python -m benchmarks.instructions --scenario L --warmup 2000 --cache-sim 4   # + simulated cache misses per decision",
        "python -m benchmarks.load_phases --scenario L   # the load phase by phase, the collector's share, fresh processes",
        "pytest benchmarks/ --benchmark-enable --benchmark-only   # the pytest-benchmark suite, timed",
        "pytest benchmarks/ --benchmark-disable                    # what CI runs: a smoke test of every benchmark",
        "```",
        "",
        ("The pytest-benchmark suite (`benchmarks/test_bench_*.py`) covers parse, check (load), "
        "compile, decide uncached and cached, `decide_many`, `explain` and the formatter on M and L, "
        "the issue-3 sets, and parse + check of a varied 10,000-rule set. "
        "`benchmarks/test_condition_count.py` guards the compiled index without timing anything: on "
        "the L stream an instrumented engine must evaluate at most 4 conditions per decision."),
        "",
    ]
    return "\n".join(s)


# --------------------------------------------------------------------------- main
def _caps(items: list[str], ap) -> dict[str, int]:
    caps = {}
    for item in items:
        name, _, n = item.rpartition("=")
        if not name or not n.isdigit():
            ap.error(f"--cap-l wants ENGINE=N, got {item!r}")
        caps[name] = int(n)
    return caps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=sc.DEFAULT_SEED)
    ap.add_argument("--requests", type=int, default=2_000, help="requests per stream (default 2000)")
    ap.add_argument("--scenarios", default="S,M,L")
    ap.add_argument("--engines", default=",".join(ADAPTERS), help="comma-separated; default: all")
    ap.add_argument("--batch", type=int, default=16, help="requests per timed batch (default 16)")
    ap.add_argument("--budget", type=float, default=2.0, help="seconds of timing per engine and scenario")
    ap.add_argument("--max-passes", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="rounds for the load/compile figures")
    ap.add_argument("--no-decide-many", action="store_true", help="skip the policylang decide_many row")
    ap.add_argument("--no-figures", action="store_true", help="skip the issue-2/3 figures")
    ap.add_argument("--write-docs", action="store_true", help="write docs/performance.md and .png")
    ap.add_argument("--plot", type=Path, default=None, help="write the plot here (default with --write-docs: docs/performance.png)")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results as JSON")
    ap.add_argument("--cap-l", action="append", default=None, metavar="ENGINE=N",
                    help="at L, ENGINE decides only the first N requests of the stream (a slow peer; "
                         "said so in the table); default py-abac=500 (about 40 ms a decision at L); "
                         "--cap-l none for no cap")
    g = ap.add_argument_group("issue-20 figures (cache hit, load, one-file reload, memory, "
                              "instructions, service); all on by default with --write-docs")
    g.add_argument("--no-issue20", action="store_true",
                   help="skip the cache/load/reload/memory figures (--no-figures skips them too)")
    g.add_argument("--instructions", action="store_true",
                   help="count instructions per decision with callgrind (default with --write-docs "
                        "when valgrind is installed)")
    g.add_argument("--no-instructions", action="store_true", help="never run callgrind")
    g.add_argument("--instructions-scenarios", default="M",
                   help="default M (L adds about 10 minutes under callgrind: loading 10,000 rules)")
    g.add_argument("--instructions-warmup", type=int, default=2000,
                   help="requests decided before counting (default 2000: the whole stream, so the "
                        "count is of steady-state decisions; policylang builds plans lazily)")
    g.add_argument("--instructions-decisions", type=int, default=2000)
    g.add_argument("--instructions-cap", action="append", default=None, metavar="ENGINE=N",
                   help="passed to instructions.py --cap (default: cedar=200)")
    g.add_argument("--service", action="store_true",
                   help="policylang serve against the Cerbos PDP (benchmarks/service_compare.py; "
                        "default with --write-docs when wrk is installed)")
    g.add_argument("--no-service", action="store_true")
    g.add_argument("--service-seconds", type=float, default=10.0)
    g.add_argument("--service-cores", default="1,2", help="core counts to run the servers on (default 1,2)")
    args = ap.parse_args(argv)
    if args.cap_l is None:
        args.cap_l = ["py-abac=500"]
    args.cap_l = [c for c in args.cap_l if c != "none"]
    if args.instructions_cap is None:
        args.instructions_cap = ["cedar=200"]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    wanted = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in wanted if e not in ADAPTERS]
    if unknown:
        ap.error(f"unknown engine(s) {unknown}; known: {', '.join(ADAPTERS)}")
    avail = {n: ADAPTERS[n].available() for n in ADAPTERS}
    adapters_for: dict[str, type] = {}
    for n in wanted:
        usable, why = avail[n]
        if usable:
            adapters_for[n] = ADAPTERS[n]
        else:
            log(f"SKIP {n}: {why}")
    engines = list(adapters_for)
    if "policylang" in adapters_for and not args.no_decide_many:
        engines.insert(1, "policylang (decide_many)")

    all_res: dict[str, dict[str, Result]] = {}
    for name in [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]:
        scn = sc.scenario(name, seed=args.seed, n_requests=args.requests)
        log(f"scenario {name}: {len(scn.rules):,} rules, {len(scn.requests):,} requests, "
            f"{scn.allow_share():.0%} allowed")
        adapters: dict[str, Adapter] = {}
        for e in engines:
            if e == "policylang (decide_many)":  # the same engine object, through its batch call
                adapters[e] = PolicylangAdapter(many=True, share=adapters.get("policylang"))
            else:
                adapters[e] = adapters_for[e]()
        caps = _caps(args.cap_l, ap) if name == "L" else {}
        all_res[name] = run_scenario(scn, adapters, args, log, caps)
        del adapters
        gc.collect()

    fig = None
    if not args.no_figures and "policylang" in adapters_for:
        log("issue-2/3 figures")
        fig = issue3_figures(args, log)

    import shutil
    x: dict = {}
    if "policylang" in adapters_for and not args.no_issue20 and not args.no_figures:
        log("issue-20 figures")
        x["cache"] = cache_figures(args, log)
        x["load"] = load_figures(args, log, avail)
        x["reload"] = reload_figures(args, log)
        x["rss"] = rss_figures(args, log, [e for e in ("policylang", "cedar", "regorus", "cel")
                                           if e in adapters_for])
    if not args.no_instructions and (args.instructions or (args.write_docs and shutil.which("valgrind"))):
        ins_engines = [e for e in ("policylang", "regorus", "regorus (interpreted)", "cel", "cedar")
                       if e in adapters_for]
        if "policylang" in ins_engines:  # a hit against a decision, noise-free (peers.VARIANTS)
            ins_engines[1:1] = ["policylang (cache hit)", "policylang (decide_json cache hit)"]
        log("instructions per decision (callgrind)")
        x["instructions"] = instruction_figures(args, log, ins_engines)
    elif args.instructions and not args.no_instructions:
        x["instructions"] = {"skipped": "valgrind is not installed"}
    if not args.no_service and (args.service or (args.write_docs and shutil.which("wrk"))):
        log("service comparison")
        x["service"] = service_figures(args, log)
    elif args.write_docs and not args.no_service:
        x["service"] = {"skipped": "wrk is not installed (the service comparison needs it)"}

    checks_table, checks = target_rows(all_res, fig)
    t20_table, t20 = issue20_rows(all_res, x)
    print("## policylang against its peers\n")
    print(tables(all_res, engines))
    if fig:
        print("\n## Issue 2/3 figures\n")
        print(figures_table(fig))
    if x:
        print("\n## Issue 20 figures\n")
        print(issue20_tables(x))
    print("\n## Targets\n")
    print(checks_table)
    print("\n## Targets of issue 20\n")
    print(t20_table)

    plot_path = args.plot or (PLOT if args.write_docs else None)
    plotted = plot(all_res, engines, plot_path) if plot_path else False
    if args.write_docs:
        cmd = "python -m benchmarks.compare " + " ".join(argv if argv is not None else sys.argv[1:])
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(render_doc(all_res, engines, fig, checks_table, avail, args, cmd.strip(), plotted,
                                  x, t20_table),
                       encoding="utf-8")
        log(f"wrote {DOC}" + (f" and {plot_path}" if plotted else ""))
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
            "versions": versions(list(ADAPTERS)),
            "results": {s: {e: r.summary() for e, r in rs.items()} for s, rs in all_res.items()},
            "figures": fig, "targets": checks,
            "issue20": {k: ({kk: vv for kk, vv in v.items() if kk != "_markdown"} if isinstance(v, dict) else v)
                        for k, v in x.items()},
            "issue20_targets": t20,
        }, indent=2, default=str), encoding="utf-8")

    failures = [(s, r) for s, rs in all_res.items() for r in rs.values() if r.mismatches]
    if fig and fig.get("mismatches"):
        failures.append(("issue-3", Result("policylang", "issue-3", 0, mismatches=fig["mismatches"])))
    for key in ("cache", "reload"):
        if (x.get(key) or {}).get("mismatches"):
            failures.append((f"issue-20 {key}", Result("policylang", key, 0, mismatches=x[key]["mismatches"],
                                                       first_mismatch="(see the figure)")))
    for e, r in (x.get("rss") or {}).items():
        if isinstance(r, dict) and r.get("agrees") is False:
            failures.append(("issue-20 memory", Result(e, "rss", 0, mismatches=1,
                                                       first_mismatch="its one decision")))
    for scen, res in (x.get("instructions") or {}).items():
        for e, r in (res.get("engines", {}) if isinstance(res, dict) else {}).items():
            if r.get("mismatches"):
                failures.append((f"instructions {scen}", Result(e, scen, 0, mismatches=r["mismatches"],
                                                                first_mismatch=r.get("first_mismatch", ""))))
    for s, r in failures:
        log(f"FAIL {r.engine} on {s}: {r.mismatches} decisions differ from the expected ones; "
            f"first: {r.first_mismatch}")
    if failures:
        log("FAILED: engines disagree (see above); the numbers are not comparable")
        return 1
    log("all engines gave the expected decision on every request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
