"""Files → parsed → checked :class:`~policylang.language.policyset.PolicySet` (docs/language.md, docs/language.md#entity-data, docs/language.md#what-the-checker-verifies).

A policy set is one ``.policy`` file or a directory of them (recursive, sorted by path).
A directory set also loads every ``*.entities.json`` below it. Paths in diagnostics are
the ones the user can open: the path as given, joined with the path inside a directory.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from . import nodes
from .checker import check
from .errors import Diagnostic, PolicyError, sort_diagnostics
from .parser import parse
from .entity_check import check_entities
from .policyset import PolicySet, merge_entities
from .source import Span


def _span(path: str, line: int = 1, column: int = 1) -> Span:
    return Span(path, line, column, line, column + 1, 0, 0)


def _read_text(path: Path, display: str) -> tuple[str | None, Diagnostic | None]:
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, Diagnostic.make("E001", f"cannot read file: {e.strerror or e}", _span(display))
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError as e:
        before = data[: e.start].decode("utf-8", errors="replace")
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        return None, Diagnostic.make("E001", f"file is not valid UTF-8 (byte 0x{data[e.start]:02x})",
                                     _span(display, line, col))


def parse_entities(text: str, display: str) -> tuple[dict | None, Diagnostic | None]:
    """Parse entity data ``{"<kind or type>": {"<id>": {attrs}}}``; E001 when malformed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return None, Diagnostic.make("E001", f"entity file is not valid JSON: {e.msg}",
                                     _span(display, e.lineno, e.colno))
    problem = entities_shape_error(data)
    if problem:
        return None, Diagnostic.make("E001", f"entity file must be {{\"<kind or type>\": {{\"<id>\": {{attrs}}}}}}: {problem}",
                                     _span(display))
    return data, None


def entities_shape_error(data: Any) -> str | None:
    if not isinstance(data, dict):
        return "the top level is not an object"
    for kind, ids in data.items():
        if not isinstance(ids, dict):
            return f"the value of {json.dumps(kind)} is not an object of ids"
        for eid, attrs in ids.items():
            if not isinstance(attrs, dict):
                return f"the attributes of {json.dumps(kind)} {json.dumps(eid)} are not an object"
    return None


def _parsed_files(previous: PolicySet | None) -> dict[str, tuple[str, nodes.PolicyFile]]:
    """display path -> (text, parsed file) of an earlier set, for :func:`build`'s reuse."""
    if previous is None:
        return {}
    if not isinstance(previous, PolicySet):
        raise TypeError("previous must be the PolicySet this load replaces (from policylang.load)")
    out = {}
    for f in previous.files:
        text = previous.sources.get(f.path)
        if text is not None:
            out[f.path] = (text, f)
    return out


def build(sources: Iterable[tuple[str, str, str]], entity_sources: Iterable[tuple[str, str, str]],
          root: str, *, raise_errors: bool = True,
          previous: PolicySet | None = None) -> tuple[PolicySet | None, list[Diagnostic]]:
    """Parse and check.

    ``sources``/``entity_sources`` are ``(display path, relative path, text)`` triples in
    load order. Returns the set (``None`` when there are errors) and every diagnostic;
    with ``raise_errors`` a set with errors raises :class:`PolicyError` instead.

    ``previous``: an earlier set of the same files (a reload). A policy file whose path and
    text are those of one of its files is not parsed again: its syntax tree is reused
    (parsing is a pure function of the text and the path). The checker reuses the
    per-rule results (names, types, schema reads, W103) of the reused rules when the set's
    declarations (constants, options, schema) are the very same nodes
    (:mod:`.checker.memo`); every set-wide check runs over the whole set (constants, options
    and the schema are set-wide, rule ids must be unique across files, W104/W105/W107/W108
    compare rules and constants of any files). Entity files are parsed again. The result,
    its diagnostics and its version hash are a fresh load's.
    """
    sources = list(sources)
    entity_sources = list(entity_sources)
    diags: list[Diagnostic] = []
    files: list[nodes.PolicyFile] = []
    texts = {display: text for display, _rel, text in sources}
    earlier = _parsed_files(previous)
    for display, _rel, text in sources:
        old = earlier.get(display)
        if old is not None and old[0] == text:
            files.append(old[1])
            continue
        try:
            files.append(parse(text, display))
        except PolicyError as e:
            diags.extend(e.diagnostics)
    entities: dict = {}
    parsed: list[tuple[str, str, dict]] = []
    for display, _rel, text in entity_sources:
        data, problem = parse_entities(text, display)
        if problem:
            diags.append(problem)
        else:
            merge_entities(entities, data)
            parsed.append((display, text, data))

    result = None
    if not diags:
        result = check(files, {display: rel for display, rel, _ in sources},
                       entity_types=[kind for kind, ids in entities.items() if ids],
                       previous=previous.check_memo if previous is not None else None)
        diags.extend(result.diagnostics)
        diags.extend(check_entities(result.schema, parsed))

    all_texts = {**texts, **{d: t for d, _r, t in entity_sources}}
    lines: dict[str, list[str]] = {}  # split each file once, however many diagnostics it has
    for path in {d.path for d in diags if d.path in all_texts}:
        lines[path] = all_texts[path].splitlines()
    diags = [d.with_line_text(lines[d.path]) if d.path in lines else d for d in sort_diagnostics(diags)]
    if any(d.severity == "error" for d in diags):
        if raise_errors:
            raise PolicyError(diags)
        return None, diags

    digest = hashlib.sha256()
    for _display, rel, text in sources:
        _digest_part(digest, b"policy\0", rel, text)
    for _display, rel, text in entity_sources:
        _digest_part(digest, b"entities\0", rel, text)
    assert result is not None
    policy_set = PolicySet(
        root=root,
        files=tuple(files),
        sources=texts,
        rules=result.rules,
        constants=result.constants,
        options=result.options,
        schema=result.schema,
        entities=entities,
        diagnostics=tuple(diags),
        version="sha256:" + digest.hexdigest(),
        check_memo=result.memo,
    )
    return policy_set, diags


#: characters of a text encoded at a time for the version hash
_DIGEST_CHUNK = 1 << 16


def _digest_part(digest, tag: bytes, rel: str, text: str) -> None:
    """Add one file to the version hash: ``tag``, its relative path, NUL, its UTF-8 text,
    NUL (the `policy_version` of docs/requests.md#decision). The text is encoded a chunk at a time: the
    same bytes, without a copy of the whole file (two, concatenated, before: 3 MB for
    the 10,000-rule set, at the load's peak)."""
    digest.update(tag)
    digest.update(rel.encode())
    digest.update(b"\0")
    for i in range(0, len(text), _DIGEST_CHUNK):
        digest.update(text[i:i + _DIGEST_CHUNK].encode("utf-8"))
    digest.update(b"\0")


def collect(path: str | os.PathLike) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]], list[Diagnostic], str]:
    """Find and read the files of the set at ``path``: (sources, entity sources, read errors, root)."""
    given = os.fspath(path)
    p = Path(given)
    problems: list[Diagnostic] = []
    sources: list[tuple[str, str, str]] = []
    entity_sources: list[tuple[str, str, str]] = []
    if p.is_dir():
        found = []
        for f in p.rglob("*"):
            if f.is_file() and (f.name.endswith(".policy") or f.name.endswith(".entities.json")):
                found.append(f.relative_to(p).as_posix())
        for rel in sorted(found):
            display = os.path.join(given, rel)
            text, problem = _read_text(p / rel, display)
            if problem:
                problems.append(problem)
                continue
            (sources if rel.endswith(".policy") else entity_sources).append((display, rel, text))
        return sources, entity_sources, problems, given
    if not p.exists():
        problems.append(Diagnostic.make("E001", "no such file or directory", _span(given)))
        return sources, entity_sources, problems, given
    text, problem = _read_text(p, given)
    if problem:
        problems.append(problem)
    else:
        if given.endswith(".entities.json"):
            entity_sources.append((given, p.name, text))
        else:
            sources.append((given, p.name, text))
    return sources, entity_sources, problems, str(p.parent)


def load(path: str | os.PathLike, *, previous: PolicySet | None = None) -> PolicySet:
    """Load a policy file or directory. Raises :class:`PolicyError` with every error.

    ``previous``: the set this load replaces (a reload; docs/engine.md#loading): files
    whose bytes did not change are not parsed again. The result equals a fresh load's."""
    sources, entity_sources, problems, root = collect(path)
    if problems:
        raise PolicyError(problems)
    policy_set, _ = build(sources, entity_sources, root, previous=previous)
    assert policy_set is not None
    return policy_set


def loads(text: str, name: str = "inline.policy", *, previous: PolicySet | None = None) -> PolicySet:
    """Load a policy set from one string. ``name`` is its path in diagnostics and ids;
    ``previous`` as for :func:`load`."""
    if not isinstance(text, str):
        raise PolicyError([Diagnostic.make("E001", f"policy text must be a string, not {type(text).__name__}",
                                           _span(name))])
    policy_set, _ = build([(name, name, text)], [], ".", previous=previous)
    assert policy_set is not None
    return policy_set


def check_path(path: str | os.PathLike, *,
               previous: PolicySet | None = None) -> tuple[PolicySet | None, list[Diagnostic]]:
    """Every diagnostic of the set at ``path`` (for ``policylang check`` and the server's
    reload); never raises. ``previous`` as for :func:`load`."""
    sources, entity_sources, problems, root = collect(path)
    if problems:
        return None, [d for d in sort_diagnostics(problems)]
    return build(sources, entity_sources, root, raise_errors=False, previous=previous)
