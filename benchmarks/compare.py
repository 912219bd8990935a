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
5. Prints markdown tables (and with ``--write-docs`` writes docs/performance.md and the
   log-scale plot docs/performance.png).

Compare ratios within one run: the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/compare.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "benchmarks"  # noqa: A001

from benchmarks import scenarios as sc  # noqa: E402
from benchmarks.peers import ADAPTERS, PEERS, Adapter, PolicylangAdapter  # noqa: E402

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


def run_scenario(scn: sc.Scenario, adapters: dict[str, Adapter], args, log) -> dict[str, Result]:
    expected = [e == "allow" for e in scn.expected_all()]
    chunks = batches(scn.requests, args.batch)
    results: dict[str, Result] = {}
    live: dict[str, Adapter] = {}
    for name, adapter in adapters.items():
        res = results[name] = Result(name, scn.name, len(scn.rules))
        gc.collect()
        t0 = time.perf_counter()
        try:
            adapter.load(scn)
        except Exception as e:  # a peer that cannot express the scenario is reported
            res.error = f"load failed: {type(e).__name__}: {e}"
            log(f"  {name}: {res.error}")
            continue
        res.load_s = time.perf_counter() - t0
        if getattr(adapter, "share", None) is not None:
            res.load_s = float("nan")  # reuses another row's engine: no load of its own
        try:  # warm-up: one batch, untimed (first-call costs, lazy imports)
            adapter.allowed(adapter.run(chunks[0]))
        except Exception as e:
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
                timed_pass(live[name], chunks, res, expected, scn.requests)
            except Exception as e:
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


# --------------------------------------------------------------------------- output
def fmt_us(x: float) -> str:
    if x != x:
        return "—"
    if x >= 1000:
        return f"{x:,.0f}"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def fmt_ms(s: float) -> str:
    if s != s:
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
            rel_s = f"{rel:.1f}×" if rel == rel else "—"
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
    except Exception as e:  # pragma: no cover
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


def render_doc(all_res, engines, fig, checks_table, avail, args, cmd, plotted) -> str:
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
        "Three scenarios built from one seed (`benchmarks/scenarios.py`, seed "
        f"{args.seed}, {args.requests:,} requests each):",
        "",
        "- **S**: 10 RBAC rules — a role (of 5) may do some of 6 actions on one of 5 resource types.",
        "- **M**: 1,000 permits `permit * to A on T when principal.dept == D and risk.score < H and "
        "resource.owner == principal.tenant` (A of 50 actions, T of 20 types, D of 20 departments, "
        "H in 0.50–0.95) plus 10 forbids (risk above 0.9; four action+department pairs; five types "
        "with risk above 0.6). 2,000 users and 5,000 resources; about 80% of the requests target a "
        "rule, the rest are random; about half are allowed.",
        "- **L**: the same with 10,000 permits.",
        "",
        "Every engine decides the identical request stream and every decision is checked against "
        "the scenario's plain evaluator (and so against every other engine); a single mismatch "
        "fails the run. Times are per decision, from the plain request dict to the engine's own "
        f"decision object, measured in batches of {args.batch} (batch time / batch size is one "
        "sample; median and p99 are over samples; engines run round robin so the machine's noise "
        f"spreads over all of them; each gets about {args.budget:g} s or {args.max_passes} passes, "
        "and at least one full pass). Load time is translation + parsing + indexing/compiling, once.",
        "",
        tables(all_res, engines),
        "",
    ]
    s += [
        "p99 is over batch samples, so one scheduler preemption inside a batch lifts a whole sample: "
        "on a loaded shared machine the wall-clock p99 mostly measures the machine. *p99 CPU* times "
        "the same batches in process CPU time, which a preemption does not inflate (garbage "
        "collection and cold caches still show). The medians are the figures to compare.",
        "",
    ]
    if plotted:
        s += ["![median latency vs rule count, log scale](performance.png)", "",
              "S is the RBAC family and M, L the ABAC family, so the S→M segment changes the kind of "
              "rules as well as their number; M→L is the same family at ten times the size.", ""]
    s += [
        "How each engine is set up (each at its best as far as we know it; see `benchmarks/peers.py`):",
        "",
        "- **policylang**: `policylang.loads(text)` then `Engine(policies, cache_size=0)`; the timed "
        "call is `engine.decide(request_dict)` returning a `Decision`. `policylang (decide_many)` is "
        "the same engine through its batch call.",
        "- **cedar** (cedarpy): `PolicySet.from_str` and `Entities` parsed once, `is_authorized_batch` "
        "per batch. Risk is a Cedar `decimal`. A Cedar request cannot carry attributes, so Cedar reads "
        "them from its pre-parsed entity store (equal to the request's attrs). Cedar has no policy "
        "index: every policy is evaluated per request, hence the linear growth.",
        "- **casbin** (pycasbin): `FastEnforcer` with `cache_key_order` on (action, type), its "
        "policy index; `*` targets are expanded to one row per (action, type) so the index holds "
        "them; numeric thresholds; `batch_enforce`; its per-request log line disabled.",
        "- **oso**: one Polar rule per rule shape over a table of ground facts, so Polar's rule index "
        "on ground arguments selects candidates; `query_rule_once`.",
        "- **vakt**: `MemoryStorage` + `RulesChecker` + `Guard.is_allowed_check`, a custom `Rule` for "
        "`resource.owner == principal.tenant`. No index in memory: every policy is checked.",
        "- **py-abac**: `MemoryStorage` + `PDP` (deny-overrides), the action as the policy target, "
        "`EqualsAttribute` for the owner test, `AccessRequest` built directly. No index in memory.",
        "",
        "Peers (the optional `bench` extra, `pip install -e '.[bench]'`), on Python 3.11 here:",
        "",
        *installed,
        "",
        "Install note: `oso` 0.27 declares `cffi~=1.15` while `cryptography` ≥ 48 (the `credentials` "
        "extra) wants `cffi>=2`; pip reports the conflict, but oso works with cffi 2 in practice.",
        "",
    ]
    if fig:
        s += [
            "## Issue 2 and 3 figures",
            "",
            "The issue-3 sets are the ABAC family above with 10, 1,000 and 10,000 permits (+10 "
            "forbids; 1,000 is M and 10,000 is L). Uncached is `cache_size=0`; the cache hit is the "
            "default cache warmed with the whole stream first. Parse + check is `policylang.loads`; "
            "the varied set is `varied_policy_text(10_000)`, using most of the language.",
            "",
            figures_table(fig),
            "",
        ]
    s += [
        "## Targets",
        "",
        "policylang's targets (measured here; the engine team optimises):",
        "",
        checks_table,
        "",
        "## How to rerun",
        "",
        "```sh",
        "pip install -e '.[dev,bench]'",
        "python -m benchmarks.compare --write-docs      # peers + issue-2/3 figures, rewrites this page and the plot",
        "python -m benchmarks.compare --scenarios M --engines policylang,casbin --budget 1   # a quick look",
        "pytest benchmarks/ --benchmark-enable --benchmark-only   # the pytest-benchmark suite, timed",
        "pytest benchmarks/ --benchmark-disable                    # what CI runs: a smoke test of every benchmark",
        "```",
        "",
        "The pytest-benchmark suite (`benchmarks/test_bench_*.py`) covers parse, check (load), "
        "compile, decide uncached and cached, `decide_many`, `explain` and the formatter on M and L, "
        "the issue-3 sets, and parse + check of a varied 10,000-rule set. "
        "`benchmarks/test_condition_count.py` guards the compiled index without timing anything: on "
        "the L stream an instrumented engine must evaluate at most 4 conditions per decision.",
        "",
    ]
    return "\n".join(s)


# --------------------------------------------------------------------------- main
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
    args = ap.parse_args(argv)

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
        all_res[name] = run_scenario(scn, adapters, args, log)
        del adapters
        gc.collect()

    fig = None
    if not args.no_figures and "policylang" in adapters_for:
        log("issue-2/3 figures")
        fig = issue3_figures(args, log)

    checks_table, checks = target_rows(all_res, fig)
    print("## policylang against its peers\n")
    print(tables(all_res, engines))
    if fig:
        print("\n## Issue 2/3 figures\n")
        print(figures_table(fig))
    print("\n## Targets\n")
    print(checks_table)

    plot_path = args.plot or (PLOT if args.write_docs else None)
    plotted = plot(all_res, engines, plot_path) if plot_path else False
    if args.write_docs:
        cmd = "python -m benchmarks.compare " + " ".join(argv if argv is not None else sys.argv[1:])
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(render_doc(all_res, engines, fig, checks_table, avail, args, cmd.strip(), plotted),
                       encoding="utf-8")
        log(f"wrote {DOC}" + (f" and {plot_path}" if plotted else ""))
    if args.json:
        args.json.write_text(json.dumps({
            "machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
            "versions": versions(list(ADAPTERS)),
            "results": {s: {e: r.summary() for e, r in rs.items()} for s, rs in all_res.items()},
            "figures": fig, "targets": checks,
        }, indent=2, default=str), encoding="utf-8")

    failures = [(s, r) for s, rs in all_res.items() for r in rs.values() if r.mismatches]
    if fig and fig.get("mismatches"):
        failures.append(("issue-3", Result("policylang", "issue-3", 0, mismatches=fig["mismatches"])))
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
