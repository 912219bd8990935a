"""``policylang token``: inspect and revoke task credentials (docs/zero-standing-privilege.md).

``verify JWT --keys FILE [--scope S] [--store URL]`` prints the claims of a valid token
(exit 0) or why it was refused (exit 1). Without ``--store`` revocation is not checked,
and it says so. ``revoke JTI|--task ID --store URL`` revokes one token or every token of
a task. ``keygen``, ``rotate`` and ``jwks`` manage the key file.
"""

from __future__ import annotations

import json
import os
import sys

import click


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _load_keys(path: str):
    from ..privilege.credentials import KeySet

    try:
        return KeySet.load(path)
    except OSError as e:
        _fail(f"cannot read key file {path}: {e.strerror or e}")
    except ValueError as e:
        _fail(f"bad key file: {e}")


def _open_store(url: str | None):
    if url is None:
        return None
    from ..privilege.store import StoreError, open_store

    try:
        return open_store(url, create=False)
    except StoreError as e:
        _fail(str(e))


def _unverified_issuer(token: str) -> str:
    """The token's own ``iss`` (used when --issuer is not given); '' when unreadable."""
    import jwt as pyjwt

    try:
        iss = pyjwt.decode(token, options={"verify_signature": False}).get("iss")
    except Exception:
        return ""
    return iss if isinstance(iss, str) else ""


@click.group(name="token", help="Verify, revoke and sign task credentials (JWTs).")
def command() -> None:
    pass


@command.command(name="verify", help="Check a token. JWT may be '-' to read it from standard input.")
@click.argument("jwt_text", metavar="JWT")
@click.option("--keys", "keys_path", required=True, type=click.Path(dir_okay=False),
              help="Key file (from `token keygen`) or a JWKS document.")
@click.option("--scope", default=None, help="Require this scope.")
@click.option("--audience", default=None, help="Require this audience (resource id).")
@click.option("--issuer", default=None, help="Require this issuer (default: accept the token's own iss).")
@click.option("--store", "store_url", default=None, help="Store URL, to check revocation.")
@click.option("--leeway", default=0.0, type=click.FloatRange(min=0), show_default=True,
              help="Clock leeway in seconds (at most 300).")
def verify_cmd(jwt_text: str, keys_path: str, scope, audience, issuer, store_url, leeway) -> None:
    from ..privilege.credentials import Issuer, TokenError
    from ..privilege.store import StoreError

    if jwt_text == "-":
        jwt_text = sys.stdin.read()
    jwt_text = jwt_text.strip()
    keys = _load_keys(keys_path)
    store = _open_store(store_url)
    warnings = []
    if issuer is None:
        issuer = _unverified_issuer(jwt_text) or "(unknown)"
        warnings.append(f"issuer not checked (token says {issuer!r}; pass --issuer)")
    if store is None:
        warnings.append("revocation was not checked (pass --store URL)")
    try:
        claims = Issuer(keys, store, issuer=issuer).verify(jwt_text, scope=scope, audience=audience,
                                                           leeway=leeway)
    except TokenError as e:
        _fail(f"token rejected ({e.reason}): {e}")
    except StoreError as e:
        _fail(f"store unreachable, token not accepted: {e}")
    except ValueError as e:
        _fail(str(e))
    finally:
        if store is not None:
            store.close()
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    click.echo(json.dumps(claims, indent=2, sort_keys=True))


@command.command(name="revoke", help="Revoke a token by its jti, or every token of a task (--task).")
@click.argument("jti", required=False)
@click.option("--task", "task_id", default=None, help="Revoke every token of this task, and its future issues.")
@click.option("--store", "store_url", required=True, help="Store URL (sqlite:///FILE or redis://HOST:PORT/DB).")
@click.option("--audit", "audit_path", default=None, type=click.Path(dir_okay=False),
              help="Append the revocation to this audit log.")
@click.option("--max-task-lifetime", default=8 * 3600, type=click.IntRange(min=1), show_default=True,
              help="Seconds to keep a revocation of a jti the store never saw issued.")
def revoke_cmd(jti, task_id, store_url, audit_path, max_task_lifetime) -> None:
    from ..privilege.audit import AuditError, AuditLog
    from ..privilege.credentials import Issuer
    from ..privilege.store import StoreError

    if (jti is None) == (task_id is None):
        raise click.UsageError("give exactly one of JTI or --task ID")
    store = _open_store(store_url)
    audit = AuditLog(audit_path) if audit_path else None
    issuer = Issuer(None, store, issuer="policylang-cli", max_task_lifetime=max_task_lifetime, audit=audit)
    try:
        if jti is not None:
            issuer.revoke(jti)
            click.echo(f"revoked {jti}")
        else:
            jtis = issuer.revoke_task(task_id)
            click.echo(f"revoked task {task_id} ({len(jtis)} live token{'s' if len(jtis) != 1 else ''})")
            for j in jtis:
                click.echo(f"  {j}")
    except StoreError as e:
        _fail(f"store unreachable, nothing revoked: {e}")
    except AuditError as e:
        _fail(f"revoked, but the audit record failed: {e}")
    except ValueError as e:
        _fail(str(e))
    finally:
        store.close()


@command.command(name="keygen", help="Create a key file with a new Ed25519 signing key (mode 0600).")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def keygen_cmd(path: str, force: bool) -> None:
    from ..privilege.credentials import KeySet

    if os.path.exists(path) and not force:
        _fail(f"{path} exists (pass --force to overwrite)")
    ks = KeySet.generate()
    try:
        ks.save(path)
    except OSError as e:
        _fail(f"cannot write {path}: {e.strerror or e}")
    click.echo(f"wrote {path} (kid {ks.kid})")


@command.command(name="rotate", help="Start signing with a new key; old keys keep verifying their tokens "
                                      "for --keep seconds (0: at once refused, for a compromised key). A "
                                      "running `policylang serve --keys FILE` picks the change up by itself "
                                      "(and on SIGHUP).")
@click.option("--keys", "keys_path", required=True, type=click.Path(dir_okay=False))
@click.option("--keep", default=8 * 3600, type=click.IntRange(min=0), show_default=True,
              help="Seconds the old key keeps verifying (the longest a token it signed may live).")
def rotate_cmd(keys_path: str, keep: int) -> None:
    keys = _load_keys(keys_path)
    if keys.kid is None:
        _fail(f"{keys_path} holds public keys only; rotate the private key file")
    kid = keys.rotate(keep_for=keep)
    try:
        keys.save(keys_path)
    except OSError as e:
        _fail(f"cannot write {keys_path}: {e.strerror or e}")
    click.echo(f"rotated {keys_path}: now signing with kid {kid}")


@command.command(name="jwks", help="Print the public keys (JWKS) of a key file.")
@click.option("--keys", "keys_path", required=True, type=click.Path(dir_okay=False))
def jwks_cmd(keys_path: str) -> None:
    from ..privilege.credentials import Issuer

    keys = _load_keys(keys_path)
    click.echo(json.dumps(Issuer(keys, None, issuer="policylang-cli").jwks(), indent=2))
