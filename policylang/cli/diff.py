"""``policylang diff OLD NEW [--format text|json|sarif] [--fail-on new-allow]`` (docs/cli.md#diff, docs/analysis.md#diff).

For every (kind, action, type) either set mentions, the requests whose decision differs,
as concrete example requests (each replayed through the engine), grouped by change and
by the rules responsible. Exit 0; 1 with ``--fail-on new-allow`` when some request is
newly allowed, or when a set does not load; 2 for usage errors.
"""

from __future__ import annotations

import json
import sys

import click

DESCRIPTION = "Find requests whose decision differs between two policy sets (needs the analysis extra)."


def _fail(message: str) -> None:
    click.echo("error: " + " ".join(message.split()), err=True)
    sys.exit(1)


def load_set(path: str):
    from ..language import loader
    from ..language.errors import PolicyError
    try:
        return loader.load(path)
    except PolicyError as e:
        first = next((d for d in e.diagnostics if d.severity == "error"), None)
        _fail(f"policy set {path} does not load: {first.header() if first else e}")


def need_z3() -> None:
    try:
        import z3  # noqa: F401
    except ImportError:
        _fail("this command needs z3: pip install 'policylang[analysis]'")


def render_text(result) -> str:
    lines = []
    groups = result.groups()
    if not groups:
        lines.append("no decision differs" + (" (within the encoding's bounds)" if not result.incomplete else
                                              " where the encoding is complete"))
    for change, by_rules in groups.items():
        n = sum(len(v) for v in by_rules.values())
        lines.append(f"{change}: {n} example{'s' if n != 1 else ''}")
        for (old_rules, new_rules), findings in by_rules.items():
            lines.append(f"  old rules: {', '.join(old_rules) or '(none)'}; new rules: {', '.join(new_rules) or '(none)'}")
            for f in findings:
                lines.append(f"    {f.kind} {f.action} {f.type}: {f.old} -> {f.new}")
                lines.append("      request: " + json.dumps(f.request, ensure_ascii=False, sort_keys=True))
    for inc in result.incomplete:
        lines.append(f"incomplete: {inc['kind']} {inc['action']} {inc['type']}: {inc['reason']}")
    for u in result.unconfirmed:
        lines.append(f"unconfirmed (not reported as a finding): {u['kind']} {u['action']} {u['type']}")
    lines.append(f"checked {result.checked} (kind, action, type) triples, {result.skipped_identical} identical; "
                 f"lists bounded at {result.list_bound} items; {result.seconds:.2f}s")
    for a in sorted(result.assumptions):
        lines.append(f"the proofs assume {a}")
    return "\n".join(lines)


def render_sarif(result) -> dict:
    results = []
    for f in result.findings:
        results.append({
            "ruleId": f.change.replace(" ", "-"),
            "level": "error" if f.new_allow else "warning",
            "message": {"text": f"{f.kind} {f.action} {f.type}: {f.old} -> {f.new} (new rules: "
                                f"{', '.join(f.new_rules) or 'none'}; old rules: {', '.join(f.old_rules) or 'none'}); "
                                f"example request: {json.dumps(f.request, sort_keys=True)}"},
            "properties": f.to_dict(),
        })
    for inc in result.incomplete:
        results.append({"ruleId": "incomplete", "level": "note",
                        "message": {"text": f"incomplete: {inc['kind']} {inc['action']} {inc['type']}: {inc['reason']}"}})
    return {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0",
            "runs": [{"tool": {"driver": {"name": "policylang diff", "rules": []}}, "results": results}]}


@click.command(name="diff", help=DESCRIPTION)
@click.argument("old", metavar="OLD", type=click.Path(exists=True))
@click.argument("new", metavar="NEW", type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default="text", show_default=True)
@click.option("--fail-on", "fail_on", type=click.Choice(["new-allow"]), default=None,
              help="Exit 1 when some request is newly allowed.")
@click.option("--list-bound", type=click.IntRange(0, 8), default=3, show_default=True,
              help="The most items a request list (and the delegation chain) has in the encoding.")
def command(old: str, new: str, fmt: str, fail_on: str | None, list_bound: int) -> None:
    need_z3()
    from ..analysis.solve import diff
    result = diff(load_set(old), load_set(new), list_bound=list_bound)
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    elif fmt == "sarif":
        click.echo(json.dumps(render_sarif(result), indent=2, ensure_ascii=False))
    else:
        click.echo(render_text(result))
    if fail_on == "new-allow" and any(f.new_allow for f in result.findings):
        sys.exit(1)
