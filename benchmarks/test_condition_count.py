"""Regression guard (issue 7): the compiled engine must not fall back to evaluating rule
after rule. A count, not a time, so it is stable on a noisy machine."""

from . import _support as sup

MAX_CONDITIONS_PER_DECISION = 4


def test_condition_count_l():
    pl = sup.policylang_or_skip()
    scn = sup.scenario("L")
    engine = pl.Engine(sup.policies("L"), instrument=True, cache_size=0)
    for r in scn.requests:
        engine.decide(r)
    c = engine.counters
    assert c.decisions == len(scn.requests)
    ratio = c.conditions / c.decisions
    assert ratio <= MAX_CONDITIONS_PER_DECISION, (
        f"{ratio:.2f} conditions evaluated per decision on scenario L "
        f"(limit {MAX_CONDITIONS_PER_DECISION}): is the target index still used?")
