"""``policylang audit verify FILE [--head HASH]``: check an audit log's hash chain.

Exit 0 when the chain is intact (and holds ``--head``), 1 naming the first bad line.
An unterminated last line is an interrupted write (a crash mid-append): it is reported
and ignored, and the next append sets it aside.
"""

from __future__ import annotations

import re
import sys

import click

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def _head(ctx, param, value):
    if value is not None and not _HEX64.match(value.strip()):
        raise click.BadParameter("must be a SHA-256 hash (64 hexadecimal digits)")
    return value.strip().lower() if value else None


@click.group(name="audit", help="Work with audit logs.")
def command() -> None:
    pass


@command.command(name="verify", help="Check the hash chain of an audit log. With --head, also "
                                     "require the record with that (anchored) hash to be present.")
@click.argument("path", metavar="FILE", type=click.Path(exists=True, dir_okay=False))
@click.option("--head", default=None, callback=_head, metavar="HASH",
              help="A record hash anchored elsewhere; detects a cut-off tail.")
def verify_cmd(path: str, head) -> None:
    from ..privilege.audit import verify_file

    try:
        result = verify_file(path, head=head)
    except OSError as e:
        click.echo(f"error: cannot read {path}: {e.strerror or e}", err=True)
        sys.exit(1)
    if result.torn_line is not None:
        click.echo(f"{path}:{result.torn_line}: warning: incomplete last record "
                   "(an interrupted write), ignored", err=True)
    if not result.ok:
        click.echo(f"{path}:{result.line}: error: {result.message}", err=True)
        sys.exit(1)
    click.echo(f"{path}: ok, {result.records} record{'s' if result.records != 1 else ''}, head {result.head}")
