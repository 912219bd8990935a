"""Incremental reload (docs/engine.md#loading, docs/server.md#hot-reload): ``load(path,
previous=old_set)`` parses only the files whose bytes changed, ``Engine(new_set,
previous=old_engine)`` compiles only the rules it has not compiled; the result is a fresh
load's — same version hash, same diagnostics, same decisions on a request stream."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import policylang
from benchmarks.scenarios import abac_scenario
from policylang.language.errors import PolicyError
from policylang.server.service import PolicyService, ServiceConfig

SCN = abac_scenario(240, n_requests=400, seed=7)
HEADER = '''const GATE = 0.5
@id("const-gate")
forbid * to deploy on * when risk.score > GATE because "risky deploys"
'''


def _blocks() -> list[str]:
    return [b for b in SCN.text.split("\n\n") if "@id" in b]


def _write_set(root: Path, n_files: int = 4) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    blocks = _blocks()
    per = (len(blocks) + n_files - 1) // n_files
    paths = []
    for i in range(n_files):
        p = root / f"part{i}.policy"
        p.write_text("\n\n".join(blocks[i * per:(i + 1) * per]) + "\n", encoding="utf-8")
        paths.append(p)
    (root / "gate.policy").write_text(HEADER, encoding="utf-8")
    return paths


def _summary(d) -> tuple:
    return (d.decision, tuple(d.rules), tuple(d.reasons), tuple(e["message"] for e in d.errors))


def _same_as_fresh(root: Path, new: policylang.PolicySet, engine: policylang.Engine) -> None:
    fresh = policylang.load(root)
    assert new.version == fresh.version
    assert [d.render() for d in new.diagnostics] == [d.render() for d in fresh.diagnostics]
    assert [r.id for r in new.rules] == [r.id for r in fresh.rules]
    fresh_engine = policylang.Engine(fresh, cache_size=0)
    stream = list(SCN.requests)
    rng = random.Random(5)
    for r in rng.sample(stream, 100):  # the same requests as deploys: the const-gate rule
        stream.append({**r, "action": {"name": "deploy"}, "risk": {"score": rng.random()}})
    assert [_summary(engine.decide(r)) for r in stream] == [_summary(fresh_engine.decide(r)) for r in stream]


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _checks(engine) -> dict:
    """id of each rule's AST node -> the check function compiled for it."""
    return {id(cr.info.rule): cr.check for cr in engine.tree.rules}


def test_one_changed_file_reparses_only_that_file_and_equals_a_fresh_load(tmp_path):
    paths = _write_set(tmp_path / "set")
    old = policylang.load(tmp_path / "set")
    old_engine = policylang.Engine(old, cache_size=0)
    _edit(paths[1], "risk.score < 0.", "risk.score < 0.0")
    new = policylang.load(tmp_path / "set", previous=old)
    by_path = {f.path: f for f in old.files}
    for f in new.files:
        assert (f is by_path[f.path]) == (not f.path.endswith("part1.policy"))
    engine = policylang.Engine(new, cache_size=0, previous=old_engine)
    reused = {id(r.rule) for r in old.rules}
    old_checks = _checks(old_engine)
    new_checks = _checks(engine)
    assert new_checks.keys() == {id(r.rule) for r in new.rules}
    for r in new.rules:  # unchanged rules keep their generated functions, changed ones get new ones
        assert (new_checks[id(r.rule)] is old_checks.get(id(r.rule))) == (id(r.rule) in reused)
    _same_as_fresh(tmp_path / "set", new, engine)


def test_renamed_deleted_and_added_files(tmp_path):
    root = tmp_path / "set"
    paths = _write_set(root)
    ps = policylang.load(root)
    engine = policylang.Engine(ps, cache_size=0)
    steps = [
        lambda: paths[0].rename(root / "zz-renamed.policy"),
        lambda: paths[2].unlink(),
        lambda: (root / "sub").mkdir() or (root / "sub" / "new.policy").write_text(
            '@id("added")\npermit * to read on repo because "new file"\n', encoding="utf-8"),
    ]
    for step in steps:
        step()
        new = policylang.load(root, previous=ps)
        engine = policylang.Engine(new, cache_size=0, previous=engine)
        _same_as_fresh(root, new, engine)
        ps = new


def test_a_new_rule_of_a_compiled_shape_compiles_nothing_new(tmp_path):
    # the added file sorts first (no reused rule before it brings the shape along) and
    # its rule has the skeleton of rules the earlier set compiled, only its literals
    # differ: the reload takes that shape's factory, no code is generated
    root = tmp_path / "set"
    _write_set(root)
    ps = policylang.load(root)
    engine = policylang.Engine(ps, cache_size=0)
    assert 'principal.dept == "design" and risk.score < 0.84' in _blocks()[0]
    (root / "aa-new.policy").write_text(
        '@id("added")\npermit * to execute on endpoint\n'
        '  when principal.dept == "legal" and risk.score < 0.5 and resource.owner == principal.tenant\n'
        '  because "added"\n', encoding="utf-8")
    new = policylang.load(root, previous=ps)
    engine2 = policylang.Engine(new, cache_size=0, previous=engine)
    added = [cr for cr in engine2.tree.rules if cr.info.path.endswith("aa-new.policy")]
    assert len(added) == 1
    assert added[0].shape in engine.tree.factories  # a shape the earlier set compiled
    assert engine2.tree.source.strip() == ""  # nothing generated
    assert engine2.tree.factories.keys() <= engine.tree.factories.keys()
    _same_as_fresh(root, new, engine2)


def test_a_changed_constant_recompiles_the_rules_of_unchanged_files(tmp_path):
    root = tmp_path / "set"
    _write_set(root)
    ps = policylang.load(root)
    engine = policylang.Engine(ps, cache_size=0)
    (root / "gate.policy").write_text(HEADER.replace("0.5", "0.8"), encoding="utf-8")
    new = policylang.load(root, previous=ps)
    engine2 = policylang.Engine(new, cache_size=0, previous=engine)
    assert not set(map(id, _checks(engine2).values())) & set(map(id, _checks(engine).values()))
    _same_as_fresh(root, new, engine2)


def test_warnings_are_those_of_a_fresh_load(tmp_path):
    root = tmp_path / "set"
    paths = _write_set(root)
    ps = policylang.load(root)
    # a duplicate of a rule id of an unchanged file: a set-wide check, run over every file
    _edit(paths[3], '@id("', '@id("dup")\n@id("')
    with pytest.raises(PolicyError) as inc:
        policylang.load(root, previous=ps)
    with pytest.raises(PolicyError) as fresh:
        policylang.load(root)
    assert [d.render() for d in inc.value.diagnostics] == [d.render() for d in fresh.value.diagnostics]
    # a rule without because: W106, at the right place
    _edit(paths[3], '@id("dup")\n', "")
    _edit(paths[3], '  because "', '  # because "')
    new = policylang.load(root, previous=ps)
    assert new.warnings and [d.render() for d in new.diagnostics] == \
        [d.render() for d in policylang.load(root).diagnostics]


def test_loads_and_check_path_take_previous(tmp_path):
    text = "\n\n".join(_blocks()[:20])
    ps = policylang.loads(text, name="one.policy")
    again = policylang.loads(text, name="one.policy", previous=ps)
    assert again.files[0] is ps.files[0] and again.version == ps.version
    with pytest.raises(TypeError):
        policylang.loads(text, previous="not a set")
    with pytest.raises(TypeError):
        policylang.Engine(ps, previous=object())


def test_the_same_set_shares_the_compiled_tree_and_instrumenting_recompiles(tmp_path):
    ps = policylang.loads("\n\n".join(_blocks()[:30]))
    engine = policylang.Engine(ps, cache_size=0)
    assert policylang.Engine(ps, previous=engine).tree is engine.tree
    counted = policylang.Engine(ps, cache_size=0, instrument=True, previous=engine)
    assert counted.tree is not engine.tree
    for r in SCN.requests[:50]:
        counted.decide(r)
    assert counted.counters.conditions > 0


def test_the_served_set_reloads_incrementally_and_a_bad_file_keeps_the_old_set(tmp_path):
    root = tmp_path / "set"
    paths = _write_set(root)
    service = PolicyService(ServiceConfig(path=str(root), poll_interval=0, cache_size=0))
    assert service.load().ok
    first = service.current
    _edit(paths[0], "risk.score < 0.", "risk.score < 0.0")
    result = service.load("signal")
    assert result.ok and result.changed
    files = {f.path: f for f in first.policies.files}
    assert sum(f is files.get(f.path) for f in service.current.policies.files) == len(files) - 1
    _same_as_fresh(root, service.current.policies, service.current.engine)
    good = service.current
    paths[2].write_text(paths[2].read_text(encoding="utf-8") + "\npermit * to read on\n", encoding="utf-8")
    result = service.load("signal")
    assert not result.ok and service.current is good
    assert any(d.path.endswith("part2.policy") for d in result.diagnostics)


def test_a_forked_worker_adopts_the_parents_set(tmp_path):
    root = tmp_path / "set"
    _write_set(root)
    parent = PolicyService(ServiceConfig(path=str(root), poll_interval=0, cache_size=0))
    parent.load()
    worker = PolicyService(ServiceConfig(path=str(root), poll_interval=0, cache_size=0))
    result = worker.adopt(parent.current, parent.signature)
    assert result.ok and worker.current.engine is not parent.current.engine
    assert worker.current.engine.tree is parent.current.engine.tree
    assert worker.signature == parent.signature
    _same_as_fresh(root, worker.current.policies, worker.current.engine)


SCHEMA = '''principal agent { team: string, level: number? }
resource repo { owner: string, stars: number? }
action read, push on repo
const TEAM = "core"
'''
CHECKED = '''@id("reads-optional-unguarded")
permit agent to read on repo when principal.level > 2 because "W103: level is optional"

@id("reads-undeclared")
permit agent to push on repo when principal.team == TEAM and resource.size > 1 because "E004"
'''


def test_the_check_memo_reports_what_a_fresh_check_does(tmp_path):
    root = tmp_path / "set"
    root.mkdir()
    (root / "a-schema.policy").write_text(SCHEMA, encoding="utf-8")
    (root / "b-checked.policy").write_text(CHECKED.replace("resource.size > 1", "resource.stars > 1"),
                                            encoding="utf-8")
    other = root / "c-other.policy"
    other.write_text('@id("o1")\npermit agent to read on repo when resource.owner == "x" because "o"\n',
                     encoding="utf-8")

    def both() -> tuple[list[str], list[str]]:
        try:
            inc = [d.render() for d in policylang.load(root, previous=ps).diagnostics]
        except PolicyError as e:
            inc = [d.render() for d in e.diagnostics]
        try:
            fresh = [d.render() for d in policylang.load(root).diagnostics]
        except PolicyError as e:
            fresh = [d.render() for d in e.diagnostics]
        return inc, fresh

    ps = policylang.load(root)
    assert any("W103" in d.render() for d in ps.diagnostics)
    other.write_text(other.read_text(encoding="utf-8").replace('"x"', '"y"'), encoding="utf-8")
    inc, fresh = both()
    assert inc == fresh and any("W103" in d for d in inc)
    # the unchanged file's rules were checked from the memo: the same results
    new = policylang.load(root, previous=ps)
    assert new.check_memo.entry(new.rules[0].rule) is not None and new.rules[0].rule is ps.rules[0].rule
    # a schema change invalidates the memo: the unchanged rules are checked again (E004 now)
    ps = new
    (root / "a-schema.policy").write_text(SCHEMA.replace(", stars: number?", ""), encoding="utf-8")
    inc, fresh = both()
    assert inc == fresh and any("E004" in d for d in inc)
    # a constant used by an unchanged file goes away: E002 there
    (root / "a-schema.policy").write_text(SCHEMA.replace('const TEAM = "core"\n', ""), encoding="utf-8")
    inc, fresh = both()
    assert inc == fresh and any("E002" in d for d in inc)


def test_the_check_memo_holds_one_slot_per_rule_in_order():
    ps = policylang.loads(SCHEMA + CHECKED.replace("resource.size > 1", "resource.stars > 1") +
                          '@id("clean")\npermit agent to read on repo because "c"\n', name="m.policy")
    memo = ps.check_memo
    assert len(memo.rules) == len(ps.rules)
    for info, slot in zip(ps.rules, memo.rules, strict=True):
        e = memo.entry(info.rule)
        assert e is not None and e[0] is info.rule
        # a rule both stages found nothing in is its node alone; the others hold results
        assert (slot is info.rule) == (e[1] is None and e[2] is None)
    assert memo.entry(ps.rules[-1].rule) == (ps.rules[-1].rule, None, None)
    assert any(slot.__class__ is tuple for slot in memo.rules)  # the W103 rule's findings
    # a node the memo did not record (an equal rule parsed again) is not found
    again = policylang.loads('@id("clean")\npermit agent to read on repo because "c"\n')
    assert memo.entry(again.rules[0].rule) is None


@pytest.mark.parametrize("text", ["", "a" * 65536, "é" * 65537, "é€𝄞" * 30000 + "x"])
def test_the_version_hash_of_a_file_is_its_whole_texts(text):
    # the loader encodes a text a chunk at a time: the hash of the whole text's bytes
    import hashlib

    from policylang.language.loader import _digest_part

    whole = hashlib.sha256(b"policy\0" + b"dir/p.policy" + b"\0" + text.encode("utf-8") + b"\0")
    chunked = hashlib.sha256()
    _digest_part(chunked, b"policy\0", "dir/p.policy", text)
    assert chunked.hexdigest() == whole.hexdigest()
