"""Where the load of a policy set goes: parse, check, compile and plans, and the cyclic
collector's share of each, measured in a fresh process that holds nothing but the policy
text (docs/engine.md#where-the-load-goes).

    python -m benchmarks.load_phases --scenario L               # the collector on, then off
    python -m benchmarks.load_phases --scenario L --json out.json

The text is written to a file first; each mode runs in its own fresh interpreter, which
reads it and runs ``policylang.loads(text)`` then ``policylang.Engine(set, cache_size=0)``,
the pipeline ``benchmarks/compare.py`` times as "load". The phases are timed by wrapping
the functions that pipeline calls (``loader.parse``, ``loader.check``,
``compiler.compile_rules``, ``CompiledSet.build_plans``); what ``loads`` or ``Engine``
does around them is reported as their ``rest``. The collector's time is taken from
``gc.callbacks`` (start and stop of every collection), by generation, and charged to
the phase that was running. The second mode runs with ``gc.disable()``: what the load
costs without the collector. Both are process CPU time (``time.process_time``).
Nothing here changes policylang: the wrappers live in the child only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: the phases, in the order they run, as (name, what it is)
PHASES = (
    ("parse", "`loads`: the parser (`loader.parse`)"),
    ("check", "`loads`: the checker stages (`loader.check`)"),
    ("loads rest", "`loads`: entity checks, diagnostics, version hash, the `PolicySet`"),
    ("compile", "`Engine`: code generation and `compile()` of the shapes (`compile_rules`)"),
    ("plans", "`Engine`: the eager plans (`CompiledSet.build_plans`)"),
    ("Engine rest", "`Engine`: the rule index, tables and the engine itself"),
)

_CHILD = r"""
import gc, json, sys, time
text_file, collector = sys.argv[1], sys.argv[2] == "on"
text = open(text_file, encoding="utf-8").read()
import policylang
from policylang.language import loader
from policylang.evaluation import compiler
import policylang.evaluation.engine  # noqa: F401 - imported before the clock, as a service has it

clock = time.process_time
cpu = {}                      # phase -> CPU seconds
gc_time = {}                  # phase -> {generation: [collections, seconds]}
stack = ["outside"]
started = []


def on_gc(phase, info):
    if phase == "start":
        started.append(clock())
        return
    spent = clock() - started.pop()
    slot = gc_time.setdefault(stack[-1], {}).setdefault(str(info["generation"]), [0, 0.0])
    slot[0] += 1
    slot[1] += spent


def timed(name, fn):
    def wrapper(*args, **kwargs):
        stack.append(name)
        t = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            cpu[name] = cpu.get(name, 0.0) + clock() - t
            stack.pop()
    return wrapper


loader.parse = timed("parse", loader.parse)
loader.check = timed("check", loader.check)
compiler.compile_rules = timed("compile", compiler.compile_rules)
compiler.CompiledSet.build_plans = timed("plans", compiler.CompiledSet.build_plans)
if collector:
    gc.callbacks.append(on_gc)
else:
    gc.disable()
gc.collect()
base = len(gc.get_objects())
stack.append("loads rest")
t = clock()
ps = policylang.loads(text, name="set.policy")
loads_s = clock() - t
stack.pop()
after_loads = len(gc.get_objects())
stack.append("Engine rest")
t = clock()
engine = policylang.Engine(ps, cache_size=0)
engine_s = clock() - t
stack.pop()
after_engine = len(gc.get_objects())
gc.callbacks.clear()
cpu["loads rest"] = loads_s - cpu.get("parse", 0.0) - cpu.get("check", 0.0)
cpu["Engine rest"] = engine_s - cpu.get("compile", 0.0) - cpu.get("plans", 0.0)
print(json.dumps({"loads": loads_s, "engine": engine_s, "phases": cpu, "gc": gc_time,
                  "rules": len(ps.rules), "tracked": {"before": base, "after_loads": after_loads,
                                                       "after_engine": after_engine}}))
"""


def run_child(text_file: str, collector: bool, tree: str) -> dict:
    """One fresh interpreter: the load of the text in ``text_file`` phase by phase."""
    with tempfile.TemporaryDirectory() as tmp:
        child = os.path.join(tmp, "child.py")
        Path(child).write_text(_CHILD)
        env = dict(os.environ, PYTHONPATH=tree, PYTHONHASHSEED="0")
        proc = subprocess.run([sys.executable, child, text_file, "on" if collector else "off"],
                              env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the load child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(text: str, *, rounds: int = 1, tree: str = str(ROOT)) -> dict:
    """``{"on": run, "off": run}``: each the median round (by total CPU) of ``rounds``
    fresh processes, the collector on, then off."""
    with tempfile.TemporaryDirectory() as tmp:
        text_file = os.path.join(tmp, "set.policy")
        Path(text_file).write_text(text, encoding="utf-8")
        out = {}
        for mode, collector in (("on", True), ("off", False)):
            runs = sorted((run_child(text_file, collector, tree) for _ in range(max(1, rounds))),
                          key=lambda r: r["loads"] + r["engine"])
            out[mode] = runs[len(runs) // 2]
    return out


def collector_seconds(run: dict, phase: str) -> float:
    """Seconds the collector ran during ``phase`` (every generation)."""
    return sum(s for _n, s in run["gc"].get(phase, {}).values())


def markdown(result: dict) -> str:
    """The phases as a table: CPU with the collector on, its share, and CPU without it."""
    on, off = result["on"], result["off"]
    rows = ["| phase | what runs | CPU s, collector on | of which the collector | CPU s, collector off |",
            "|---|---|---:|---:|---:|"]
    for name, what in PHASES:
        rows.append(f"| {name} | {what} | {on['phases'].get(name, 0.0):.3f} | "
                    f"{collector_seconds(on, name):.3f} | {off['phases'].get(name, 0.0):.3f} |")
    total_on = on["loads"] + on["engine"]
    gc_on = sum(collector_seconds(on, name) for name, _ in PHASES)
    rows.append(f"| **total** | `loads` + `Engine` | **{total_on:.3f}** | **{gc_on:.3f}** | "
                f"**{off['loads'] + off['engine']:.3f}** |")
    full = sum(v.get("2", [0, 0.0])[0] for v in on["gc"].values())
    full_s = sum(v.get("2", [0, 0.0])[1] for v in on["gc"].values())
    t = on["tracked"]
    rows.append("")
    rows.append(f"{on['rules']:,} rules. Objects the collector tracks: {t['before']:,} before the load, "
                f"{t['after_loads']:,} after `loads`, {t['after_engine']:,} after `Engine`. "
                f"Full (generation 2) collections during the load: {full}, {full_s:.3f} s.")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="L", help="S, M or L (benchmarks/scenarios.py)")
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per mode (the median is shown)")
    ap.add_argument("--tree", default=str(ROOT), help="the checkout whose policylang is measured")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args(argv)
    from benchmarks import scenarios

    text = scenarios.scenario(args.scenario).text
    result = measure(text, rounds=args.rounds, tree=args.tree)
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
