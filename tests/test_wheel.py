"""The built wheel works on its own: build it, install it into a fresh virtual environment
and load a policy there, from a directory outside the checkout, so the package (and its
grammar file) must come from the wheel, not from the source tree.

Dependencies (lark, pydantic …) are borrowed from the running interpreter's
site-packages through a ``.pth`` path file, so the test needs no network for them and
stays fast; ``policylang`` itself is installed from the wheel by the venv's own pip with
``--no-deps --no-index``, and the test asserts that the module imported in the venv lives in the
venv. The wheel is built with ``pip wheel``: with hatchling importable it builds without
isolation (offline), otherwise pip fetches hatchling from the package index as any build
would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # ~10-40 s; part of the normal suite (CI runs it)

PROBE = r'''
import json, os, sys
import policylang
ps = policylang.loads("""
@id("reads")
permit agent to read on repo
  when resource.owner == principal.tenant
  because "agents read their tenant's repositories"
""", "inline.policy")
decision = policylang.Engine(ps).decide({
    "principal": {"id": "a", "kind": "agent", "attrs": {"tenant": "acme"}},
    "action": "read",
    "resource": {"type": "repo", "id": "acme/api", "attrs": {"owner": "acme"}},
})
try:
    policylang.loads("permit agent to read on repo when x = 1", "bad.policy")
    error = None
except policylang.PolicyError as e:
    error = e.diagnostics[0].code
print(json.dumps({"file": policylang.__file__, "rules": [r.id for r in ps.rules],
                  "decision": decision.decision, "error": error, "prefix": sys.prefix}))
'''


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(ROOT)]
    if importlib.util.find_spec("hatchling") is not None:
        cmd.insert(4, "--no-build-isolation")
    run(cmd, cwd=out, env=clean_env())
    [built] = list(out.glob("policylang-*.whl"))
    return built


def test_wheel_contains_the_package_and_its_grammar(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "policylang/__init__.py" in names
    assert "policylang/grammar/policy.lark" in names
    # the zero-standing-privilege package and the aliases at its documented import paths
    for module in ("privilege/__init__.py", "privilege/credentials.py", "privilege/approvals.py",
                   "privilege/audit.py", "privilege/store/__init__.py", "privilege/store/sqlite_store.py",
                   "privilege/store/redis_store.py", "credentials.py", "approvals.py", "audit.py",
                   "store/__init__.py"):
        assert f"policylang/{module}" in names, module
    assert not any(n.startswith("tests/") for n in names)
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "policylang = policylang.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_wheel_installs_and_loads_a_policy_in_a_fresh_venv(wheel, tmp_path):
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], env=clean_env())
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                  cwd=tmp_path, env=clean_env()).stdout.strip()
    # the dependencies come from this interpreter's site-packages (a plain path line: the
    # .pth files there, such as an editable install of policylang, are not processed)
    parents = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
    Path(purelib, "zz_parent_site.pth").write_text("\n".join(parents) + "\n", encoding="utf-8")
    # install the wheel with the venv's own pip (offline: the dependencies are already visible)
    run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
        cwd=tmp_path, env=clean_env())

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    proc = run([str(python), "-c", PROBE], cwd=workdir, env=clean_env())
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).resolve().is_relative_to(venv.resolve()), result["file"]
    assert not Path(result["file"]).resolve().is_relative_to(ROOT)
    assert result["rules"] == ["reads"]
    assert result["decision"] == "allow"
    assert result["error"] == "E001"

    # the console script of the wheel runs too
    policy = workdir / "p.policy"
    policy.write_text('permit agent to read on repo\n', encoding="utf-8")
    script = bindir / ("policylang.exe" if os.name == "nt" else "policylang")
    check = subprocess.run([str(script), "check", "p.policy"], capture_output=True, text=True, cwd=workdir,
                           env=clean_env(), timeout=120)
    assert check.returncode == 0, check.stderr
    assert "warning[W101]" in check.stdout and "p.policy:1:1" in check.stdout
