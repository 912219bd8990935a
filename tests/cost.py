"""Deterministic work counts for "this is linear" tests (no clocks).

The machine the tests run on is shared and noisy, so a test never times anything.
``python_steps(fn)`` counts the Python-level work ``fn()`` does: every function call and
every line executed, in every frame (policylang's own code and the code it generates
with ``compile()``), through ``sys.settrace``. The count is the same on every run,
whatever else the machine is doing, so a ratio of two counts can be asserted tightly.

What it does not see: work inside one C call (``dict.copy``, ``sorted``, ``json.dumps``)
counts as a single step. A quadratic loop written in Python shows; a C builtin that is
itself quadratic would not. The engine's per-element work is Python code, which is what
these tests bound.

The tracer is installed for the duration of one call and the previous one (a debugger's,
a coverage tool's) is put back afterwards.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

__all__ = ["assert_linear_steps", "python_steps"]


def python_steps(fn: Callable[[], object]) -> int:
    """The number of Python calls and lines executed by ``fn()`` (exceptions propagate)."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def global_(frame, event, arg):
        nonlocal count
        count += 1  # the call
        return local

    previous = sys.gettrace()
    previous_thread = threading.gettrace() if hasattr(threading, "gettrace") else None
    sys.settrace(global_)
    try:
        fn()
    finally:
        sys.settrace(previous)
        if hasattr(threading, "settrace"):
            threading.settrace(previous_thread)
    return count


def assert_linear_steps(make, run, small: int, limit: float = 6.0) -> tuple[int, int]:
    """``run(make(n))`` at n and 4n: the step count may grow about 4x (limit 6x), never ~16x.

    Both inputs are built before counting, so only ``run`` is measured; ``run`` is called
    once on each untraced first (warming lazily built plans and caches), then counted.
    """
    a, b = make(small), make(4 * small)
    run(a)
    run(b)
    s1 = python_steps(lambda: run(a))
    s4 = python_steps(lambda: run(b))
    ratio = s4 / max(s1, 1)
    assert ratio < limit, f"4x the input took {ratio:.1f}x the Python steps ({s1:,} -> {s4:,})"
    return s1, s4
