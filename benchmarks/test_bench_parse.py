"""Parse and check (load) benchmarks: scenarios M and L, and a varied 10,000-rule set."""

import pytest

from . import _support as sup


@pytest.mark.parametrize("name", ["M", "L"])
def test_parse(benchmark, name):
    from policylang.language.parser import parse

    text = sup.scenario(name).text
    benchmark.group = "parse"
    tree = benchmark.pedantic(parse, args=(text, f"{name}.policy"), rounds=3, iterations=1)
    assert len(tree.statements) == len(sup.scenario(name).rules)


@pytest.mark.parametrize("name", ["M", "L"])
def test_check(benchmark, name):
    """``policylang.loads``: parse + check (the issue-2 'load' figure)."""
    pl = sup.policylang_or_skip()
    text = sup.scenario(name).text
    benchmark.group = "check (load)"
    ps = benchmark.pedantic(pl.loads, args=(text,), kwargs={"name": f"{name}.policy"},
                            rounds=3, iterations=1)
    assert not [d for d in ps.diagnostics if d.severity == "error"]
    sup.remember(name, policy_set=ps)


def test_parse_check_varied_10k(benchmark):
    """Parse + check of a generated 10,000-rule set using most of the language."""
    pl = sup.policylang_or_skip()
    text = sup.varied_text(10_000)
    benchmark.group = "check (load)"
    ps = benchmark.pedantic(pl.loads, args=(text,), kwargs={"name": "varied.policy"},
                            rounds=3, iterations=1)
    assert len(ps.rules) == 10_000
