"""Shared, memoised inputs for the benchmark suite (built once per test session).

Policy sets and engines for the large sets take seconds to build, so every test that
needs the same thing gets the same object. ``issue3-1000`` *is* scenario M and
``issue3-10000`` *is* scenario L (same family, same seed), so they are never built twice.
"""

from __future__ import annotations

import functools
import itertools

import pytest

from . import scenarios as sc

#: requests per stream in the pytest suite (compare.py takes --requests)
N_REQUESTS = 2_000

_ALIASES = {"issue3-1000": "M", "issue3-10000": "L"}


def policylang_or_skip():
    """The policylang package, or skip the test while the engine has not landed."""
    try:
        import policylang
        policylang.Engine  # noqa: B018
        policylang.loads  # noqa: B018
    except (ImportError, AttributeError) as e:  # pragma: no cover - only before the engine lands
        pytest.skip(f"policylang.Engine not available yet: {e}")
    return policylang


@functools.lru_cache(maxsize=None)
def scenario(name: str) -> sc.Scenario:
    name = _ALIASES.get(name, name)
    if name in ("S", "M", "L"):
        return sc.scenario(name, n_requests=N_REQUESTS)
    if name.startswith("issue3-"):
        return sc.issue3_set(int(name.split("-", 1)[1]), n_requests=N_REQUESTS)
    raise KeyError(name)


@functools.lru_cache(maxsize=None)
def policies(name: str):
    pl = policylang_or_skip()
    name = _ALIASES.get(name, name)
    return pl.loads(scenario(name).text, name=f"{name}.policy")


@functools.lru_cache(maxsize=None)
def engine(name: str, cache_size: int = 0, pip: bool = False):
    """An engine for a scenario. ``pip``: with the scenario's entity data (for id-only
    requests)."""
    pl = policylang_or_skip()
    name = _ALIASES.get(name, name)
    kw = {"entities": scenario(name).entities} if pip else {}
    return pl.Engine(policies(name), cache_size=cache_size, **kw)


@functools.lru_cache(maxsize=None)
def varied_text(n_rules: int = 10_000) -> str:
    return sc.varied_policy_text(n_rules)


def cycler(items):
    """A zero-argument function returning the next item, round and round."""
    return itertools.cycle(items).__next__
