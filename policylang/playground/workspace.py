"""The policy set a playground shows: its files on disk, edited texts checked in memory,
the example requests of its test suites, and (only when asked) writing a file back.

Nothing here writes unless :meth:`Workspace.write` is called, and that refuses any path
that is not a policy or entity file inside the set's directory (docs/playground.md#security).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import write_atomically

#: the file names a set is made of (policylang/language/loader.py collects the same)
SET_SUFFIXES = (".policy", ".entities.json")
#: the most bytes one edited file may have (an editor, not an upload service)
MAX_FILE_CHARS = 1 << 20
#: the most files an edit may carry
MAX_FILES = 500
#: how many suite files and example requests are looked at, at most
MAX_SUITES = 200
MAX_EXAMPLES = 2000


class FieldError(ValueError):
    """A bad part of an API body: ``field`` names it (answered 400)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class WriteRefused(Exception):
    """Writing this file is not allowed (answered 403 or 400)."""


@dataclass
class Example:
    """One example request: a case of one of the set's test suites, or a request file."""

    id: str
    name: str
    source: str
    request: Any
    entities: dict | None = None
    approved: frozenset | None = None
    expect: str | None = None
    extra: dict = field(default_factory=dict)

    def public(self) -> dict:
        return {"id": self.id, "name": self.name, "source": self.source, "request": self.request,
                "expect": self.expect, "approvals": sorted(self.approved) if self.approved is not None else None}


def safe_relative(name: Any, field_name: str) -> str:
    """``name`` as a clean relative POSIX path of a set file, or :class:`FieldError`:
    no absolute path, no drive, no ``..``, no empty or hidden parts, a set suffix."""
    if not isinstance(name, str) or not name:
        raise FieldError(field_name, "a file name must be a non-empty string")
    if len(name) > 1000 or "\x00" in name or "\\" in name:
        raise FieldError(field_name, "not a valid file name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise FieldError(field_name, f"{name!r} is absolute: only paths inside the set are allowed")
    parts = name.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        raise FieldError(field_name, f"{name!r} leaves the set or names a hidden file: only plain "
                                     "relative paths inside the set are allowed")
    if not name.endswith(SET_SUFFIXES):
        raise FieldError(field_name, f"{name!r} is not a policy file (*.policy) or entity file (*.entities.json)")
    return posixpath.normpath(name)


def diagnostic_json(d) -> dict:
    return {"file": d.path, "line": d.line, "column": d.column, "end_line": d.end_line,
            "end_column": d.end_column, "severity": d.severity, "code": d.code, "message": d.message}


class Workspace:
    """The set at ``path`` (a directory or one ``.policy`` file)."""

    def __init__(self, path: str | os.PathLike):
        self.given = os.fspath(path)
        p = Path(self.given)
        if not p.exists():
            raise FileNotFoundError(self.given)
        self.is_dir = p.is_dir()
        self.dir = p if self.is_dir else p.parent
        self.single = None if self.is_dir else p.name
        self._examples: list[Example] | None = None
        self._baseline: tuple | None = None

    # ------------------------------------------------------------------ reading

    def disk_files(self) -> dict[str, str]:
        """relative path -> text of every file of the set (unreadable files left out; the
        checker reports them)."""
        from ..language import loader

        sources, entity_sources, _problems, _root = loader.collect(self.given)
        return {rel: text for _display, rel, text in list(sources) + list(entity_sources)}

    def read_problems(self) -> list:
        from ..language import loader

        return loader.collect(self.given)[2]

    def merged(self, overrides: Mapping[str, str] | None) -> dict[str, str]:
        files = self.disk_files()
        if overrides:
            if self.single is not None:
                unknown = [k for k in overrides if k != self.single]
                if unknown:
                    raise FieldError(f"files.{unknown[0]}", f"this playground shows one file, {self.single}")
            files.update(overrides)
        return files

    def build(self, files: Mapping[str, str]):
        """``(policy set or None, diagnostics)`` of these texts, in memory (never written)."""
        from ..language import loader

        sources = [(rel, rel, files[rel]) for rel in sorted(files) if rel.endswith(".policy")]
        entity_sources = [(rel, rel, files[rel]) for rel in sorted(files) if rel.endswith(".entities.json")]
        return loader.build(sources, entity_sources, self.dir.as_posix(), raise_errors=False)

    def baseline(self):
        """The set as it is on disk (rebuilt when a file changed)."""
        files = self.disk_files()
        key = tuple(sorted(files.items()))
        if self._baseline is None or self._baseline[0] != key:
            self._baseline = (key, *self.build(files))
        return self._baseline[1], self._baseline[2]

    # ------------------------------------------------------------------ examples

    def examples(self) -> list[Example]:
        if self._examples is None:
            self._examples = self._find_examples()
        return self._examples

    def example(self, example_id: str) -> Example | None:
        for e in self.examples():
            if e.id == example_id:
                return e
        return None

    def _suite_files(self) -> list[Path]:
        """The YAML files near the set: in its directory and its parent, two levels deep."""
        out: list[Path] = []
        seen: set[str] = set()
        bases = [self.dir, self.dir.parent]
        for base in bases:
            for root, dirs, files in os.walk(base):
                depth = len(Path(root).relative_to(base).parts)
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in ("node_modules", "__pycache__")
                                 and depth < 2)
                for f in sorted(files):
                    if f.endswith((".yaml", ".yml")) and not f.startswith("."):
                        p = Path(root) / f
                        key = os.path.realpath(p)
                        if key not in seen:
                            seen.add(key)
                            out.append(p)
                if len(out) >= MAX_SUITES:
                    return out
        return out

    def _find_examples(self) -> list[Example]:
        from ..language.loader import parse_entities
        from ..tools import testrunner

        target = os.path.realpath(self.given)
        found: list[Example] = []
        for suite in self._suite_files():
            try:
                text = suite.read_text(encoding="utf-8-sig")
                data, _node = testrunner._parse_yaml(text)
            except (OSError, UnicodeDecodeError, testrunner.SuiteError):
                continue
            if not isinstance(data, dict) or not isinstance(data.get("policies"), str):
                continue
            if os.path.realpath(suite.parent / data["policies"]) != target:
                continue
            shown = os.path.relpath(suite, self.dir.parent).replace(os.sep, "/")
            entities = None
            names = data.get("entities")
            names = [names] if isinstance(names, str) else names if isinstance(names, list) else []
            for n in names:
                if not isinstance(n, str):
                    continue
                try:
                    parsed, problem = parse_entities((suite.parent / n).read_text(encoding="utf-8-sig"), n)
                except (OSError, UnicodeDecodeError):
                    continue
                if problem is None and parsed:
                    from ..language.policyset import merge_entities
                    entities = entities or {}
                    merge_entities(entities, parsed)
            approved = data.get("approved")
            approved = frozenset(a for a in approved if isinstance(a, str)) if isinstance(approved, list) else None
            cases = data.get("cases") if isinstance(data.get("cases"), list) else []
            for i, case in enumerate(cases):
                if not isinstance(case, dict) or not isinstance(case.get("request"), dict):
                    continue
                expect = case.get("expect")
                found.append(Example(id=f"{shown}#{i + 1}", name=str(case.get("name") or f"case {i + 1}"),
                                     source=shown, request=case["request"], entities=entities, approved=approved,
                                     expect=expect.get("decision") if isinstance(expect, dict) else None))
                if len(found) >= MAX_EXAMPLES:
                    return found
        import json
        request_files = []
        for folder in (self.dir / "requests", self.dir.parent / "requests"):
            if folder.is_dir():
                request_files.extend(sorted(folder.glob("*.json")))
        request_files.extend(f for f in (self.dir / "request.json", self.dir.parent / "request.json") if f.is_file())
        for f in request_files:
            try:
                req = json.loads(f.read_text(encoding="utf-8-sig"))
            except (OSError, UnicodeDecodeError, ValueError, RecursionError):
                continue
            if isinstance(req, dict):
                shown = os.path.relpath(f, self.dir.parent).replace(os.sep, "/")
                found.append(Example(id=shown, name=f.stem, source=shown, request=req))
        return found

    # ------------------------------------------------------------------ writing

    def write(self, name: Any, text: Any) -> str:
        """Write one set file (``--allow-write`` only). Refuses anything outside the set's
        directory: a traversal, an absolute path, a symlink (of the file or a parent) that
        leads out, a file that is not a policy or entity file. Returns the path written."""
        rel = safe_relative(name, "path")
        if self.single is not None and rel != self.single:
            raise WriteRefused(f"this playground shows one file, {self.single}: {rel} is not it")
        if not isinstance(text, str):
            raise FieldError("text", "must be a string")
        if len(text) > MAX_FILE_CHARS:
            raise FieldError("text", f"longer than {MAX_FILE_CHARS} characters")
        root = os.path.realpath(self.dir)
        target = os.path.join(self.dir, *rel.split("/"))
        parent = os.path.realpath(os.path.dirname(target))
        if os.path.commonpath([root, parent]) != root:
            raise WriteRefused(f"{rel} is outside the set (a symlinked directory leads out)")
        if os.path.islink(target):
            raise WriteRefused(f"{rel} is a symlink: the playground does not write through links")
        if not os.path.isdir(parent):
            raise WriteRefused(f"{rel}: its directory does not exist")
        write_atomically(os.path.join(parent, os.path.basename(target)), text, keep_mode=True,
                         follow_links=False)
        return rel


def approval_checker(approved: frozenset | None) -> Callable | None:
    """The test runner's checker: an approval id in ``approved`` confirms any gate."""
    if approved is None:
        return None
    return lambda approval, _request, _approvers: isinstance(approval, str) and approval in approved
