"""Formatter benchmarks (``policylang.language.formatter.format_source``) on scenarios M and L."""

import pytest

from . import _support as sup

formatter = pytest.importorskip("policylang.language.formatter", reason="the formatter has not landed yet")
if not hasattr(formatter, "format_source"):  # pragma: no cover
    pytest.skip("policylang.language.formatter.format_source does not exist yet", allow_module_level=True)


@pytest.mark.parametrize("name", ["M", "L"])
def test_format(benchmark, name):
    text = sup.scenario(name).text
    benchmark.group = "format"
    out = benchmark.pedantic(formatter.format_source, args=(text, f"{name}.policy"),
                             rounds=3, iterations=1)
    # (idempotence and equivalence are the formatter's own tests; one pass is enough here)
    assert out.count("permit") == len(sup.scenario(name).permits)
