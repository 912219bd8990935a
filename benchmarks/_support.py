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


def _canon(name: str) -> str:
    return _ALIASES.get(name, name)


_scenarios: dict = {}
_policies: dict = {}
_engines: dict = {}


def scenario(name: str) -> sc.Scenario:
    name = _canon(name)
    if name not in _scenarios:
        if name in ("S", "M", "L"):
            _scenarios[name] = sc.scenario(name, n_requests=N_REQUESTS)
        elif name.startswith("issue3-"):
            _scenarios[name] = sc.issue3_set(int(name.split("-", 1)[1]), n_requests=N_REQUESTS)
        else:
            raise KeyError(name)
    return _scenarios[name]


def policies(name: str):
    """The loaded policy set of a scenario (``policylang.loads``), built once."""
    pl = policylang_or_skip()
    name = _canon(name)
    if name not in _policies:
        _policies[name] = pl.loads(scenario(name).text, name=f"{name}.policy")
    return _policies[name]


def engine(name: str, cache_size: int = 0, pip: bool = False):
    """An engine for a scenario, built once. ``pip``: with the scenario's entity data (for
    id-only requests)."""
    pl = policylang_or_skip()
    key = (_canon(name), cache_size, pip)
    if key not in _engines:
        kw = {"entities": scenario(name).entities} if pip else {}
        _engines[key] = pl.Engine(policies(name), cache_size=cache_size, **kw)
    return _engines[key]


def remember(name: str, *, policy_set=None, engine_obj=None, cache_size: int = 0) -> None:
    """Keep what a load or compile benchmark built, so later tests do not build it again
    (the 10,000-rule set takes seconds)."""
    if policy_set is not None:
        _policies.setdefault(_canon(name), policy_set)
    if engine_obj is not None:
        _engines.setdefault((_canon(name), cache_size, False), engine_obj)


@functools.lru_cache(maxsize=None)
def varied_text(n_rules: int = 10_000) -> str:
    return sc.varied_policy_text(n_rules)


def cycler(items):
    """A zero-argument function returning the next item, round and round."""
    return itertools.cycle(items).__next__
