"""benchmarks/load_phases.py: the phases of a load, with the collector on and off, in fresh
processes (nothing is timed against a target here; the figures are only checked to add up)."""

from . import load_phases as lp
from . import scenarios as sc


def test_the_phases_add_up_and_the_collector_is_charged_to_them():
    text = sc.abac_scenario(300, n_requests=5, name="phases").text
    result = lp.measure(text, rounds=1)
    for mode in ("on", "off"):
        run = result[mode]
        assert run["rules"] == 300 + 10  # the permits and the scenario's ten forbids
        phases = run["phases"]
        assert set(phases) == {name for name, _ in lp.PHASES}
        # the wrapped phases and the rests make up loads and Engine exactly
        assert abs(phases["parse"] + phases["check"] + phases["loads rest"] - run["loads"]) < 1e-9
        assert abs(phases["compile"] + phases["plans"] + phases["Engine rest"] - run["engine"]) < 1e-9
        assert phases["parse"] > 0 and phases["check"] > 0 and phases["compile"] > 0
        t = run["tracked"]
        assert t["before"] < t["after_loads"] < t["after_engine"]
    # the second mode runs without the collector: no collection is recorded there
    assert result["off"]["gc"] == {}
    # with it on, young collections happen while 300 rules are built, each charged to a
    # phase the child knows, and no collection takes longer than the phase it ran in
    on = result["on"]
    assert on["gc"], "no collection was recorded with the collector on"
    assert set(on["gc"]) <= {name for name, _ in lp.PHASES} | {"outside"}
    for name, gens in on["gc"].items():
        if name != "outside":
            assert lp.collector_seconds(on, name) <= on["phases"][name] + 1e-6


def test_the_table_names_every_phase_and_the_totals():
    text = sc.abac_scenario(50, n_requests=5, name="phases").text
    table = lp.markdown(lp.measure(text, rounds=1))
    for name, _what in lp.PHASES:
        assert f"| {name} |" in table
    assert "| **total** | `loads` + `Engine` |" in table
    assert "60 rules." in table and "Full (generation 2) collections during the load:" in table
