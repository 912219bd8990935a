"""What the language server knows about a policy set, without any LSP machinery.

A document belongs to a policy set: its directory, and upward while the parent directory
holds ``.policy`` files too (``policylang check --set-root``). :func:`check_set` checks the
whole set with the editor's unsaved buffers overriding the disk, and :class:`Index` holds the
declarations (schema, constants, rules) of the set's files that parse, for hover,
completion and go-to-definition. Positions here are 0-based lines and code-point columns.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..language import nodes
from ..language.errors import Diagnostic, PolicyError
from ..language.loader import build, collect
from ..language.parser import KEYWORDS, parse
from ..language.roots import BY_NAME as ROOTS
from ..language.source import Span

#: fixed attributes of the roots whose attributes are not declared in a schema
FIXED_ATTRS: dict[str, dict[str, str]] = {
    "risk": {"score": "number", "signals": "list<string>"},
    "delegation": {"depth": "number", "chain": "list<principal>", "root": "principal"},
}
BUILTIN_TYPES = {"id": "string", "kind": "string", "type": "string", "name": "string"}
ROOT_DOCS = {
    "principal": "the principal making the request (its kind, id and attributes)",
    "action": "the action requested (its name and attributes)",
    "resource": "the resource acted on (its type, id and attributes)",
    "context": "facts about the call (declared by `context { … }`)",
    "risk": "the risk signal of the request: `score` and `signals` (optional in a request)",
    "delegation": "the delegation chain: `depth`, `chain` and `root`",
    "intent": "what the agent says it is doing (optional in a request)",
}
SCHEMA_TYPE_NAMES = ("string", "number", "bool", "duration", "set", "list")
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def has_policies(directory: Path) -> bool:
    try:
        return any(f.suffix == ".policy" and f.is_file() for f in directory.iterdir())
    except OSError:
        return False


def set_root(path: str | os.PathLike, workspace: Path | None = None) -> Path:
    """The root directory of the set ``path`` (a ``.policy`` file) belongs to; never above
    ``workspace`` (the editor's workspace folder) when the file is inside it."""
    root = Path(path).resolve().parent
    stop = workspace.resolve() if workspace is not None else None
    if stop is not None and not root.is_relative_to(stop):
        stop = None
    while root.parent != root and root != stop and has_policies(root.parent):
        root = root.parent
    return root


def type_text(t: nodes.TypeRef) -> str:
    s = t.name + (f"<{type_text(t.arg)}>" if t.arg is not None else "")
    return s + ("?" if t.optional else "")


def expr_text(e: nodes.Expr) -> str:
    from ..language.formatter import expr
    return expr(e)


@dataclass
class Decl:
    """A declared name and where it is: a kind, resource type, action, constant or field."""

    category: str  # principal, resource, action, const, field, context
    name: str
    path: str
    span: Span  # the name's span where known, else the declaration's
    detail: str
    owner: str | None = None  # the kind / type / action a field belongs to


@dataclass
class Index:
    """The declarations and rules of the files of a set that parse."""

    principals: dict[str, Decl] = field(default_factory=dict)
    resources: dict[str, Decl] = field(default_factory=dict)
    actions: dict[str, Decl] = field(default_factory=dict)
    constants: dict[str, Decl] = field(default_factory=dict)
    #: (category, owner) -> {field: Decl}; category "context" has owner None
    fields: dict[tuple[str, str | None], dict[str, Decl]] = field(default_factory=dict)
    rules: dict[str, list[nodes.Rule]] = field(default_factory=dict)  # path -> rules
    #: path -> whether its tree is of its current text (else the last text that parsed)
    current: dict[str, bool] = field(default_factory=dict)
    #: folded constant values when the set checked without errors
    values: Mapping[str, object] = field(default_factory=dict)

    def add(self, tree: nodes.PolicyFile, text: str) -> None:
        path = tree.path
        self.rules[path] = []
        for st in tree.statements:
            if isinstance(st, nodes.Const):
                self.constants.setdefault(st.name, Decl(
                    "const", st.name, path, st.name_span, f"const {st.name} = {expr_text(st.value)}"))
            elif isinstance(st, nodes.EntityDecl):
                where = self.principals if st.category == "principal" else self.resources
                fields = ", ".join(f"{f.name}: {type_text(f.type)}" for f in st.fields)
                head = f"{st.category} {st.name}" + (" authoritative" if st.authoritative else "")
                where.setdefault(st.name, Decl(st.category, st.name, path, _name_span(text, st.span, st.name, 1),
                                               f"{head} {{ {fields} }}"))
                self._fields(st.category, st.name, st.fields, path)
            elif isinstance(st, nodes.ActionDecl):
                head = ("high_impact " if st.high_impact else "") + "action " + ", ".join(st.names)
                head += " on " + ", ".join(st.on)
                if st.fields:
                    head += " { " + ", ".join(f"{f.name}: {type_text(f.type)}" for f in st.fields) + " }"
                for name in st.names:
                    self.actions.setdefault(name, Decl("action", name, path, _name_span(text, st.span, name, 0), head))
                    self._fields("action", name, st.fields or (), path)
            elif isinstance(st, nodes.ContextDecl):
                self._fields("context", None, st.fields, path)
            elif isinstance(st, nodes.Rule):
                self.rules[path].append(st)

    def _fields(self, category: str, owner: str | None, decl_fields, path: str) -> None:
        into = self.fields.setdefault((category, owner), {})
        for f in decl_fields:
            label = f"{owner}.{f.name}" if owner else f"context.{f.name}"
            into.setdefault(f.name, Decl("field", f.name, path, _name_span_of_field(f), f"{label}: {type_text(f.type)}",
                                         owner))

    # ------------------------------------------------------------------ queries

    def rule_at(self, path: str, line: int, col: int) -> nodes.Rule | None:
        if not self.current.get(path, False):
            return None
        for r in self.rules.get(path, ()):
            if _contains(r.span, line, col):
                return r
        return None

    def root_attributes(self, root: str, rule: nodes.Target | TextTarget | None) -> dict[str, list[str]]:
        """Attribute name -> its types (one line per declaring kind) for ``root.``."""
        out: dict[str, list[str]] = {}
        r = ROOTS.get(root)
        if r is None:
            return out
        for name in r.builtins:
            out[name] = [f"{root}.{name}: " + FIXED_ATTRS.get(root, BUILTIN_TYPES).get(name, BUILTIN_TYPES.get(name, "?"))
                         + " (built in)"]
        for name, t in FIXED_ATTRS.get(root, {}).items():
            out.setdefault(name, [f"{root}.{name}: {t}"])
        if root in ("principal", "resource"):
            owners = self._targeted(root, rule)
            for owner in owners:
                for name, d in self.fields.get((root, owner), {}).items():
                    out.setdefault(name, []).append(d.detail)
        elif root == "action":
            names = list(rule.target.actions) if rule is not None and rule.target.actions else list(self.actions)
            for owner in names:
                for name, d in self.fields.get(("action", owner), {}).items():
                    out.setdefault(name, []).append(d.detail)
        elif root == "context":
            for name, d in self.fields.get(("context", None), {}).items():
                out.setdefault(name, []).append(d.detail)
        return out

    def _targeted(self, root: str, rule: nodes.Target | TextTarget | None) -> list[str]:
        declared = self.principals if root == "principal" else self.resources
        refs = None
        if rule is not None:
            refs = rule.subjects if root == "principal" else rule.resources
        if refs:
            return [ref.name for ref in refs if ref.name in declared]
        return list(declared)

    def field_decls(self, root: str, name: str, rule: nodes.Target | TextTarget | None) -> list[Decl]:
        if root in ("principal", "resource"):
            owners = self._targeted(root, rule)
            cat = root
        elif root == "action":
            owners = list(rule.target.actions) if rule is not None and rule.target.actions else list(self.actions)
            cat = "action"
        elif root == "context":
            owners, cat = [None], "context"
        else:
            return []
        out = []
        for owner in owners:
            d = self.fields.get((cat, owner), {}).get(name)
            if d is not None and d not in out:
                out.append(d)
        return out


def _contains(span: Span, line: int, col: int) -> bool:
    """Whether the 0-based ``line``/``col`` lies inside ``span`` (1-based, end exclusive)."""
    start = (span.line - 1, span.column - 1)
    end = (span.end_line - 1, span.end_column - 1)
    return start <= (line, col) <= end


def _name_span(text: str, span: Span, name: str, skip: int) -> Span:
    """The span of the word ``name`` inside the declaration at ``span`` (after ``skip``
    other words, e.g. the ``principal`` keyword), else the declaration's span."""
    chunk = text[span.start:span.end] if span.end > span.start else ""
    seen = 0
    for m in NAME_RE.finditer(chunk):
        if m.group() == name and seen >= skip:
            start = span.start + m.start()
            line = text.count("\n", 0, start) + 1
            col = start - (text.rfind("\n", 0, start) + 1) + 1
            return Span(span.path, line, col, line, col + len(name), start, start + len(name))
        seen += 1
    return span


def _name_span_of_field(f: nodes.FieldDecl) -> Span:
    s = f.span
    return Span(s.path, s.line, s.column, s.line, s.column + len(f.name), s.start, s.start + len(f.name))


@dataclass
class SetResult:
    root: Path
    #: absolute path -> its diagnostics (every file of the set, empty lists included)
    diagnostics: dict[str, list[Diagnostic]]
    #: absolute path -> the text checked
    texts: dict[str, str]
    index: Index


def check_set(root: Path, overrides: Mapping[str, str], last_good: dict[str, tuple[str, nodes.PolicyFile]] | None = None
              ) -> SetResult:
    """Check the set at ``root``; ``overrides`` maps absolute paths to unsaved text.

    ``last_good`` (absolute path -> (text, tree)) keeps each file's last tree that parsed,
    so that completion still knows a file's declarations while it is being edited.
    """
    given = str(root)
    sources, entity_sources, problems, _ = collect(given)
    seen = set()

    def fresh(triples):
        out = []
        for display, rel, text in triples:
            p = os.path.abspath(display)
            seen.add(p)
            out.append((p, rel, overrides.get(p, text)))
        return out

    sources = fresh(sources)
    entity_sources = fresh(entity_sources)
    for p, text in overrides.items():  # open buffers not yet saved to disk
        if p in seen or not p.startswith(given + os.sep):
            continue
        rel = os.path.relpath(p, given).replace(os.sep, "/")
        if p.endswith(".policy"):
            sources.append((p, rel, text))
        elif p.endswith(".entities.json"):
            entity_sources.append((p, rel, text))
    sources.sort(key=lambda s: s[1])
    entity_sources.sort(key=lambda s: s[1])
    texts = {p: t for p, _r, t in sources + entity_sources}

    diags: list[Diagnostic] = list(problems)
    policy_set = None
    try:
        policy_set, found = build(sources, entity_sources, given, raise_errors=False)
        diags.extend(found)
    except Exception as e:  # the loader never raises by contract; an editor must never crash on it
        diags.append(Diagnostic.make("E001", f"internal error: {type(e).__name__}: {e} (please report this)",
                                     Span(sources[0][0] if sources else given, 1, 1, 1, 1)))

    by_path: dict[str, list[Diagnostic]] = {p: [] for p in texts}
    for d in diags:
        by_path.setdefault(os.path.abspath(d.path), []).append(d)

    index = Index()
    last_good = last_good if last_good is not None else {}
    for p, _rel, text in sources:
        try:
            tree = parse(text, p)
            last_good[p] = (text, tree)
            index.current[p] = True
        except PolicyError:
            if p not in last_good:
                continue
            index.current[p] = False
            text, tree = last_good[p]
        index.add(tree, text)
    if policy_set is not None:
        index.values = policy_set.constants
    return SetResult(root, by_path, texts, index)


def check_text(name: str, text: str, last_good: dict[str, tuple[str, nodes.PolicyFile]] | None = None
               ) -> SetResult:
    """A buffer that is no file on disk (an untitled document), checked as a set of its own."""
    policy_set, diags = build([(name, name, text)], [], ".", raise_errors=False)
    index = Index()
    last_good = last_good if last_good is not None else {}
    try:
        tree = parse(text, name)
        last_good[name] = (text, tree)
        index.current[name] = True
        index.add(tree, text)
    except PolicyError:
        if name in last_good:
            index.current[name] = False
            index.add(last_good[name][1], last_good[name][0])
    if policy_set is not None:
        index.values = policy_set.constants
    return SetResult(Path("."), {name: list(diags)}, {name: text}, index)


# ------------------------------------------------------------------ text positions


def word_at(line_text: str, col: int) -> tuple[str, int, int] | None:
    """The identifier around code-point column ``col``: (word, start, end)."""
    for m in NAME_RE.finditer(line_text):
        if m.start() <= col <= m.end():
            return m.group(), m.start(), m.end()
    return None


def root_before(line_text: str, start: int) -> str | None:
    """``principal`` for a word at ``start`` written ``principal.word`` (spaces allowed)."""
    before = line_text[:start].rstrip()
    if not before.endswith("."):
        return None
    m = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", before[:-1])
    return m.group(1) if m else None


def in_string_or_comment(line_text: str, col: int) -> bool:
    in_str = False
    i = 0
    while i < min(col, len(line_text)):
        c = line_text[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "#":
            return True
        i += 1
    return in_str


_SLOT_WORDS = {"permit", "forbid", "for", "to", "on", "when", "unless", "grant", "by", "because", "const",
               "option", "limit", "and", "or", "not", "in", "per"}
_TOKEN_RE = re.compile(r'"(?:[^"\\]|\\.)*"|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|\S')


def completion_slot(text_before: str) -> str:
    """What may be written at the end of ``text_before``: ``kinds`` (a principal kind),
    ``actions``, ``resources`` (a resource type), ``types`` (a schema type) or ``names``
    (an expression: roots and constants)."""
    toks = [t for t in _TOKEN_RE.findall(text_before) if not t.startswith("#")]
    # drop the word being typed
    if toks and NAME_RE.fullmatch(toks[-1]) and not text_before[-1:].isspace():
        toks = toks[:-1]
    depth = 0
    for i in range(len(toks) - 1, -1, -1):
        t = toks[i]
        if t in ("}",):
            depth += 1
        elif t == "{":
            if depth == 0:
                break
            depth -= 1
        if t == ":" and depth == 0 and i == len(toks) - 1:
            return "types"
        if t in _SLOT_WORDS:
            if t in ("permit", "forbid") or (t == "for" and i > 0 and toks[i - 1] == "approval"):
                return "kinds"
            if t == "to":
                return "actions"
            if t == "on":
                # `action read on repo` declares; a rule's `on` takes resource types too
                return "resources"
            return "names"
    if toks and toks[-1] in (":", "<") :
        return "types"
    return "names"


@dataclass
class _Ref:
    name: str


@dataclass
class TextTarget:
    """A rule's target read from text that does not parse (the rule being typed)."""

    subjects: tuple[_Ref, ...] | None
    actions: tuple[str, ...] | None
    resources: tuple[_Ref, ...] | None


_TARGET_END = {"when", "unless", "grant", "by", "because", "limit", "@", "const", "option", "action",
               "context"}


def target_before(text_before: str) -> TextTarget | None:
    """The target of the rule the end of ``text_before`` is in, read from its tokens."""
    toks = [t for t in _TOKEN_RE.findall(text_before) if not t.startswith("#")]
    head = None
    for i in range(len(toks) - 1, -1, -1):
        if toks[i] in ("permit", "forbid") or (toks[i] == "for" and i > 0 and toks[i - 1] == "approval"):
            head = i
            break
        if toks[i] in ("const", "option", "{", "}"):
            return None
    if head is None:
        return None
    parts: dict[str, list[str]] = {"subjects": [], "actions": [], "resources": []}
    slot = "subjects"
    for t in toks[head + 1:]:
        if t == "to":
            slot = "actions"
        elif t == "on":
            slot = "resources"
        elif t in _TARGET_END:
            break
        elif NAME_RE.fullmatch(t) or t == "*":
            parts[slot].append(t)
    def refs(names):
        return None if not names or "*" in names else tuple(_Ref(n) for n in names)
    acts = parts["actions"]
    return TextTarget(refs(parts["subjects"]), None if not acts or "*" in acts else tuple(acts),
                      refs(parts["resources"]))


def keywords() -> list[str]:
    return sorted(KEYWORDS)
