"""``policylang test PATH…``: run YAML test suites against policy sets (docs/cli.md).

A PATH is a suite file or a directory searched recursively for ``*.yaml``/``*.yml``
suites (the format is in :mod:`policylang.tools.testrunner` and docs/cli.md). Each failure is
printed with the case, the expected and actual decision and the explain trace; the last
line is ``N passed, M failed``. Exit 1 on any failure (a malformed suite is one), 0
otherwise, 2 for usage errors.
"""

from __future__ import annotations

import sys

import click

DESCRIPTION = "Run YAML test suites against policy sets."


@click.command(name="test", help=DESCRIPTION + " A PATH is a suite file or a directory of *.yaml/*.yml "
               "suites (searched recursively). The last line is 'N passed, M failed'; exit 1 on any failure.")
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--coverage", is_flag=True, help="List, with file:line, the rules that held in no case.")
@click.option("--junit", "junit_path", metavar="FILE", type=click.Path(dir_okay=False, writable=True),
              help="Also write the results as JUnit XML to FILE.")
@click.option("-v", "--verbose", is_flag=True, help="Also list the cases that passed.")
def command(paths: tuple[str, ...], coverage: bool, junit_path: str | None, verbose: bool) -> None:
    from ..tools import testrunner

    runner = testrunner.Runner(coverage=coverage)
    results = runner.run(paths)

    for suite in results:
        if suite.error is not None:
            click.echo(testrunner.render_suite_error(suite) + "\n")
        for case in suite.cases:
            if not case.passed:
                click.echo(testrunner.render_failure(case) + "\n")
            elif verbose:
                click.echo(f"ok   {case.where}: {case.name}")

    if coverage and runner.coverage:
        click.echo(testrunner.render_coverage(runner.coverage.values()))

    passed, failed = testrunner.totals(results)
    junit_failed = False
    if junit_path is not None:
        try:
            with open(junit_path, "w", encoding="utf-8") as f:
                f.write(testrunner.junit_xml(results))
        except OSError as e:
            click.echo(f"error: cannot write {junit_path}: {e.strerror or e}", err=True)
            junit_failed = True

    click.echo(f"{passed} passed, {failed} failed")
    if failed or junit_failed:
        sys.exit(1)
