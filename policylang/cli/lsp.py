"""``policylang lsp``: the language server over stdio (docs/editors.md).

Editors start it themselves; it speaks the Language Server Protocol on stdin/stdout.
Needs the ``lsp`` extra: ``pip install 'policylang[lsp]'``.
"""

from __future__ import annotations

import click

DESCRIPTION = "Run the language server (LSP over stdio) for editors."


@click.command(name="lsp", help=DESCRIPTION + " Needs the lsp extra (pip install 'policylang[lsp]'); "
               "docs/editors.md sets editors up.")
@click.option("--stdio", is_flag=True, help="Speak over stdin/stdout (the default and only transport; "
              "accepted because many editors pass it).")
def command(stdio: bool) -> None:
    try:
        from ..lsp.server import main
    except ImportError as e:
        if "pygls" not in str(e) and "lsprotocol" not in str(e):
            raise
        raise click.ClickException("the language server needs pygls: pip install 'policylang[lsp]'") from None
    main()


if __name__ == "__main__":
    command()
