"""The scenario generators themselves, and the peer adapters' agreement (not benchmarks)."""

import pytest

from . import _support as sup
from . import scenarios as sc
from .peers import PEERS


def test_generators_are_pure_and_seeded():
    a, b = sc.scenario_m(n_requests=50), sc.scenario_m(n_requests=50)
    assert a.text == b.text and a.requests == b.requests and a.entities == b.entities
    c = sc.scenario_m(seed=7, n_requests=50)
    assert c.text != a.text and c.requests != a.requests


def test_shapes():
    s, m, l = sup.scenario("S"), sup.scenario("M"), sup.scenario("L")
    assert len(s.rules) == 10 and {r.role for r in s.rules} <= set(sc.ROLES)
    assert {a for r in s.rules for a in r.actions} <= set(sc.ACTIONS[:6])
    assert len(m.permits) == 1_000 and len(m.forbids) == 10
    assert len(l.permits) == 10_000 and len(l.forbids) == 10
    assert len(m.users) == 2_000 and sum(len(v) for k, v in m.entities.items() if k != "agent") == 5_000
    assert l.entities == m.entities
    for r in m.permits:
        assert 0.50 <= r.risk_below <= 0.95 and r.dept in sc.DEPARTMENTS and r.owner_is_tenant
    assert sc.issue3_set(1_000, n_requests=50).text == sc.scenario_m(n_requests=50).text.replace(
        "scenario M", "scenario issue3-1000")
    req = m.requests[0]
    assert set(req) == {"principal", "action", "resource", "risk"}
    assert set(req["principal"]) == {"id", "kind", "attrs"} and set(req["resource"]) == {"type", "id", "attrs"}


@pytest.mark.parametrize("name", ["S", "M", "L", "issue3-10"])
def test_about_half_allowed(name):
    share = sup.scenario(name).allow_share()
    assert 0.35 <= share <= 0.65, share


def test_texts_parse():
    from policylang.language.parser import parse

    for name in ("S", "issue3-10"):
        assert len(parse(sup.scenario(name).text).statements) == len(sup.scenario(name).rules)
    assert len(parse(sc.varied_policy_text(300)).statements) > 300


@pytest.mark.parametrize("peer", sorted(PEERS))
@pytest.mark.parametrize("name", ["S", "M"])
def test_peer_agrees_with_oracle(peer, name):
    """Each installed peer decides a short stream exactly as the scenario's oracle."""
    cls = PEERS[peer]
    ok, why = cls.available()
    if not ok:
        pytest.skip(why)
    scn = sup.scenario(name)
    reqs = scn.requests[:150 if name == "S" else 60]  # the slow peers take ms per decision at M
    adapter = cls()
    adapter.load(scn)
    got = adapter.allowed(adapter.run(reqs))
    expected = [scn.expected(r) == "allow" for r in reqs]
    bad = [i for i, (g, e) in enumerate(zip(got, expected)) if g != e]
    assert not bad, f"{peer} disagrees on {len(bad)} requests, first: {reqs[bad[0]]}"


@pytest.fixture
def frozen_gc():
    """compare.py collects garbage before each timed pass; with the session's big engines
    alive that costs seconds, so set them aside for the small runs here."""
    import gc

    gc.freeze()
    yield
    gc.unfreeze()


class _AlwaysAllow:
    name = "always-allow"
    share = None

    def load(self, scn):
        pass

    def run(self, reqs):
        return [True] * len(reqs)

    def allowed(self, raw):
        return raw


def test_compare_flags_a_mismatch(frozen_gc):
    """compare.py counts every wrong decision and keeps the first one to show."""
    import argparse

    from .compare import run_scenario

    scn = sc.scenario_s(n_requests=64)
    args = argparse.Namespace(batch=16, budget=0.0, max_passes=1)
    res = run_scenario(scn, {"always-allow": _AlwaysAllow()}, args, lambda *_: None)["always-allow"]
    assert res.mismatches == scn.expected_all().count("deny") > 0
    assert res.first_mismatch.startswith("request #") and len(res.samples_us) == 4


def test_compare_end_to_end(tmp_path, capsys, frozen_gc):
    """A tiny compare run: tables, plot and JSON are produced and the exit status is 0."""
    pytest.importorskip("matplotlib")
    sup.policylang_or_skip()
    from .compare import main

    peers = [p for p, cls in PEERS.items() if p in ("casbin", "vakt") and cls.available()[0]]
    code = main(["--scenarios", "S", "--requests", "64", "--budget", "0", "--max-passes", "1",
                 "--engines", ",".join(["policylang", *peers]), "--no-figures",
                 "--plot", str(tmp_path / "p.png"), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "| policylang |" in out and (tmp_path / "p.png").stat().st_size > 0
    assert (tmp_path / "r.json").exists()


def test_missing_peer_is_reported_not_raised():
    from .peers import _try_import

    ok, why = _try_import("no_such_peer_module_xyz", "no-such-peer")
    assert not ok and "no-such-peer" in why and "pip install" in why
