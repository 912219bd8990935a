"""``policylang check PATH…``: every diagnostic of each policy set (docs/language.md#what-the-checker-verifies, docs/cli.md).

Each PATH (a ``.policy`` file or a directory, searched recursively) is checked as its
own policy set; every diagnostic is printed, warnings included, even when there are
errors. Formats: ``text`` (``path:line:col: severity[CODE]: message``, the source line
and a caret), ``json`` (``{"diagnostics": […], "errors": N, "warnings": M}``) and
``sarif`` (SARIF 2.1.0 for code scanning). Exit 0 when clean, 1 when there are errors
(or warnings under ``--strict``), 2 for usage errors.

Only the loader and checker are imported: never the engine or compiler, so the command
starts fast enough for editors and pre-commit hooks. ``--prove`` also imports the solver's
lints (policylang/analysis/lints.py, docs/analysis.md#proven-lints; z3 needed, else exit 2).
"""

from __future__ import annotations

import json
import sys

import click

DESCRIPTION = "Check policy sets and print every diagnostic."


@click.command(name="check", help=DESCRIPTION + " Each PATH (a .policy file or a directory, searched "
               "recursively) is its own policy set. Exit 1 when there are errors (or warnings with "
               "--strict).")
@click.argument("paths", metavar="PATH...", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=True, file_okay=True))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text",
              show_default=True, help="Output format.")
@click.option("--strict", is_flag=True, help="Warnings also make the exit status 1.")
@click.option("--set-root", is_flag=True,
              help="Check each .policy FILE as part of the set it belongs to: its directory, and "
                   "upward while the parent directory holds .policy files too (for pre-commit, "
                   "which passes changed files one by one).")
@click.option("--prove", is_flag=True,
              help="Also run the lints the z3 solver proves (W201-W203, notes N201; "
                   "docs/analysis.md#proven-lints) on each set that loads. Needs the analysis "
                   "extra: pip install 'policylang[analysis]'.")
def command(paths: tuple[str, ...], fmt: str, strict: bool, set_root: bool, prove: bool = False) -> None:
    from ..language.loader import check_path

    if prove:
        _need_z3()
    if set_root:
        paths = set_roots(paths)
    diagnostics = []
    empty = []
    for path in paths:
        try:
            policies, diags = check_path(path)
        except Exception as e:  # check_path never raises by contract; never show a traceback anyway
            click.echo(f"{path}: internal error: {type(e).__name__}: {e} (please report this)", err=True)
            sys.exit(1)
        diagnostics.extend(diags)
        if prove and policies is not None and policies.rules:
            try:
                diagnostics.extend(_proven(policies))
            except Exception as e:  # noqa: BLE001 - fail closed with a message, never a traceback
                click.echo(f"{path}: internal error in --prove: {type(e).__name__}: {e} (please report this)",
                           err=True)
                sys.exit(1)
        if policies is not None and not policies.files:
            empty.append(path)

    errors = sum(1 for d in diagnostics if d.severity == "error")
    warnings = sum(1 for d in diagnostics if d.severity == "warning")
    notes = sum(1 for d in diagnostics if d.severity == "note")

    if fmt == "json":
        out = {"diagnostics": [d.to_dict() for d in diagnostics], "errors": errors, "warnings": warnings}
        if prove:
            out["notes"] = notes
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
    elif fmt == "sarif":
        from ..tools.sarif import sarif_log
        click.echo(json.dumps(sarif_log(diagnostics), indent=2, ensure_ascii=False))
    else:
        for d in diagnostics:
            click.echo(d.render())
        sets = "1 policy set" if len(paths) == 1 else f"{len(paths)} policy sets"
        proven = f", {_count(notes, 'note')} (--prove)" if prove else ""
        click.echo(f"checked {sets}: {_count(errors, 'error')}, {_count(warnings, 'warning')}{proven}", err=True)

    for path in empty:  # on stderr in every format
        click.echo(f"error: {path} has no .policy files (is the path right?)", err=True)
    if errors or empty or (strict and warnings):
        # a path without policies is an error: a mis-pointed CI step must not pass
        sys.exit(1)


def _need_z3() -> None:
    import importlib.util

    if importlib.util.find_spec("z3") is None:
        click.echo("error: --prove needs the z3 solver, which is not installed: "
                   "pip install 'policylang[analysis]'", err=True)
        sys.exit(2)


def _proven(policies) -> list:
    """proven_lints of a set that loaded, each with its source line for the caret."""
    from ..analysis.lints import proven_lints

    lines: dict = {}
    out = []
    for d in proven_lints(policies):
        if d.path not in lines:
            try:
                with open(d.path, encoding="utf-8") as f:
                    lines[d.path] = f.read()
            except (OSError, UnicodeDecodeError):
                lines[d.path] = None
        out.append(d.with_line_text(lines[d.path]) if lines[d.path] is not None else d)
    return out


def _has_policies(directory) -> bool:
    return any(f.suffix == ".policy" and f.is_file() for f in directory.iterdir())


def set_roots(paths) -> tuple[str, ...]:
    """Each .policy file replaced by the root of its set (see ``--set-root``), in order,
    without repeats; directories are kept as they are."""
    import os
    from pathlib import Path

    out: dict[str, None] = {}
    for given in paths:
        p = Path(given)
        if p.is_dir():
            out.setdefault(given)
            continue
        root = p.resolve().parent
        while root.parent != root and _has_policies(root.parent):
            root = root.parent
        rel = os.path.relpath(root)
        out.setdefault(rel if not rel.startswith("..") else str(root))
    return tuple(out)


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")
