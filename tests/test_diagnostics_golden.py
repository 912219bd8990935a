"""Golden files for how diagnostics render (docs/cli.md text output).

Each ``tests/golden/diagnostics/NAME.policy`` is checked on its own, as a set named
``NAME.policy``; every diagnostic is rendered (``path:line:col: severity[CODE]:
message``, the source line, a caret under the offending text) and the whole output must
equal ``NAME.expected`` byte for byte.

After an intended change to a message or to the rendering, regenerate with::

    POLICYLANG_REGEN_GOLDEN=1 python -m pytest tests/test_diagnostics_golden.py

and review the diff of ``tests/golden/diagnostics/`` before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from policylang.language.loader import build

GOLDEN = Path(__file__).resolve().parent / "golden" / "diagnostics"
REGENERATE = os.environ.get("POLICYLANG_REGEN_GOLDEN") == "1"
CASES = sorted(GOLDEN.glob("*.policy"))


def render(case: Path) -> str:
    # read bytes and decode, so the text is exactly the file's (no newline translation)
    text = case.read_bytes().decode("utf-8")
    # a case may come with entity data (NAME.entities.json), which W108 looks at
    data = case.with_suffix(".entities.json")
    entities = [(data.name, data.name, data.read_text(encoding="utf-8"))] if data.exists() else []
    _policy_set, diagnostics = build([(case.name, case.name, text)], entities, ".", raise_errors=False)
    return "".join(d.render() + "\n" for d in diagnostics)


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_rendering_matches_golden_file(case: Path):
    expected = case.with_suffix(".expected")
    actual = render(case).encode("utf-8")
    if REGENERATE:
        expected.write_bytes(actual)
        return
    assert expected.exists(), f"no golden file {expected.name}; run with POLICYLANG_REGEN_GOLDEN=1"
    assert actual == expected.read_bytes(), f"{case.name} renders differently from {expected.name}"


def test_golden_cases_exist_and_cover_errors_and_warnings():
    assert len(CASES) >= 8
    outputs = [c.with_suffix(".expected").read_text(encoding="utf-8") for c in CASES]
    assert all(out for out in outputs), "every golden case has at least one diagnostic"
    joined = "".join(outputs)
    for code in ("E001", "E002", "E003", "E004", "E005", "E006", "E007",
                 "W101", "W102", "W103", "W104", "W105", "W106", "W107", "W108"):
        assert f"[{code}]" in joined, code


def test_no_stale_golden_files():
    policies = {c.stem for c in CASES}
    assert {e.stem for e in GOLDEN.glob("*.expected")} <= policies


def test_rendered_lines_have_the_documented_shape():
    for case in CASES:
        lines = render(case).splitlines()
        assert len(lines) % 3 == 0, case.name
        for header, source, caret in zip(lines[0::3], lines[1::3], lines[2::3]):
            path, line, col, rest = header.split(":", 3)
            assert path == case.name
            assert int(line) >= 1 and int(col) >= 1
            assert rest.startswith((" error[E", " warning[W"))
            assert caret.strip(" ") and set(caret.strip(" ")) == {"^"}
