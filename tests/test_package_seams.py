"""The seams between the policy core and the zero-standing-privilege package.

The core (parse, check, compile, decide) imports nothing of ``policylang.privilege``
(credentials, approvals, audit, store) nor of the server; and the documented import
paths embedding services use (``policylang.store``, ``policylang.credentials``,
``policylang.approvals``, ``policylang.audit``) are the very same module objects as the
ones under ``policylang.privilege``, so ``isinstance`` and monkeypatching agree.
"""

import json
import subprocess
import sys

CORE_ONLY = r'''
import json, sys
import policylang
engine = policylang.Engine(policylang.loads("""
@id("read-repos")
permit agent to read on repo
  grant "repo:read:" + resource.id for 15m
  because "agents read repositories"
"""))
d = engine.decide({"principal": {"id": "agent:a", "kind": "agent"}, "action": {"name": "read", "attrs": {}},
                   "resource": {"type": "repo", "id": "r1", "attrs": {}}})
no = engine.decide({"principal": {"id": "agent:a", "kind": "agent"}, "action": {"name": "write", "attrs": {}},
                    "resource": {"type": "repo", "id": "r1", "attrs": {}}})
print(json.dumps({"decision": d.decision, "other": no.decision,
                  "modules": sorted(m for m in sys.modules if m.startswith("policylang"))}))
'''

FORBIDDEN = ("policylang.privilege", "policylang.credentials", "policylang.approvals",
             "policylang.audit", "policylang.store", "policylang.server")


def test_the_core_imports_no_privilege_store_or_server_module():
    out = subprocess.run([sys.executable, "-c", CORE_ONLY], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["decision"] == "allow" and result["other"] != "allow"
    assert "policylang.evaluation.engine" in result["modules"]  # the check looks at a real decision's imports
    leaked = [m for m in result["modules"] if m.startswith(FORBIDDEN)]
    assert leaked == []


def test_the_documented_import_paths_are_the_same_module_objects():
    import policylang.approvals
    import policylang.audit
    import policylang.credentials
    import policylang.privilege.approvals
    import policylang.privilege.audit
    import policylang.privilege.credentials
    import policylang.privilege.store
    import policylang.privilege.store.redis_store
    import policylang.privilege.store.sqlite_store
    import policylang.store
    import policylang.store.redis_store
    import policylang.store.sqlite_store

    assert policylang.credentials is policylang.privilege.credentials
    assert policylang.approvals is policylang.privilege.approvals
    assert policylang.audit is policylang.privilege.audit
    assert policylang.store is policylang.privilege.store
    assert policylang.store.sqlite_store is policylang.privilege.store.sqlite_store
    assert policylang.store.redis_store is policylang.privilege.store.redis_store
    for name in ("credentials", "approvals", "audit", "store", "store.sqlite_store", "store.redis_store"):
        assert sys.modules[f"policylang.{name}"] is sys.modules[f"policylang.privilege.{name}"]


def test_classes_and_monkeypatching_agree_through_either_name(tmp_path, monkeypatch):
    from policylang.credentials import Issuer as OldIssuer
    from policylang.privilege.credentials import Issuer
    from policylang.privilege.store import StoreError, open_store
    from policylang.store import StoreError as OldStoreError
    from policylang.store.sqlite_store import SQLiteStore

    assert OldIssuer is Issuer and OldStoreError is StoreError
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}", create=True)
    assert isinstance(store, SQLiteStore)

    import policylang.privilege.store as new_store
    import policylang.store as old_store
    monkeypatch.setattr(old_store, "APPROVAL_RETENTION", 5)
    assert new_store.APPROVAL_RETENTION == 5


def _imports_of(path):
    """Every module a file imports, resolved to an absolute ``policylang...`` name."""
    import ast
    import pathlib
    rel = pathlib.Path(path).resolve().relative_to(pathlib.Path(__file__).resolve().parent.parent)
    package = list(rel.with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(pathlib.Path(path).read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_the_front_end_and_evaluation_import_no_outer_package():
    import pathlib
    root = pathlib.Path(__file__).resolve().parent.parent / "policylang"
    outer = FORBIDDEN + ("policylang.tools", "policylang.cli")
    offenders = {}
    for sub in ("language", "evaluation"):
        for path in sorted((root / sub).rglob("*.py")):
            bad = sorted(m for m in _imports_of(path) if m.startswith(outer))
            if bad:
                offenders[str(path.relative_to(root))] = bad
    assert offenders == {}


def test_the_folders_are_the_ones_the_readme_draws():
    import pathlib
    here = pathlib.Path(__file__).resolve().parent.parent
    readme = (here / "README.md").read_text()
    packages = sorted(p.name for p in (here / "policylang").iterdir()
                      if p.is_dir() and (p / "__init__.py").exists())
    for name in packages:
        if name == "store":  # the documented alias of privilege/store
            continue
        assert f"  {name}/" in readme, f"README's house diagram does not show policylang/{name}/"
    for sub in ("language", "evaluation"):
        for path in (here / "policylang" / sub).glob("*.py"):
            if path.name != "__init__.py":
                assert path.name in readme, f"README's house diagram does not show {sub}/{path.name}"
