"""``policylang eval PATH --request FILE|- [--entities FILE] [--explain]`` (docs/cli.md).

Prints the decision JSON (docs/requests.md#decision, indented) or, with ``--explain``, the readable trace.
Exit 0 whenever a decision is printed (``deny`` included); 1 with a one-line message for
a request that is not JSON or is malformed, an entity file that is not valid, or a
policy set with errors; 2 for usage errors (unknown option, missing PATH or
``--request``, a file that does not exist).
"""

from __future__ import annotations

import json
import sys

import click

from ..fileio import read_input

DESCRIPTION = "Decide one request against a policy set."


def _fail(message: str) -> None:
    """One line on stderr, exit 1 (never a traceback)."""
    click.echo("error: " + " ".join(message.split()), err=True)
    sys.exit(1)


def _read(path: str, what: str) -> str:
    try:
        data = read_input(path)
    except OSError as e:
        _fail(f"{what} {path}: cannot read: {e.strerror or e}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        _fail(f"{what} {_shown(path)}: not UTF-8 (byte {e.start})")
    raise AssertionError  # unreachable


def _shown(path: str) -> str:
    return "<stdin>" if path == "-" else path


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


@click.command(name="eval", help=DESCRIPTION + " PATH is a .policy file or a directory. '--request -' reads "
               "the request from standard input. Exit 0 whenever a decision is printed, deny included.")
@click.argument("path", metavar="PATH", type=click.Path(exists=True))
@click.option("--request", "request_path", metavar="FILE", required=True,
              type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="The request (docs/requests.md#request JSON); '-' for standard input.")
@click.option("--entities", "entities_path", metavar="FILE", type=click.Path(exists=True, dir_okay=False),
              help="More entity data {kind_or_type: {id: attrs}}; wins over the set's *.entities.json.")
@click.option("--explain", is_flag=True, help="Print a readable trace instead of the decision JSON.")
def command(path: str, request_path: str, entities_path: str | None, explain: bool) -> None:
    from ..language import loader
    from ..language.errors import PolicyError, RequestError

    text = _read(request_path, "request")
    try:
        request = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as e:
        _fail(f"request {_shown(request_path)} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}")
    except ValueError as e:
        _fail(f"request {_shown(request_path)}: {e}")
    except RecursionError:
        _fail(f"request {_shown(request_path)} nests too deeply")

    entities = None
    if entities_path is not None:
        data, problem = loader.parse_entities(_read(entities_path, "entities"), entities_path)
        if problem is not None:
            _fail(problem.header())
        entities = data

    try:
        policies = loader.load(path)
    except PolicyError as e:
        n = sum(1 for d in e.diagnostics if d.severity == "error")
        first = next((d for d in e.diagnostics if d.severity == "error"), None)
        head = first.header() if first else str(e)
        more = f" (and {n - 1} more error{'s' if n > 2 else ''}; run 'policylang check {path}')" if n > 1 else ""
        _fail(f"policy set {path} does not load: {head}{more}")

    from ..evaluation.engine import Engine

    engine = Engine(policies, entities=entities, cache_size=0, strict=True)
    try:
        decision = engine.decide(request)
    except RequestError as e:
        _fail(f"bad request: {e}")
    except Exception as e:  # the engine promises RequestError only; never show a traceback
        _fail(f"cannot decide: {type(e).__name__}: {e}")

    if explain:
        click.echo(decision.explain())
    else:
        click.echo(json.dumps(decision.to_dict(), indent=2, ensure_ascii=False))
