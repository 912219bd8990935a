"""Small text helpers every phase shares: durations and "did you mean" suggestions.

One table of duration units and one closest-name search, so that the parser, the
formatter, the checker and the test runner cannot drift apart.
"""

from __future__ import annotations

import difflib
import re
from typing import Iterable

#: the duration units of the language, largest first, in seconds
UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}

_DURATION_PART = re.compile(r"([0-9]+)([dhms])")


def parse_duration(text: str) -> int:
    """``"1h30m"`` → ``5400`` (units in any order, repeats add up); the caller checks the form."""
    return sum(int(n) * UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def format_duration(seconds: int) -> str:
    """``5400`` → ``1h30m``, the canonical form; ``0`` (or less) → ``0s``."""
    if seconds <= 0:
        return "0s"
    out = []
    for unit, size in UNIT_SECONDS.items():
        q, seconds = divmod(seconds, size)
        if q:
            out.append(f"{q}{unit}")
    return "".join(out)


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate closest to ``name`` (difflib's ratio of at least 0.6), never ``name`` itself."""
    name = str(name)
    close = difflib.get_close_matches(name, sorted(set(candidates) - {name}), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ``""`` (the mid-sentence form)."""
    best = closest(name, candidates)
    return f" (did you mean '{best}'?)" if best else ""


def did_you_mean_clause(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest candidate, or ``""`` (the end-of-message form)."""
    best = closest(name, candidates)
    return f"; did you mean '{best}'?" if best else ""
