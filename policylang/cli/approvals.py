"""``policylang approvals``: list, approve and deny approval tickets (docs/zero-standing-privilege.md).

Each ticket is shown with the request it is bound to (principal, action, resource and
their attributes, context, delegation chain, intent: a redacted key shows
``[redacted]``) and its digest; ``--format json`` gives the canonical ``request``,
``summary`` and ``digest`` fields. ``--as`` names the approver; it is not authentication. Whoever can write the store can
approve, so guard the store.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time

import click

from ..language.policyset import merge_entities


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _load_entities(paths: tuple[str, ...]) -> dict:
    """Merge entity files ``{"<kind>": {"<id>": {attrs}}}``; later files win per id."""
    from ..language.loader import parse_entities

    merged: dict = {}
    for path in paths:
        try:
            with open(path, "r", encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            _fail(f"cannot read entity file {path}: {getattr(e, 'strerror', None) or e}")
        data, diag = parse_entities(text, path)
        if diag is not None:
            _fail(diag.header())
        merge_entities(merged, data)
    return merged


def _approvals(store_url: str, entity_paths: tuple[str, ...]):
    from ..privilege.approvals import Approvals
    from ..privilege.store import StoreError, open_store

    try:
        store = open_store(store_url, create=False)
    except StoreError as e:
        _fail(str(e))
    return Approvals(store, entities=_load_entities(entity_paths) if entity_paths else None)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _line(t) -> str:
    resource = t.resource_type + (f" {t.resource_id}" if t.resource_id is not None else "")
    left = t.expires_at - time.time()
    expiry = f"expires {_when(t.expires_at)}" if left > 0 else f"expired {_when(t.expires_at)}"
    parts = [t.id, t.status, f"{t.principal} -> {t.action} {resource}"]
    if t.task:
        parts.append(f"task {t.task}")
    if t.delegation:
        parts.append("via " + " > ".join(t.delegation))
    parts.append("by " + ", ".join(t.approvers))
    if t.approvals:
        parts.append("approved by " + ", ".join(a.get("approver", "?") for a in t.approvals))
    if t.denied_by:
        parts.append(f"denied by {t.denied_by}")
    if t.single_use:
        parts.append("single-use" + (f", used {_when(t.used_at)}" if t.used_at is not None else ""))
    parts.append(expiry)
    line = "  ".join(parts)
    # what is approved: the whole request the ticket is bound to (redacted keys hidden)
    if t.summary:
        line += f"\n    request: {t.summary}"
    line += f"\n    digest:  {t.digest}" if t.digest else "\n    digest:  none (an unbound ticket: it confirms nothing)"
    return line


_STORE = click.option("--store", "store_url", required=True,
                      help="Store URL (sqlite:///FILE or redis://HOST:PORT/DB).")


@click.group(name="approvals", help="List, approve and deny approval tickets.")
def command() -> None:
    pass


@command.command(name="list", help="List open tickets (all of them with --all); with --as, those APPROVER may decide.")
@_STORE
@click.option("--entities", "entity_paths", multiple=True, type=click.Path(dir_okay=False),
              help="Entity file with the approvers (kind human, attr groups). Repeatable.")
@click.option("--as", "approver", default=None, help="Only tickets this approver may decide.")
@click.option("--all", "show_all", is_flag=True, help="Include denied and expired tickets.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def list_cmd(store_url, entity_paths, approver, show_all, fmt) -> None:
    from ..privilege.store import StoreError

    if approver is not None and not entity_paths:
        raise click.UsageError("--as needs --entities (approvers are looked up in entity data)")
    approvals = _approvals(store_url, entity_paths)
    try:
        tickets = approvals.list(approver=approver, include_closed=show_all)
    except StoreError as e:
        _fail(f"store unreachable: {e}")
    finally:
        approvals.store.close()
    if fmt == "json":
        click.echo(json.dumps({"approvals": [t.to_dict() for t in tickets]}, indent=2))
        return
    for t in tickets:
        click.echo(_line(t))
    if not tickets:
        click.echo("no tickets", err=True)


def _decide(verb: str):
    @click.argument("approval_id", metavar="ID")
    @_STORE
    @click.option("--entities", "entity_paths", multiple=True, required=True,
                  type=click.Path(dir_okay=False), help="Entity file with the approvers. Repeatable.")
    @click.option("--as", "approver", required=True, help="The approver's id (kind human in the entity data).")
    def cmd(approval_id, store_url, entity_paths, approver) -> None:
        from ..privilege.approvals import ApprovalError
        from ..privilege.store import StoreError

        approvals = _approvals(store_url, entity_paths)
        try:
            act = approvals.approve if verb == "approve" else approvals.deny
            ticket = act(approval_id, approver=approver)
        except ApprovalError as e:
            _fail(str(e))
        except StoreError as e:
            _fail(f"store unreachable, nothing recorded: {e}")
        finally:
            approvals.store.close()
        click.echo(f"{'approved' if verb == 'approve' else 'denied'} {ticket.id} as {approver}")
        click.echo(_line(ticket))

    return cmd


command.command(name="approve", help="Approve ticket ID as APPROVER.")(_decide("approve"))
command.command(name="deny", help="Deny ticket ID as APPROVER (final).")(_decide("deny"))
