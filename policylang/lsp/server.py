"""``policylang lsp``: the language server (pygls), over stdio.

Diagnostics as you type (the checker's codes, for every file of the document's policy
set, with the open buffers' unsaved text overriding the disk), formatting (the
formatter), hover, completion and go-to-definition. docs/editors.md sets editors up.
"""

from __future__ import annotations

import os
from pathlib import Path

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from ..language import nodes
from ..language.errors import PolicyError
from ..language.formatter import FormatterError, format_source
from ..language.roots import BY_NAME as ROOTS
from ..language.source import Span
from . import analysis
from .analysis import SetResult


class PolicyServer(LanguageServer):
    def __init__(self) -> None:
        from importlib.metadata import PackageNotFoundError, version
        try:
            v = version("policylang")
        except PackageNotFoundError:
            v = "0"
        super().__init__("policylang", v, text_document_sync_kind=types.TextDocumentSyncKind.Full)
        #: set root -> its last check
        self.sets: dict[Path, SetResult] = {}
        #: set root -> the paths diagnostics were last published for
        self.published: dict[Path, set[str]] = {}
        self.last_good: dict[str, tuple[str, nodes.PolicyFile]] = {}
        #: untitled buffer URI -> its last check
        self.loose: dict[str, SetResult] = {}
        #: real path -> the URI the editor opened it by
        self.uris: dict[str, str] = {}

    # ------------------------------------------------------------------ buffers and sets

    def overrides(self) -> dict[str, str]:
        """Real path -> unsaved text of every open buffer (and remember each one's URI, which
        may name the file through a symlink)."""
        out = {}
        for uri, doc in self.workspace.text_documents.items():
            p = to_fs_path(uri) if uri.startswith("file:") else None
            if p:
                real = os.path.realpath(p)
                out[real] = doc.source
                self.uris[real] = uri
        return out

    def uri(self, path: str) -> str:
        return self.uris.get(path) or from_fs_path(path)

    def root_of(self, uri: str) -> Path | None:
        p = to_fs_path(uri) if uri.startswith("file:") else None
        if not p:
            return None
        for folder in list(self.workspace.folders.values()) or ([] if not self.workspace.root_path else [None]):
            top = to_fs_path(folder.uri) if folder is not None else self.workspace.root_path
            if top and Path(p).resolve().is_relative_to(Path(top).resolve()):
                return analysis.set_root(p, Path(top))
        return analysis.set_root(p)

    def recheck(self, uri: str) -> SetResult | None:
        root = self.root_of(uri)
        if root is None:  # an untitled buffer: a set of its own
            if uri not in self.workspace.text_documents:
                self.loose.pop(uri, None)
                self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))
                return None
            text = self.workspace.get_text_document(uri).source
            result = self.loose[uri] = analysis.check_text(uri, text, self.last_good)
            self.uris[uri] = uri
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
                uri=uri, diagnostics=[self.lsp_diagnostic(d, text.splitlines(True)) for d in result.diagnostics[uri]]))
            return result
        result = analysis.check_set(root, self.overrides(), self.last_good)
        self.sets[root] = result
        paths = set(result.diagnostics)
        for p in self.published.get(root, set()) - paths:  # files gone from the set: clear them
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=self.uri(p), diagnostics=[]))
        for p, diags in result.diagnostics.items():
            lines = result.texts.get(p, "").splitlines(True)
            self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
                uri=self.uri(p), diagnostics=[self.lsp_diagnostic(d, lines) for d in diags]))
        self.published[root] = paths
        return result

    def result_for(self, uri: str) -> SetResult | None:
        root = self.root_of(uri)
        if root is None:
            return self.loose.get(uri) or self.recheck(uri)
        return self.sets.get(root) or self.recheck(uri)

    # ------------------------------------------------------------------ positions

    def to_range(self, span: Span, lines) -> types.Range:
        start = types.Position(line=max(span.line - 1, 0), character=max(span.column - 1, 0))
        end = types.Position(line=max(span.end_line - 1, 0), character=max(span.end_column - 1, 0))
        if (end.line, end.character) < (start.line, start.character):
            end = start
        return self.workspace.position_codec.range_to_client_units(lines, types.Range(start=start, end=end))

    def lsp_diagnostic(self, d, lines) -> types.Diagnostic:
        return types.Diagnostic(
            range=self.to_range(d.span, lines), message=d.message, code=d.code, source="policylang",
            severity=types.DiagnosticSeverity.Error if d.severity == "error" else types.DiagnosticSeverity.Warning)

    def location(self, span: Span, result: SetResult) -> types.Location:
        p = span.path if span.path in result.texts else os.path.abspath(span.path)
        lines = result.texts.get(p, "").splitlines(True)
        return types.Location(uri=self.uri(p), range=self.to_range(span, lines))

    def cursor(self, params) -> tuple[str, list[str], int, int]:
        doc = self.workspace.get_text_document(params.text_document.uri)
        lines = list(doc.lines)
        pos = doc.position_codec.position_from_client_units(lines, params.position)
        uri = params.text_document.uri
        path = os.path.realpath(doc.path) if uri.startswith("file:") and doc.path else uri
        return path, lines, pos.line, pos.character


server = PolicyServer()


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: PolicyServer, params: types.DidOpenTextDocumentParams) -> None:
    ls.recheck(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: PolicyServer, params: types.DidChangeTextDocumentParams) -> None:
    ls.recheck(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: PolicyServer, params: types.DidSaveTextDocumentParams) -> None:
    ls.recheck(params.text_document.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: PolicyServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.recheck(params.text_document.uri)  # the disk's text counts again


@server.feature(types.TEXT_DOCUMENT_FORMATTING)
def formatting(ls: PolicyServer, params: types.DocumentFormattingParams) -> list[types.TextEdit] | None:
    doc = ls.workspace.get_text_document(params.text_document.uri)
    try:
        out = format_source(doc.source, doc.path)
    except (PolicyError, FormatterError):
        return None  # a file that does not parse is not formatted; its E001 is published
    if out == doc.source:
        return []
    lines = doc.lines
    end = types.Position(line=len(lines), character=0)
    return [types.TextEdit(range=types.Range(start=types.Position(line=0, character=0), end=end), new_text=out)]


def _markdown(text: str) -> types.Hover:
    return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))


def _code(lines: list[str]) -> str:
    return "```policylang\n" + "\n".join(lines) + "\n```"


def _rule_summary(rule: nodes.Rule, path: str, index: analysis.Index) -> str:
    from ..language.formatter import _refs
    effect = {"require_approval": "require approval for"}.get(rule.effect, rule.effect)
    acts = "*" if rule.target.actions is None else ", ".join(rule.target.actions)
    head = f"{effect} {_refs(rule.target.subjects)} to {acts} on {_refs(rule.target.resources)}"
    out = [f"**rule** `{rule.annotation('id') or f'{os.path.basename(path)}:{rule.span.line}'}`", "", _code([head])]
    if rule.conditions:
        out.append(f"{len(rule.conditions)} condition" + ("" if len(rule.conditions) == 1 else "s"))
    if rule.grant is not None:
        out.append(f"grants {len(rule.grant.scopes)} scope(s) for {rule.grant.ttl}s")
    if rule.because:
        out += ["", rule.because]
    return "\n".join(out)


@server.feature(types.TEXT_DOCUMENT_HOVER)
def hover(ls: PolicyServer, params: types.HoverParams) -> types.Hover | None:
    path, lines, line, col = ls.cursor(params)
    result = ls.result_for(params.text_document.uri)
    if result is None or line >= len(lines):
        return None
    text = lines[line].rstrip("\r\n")
    index = result.index
    rule = index.rule_at(path, line, col)
    target = _target(index, path, lines, line, col)
    if analysis.in_string_or_comment(text, col):
        return None
    found = analysis.word_at(text, col)
    if found is None:
        return None
    word, _start, _end = found
    root = analysis.root_before(text, _start)
    if root is not None:
        if root not in ROOTS:
            return None
        attrs = index.root_attributes(root, target).get(word)
        if not attrs:
            return None
        return _markdown(_code(attrs))
    if word in index.constants:
        d = index.constants[word]
        body = [d.detail]
        if word in index.values:
            import json
            body.append(f"# value: {json.dumps(index.values[word])}")
        return _markdown(_code(body))
    if rule is not None and _contains_head(rule, line, col):
        return _markdown(_rule_summary(rule, path, index))
    if word in ROOTS:
        return _markdown(f"**{word}** (root): {analysis.ROOT_DOCS.get(word, '')}")
    for table in (index.principals, index.resources, index.actions):
        if word in table:
            return _markdown(_code([table[word].detail]))
    return None


def _target(index: analysis.Index, path: str, lines: list[str], line: int, col: int):
    """The target of the rule at the cursor: from the tree when the file parses, else read
    from the text before the cursor."""
    rule = index.rule_at(path, line, col)
    if rule is not None and index.current.get(path, False):
        return rule.target
    return analysis.target_before("".join(lines[:line]) + lines[line][:col])


def _contains_head(rule: nodes.Rule, line: int, col: int) -> bool:
    return analysis._contains(rule.head_span, line, col) or any(
        analysis._contains(a.span, line, col) for a in rule.annotations)


def _item(label: str, kind: types.CompletionItemKind, detail: str | None = None) -> types.CompletionItem:
    return types.CompletionItem(label=label, kind=kind, detail=detail)


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(trigger_characters=["."]))
def completion(ls: PolicyServer, params: types.CompletionParams) -> types.CompletionList:
    path, lines, line, col = ls.cursor(params)
    result = ls.result_for(params.text_document.uri)
    items: list[types.CompletionItem] = []
    if result is None or line >= len(lines) or analysis.in_string_or_comment(lines[line], col):
        return types.CompletionList(is_incomplete=False, items=items)
    index = result.index
    text = lines[line][:col]
    m = analysis.NAME_RE.search(text[::-1])
    start = col - (m.end() if m and m.start() == 0 else 0)
    root = analysis.root_before(text, start)
    K = types.CompletionItemKind
    if root is not None:
        target = _target(index, path, lines, line, col)
        for name, details in index.root_attributes(root, target).items():
            items.append(_item(name, K.Field, "; ".join(details)))
        return types.CompletionList(is_incomplete=False, items=items)
    before = "".join(lines[:line]) + text
    slot = analysis.completion_slot(before)
    if slot == "kinds":
        items += [_item(n, K.Class, d.detail) for n, d in index.principals.items()]
    elif slot == "resources":
        items += [_item(n, K.Class, d.detail) for n, d in index.resources.items()]
    elif slot == "actions":
        items += [_item(n, K.Function, d.detail) for n, d in index.actions.items()]
    elif slot == "types":
        items += [_item(n, K.TypeParameter) for n in analysis.SCHEMA_TYPE_NAMES]
    else:
        items += [_item(r, K.Variable, analysis.ROOT_DOCS.get(r)) for r in ROOTS]
        items += [_item(n, K.Constant, d.detail) for n, d in index.constants.items()]
        items += [_item(k, K.Keyword) for k in analysis.keywords()]
    if slot in ("kinds", "resources", "actions"):
        items.append(_item("*", K.Operator, "any"))
    return types.CompletionList(is_incomplete=False, items=items)


@server.feature(types.TEXT_DOCUMENT_DEFINITION)
def definition(ls: PolicyServer, params: types.DefinitionParams) -> list[types.Location] | None:
    path, lines, line, col = ls.cursor(params)
    result = ls.result_for(params.text_document.uri)
    if result is None or line >= len(lines) or analysis.in_string_or_comment(lines[line], col):
        return None
    text = lines[line].rstrip("\r\n")
    found = analysis.word_at(text, col)
    if found is None:
        return None
    word, start, _end = found
    index = result.index
    root = analysis.root_before(text, start)
    if root is not None:
        decls = index.field_decls(root, word, _target(index, path, lines, line, col))
        return [ls.location(d.span, result) for d in decls] or None
    decls = []
    if word in index.constants:
        decls.append(index.constants[word])
    else:
        slot = analysis.completion_slot("".join(lines[:line]) + text[:start])
        order = {"kinds": (index.principals,), "resources": (index.resources,), "actions": (index.actions,)}.get(
            slot, (index.principals, index.resources, index.actions))
        for table in order:
            if word in table:
                decls.append(table[word])
                break
    return [ls.location(d.span, result) for d in decls] or None


def main() -> None:
    server.start_io()
