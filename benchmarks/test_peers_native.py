"""The native peers (regorus compiled and interpreted, Rust CEL) decide as the scenario's
oracle on small scenarios of every shape (not benchmarks; nothing is timed)."""

import pytest

from . import scenarios as sc
from .peers import CelAdapter, RegorusAdapter, RegorusInterpretedAdapter

NATIVE = [RegorusAdapter, RegorusInterpretedAdapter, CelAdapter]


def _tiny() -> list[sc.Scenario]:
    """S (RBAC, no forbids), a small ABAC set (the 10 forbids, `*` targets), and a set
    with multi-action/multi-type targets, a condition-free permit and no permits at all
    for some pairs."""
    extra = (
        sc.Rule(id="multi", effect="permit", actions=("read", "list"), types=("repo", "bucket"),
                role="viewer"),
        sc.Rule(id="open", effect="permit", actions=("write",), types=("repo",)),
        sc.Rule(id="no-risky-write", effect="forbid", actions=("write",), risk_above=0.5),
        sc.Rule(id="band", effect="permit", types=("ticket",), risk_below=0.8, risk_above=0.2,
                owner_is_tenant=True),
    )
    s = sc.rbac_scenario(10, n_requests=150, n_users=40, n_resources=60, name="tiny-S")
    m = sc.abac_scenario(40, n_requests=150, n_users=200, n_resources=300, name="tiny-M")
    mixed = sc.Scenario("tiny-mixed", s.seed, s.rules + extra, s.entities, s.requests,
                        s.actions, s.types)
    return [s, m, mixed]


@pytest.mark.parametrize("cls", NATIVE, ids=[c.name for c in NATIVE])
def test_native_peer_agrees_with_oracle(cls):
    ok, why = cls.available()
    if not ok:
        pytest.skip(f"{cls.package} is not usable here: {why}")
    for scn in _tiny():
        adapter = cls()
        adapter.load(scn)
        got = adapter.allowed(adapter.run(scn.requests))
        want = [e == "allow" for e in scn.expected_all()]
        bad = [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
        assert not bad, (scn.name, scn.requests[bad[0]], want[bad[0]])
        assert 0 < sum(want) < len(want), scn.name  # both answers occur


def test_rego_is_indexed_by_action_and_type():
    """The Rego keeps the rules as data under action and type; a `*` target is no level."""
    rego, data = RegorusAdapter.policy_and_data(sc.abac_scenario(20, n_requests=5, name="x"))
    assert "some r in data.t0[input.action][input.resource.type]" in rego
    assert "default deny := false" in rego
    (a, per_type), = list(data["t0"].items())[:1]
    assert a in sc.ACTIONS and set(per_type) <= set(sc.TYPES)
    assert isinstance(data["t1"], list)  # forbid-high-risk: no target, a flat list


def _fake_counts(**_kw) -> dict:
    engines = {"policylang": 40_000, "regorus": 100_000, "cel": 60_000}
    return {"scenario": "M", "rules": 1010, "tree": ".", "batch": 16, "errors": {},
            "engines": {e: {"instructions": n * 100, "decisions": 100, "mismatches": 0,
                            "first_mismatch": "", "warmup": 10, "per_decision": float(n)}
                        for e, n in engines.items()},
            "ratios": {e: n / engines["policylang"] for e, n in engines.items()}}


def test_instructions_gate(monkeypatch, capsys):
    """--gate RATIO: exit 1 when a peer's count / policylang's is below RATIO (valgrind is
    not run here: the counts are given)."""
    from . import instructions

    monkeypatch.setattr(instructions, "measure", lambda *a, **kw: _fake_counts())
    assert instructions.main(["--engine", "regorus,cel", "--gate", "1.4"]) == 0
    assert "| M | regorus | 100,000 | 2.5× |" in capsys.readouterr().out
    assert instructions.main(["--engine", "regorus,cel", "--gate", "2"]) == 1  # cel is 1.5×
    assert "FAIL gate: cel" in capsys.readouterr().err


def test_cache_hit_variants_agree_and_hit():
    """The variants benchmarks/instructions.py counts as cache hits decide as the oracle,
    and after one pass over the stream every decision of the next is a hit."""
    from .peers import VARIANTS

    for name, make in VARIANTS.items():
        for scn in _tiny():
            adapter = make()
            adapter.load(scn)
            want = [e == "allow" for e in scn.expected_all()]
            assert adapter.allowed(adapter.run(scn.requests)) == want, (name, scn.name)
            hits = adapter.engine.counters.cache_hits
            assert adapter.allowed(adapter.run(scn.requests)) == want, (name, scn.name)
            assert adapter.engine.counters.cache_hits - hits == len(scn.requests), (name, scn.name)


#: the tail callgrind prints with --cache-sim=yes (valgrind 3.x), cut from a real run
_SIM_STDERR = """==31536== Events    : Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
==31536== Collected : 39526697 10638629 5839391 145695 457522 87248 11532 21882 37116
==31536==
==31536== I   refs:      39,526,697
"""


def test_cache_sim_reads_callgrind_events_by_name():
    """--cache-sim: the totals are read by the event names callgrind prints, not by
    position, and a size valgrind would refuse (not a power of two) is refused first."""
    from . import instructions

    ev = instructions.events(_SIM_STDERR)
    assert ev["Ir"] == 39526697 and ev["DLmr"] == 21882 and ev["DLmw"] == 37116
    assert instructions.events("==1== Collected : 1234\n") == {"Ir": 1234}  # no simulation
    assert instructions.events("no totals") == {}
    assert instructions.cache_options(None) == []
    assert instructions.cache_options(4) == ["--cache-sim=yes", "--LL=4194304,16,64"]
    for bad in (0, 3, 6, -4):
        with pytest.raises(ValueError, match="power of two"):
            instructions.cache_options(bad)
    assert instructions.main(["--cache-sim", "3"]) == 2  # refused before valgrind runs


def test_cache_sim_columns_in_the_table(monkeypatch, capsys):
    from . import instructions

    res = _fake_counts()
    for r in res["engines"].values():
        r.update(cache_mib=4, d1_misses=150.25, ll_misses=20.5)
    monkeypatch.setattr(instructions, "measure", lambda *a, **kw: res)
    assert instructions.main(["--engine", "regorus,cel", "--cache-sim", "4"]) == 0
    out = capsys.readouterr().out
    assert "LL (4 MiB) misses per decision" in out
    assert "| M | regorus | 100,000 | 2.5× | 150.2 | 20.50 | 100 |" in out


def test_load_rounds_do_not_keep_the_previous_set_alive():
    """compare.py's load timing drops each round's result before the next call, so no
    round loads beside the set the round before built (a dead set would make every full
    collection walk it); the last result is still returned."""
    import weakref

    from .compare import _median_cpu_wall

    class Loaded:
        pass

    made: list = []

    def load():
        # when a round starts, every set an earlier round built is already gone
        assert all(ref() is None for ref in made), "a previous round's set is still alive"
        out = Loaded()
        made.append(weakref.ref(out))
        return out

    cpu, wall, last = _median_cpu_wall(load, 4)
    assert len(made) == 4 and last is made[-1]() and cpu >= 0 and wall >= 0
