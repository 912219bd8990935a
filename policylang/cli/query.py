"""``policylang query PATH --decision allow [--kind K] [--action A] [--type T] [--where EXPR]``
(docs/cli.md#query, docs/analysis.md#query).

Prints a concrete request with that decision (replayed through the engine), or "no such
request" (a proof, within the list bound), or "incomplete: …" naming the construct the
encoding does not express. Exit 0 when a request is found, 1 when none exists or the
answer is incomplete (and for a set that does not load), 2 for usage errors.
"""

from __future__ import annotations

import json
import sys

import click

DESCRIPTION = "Find a request with a given decision, or prove there is none (needs the analysis extra)."


@click.command(name="query", help=DESCRIPTION)
@click.argument("path", metavar="PATH", type=click.Path(exists=True))
@click.option("--decision", type=click.Choice(["allow", "deny", "require_approval"]), required=True)
@click.option("--kind", default=None, help="The principal kind (default: any).")
@click.option("--action", default=None, help="The action (default: any).")
@click.option("--type", "rtype", default=None, help="The resource type (default: any).")
@click.option("--where", default=None, metavar="EXPR", help="A condition the request must satisfy.")
@click.option("--approvals", type=click.Choice(["none", "free"]), default="none", show_default=True,
              help="none: nothing confirms a gate (as eval decides); free: any gate may be confirmed.")
@click.option("--list-bound", type=click.IntRange(0, 8), default=3, show_default=True)
@click.option("--grant-ttl-over", type=click.IntRange(0), default=None, metavar="SECONDS",
              help="Moreover a permit whose grant lasts longer than SECONDS holds.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def command(path, decision, kind, action, rtype, where, approvals, list_bound, grant_ttl_over, fmt) -> None:
    from .diff import _fail, load_set, need_z3
    need_z3()
    from ..analysis.solve import query
    from ..language.errors import PolicyError
    ps = load_set(path)
    try:
        result = query(ps, decision, kind, action, rtype, where=where, approvals=approvals, list_bound=list_bound,
                       grant_ttl_over=grant_ttl_over)
    except PolicyError as e:
        _fail(f"--where does not parse: {e}")
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    elif result.status == "found":
        click.echo(json.dumps(result.request, indent=2, ensure_ascii=False))
        if result.decision and "rules" in result.decision:
            click.echo(f"decision: {result.decision['decision']} by {', '.join(result.decision['rules']) or '(none)'}")
    elif result.status == "none":
        assumes = "".join(f"; assumes {a}" for a in sorted(result.assumptions))
        click.echo(f"no such request (proof: unsatisfiable for {', '.join(result.checked)}; "
                   f"lists bounded at {result.list_bound} items{assumes})")
    else:
        click.echo("incomplete: " + "; ".join(result.reasons))
    sys.exit(0 if result.status == "found" else 1)
