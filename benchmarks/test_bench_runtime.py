"""Engine benchmarks on scenarios M and L and the issue-3 sets: compile (Engine
construction), decide uncached and cached, decide_many, explain."""

import pytest

from . import _support as sup
from .scenarios import ISSUE3_SIZES, strip_attrs

SIZES = ["M", "L"]


@pytest.mark.parametrize("name", SIZES)
def test_compile(benchmark, name):
    pl = sup.policylang_or_skip()
    ps = sup.policies(name)
    benchmark.group = "compile"
    engine = benchmark.pedantic(pl.Engine, args=(ps,), kwargs={"cache_size": 0},
                                rounds=3, iterations=1)
    assert engine.decide(sup.scenario(name).requests[0]).decision in ("allow", "deny")
    sup.remember(name, engine_obj=engine, cache_size=0)


@pytest.mark.parametrize("name", ["S", *SIZES])
def test_decide_uncached(benchmark, name):
    """``engine.decide(dict)`` with ``cache_size=0``, cycling through the stream."""
    engine = sup.engine(name, 0)
    nxt = sup.cycler(sup.scenario(name).requests)
    decide = engine.decide
    benchmark.group = "decide uncached"
    d = benchmark(lambda: decide(nxt()))
    assert d.decision in ("allow", "deny")


@pytest.mark.parametrize("name", SIZES)
def test_decide_cached(benchmark, name):
    """Cache hits: the stream is decided once before timing, then cycled."""
    scn = sup.scenario(name)
    engine = sup.engine(name, 10_000)
    for r in scn.requests:
        engine.decide(r)
    nxt = sup.cycler(scn.requests)
    decide = engine.decide
    benchmark.group = "decide cached (hit)"
    d = benchmark(lambda: decide(nxt()))
    assert d.decision in ("allow", "deny")


@pytest.mark.parametrize("name", SIZES)
def test_decide_many(benchmark, name):
    """``decide_many`` on batches of 100 requests (uncached engine)."""
    reqs = sup.scenario(name).requests
    batches = [reqs[i:i + 100] for i in range(0, len(reqs), 100)]
    nxt = sup.cycler(batches)
    many = sup.engine(name, 0).decide_many
    benchmark.group = "decide_many (100 per call)"
    out = benchmark(lambda: many(nxt()))
    assert len(out) == 100


@pytest.mark.parametrize("name", SIZES)
def test_explain(benchmark, name):
    """``Decision.explain()`` of decisions already made."""
    engine = sup.engine(name, 0)
    decisions = [engine.decide(r) for r in sup.scenario(name).requests[:200]]
    nxt = sup.cycler(decisions)
    benchmark.group = "explain"
    text = benchmark(lambda: nxt().explain())
    assert "deny" in text or "allow" in text


def test_decide_entity_lookup(benchmark):
    """Scenario M with id-only requests: attributes come from entity data (docs/language.md#entity-data)."""
    engine = sup.engine("M", 0, pip=True)
    nxt = sup.cycler(strip_attrs(sup.scenario("M").requests))
    decide = engine.decide
    benchmark.group = "decide uncached"
    d = benchmark(lambda: decide(nxt()))
    assert d.decision in ("allow", "deny")


@pytest.mark.parametrize("n_rules", ISSUE3_SIZES)
def test_decide_issue3(benchmark, n_rules):
    """Issue 3: uncached decide median at 10 / 1,000 / 10,000 rules (1,000 is M, 10,000 L)."""
    name = f"issue3-{n_rules}"
    engine = sup.engine(name, 0)
    nxt = sup.cycler(sup.scenario(name).requests)
    decide = engine.decide
    benchmark.group = "issue 3: decide uncached"
    d = benchmark(lambda: decide(nxt()))
    assert d.decision in ("allow", "deny")


@pytest.mark.parametrize("name", ["S", *SIZES])
def test_decisions_match_oracle(name):
    """Not a benchmark: the engine decides every request of the stream as the scenario's
    plain evaluator does, cached or not."""
    scn = sup.scenario(name)
    expected = scn.expected_all()
    got = [d.decision for d in sup.engine(name, 0).decide_many(scn.requests)]
    bad = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]
    assert not bad, f"{len(bad)} mismatches, first: {scn.requests[bad[0]]} -> {got[bad[0]]}"
    cached = sup.engine(name, 10_000)
    assert [cached.decide(r).decision for r in scn.requests] == expected
