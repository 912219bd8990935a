"""``policylang fmt PATH…``: rewrite policy files in the canonical layout (docs/cli.md).

Exit 0 when every file is (now) formatted; 1 when a file does not parse, cannot be read
or written, or, under ``--check``, would change; 2 for usage errors. A file that fails
is left untouched and the others are still processed.
"""

from __future__ import annotations

import difflib
import os
import sys

import click

from ..fileio import read_input, write_atomically

DESCRIPTION = "Rewrite policy files in the canonical layout."


def _collect(paths: tuple[str, ...]) -> list[str]:
    """The files to format, as the user can open them: files as given, then the sorted
    ``*.policy`` files under each directory. A file reached twice is formatted once."""
    out: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        key = p if p == "-" else os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            out.append(p)

    for given in paths:
        if given != "-" and os.path.isdir(given):
            found = []
            for root, dirs, files in os.walk(given):
                dirs.sort()
                found.extend(os.path.join(root, f) for f in files if f.endswith(".policy"))
            found = [p for p in sorted(found) if os.path.isfile(p)]
            if not found:
                click.echo(f"{given}: no .policy files found", err=True)
            for p in found:
                add(p)
        else:
            add(given)
    return out


def _split_lines(text: str) -> list[str]:
    """Lines with their ``\\n`` (only ``\\n`` ends a line in a policy file)."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1] + "\n\\ No newline at end of file\n")
    return out


def _diff(path: str, old: str, new: str) -> str:
    return "".join(difflib.unified_diff(_split_lines(old), _split_lines(new), f"a/{path}", f"b/{path}"))


def _write(path: str, text: str) -> None:
    """Replace the file's contents atomically, keeping its mode (and any symlink)."""
    write_atomically(path, text, keep_mode=True)


@click.command(name="fmt", help=DESCRIPTION + " Directories are searched recursively for *.policy files; "
               "'-' formats standard input to standard output.")
@click.argument("paths", metavar="PATH...", nargs=-1, required=True,
                type=click.Path(exists=True, allow_dash=True))
@click.option("--check", is_flag=True, help="Change nothing; exit 1 if any file would change.")
@click.option("--diff", "show_diff", is_flag=True, help="Print a unified diff instead of rewriting.")
def command(paths: tuple[str, ...], check: bool, show_diff: bool) -> None:
    from ..language.errors import PolicyError
    from ..language.formatter import FormatterError, format_source

    failed = changed = 0
    for path in _collect(paths):
        display = "<stdin>" if path == "-" else path
        try:
            data = read_input(path)
        except OSError as e:
            click.echo(f"{display}: error: cannot read: {e.strerror or e}", err=True)
            failed += 1
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            click.echo(f"{display}: error: not UTF-8 (byte {e.start}): {e.reason}", err=True)
            failed += 1
            continue
        try:
            new = format_source(text, display)
        except PolicyError as e:
            click.echo(e.render(), err=True)
            failed += 1
            continue
        except FormatterError as e:
            click.echo(f"{e} (the file is left unchanged)", err=True)
            failed += 1
            continue
        except Exception as e:  # never a traceback for a bad file
            click.echo(f"{display}: error: {type(e).__name__}: {e}", err=True)
            failed += 1
            continue
        if path == "-":  # a filter: the result goes to standard output
            if new != text:
                changed += 1
                if check:
                    click.echo(f"would reformat {display}", err=True)
            if show_diff:
                click.echo(_diff(display, text, new), nl=False)
            elif not check:
                click.echo(new, nl=False)
            continue
        if new == text:
            continue
        changed += 1
        if show_diff:
            click.echo(_diff(path, text, new), nl=False)
        if check:
            click.echo(f"would reformat {path}", err=True)
        elif not show_diff:
            try:
                _write(path, new)
            except OSError as e:
                click.echo(f"{path}: error: cannot write: {e.strerror or e}", err=True)
                failed += 1
                continue
            click.echo(f"reformatted {path}", err=True)
    if failed or (check and changed):
        sys.exit(1)
