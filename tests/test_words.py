"""The shared duration table and "did you mean" search (policylang.language.words)."""

import pytest

from policylang.language.words import closest, did_you_mean, did_you_mean_clause, format_duration, parse_duration


@pytest.mark.parametrize("text, seconds", [("45s", 45), ("10m", 600), ("1h30m", 5400), ("30m1h", 5400),
                                           ("1d", 86400), ("1h1h", 7200)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (-5, "0s"), (59, "59s"), (5400, "1h30m"),
                                           (90061, "1d1h1m1s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_format_then_parse_round_trips():
    for seconds in range(1, 200_000, 997):
        assert parse_duration(format_duration(seconds)) == seconds


def test_closest_never_suggests_the_name_itself_and_has_two_wordings():
    assert closest("regoin", ["region", "tenant"]) == "region"
    assert closest("region", ["region"]) is None
    assert closest("zzz", ["region"]) is None
    assert did_you_mean("becuase", ["because", "unless"]) == " (did you mean 'because'?)"
    assert did_you_mean_clause("becuase", ["because"]) == "; did you mean 'because'?"
    assert did_you_mean("x", []) == ""
