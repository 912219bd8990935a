"""The language server through a real LSP session: ``policylang lsp`` in a subprocess, spoken
to over stdio by pygls's client (docs/editors.md)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygls")

from lsprotocol import types
from pygls.lsp.client import LanguageClient
from pygls.uris import from_fs_path

from policylang.language.formatter import format_source

SCHEMA = """\
principal agent { region: string, trust: number? }
principal human { groups: set<string> }
resource repo { owner: string }
action read, write on repo
context { ip: string? }
const REGIONS = ["eu", "us"]
const LIMIT = 2 + 3
"""

RULES = """\
@id("agents-read")
permit agent to read on repo
  when principal.region in REGIONS
  when resource.owner == "acme"
  because "agents read in their regions"
"""


class Session:
    """A client with the server started, collecting published diagnostics by URI."""

    def __init__(self, root: Path):
        self.root = root
        self.client = LanguageClient("policylang-test", "0")
        self.diagnostics: dict[str, list[types.Diagnostic]] = {}
        self.changed = asyncio.Event()
        self.versions: dict[str, int] = {}

        @self.client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def _published(*args):  # pygls passes the client too when the handler takes it
            params: types.PublishDiagnosticsParams = args[-1]
            self.diagnostics[params.uri] = list(params.diagnostics)
            self.changed.set()

    async def start(self) -> None:
        await self.client.start_io(sys.executable, "-c", "from policylang.cli import main; main()", "lsp",
                                   cwd=str(self.root))
        await self.client.initialize_async(types.InitializeParams(
            capabilities=types.ClientCapabilities(), root_uri=from_fs_path(str(self.root))))
        self.client.initialized(types.InitializedParams())

    async def stop(self) -> None:
        await self.client.shutdown_async(None)
        self.client.exit(None)
        await self.client.stop()

    async def settle(self, uri: str, predicate, timeout: float = 20.0) -> list[types.Diagnostic]:
        """Wait until the diagnostics published for ``uri`` satisfy ``predicate``."""
        async def wait():
            while uri not in self.diagnostics or not predicate(self.diagnostics[uri]):
                self.changed.clear()
                await self.changed.wait()
            return self.diagnostics[uri]
        return await asyncio.wait_for(wait(), timeout)

    def open(self, path: Path, text: str) -> str:
        uri = from_fs_path(str(path))
        self.versions[uri] = 1
        self.client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="policylang", version=1, text=text)))
        return uri

    def change(self, uri: str, text: str) -> None:
        self.versions[uri] += 1
        self.client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=self.versions[uri]),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))

    def doc(self, uri: str, line: int, character: int) -> dict:
        return dict(text_document=types.TextDocumentIdentifier(uri=uri),
                    position=types.Position(line=line, character=character))


def run(root: Path, scenario):
    async def main():
        s = Session(root)
        await s.start()
        try:
            await scenario(s)
        finally:
            await s.stop()
    asyncio.run(main())


def _pos(text: str, needle: str, offset: int = 0) -> tuple[int, int]:
    """0-based line and character of ``needle``'s first occurrence (plus ``offset``)."""
    i = text.index(needle) + offset
    line = text.count("\n", 0, i)
    return line, i - (text.rfind("\n", 0, i) + 1)


def _write_set(tmp_path: Path) -> tuple[Path, Path]:
    schema, rules = tmp_path / "schema.policy", tmp_path / "rules.policy"
    schema.write_text(SCHEMA)
    rules.write_text(RULES)
    return schema, rules


def test_diagnostics_arrive_with_code_and_range_and_clear_when_fixed(tmp_path):
    _schema, rules = _write_set(tmp_path)
    broken = RULES.replace("principal.region", "principal.regoin")

    async def scenario(s: Session):
        uri = s.open(rules, broken)
        diags = await s.settle(uri, lambda ds: any(d.code == "E004" for d in ds))
        d = next(d for d in diags if d.code == "E004")
        line, char = _pos(broken, "regoin")
        assert d.range.start == types.Position(line=line, character=char)
        assert d.range.end == types.Position(line=line, character=char + len("regoin"))
        assert d.severity == types.DiagnosticSeverity.Error
        assert "region" in d.message  # the did-you-mean
        s.change(uri, RULES)
        assert await s.settle(uri, lambda ds: not ds) == []

    run(tmp_path, scenario)


def test_syntax_error_is_e001_at_its_place(tmp_path):
    _write_set(tmp_path)
    extra = tmp_path / "extra.policy"
    text = 'permit agent to read on repo\n  when principal.region ==\n'

    async def scenario(s: Session):
        uri = s.open(extra, text)  # not on disk yet: the unsaved buffer is part of the set
        diags = await s.settle(uri, lambda ds: bool(ds))
        assert [d.code for d in diags] == ["E001"]
        assert diags[0].range.start.line in (1, 2)

    run(tmp_path, scenario)


def test_multi_file_set_has_no_false_unknown_names(tmp_path):
    schema, rules = _write_set(tmp_path)

    async def scenario(s: Session):
        uri = s.open(rules, RULES)
        schema_uri = from_fs_path(str(schema))
        await s.settle(uri, lambda ds: True)
        await s.settle(schema_uri, lambda ds: True)  # every file of the set gets diagnostics
        assert s.diagnostics[uri] == []  # REGIONS comes from schema.policy: no E002
        # an unsaved edit of the other file counts: removing the constant there breaks this one
        s.open(schema, SCHEMA.replace('const REGIONS = ["eu", "us"]\n', ""))
        diags = await s.settle(uri, lambda ds: any(d.code == "E002" for d in ds))
        assert any("REGIONS" in d.message for d in diags)

    run(tmp_path, scenario)


def test_formatting_returns_the_formatters_edit(tmp_path):
    _write_set(tmp_path)
    messy = tmp_path / "messy.policy"
    text = 'permit   agent to read on repo when  resource.owner=="acme"   because "x"\n'

    async def scenario(s: Session):
        uri = s.open(messy, text)
        edits = await s.client.text_document_formatting_async(types.DocumentFormattingParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            options=types.FormattingOptions(tab_size=2, insert_spaces=True)))
        assert len(edits) == 1
        assert edits[0].range.start == types.Position(line=0, character=0)
        assert edits[0].range.end == types.Position(line=1, character=0)
        assert edits[0].new_text == format_source(text) != text
        s.change(uri, edits[0].new_text)
        again = await s.client.text_document_formatting_async(types.DocumentFormattingParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            options=types.FormattingOptions(tab_size=2, insert_spaces=True)))
        assert list(again) == []

    run(tmp_path, scenario)


def _hover_text(h: types.Hover | None) -> str:
    assert h is not None
    return h.contents.value


def test_hover_shows_schema_types_constant_values_and_rule_summaries(tmp_path):
    _schema, rules = _write_set(tmp_path)

    async def scenario(s: Session):
        uri = s.open(rules, RULES)
        await s.settle(uri, lambda ds: True)
        line, char = _pos(RULES, "region", 2)
        h = _hover_text(await s.client.text_document_hover_async(types.HoverParams(**s.doc(uri, line, char))))
        assert "agent.region: string" in h
        line, char = _pos(RULES, "REGIONS", 1)
        h = _hover_text(await s.client.text_document_hover_async(types.HoverParams(**s.doc(uri, line, char))))
        assert 'const REGIONS = ["eu", "us"]' in h
        line, char = _pos(RULES, "permit", 1)
        h = _hover_text(await s.client.text_document_hover_async(types.HoverParams(**s.doc(uri, line, char))))
        assert "agents-read" in h and "permit agent to read on repo" in h and "agents read in their regions" in h
        # a folded constant shows its value
        s.change(uri, RULES.replace("principal.region in REGIONS", "principal.trust < LIMIT"))
        await s.settle(uri, lambda ds: not ds)
        text = RULES.replace("principal.region in REGIONS", "principal.trust < LIMIT")
        line, char = _pos(text, "LIMIT", 1)
        h = _hover_text(await s.client.text_document_hover_async(types.HoverParams(**s.doc(uri, line, char))))
        assert "const LIMIT = 2 + 3" in h and "value: 5" in h
        line, char = _pos(text, "trust", 1)
        h = _hover_text(await s.client.text_document_hover_async(types.HoverParams(**s.doc(uri, line, char))))
        assert "agent.trust: number?" in h

    run(tmp_path, scenario)


def _labels(result) -> set[str]:
    items = result.items if isinstance(result, types.CompletionList) else result
    return {i.label for i in items}


def test_completion_of_attributes_names_kinds_actions_and_types(tmp_path):
    _schema, rules = _write_set(tmp_path)

    async def scenario(s: Session):
        text = RULES + '\npermit agent to read on repo\n  when principal.'
        uri = s.open(rules, text)
        await s.settle(uri, lambda ds: bool(ds))  # the unfinished rule is an E001
        last = text.count("\n")
        end = len(text.rsplit("\n", 1)[1])

        async def complete(t: str, line: int, char: int) -> set[str]:
            s.change(uri, t)
            return _labels(await s.client.text_document_completion_async(
                types.CompletionParams(**s.doc(uri, line, char))))

        labels = await complete(text, last, end)
        assert {"region", "trust", "id", "kind"} <= labels
        assert "groups" not in labels  # the rule targets agents, not humans
        labels = await complete(text[:-len("principal.")], last, end - len("principal."))
        assert {"principal", "resource", "context", "risk", "REGIONS", "LIMIT"} <= labels
        t = RULES + "\npermit "
        labels = await complete(t, t.count("\n"), len("permit "))
        assert labels >= {"agent", "human"} and "repo" not in labels
        t = RULES + "\npermit agent to "
        labels = await complete(t, t.count("\n"), len("permit agent to "))
        assert labels >= {"read", "write"} and "agent" not in labels
        t = RULES + "\npermit agent to read on "
        labels = await complete(t, t.count("\n"), len("permit agent to read on "))
        assert "repo" in labels and "agent" not in labels
        t = RULES + "\nresource doc { title: "
        labels = await complete(t, t.count("\n"), len("resource doc { title: "))
        assert {"string", "number", "bool", "set"} <= labels
        t = RULES + "\npermit agent to read on repo when context."
        labels = await complete(t, t.count("\n"), len(t.rsplit("\n", 1)[1]))
        assert labels == {"ip"}

    run(tmp_path, scenario)


def test_go_to_definition_of_constants_kinds_and_attributes(tmp_path):
    schema, rules = _write_set(tmp_path)
    schema_uri = from_fs_path(str(schema))

    async def scenario(s: Session):
        uri = s.open(rules, RULES)
        await s.settle(uri, lambda ds: True)

        async def define(needle: str, offset: int = 1):
            line, char = _pos(RULES, needle, offset)
            result = await s.client.text_document_definition_async(types.DefinitionParams(**s.doc(uri, line, char)))
            assert result is not None and len(result) == 1
            return result[0]

        loc = await define("REGIONS")
        assert loc.uri == schema_uri
        line, char = _pos(SCHEMA, "REGIONS")
        assert loc.range.start == types.Position(line=line, character=char)
        assert loc.range.end == types.Position(line=line, character=char + len("REGIONS"))
        loc = await define("agent to")
        assert loc.uri == schema_uri
        assert loc.range.start == types.Position(line=0, character=len("principal "))
        loc = await define("repo")
        assert (loc.range.start.line, loc.range.start.character) == _pos(SCHEMA, "repo")
        loc = await define("read on")
        assert (loc.range.start.line, loc.range.start.character) == _pos(SCHEMA, "read")
        loc = await define("owner ==")
        assert (loc.range.start.line, loc.range.start.character) == _pos(SCHEMA, "owner")

    run(tmp_path, scenario)


def test_importing_policylang_does_not_import_pygls():
    import subprocess
    code = "import sys, policylang, policylang.cli; print('pygls' in sys.modules, 'lsprotocol' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_the_set_stops_at_the_workspace_folder(tmp_path):
    (tmp_path / "outer.policy").write_text("permit agent to\n")  # above the workspace: not part of its sets
    ws = tmp_path / "ws"
    ws.mkdir()
    _schema, rules = _write_set(ws)
    outer_uri = from_fs_path(str(tmp_path / "outer.policy"))

    async def scenario(s: Session):
        uri = s.open(rules, RULES)
        assert await s.settle(uri, lambda ds: True) == []
        assert outer_uri not in s.diagnostics

    run(ws, scenario)


def test_closing_a_buffer_brings_back_the_disks_text_and_symlinked_paths_keep_their_uri(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    _schema, _rules = _write_set(real)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    rules = link / "rules.policy"  # the editor opens the file through the symlink

    async def scenario(s: Session):
        uri = s.open(rules, RULES.replace("resource.owner", "resource.ownr"))
        diags = await s.settle(uri, lambda ds: bool(ds))
        assert [d.code for d in diags] == ["E004"]
        s.client.text_document_did_close(types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
        assert await s.settle(uri, lambda ds: not ds) == []  # the file on disk is fine
        uri = s.open(rules, RULES + "\npermit agent to read on repo when risk.")
        text = RULES + "\npermit agent to read on repo when risk."
        result = await s.client.text_document_completion_async(types.CompletionParams(
            **s.doc(uri, text.count("\n"), len(text.rsplit("\n", 1)[1]))))
        assert _labels(result) == {"score", "signals"}

    run(link, scenario)


def test_an_untitled_buffer_is_a_set_of_its_own(tmp_path):
    text = SCHEMA + RULES.replace("REGIONS", "REGINS")

    async def scenario(s: Session):
        uri = "untitled:Untitled-1"
        s.versions[uri] = 1
        s.client.text_document_did_open(types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="policylang", version=1, text=text)))
        diags = await s.settle(uri, lambda ds: any(d.code == "E002" for d in ds))
        d = next(d for d in diags if d.code == "E002")
        assert (d.range.start.line, d.range.start.character) == _pos(text, "REGINS")
        line, char = _pos(text, "LIMIT")
        h = _hover_text(await s.client.text_document_hover_async(types.HoverParams(**s.doc(uri, line, char))))
        assert "const LIMIT = 2 + 3" in h
        s.change(uri, SCHEMA + RULES)
        await s.settle(uri, lambda ds: not any(d.severity == types.DiagnosticSeverity.Error for d in ds))
        line, char = _pos(SCHEMA + RULES, "in REGIONS", 4)
        result = await s.client.text_document_definition_async(types.DefinitionParams(**s.doc(uri, line, char)))
        assert [(loc.uri, loc.range.start) for loc in result] == [(uri, types.Position(line=5, character=6))]

    run(tmp_path, scenario)
