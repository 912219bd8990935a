"""``policylang report PATH --controls [--format markdown|html|json] [-o FILE]
[--fail-on-uncovered IDS] [--no-proven]`` (docs/controls.md#usage).

The rules of the set mapped to the OWASP Top 10 for Agentic Applications (2026), the NIST
AI RMF 1.0 and CSA MAESTRO's layers, with the controls no rule covers. Exit 0 when the
report is written; 1 when the set does not load (its diagnostics are printed), when an
``@tag`` names a control that does not exist (R001; the report is still written), or
when a control named by ``--fail-on-uncovered`` is uncovered; 2 for usage errors.
"""

from __future__ import annotations

import sys

import click

DESCRIPTION = "Report which controls (OWASP agentic, NIST AI RMF, MAESTRO) the rules cover."


@click.command(name="report", help=DESCRIPTION + " Exit 1 when the set does not load, a control tag is "
               "unknown, or a control given to --fail-on-uncovered is uncovered.")
@click.argument("path", metavar="PATH", type=click.Path(exists=True, dir_okay=True, file_okay=True))
@click.option("--controls", is_flag=True, help="The controls report (the only report there is; required).")
@click.option("--format", "fmt", type=click.Choice(["markdown", "html", "json"]), default="markdown",
              show_default=True, help="Output format.")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the report to FILE (atomically) instead of standard output.")
@click.option("--fail-on-uncovered", "fail_on", default=None, metavar="IDS",
              help="Comma-separated controls (ASI01,ASI03, MANAGE-2, maestro:L6): exit 1 when one is uncovered.")
@click.option("--proven/--no-proven", default=True, show_default=True,
              help="Also list the solver-proven lints (when z3 and policylang.analysis.lints are present).")
def command(path: str, controls: bool, fmt: str, output: str | None, fail_on: str | None, proven: bool) -> None:
    if not controls:
        raise click.UsageError("say which report: --controls (the only one there is)")
    wanted = _parse_fail_on(fail_on)

    from ..language.loader import check_path
    from ..tools.report import build_report, render

    try:
        policy_set, diags = check_path(path)
    except Exception as e:  # noqa: BLE001 - check_path never raises by contract; never show a traceback anyway
        click.echo(f"{path}: internal error: {type(e).__name__}: {e} (please report this)", err=True)
        sys.exit(1)
    if policy_set is None:
        for d in diags:
            click.echo(d.render(), err=True)
        errors = sum(1 for d in diags if d.severity == "error")
        click.echo(f"{path}: the policy set does not load ({errors} error{'' if errors == 1 else 's'}); "
                   f"no report written", err=True)
        sys.exit(1)
    if not policy_set.files:
        click.echo(f"error: {path} has no .policy files (is the path right?)", err=True)
        sys.exit(1)

    report = build_report(policy_set, proven=proven, path=path)
    lines = {}
    for d in report.diagnostics:
        text = policy_set.sources.get(d.path)
        if text is not None and d.path not in lines:
            lines[d.path] = text.splitlines()
        click.echo((d.with_line_text(lines[d.path]) if d.path in lines else d).render(), err=True)

    text = render(report, fmt)
    if output:
        from ..fileio import write_atomically
        try:
            write_atomically(output, text)
        except OSError as e:
            click.echo(f"error: cannot write {output}: {e.strerror or e}", err=True)
            sys.exit(1)
    else:
        click.echo(text, nl=False)

    from ..tools.controls import FRAMEWORKS
    parts = []
    for fw in FRAMEWORKS:
        missing = len(report.uncovered(fw))
        parts.append(f"{fw.key} {len(fw.controls) - missing}/{len(fw.controls)}")
    click.echo(f"{'wrote ' + output + ': ' if output else ''}controls covered: {', '.join(parts)}", err=True)

    status = 1 if report.errors else 0
    if wanted:
        uncovered = [c for c in wanted if not report.covered(c)]
        if uncovered:
            click.echo("uncovered (--fail-on-uncovered): " + ", ".join(c.id for c in uncovered), err=True)
            status = 1
    sys.exit(status)


def _parse_fail_on(text: str | None):
    if text is None:
        return []
    from ..tools.controls import resolve_control
    out = []
    for part in text.split(","):
        if not part.strip():
            continue
        control = resolve_control(part.strip())
        if control is None:
            raise click.BadParameter(f"{part.strip()!r} names no known control (ASI01…ASI10, GOVERN…MANAGE 4, "
                                     f"L1…L7; docs/controls.md)", param_hint="--fail-on-uncovered")
        out.append(control)
    if not out:
        raise click.BadParameter("name at least one control", param_hint="--fail-on-uncovered")
    return out
