"""The policylang language server (``policylang lsp``; docs/editors.md).

Needs the ``lsp`` extra (pygls). :mod:`policylang.lsp.analysis` holds what the server knows
about a policy set and imports no LSP library; :mod:`policylang.lsp.server` is the server.
"""
