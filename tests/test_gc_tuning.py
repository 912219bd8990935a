"""The cyclic collector: the library never tunes it (no process-wide side effects); the
CLI, which owns its process, raises the young-generation threshold for its loads
(policylang/cli/__init__.py, docs/engine.md#loading)."""

from __future__ import annotations

import gc

from click.testing import CliRunner

import policylang
from policylang.cli import GC_GEN0_THRESHOLD, main

TEXT = "\n\n".join(f'@id("r{i}")\npermit agent to read on doc when principal.n == {i}' for i in range(300))


def test_loading_and_deciding_leave_the_collector_as_they_found_it():
    saved = gc.get_threshold()
    try:
        gc.set_threshold(701, 11, 12)
        gc.disable()
        engine = policylang.Engine(policylang.loads(TEXT, name="t.policy"))
        engine.decide({"principal": {"id": "a", "kind": "agent", "attrs": {"n": 3}}, "action": "read",
                       "resource": {"type": "doc", "id": "d"}})
        assert gc.get_threshold() == (701, 11, 12) and not gc.isenabled()
        gc.enable()
        policylang.Engine(policylang.loads(TEXT, name="t.policy"))
        assert gc.get_threshold() == (701, 11, 12) and gc.isenabled()
    finally:
        gc.enable()
        gc.set_threshold(*saved)


def test_the_cli_raises_the_young_generation_threshold(tmp_path):
    saved = gc.get_threshold()
    path = tmp_path / "p.policy"
    path.write_text(TEXT, encoding="utf-8")
    try:
        gc.set_threshold(700, 10, 10)
        result = CliRunner().invoke(main, ["check", str(path)])
        assert result.exit_code == 0, result.output
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, 10, 10)
        gc.set_threshold(GC_GEN0_THRESHOLD * 2, 10, 10)  # a higher one is kept
        CliRunner().invoke(main, ["check", str(path)])
        assert gc.get_threshold()[0] == GC_GEN0_THRESHOLD * 2
    finally:
        gc.set_threshold(*saved)
