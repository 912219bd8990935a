"""``policylang diff`` on two 1,000-rule sets that differ in ten rules (docs/analysis.md#performance).

    python -m benchmarks.bench_diff            # scenario M (1,000 permits + 10 forbids), ten rules mutated
    python -m benchmarks.bench_diff --no-skip  # ask the solver about every (kind, action, type), even unchanged ones

The ten mutations: four permits get a lower risk threshold, three another department,
two drop their tenant check, one forbid is removed (forbid-delete-by-sales; with
``--wide`` forbid-high-risk, which applies to every (kind, action, type)). Each reported example is replayed
through the engine (inside diff); the figure is wall-clock for load + diff on this machine
(docs/analysis.md#performance: --wide 68.7 s before one symbolic request per diff, 8.3 s after, same run).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time

import policylang
from benchmarks.scenarios import DEPARTMENTS, Scenario, scenario_m


def mutated(s: Scenario, seed: int = 7, wide: bool = False) -> tuple[str, list[str]]:
    rng = random.Random(seed)
    rules = list(s.rules)
    permits = [i for i, r in enumerate(rules) if r.effect == "permit"]
    picks = rng.sample(permits, 9)
    changed = []
    for n, i in enumerate(picks):
        r = rules[i]
        if n < 4:
            r = dataclasses.replace(r, risk_below=round(r.risk_below - 0.2, 2))
        elif n < 7:
            r = dataclasses.replace(r, dept=next(d for d in DEPARTMENTS if d != r.dept))
        else:
            r = dataclasses.replace(r, owner_is_tenant=False)
        rules[i] = r
        changed.append(r.id)
    forbid = next(i for i, r in enumerate(rules) if r.id == ("forbid-high-risk" if wide else "forbid-delete-by-sales"))
    changed.append(rules[forbid].id)
    del rules[forbid]
    return "\n".join(r.to_policy() for r in rules), changed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-skip", action="store_true", help="solve every triple, unchanged ones too")
    ap.add_argument("--wide", action="store_true",
                    help="remove forbid-high-risk (a * to * on * rule: every triple changes) instead of "
                         "forbid-delete-by-sales")
    args = ap.parse_args(argv)
    from policylang.analysis.solve import diff

    s = scenario_m(n_requests=10)
    new_text, changed = mutated(s, wide=args.wide)
    t0 = time.perf_counter()
    old, new = policylang.loads(s.text, "old.policy"), policylang.loads(new_text, "new.policy")
    t1 = time.perf_counter()
    result = diff(old, new, skip_identical=not args.no_skip)
    t2 = time.perf_counter()
    by_change: dict = {}
    for f in result.findings:
        by_change[f.change] = by_change.get(f.change, 0) + 1
    touched = sorted({r for f in result.findings for r in f.old_rules + f.new_rules} & set(changed))
    print(f"rules: {len(old.rules)} old, {len(new.rules)} new; mutated: {', '.join(changed)}")
    print(f"load: {t1 - t0:.2f}s  diff: {t2 - t1:.2f}s  total: {t2 - t0:.2f}s "
          f"({result.checked} triples solved, {result.skipped_identical} identical)")
    print(f"findings: {len(result.findings)} {by_change}; incomplete: {len(result.incomplete)}; "
          f"unconfirmed: {len(result.unconfirmed)}; mutated rules named by a finding: {len(touched)}")
    return 0 if not result.unconfirmed else 1


if __name__ == "__main__":
    sys.exit(main())
