"""tests/cost.py: the step counter is deterministic and tells linear from quadratic."""

from __future__ import annotations

import sys

import pytest
from cost import assert_linear_steps, python_steps


def _linear(xs):
    total = 0
    for x in xs:
        total += x
    return total


def _quadratic(xs):
    total = 0
    for x in xs:
        for y in xs:
            total += x * y
    return total


def test_the_same_call_counts_the_same_steps_every_time():
    xs = list(range(500))
    counts = {python_steps(lambda: _linear(xs)) for _ in range(5)}
    assert len(counts) == 1 and counts.pop() > 500


def test_a_linear_function_passes_and_a_quadratic_one_fails():
    s1, s4 = assert_linear_steps(lambda n: list(range(n)), _linear, 200)
    assert 3.5 < s4 / s1 < 4.5
    with pytest.raises(AssertionError, match="Python steps"):
        assert_linear_steps(lambda n: list(range(n)), _quadratic, 50)


def test_the_previous_tracer_is_put_back_even_on_error():
    seen = []

    def outer(frame, event, arg):
        seen.append(event)
    sys.settrace(outer)
    try:
        with pytest.raises(ZeroDivisionError):
            python_steps(lambda: 1 / 0)
        assert sys.gettrace() is outer
    finally:
        sys.settrace(None)
