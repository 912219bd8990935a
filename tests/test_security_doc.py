"""docs/security.md names, for every claim, the test that attacks it: those tests exist.

A claim whose test was renamed or deleted is a claim nobody checks any more, so every
``tests/…py::name`` (and each ``::name`` that continues the same file) must name a test
function defined in that file.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "security.md"

# tests/x.py::test_a[param] or a bare ::test_b that continues the last named file
_REF = re.compile(r"((?:tests|benchmarks)/[\w/]+\.py)::(\w+)|(?<![\w.])::(test\w*)")


def _references() -> list[tuple[str, str, int]]:
    refs = []
    for lineno, line in enumerate(DOC.read_text(encoding="utf-8").splitlines(), 1):
        current = None
        for m in _REF.finditer(line):
            if m.group(1):
                current = m.group(1)
            name = m.group(2) or m.group(3)
            if current is None:
                raise AssertionError(f"security.md:{lineno}: '::{name}' names no test file before it")
            refs.append((current, name, lineno))
    return refs


def test_security_doc_names_tests():
    assert len(_references()) >= 60


def test_every_test_named_in_security_doc_exists():
    missing = []
    for path, name, lineno in _references():
        file = ROOT / path
        if not file.is_file():
            missing.append(f"security.md:{lineno}: {path} does not exist")
            continue
        text = file.read_text(encoding="utf-8")
        if not re.search(rf"^\s*(?:async\s+)?def {re.escape(name)}\(", text, re.M):
            missing.append(f"security.md:{lineno}: {path} has no test {name}")
    assert not missing, "\n".join(missing)
