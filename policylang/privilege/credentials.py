"""Just-in-time credentials (docs/zero-standing-privilege.md): short-lived EdDSA JWTs minted from an ``allow``.

The engine decides; the :class:`Issuer` mints a token carrying exactly what the decision
granted, for this task only, and checks tokens for the tools that receive them::

    keys = KeySet.generate()
    issuer = Issuer(keys, open_store("sqlite:///state.db"), issuer="https://pdp.example")
    token = issuer.issue(decision, request)
    claims = issuer.verify(token.jwt, scope="repo:read:acme/api")
    issuer.revoke_task("T-42")

A token's claims: ``iss``; ``sub`` the root of the delegation chain (the principal when
the chain is empty); ``act`` the acting principal, nested as in RFC 8693 with the
current actor outermost and the delegators below it down to the first one after the
root; ``aud`` the resource id (its type when it has none); ``scope`` the grants' scopes,
space-separated; ``iat`` = ``nbf``; ``exp``; ``jti``; ``task``; ``rules``;
``policy_version``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..evaluation.decision import decision_fields
from ..fileio import write_atomically
from ..language.errors import RequestError
from ..evaluation.request import MAX_DELEGATION_DEPTH, task_binding
from .store import Store, StoreError, open_store

__all__ = [
    "KeySet", "Issuer", "Token",
    "TokenError", "BadSignature", "Expired", "NotYetValid", "Revoked", "NotIssued", "ScopeNotGranted",
    "Malformed", "NotAllowed", "TaskIdInUse", "StoreError", "MAX_DELEGATION_DEPTH",
]

log = logging.getLogger("policylang.credentials")

ALG = "EdDSA"
REQUIRED_CLAIMS = ("iss", "sub", "aud", "scope", "iat", "nbf", "exp", "jti", "rules", "policy_version")
_JTI = re.compile(r"^[0-9a-f]{1,128}$")
_KEYSET_FORMAT = "policylang-keyset/1"


# -- errors ---------------------------------------------------------------------------------


class TokenError(Exception):
    """A token was refused. ``reason`` is the subclass name (``"Expired"`` …)."""

    @property
    def reason(self) -> str:
        return type(self).__name__


class BadSignature(TokenError):
    """The signature does not verify, or the issuer, ``kid`` or ``alg`` is wrong."""


class Expired(TokenError):
    """Past ``exp`` (plus leeway)."""


class NotYetValid(TokenError):
    """Before ``nbf`` (minus leeway)."""


class Revoked(TokenError):
    """The token, or its task, was revoked."""


class NotIssued(Revoked):
    """The store has no record of issuing this token (it lost its data, the token was
    minted against another store, or its record was forgotten after its expiry). The
    store is an allow-list: a token verifies only when it knows it was issued."""


class ScopeNotGranted(TokenError):
    """The asked scope is not in the token, or the audience differs."""


class Malformed(TokenError):
    """Not a JWT, or a claim is missing or has the wrong type."""


class NotAllowed(TokenError):
    """A refusal to issue or refresh."""


class TaskIdInUse(NotAllowed):
    """``open_task`` for a task id that was already used (open, bound or revoked)."""


# -- keys -----------------------------------------------------------------------------------


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _thumbprint(pub: Ed25519PublicKey) -> str:
    """The RFC 7638 JWK thumbprint, used as the ``kid``."""
    members = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64u(_raw_public(pub))},
                         separators=(",", ":"), sort_keys=True)
    return _b64u(hashlib.sha256(members.encode("ascii")).digest())


@dataclass
class _Key:
    kid: str
    public: Ed25519PublicKey
    private: Ed25519PrivateKey | None
    created_at: float
    #: when rotate() retired it (None while it is the signing key or a published key)
    retired_at: float | None = None
    #: the latest ``exp`` of a token it signed, as far as this key set knows
    last_exp: float | None = None

    def jwk(self) -> dict:
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64u(_raw_public(self.public)),
                "kid": self.kid, "alg": ALG, "use": "sig"}


class KeySet:
    """Ed25519 signing keys with a ``kid`` each: one signing key, and the keys rotated
    out before it, kept (public part only) until the last token each one signed has
    expired (plus the verifier's leeway).

    A key set loaded from a JWKS document has public keys only: it verifies, it does not
    sign.
    """

    def __init__(self, keys: list[_Key] | None = None):
        self._keys: list[_Key] = list(keys or [])

    # construction and persistence -----------------------------------------------------

    @classmethod
    def generate(cls, *, now: float | None = None) -> "KeySet":
        ks = cls()
        ks._add_new(time.time() if now is None else now)
        return ks

    def _add_new(self, now: float) -> _Key:
        priv = Ed25519PrivateKey.generate()
        key = _Key(_thumbprint(priv.public_key()), priv.public_key(), priv, now)
        self._keys.append(key)
        return key

    def rotate(self, *, now: float | None = None, keep_for: float = 0) -> str:
        """Start signing with a new key; returns its ``kid``. The old signing key loses
        its private part and stays for verification until the last token it signed
        expires (as far as this key set saw it sign). When other processes may have
        signed with it too (a key file shared between replicas, or rotated from the
        command line), pass ``keep_for``: the longest lifetime those tokens can have,
        counted from now."""
        now = time.time() if now is None else now
        for k in self._keys:
            if k.private is not None and k.retired_at is None:
                k.retired_at = now
                k.private = None
                if keep_for > 0:
                    k.last_exp = max(k.last_exp or 0.0, now + keep_for)
        return self._add_new(now).kid

    def save(self, path: str | os.PathLike) -> None:
        """Write the key set (private keys included) to ``path``, mode 0600, atomically."""
        path = os.fspath(path)
        doc = {"format": _KEYSET_FORMAT, "keys": []}
        for k in self._keys:
            entry = {"kid": k.kid, "public": _b64u(_raw_public(k.public)), "created_at": k.created_at,
                     "retired_at": k.retired_at, "last_exp": k.last_exp}
            if k.private is not None:
                entry["private"] = _b64u(k.private.private_bytes(
                    serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                    serialization.NoEncryption()))
            doc["keys"].append(entry)
        write_atomically(path, json.dumps(doc, indent=2) + "\n", mode=0o600)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KeySet":
        """Read a key set written by :meth:`save`, or a JWKS document (public keys,
        verification only). Raises ValueError for a file that is neither; OSError when
        it cannot be read."""
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
        try:
            doc = json.loads(text)
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)}: not JSON ({e})") from None
        try:
            return cls.from_dict(doc)
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)}: {e}") from None

    @classmethod
    def from_dict(cls, doc: Any) -> "KeySet":
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise ValueError('not a key set: expected {"keys": [...]}')
        keys = []
        for i, e in enumerate(doc["keys"]):
            where = f"keys[{i}]"
            if not isinstance(e, dict):
                raise ValueError(f"{where}: not an object")
            try:
                if doc.get("format") == _KEYSET_FORMAT:
                    pub = Ed25519PublicKey.from_public_bytes(_b64u_decode(e["public"]))
                    priv = (Ed25519PrivateKey.from_private_bytes(_b64u_decode(e["private"]))
                            if e.get("private") else None)
                    if priv is not None and _raw_public(priv.public_key()) != _raw_public(pub):
                        raise ValueError("private key does not match public key")
                    key = _Key(str(e["kid"]), pub, priv, float(e.get("created_at") or 0),
                               _opt_float(e.get("retired_at")), _opt_float(e.get("last_exp")))
                else:  # a JWKS: public Ed25519 keys
                    if e.get("kty") != "OKP" or e.get("crv") != "Ed25519":
                        continue  # other key types are not ours to use
                    pub = Ed25519PublicKey.from_public_bytes(_b64u_decode(e["x"]))
                    key = _Key(str(e.get("kid") or _thumbprint(pub)), pub, None, 0.0)
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
            except (KeyError, TypeError, AttributeError) as err:
                raise ValueError(f"{where}: missing or malformed field {err}") from None
            keys.append(key)
        if not keys:
            raise ValueError("no Ed25519 key in the key set")
        return cls(keys)

    # queries ---------------------------------------------------------------------------

    @property
    def kid(self) -> str | None:
        """The signing key's kid (None for a verification-only key set)."""
        k = self._signing()
        return k.kid if k else None

    def _signing(self) -> _Key | None:
        for k in reversed(self._keys):
            if k.private is not None and k.retired_at is None:
                return k
        return None

    def _live(self, k: _Key, now: float, keep: float) -> bool:
        if k.retired_at is None:
            return True
        return k.last_exp is not None and now <= k.last_exp + keep

    def verification_key(self, kid: str, now: float, keep: float) -> Ed25519PublicKey | None:
        for k in self._keys:
            if k.kid == kid and self._live(k, now, keep):
                return k.public
        return None

    def public_jwks(self, now: float, keep: float) -> dict:
        return {"keys": [k.jwk() for k in self._keys if self._live(k, now, keep)]}

    def kids(self) -> list[str]:
        return [k.kid for k in self._keys]

    def _note_signed(self, kid: str, exp: float) -> None:
        for k in self._keys:
            if k.kid == kid:
                k.last_exp = exp if k.last_exp is None else max(k.last_exp, exp)

    def __repr__(self) -> str:
        return f"<KeySet signing={self.kid} keys={len(self._keys)}>"


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


# -- requests and decisions ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Subject:
    """What a token is about, read from a request (docs/requests.md#request)."""

    principal: str
    chain: tuple[str, ...]
    aud: str
    task: str | None

    @property
    def sub(self) -> str:
        return self.chain[0] if self.chain else self.principal

    @property
    def act(self) -> dict | None:
        if not self.chain:
            return None
        act: dict = {"sub": self.principal}
        cur = act
        for d in reversed(self.chain[1:]):
            cur["act"] = {"sub": d}
            cur = cur["act"]
        return act

    @property
    def path(self) -> list[str]:
        return [*self.chain, self.principal]

    @classmethod
    def of(cls, request: Any) -> "_Subject":
        try:
            b = task_binding(request, strict=True)
        except RequestError as e:
            raise NotAllowed(f"malformed request: {e}") from None
        if len(b["delegation"]) > MAX_DELEGATION_DEPTH:
            raise NotAllowed(f"delegation: at most {MAX_DELEGATION_DEPTH} hops, got {len(b['delegation'])}")
        return cls(b["principal"], tuple(b["delegation"]), b["resource_id"] or b["resource_type"], b["task"])


def _decision_dict(decision: Any) -> dict:
    try:
        return decision_fields(decision)
    except TypeError:
        raise NotAllowed("not a decision") from None


def _grants(d: dict) -> tuple[list[str], int]:
    """The union of the grants' scopes (first-seen order) and the smallest ttl."""
    if d.get("decision") != "allow":
        raise NotAllowed(f"the decision is {d.get('decision')!r}, not 'allow': nothing to mint")
    grants = d.get("grants")
    if not isinstance(grants, (list, tuple)) or not grants:
        raise NotAllowed("the allow carries no grant: nothing to mint")
    scopes: list[str] = []
    ttls = []
    for g in grants:
        g = g if isinstance(g, Mapping) else getattr(g, "__dict__", {})
        ss, ttl = g.get("scopes"), g.get("ttl")
        if not isinstance(ss, (list, tuple)) or not ss:
            raise NotAllowed(f"grant of rule {g.get('rule')!r} has no scopes")
        for s in ss:
            if not isinstance(s, str) or not s or any(c.isspace() for c in s):
                raise NotAllowed(f"grant of rule {g.get('rule')!r}: scope {s!r} is empty, "
                                 "not a string, or contains whitespace")
            if s not in scopes:
                scopes.append(s)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0:
            raise NotAllowed(f"grant of rule {g.get('rule')!r} has no positive ttl")
        ttls.append(int(ttl))
    return scopes, min(ttls)


# -- tokens -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    jwt: str
    jti: str
    expires_at: int
    scopes: tuple[str, ...]
    claims: dict = field(default_factory=dict, compare=False, repr=False)

    def to_dict(self) -> dict:
        return {"token": self.jwt, "jti": self.jti, "expires_at": self.expires_at,
                "scopes": list(self.scopes)}


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_act(act: Any) -> bool:
    """``{"sub": str, "act": …}`` nested at most MAX_DELEGATION_DEPTH levels (a chain of
    N delegators makes N levels), checked without recursion."""
    for _ in range(MAX_DELEGATION_DEPTH):
        if not isinstance(act, dict) or not isinstance(act.get("sub"), str):
            return False
        if "act" not in act:
            return True
        act = act["act"]
    return False


def _check_claims(c: dict) -> None:
    missing = [k for k in REQUIRED_CLAIMS if k not in c]
    if missing:
        raise Malformed(f"missing claim{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    for k in ("iss", "sub", "aud", "scope", "policy_version"):
        if not isinstance(c[k], str):
            raise Malformed(f"claim {k} must be a string")
    for k in ("iat", "nbf", "exp"):
        if not _is_num(c[k]):
            raise Malformed(f"claim {k} must be a number")
    if not isinstance(c["jti"], str) or not _JTI.match(c["jti"]):
        raise Malformed("claim jti must be lowercase hex")
    if not isinstance(c["rules"], list) or not all(isinstance(r, str) for r in c["rules"]):
        raise Malformed("claim rules must be a list of strings")
    if "task" in c and not isinstance(c["task"], str):
        raise Malformed("claim task must be a string")
    if "act" in c and not _check_act(c["act"]):
        raise Malformed("claim act must be {\"sub\": string, \"act\": …}")


class Issuer:
    """Mints, verifies, refreshes and revokes task credentials.

    ``store``: a :class:`~policylang.store.Store` or a store URL; ``None`` makes a
    verify-only issuer that cannot check revocation (use it for offline inspection
    only). ``max_task_lifetime``: seconds from a task's first token after which it can
    get no more, and past which no token of it lives. ``max_leeway``: the largest clock
    leeway ``verify`` accepts, and how long revocations and rotated-out keys are kept
    past a token's expiry. ``max_ttl`` (optional): a cap on every token's lifetime on
    top of the grants' own (which the policy's ``option max_ttl`` already bounds).
    ``audit``: an :class:`~policylang.audit.AuditLog` (or anything with its
    ``record``), written for ``issue``, ``refresh``, ``revoke``, ``revoke_task`` and
    ``open_task``.

    ``keys``: a :class:`KeySet`, or the path of a key file: the issuer then re-reads
    the file whenever it changes (checked before every sign and verify) and on
    :meth:`reload_keys`, so that ``policylang token rotate`` reaches a running service.

    Tasks are bound: the first token of a task id binds it to the request's principal
    and delegation root, and a token for that task id is refused to anyone else. With
    ``require_open_tasks`` an unknown task id is refused instead: a task must first be
    opened with :meth:`open_task` by someone other than its agent (``POST /v1/tasks``).
    A revoked task id is never reused.
    """

    def __init__(self, keys: KeySet | str | os.PathLike | None, store: Store | str | None, *, issuer: str,
                 max_task_lifetime: float = 8 * 3600, audit: Any = None, max_leeway: float = 300,
                 max_ttl: float | None = None, clock: Callable[[], float] = time.time,
                 require_open_tasks: bool = False):
        if not isinstance(issuer, str) or not issuer:
            raise ValueError("issuer must be a non-empty string (the iss claim)")
        if not _is_num(max_task_lifetime) or max_task_lifetime <= 0:
            raise ValueError("max_task_lifetime must be a positive number of seconds")
        if not _is_num(max_leeway) or max_leeway < 0:
            raise ValueError("max_leeway must be a non-negative number of seconds")
        if max_ttl is not None and (not _is_num(max_ttl) or max_ttl <= 0):
            raise ValueError("max_ttl must be a positive number of seconds")
        #: the key file re-read on change (None when the keys were given as a KeySet)
        self.keys_path: str | None = None
        #: why the last reload of the key file failed (the previous keys stay in use)
        self.keys_error: str | None = None
        self._keys_sig: tuple | None = None
        self._keys_lock = threading.Lock()
        if isinstance(keys, (str, os.PathLike)):
            self.keys_path = os.fspath(keys)
            self._keys_sig = self._key_file_signature()
            keys = KeySet.load(self.keys_path)
        self.keys = keys if keys is not None else KeySet()
        self.require_open_tasks = bool(require_open_tasks)
        self.store = open_store(store) if isinstance(store, str) else store
        self.issuer = issuer
        self.max_task_lifetime = float(max_task_lifetime)
        self.max_leeway = float(max_leeway)
        self.max_ttl = max_ttl
        self.audit = audit
        self._clock = clock

    # -- issuing ---------------------------------------------------------------------------

    def issue(self, decision: Any, request: Any) -> Token:
        """Mint a token from an ``allow`` decision with grants for ``request``.

        Raises NotAllowed (not an allow with grants, a decision made for another
        delegation path, a task past its lifetime or revoked), StoreError, or
        AuditError (the token is then revoked again)."""
        d = _decision_dict(decision)
        scopes, ttl = _grants(d)
        subject = self._subject_for(d, request)
        token = self._mint(subject, scopes, ttl, d)
        self._record("issue", token, request=request, decision=decision, tokens=[token.jti])
        return token

    def _subject_for(self, d: dict, request: Any) -> _Subject:
        subject = _Subject.of(request)
        path = d.get("delegation_path")
        if path and list(path) != subject.path:
            raise NotAllowed("the decision was made for another delegation path "
                             f"({' -> '.join(map(str, path))}), not this request's")
        return subject

    def _mint(self, subject: _Subject, scopes: list[str], ttl: int, d: dict) -> Token:
        store = self._need_store()
        self._maybe_reload_keys()
        key = self.keys._signing()
        if key is None:
            raise ValueError("this key set has no signing key (it was loaded from public keys)")
        rules = d.get("rules") or []
        if not isinstance(rules, (list, tuple)) or not all(isinstance(r, str) for r in rules):
            raise NotAllowed("the decision's rules must be a list of rule ids")
        version = d.get("policy_version")
        if not isinstance(version, str):
            raise NotAllowed("the decision has no policy_version")
        now = self._clock()
        if subject.task is not None:
            state = store.claim_task(subject.task, now, now + self.max_task_lifetime,
                                     principal=subject.principal, root=subject.sub,
                                     create=not self.require_open_tasks)
            if state is None:
                raise NotAllowed(f"task {subject.task} was not opened (this issuer requires tasks to be "
                                 "opened by their delegator first: POST /v1/tasks)")
            if state.revoked:
                raise NotAllowed(f"task {subject.task} was revoked")
            if state.principal != subject.principal or state.root != subject.sub:
                raise NotAllowed(f"task {subject.task} belongs to another principal or delegation")
            if self.require_open_tasks and state.opened_by is None:
                raise NotAllowed(f"task {subject.task} was not opened by a delegator "
                                 "(this issuer requires tasks to be opened first: POST /v1/tasks)")
            end = min(state.ends_at, state.started_at + self.max_task_lifetime)
            if now >= end:
                raise NotAllowed(f"task {subject.task} is past its lifetime")
        elif self.require_open_tasks:  # a token of no task would escape revoke_task
            raise NotAllowed("the request names no task (intent.task_id): this issuer mints tokens "
                             "only for tasks opened by their delegator")
        else:
            end = now + self.max_task_lifetime
        iat = int(math.floor(now))
        exp = min(iat + ttl, int(math.floor(end)))
        if self.max_ttl is not None:
            exp = min(exp, iat + int(self.max_ttl))
        if exp <= now:
            raise NotAllowed(f"task {subject.task} is past its lifetime")
        jti = secrets.token_hex(16)
        claims: dict[str, Any] = {
            "iss": self.issuer, "sub": subject.sub, "aud": subject.aud, "scope": " ".join(scopes),
            "iat": iat, "nbf": iat, "exp": exp, "jti": jti, "rules": list(rules),
            "policy_version": version,
        }
        act = subject.act
        if act is not None:
            claims["act"] = act
        if subject.task is not None:
            claims["task"] = subject.task
        store.record_token(jti, subject.task, exp + self.max_leeway, now)
        encoded = pyjwt.encode(claims, key.private, algorithm=ALG, headers={"kid": key.kid, "typ": "JWT"})
        self.keys._note_signed(key.kid, exp)
        return Token(encoded, jti, exp, tuple(scopes), claims)

    def _record(self, event: str, token: Token | None, **kw) -> None:
        if self.audit is None:
            return
        try:
            self.audit.record(event, **kw)
        except BaseException:
            if token is not None:  # a credential nobody audited must not stay usable
                try:
                    self.store.revoke_token(token.jti, token.expires_at + self.max_leeway, self._clock())
                except Exception:
                    pass
            raise

    # -- verifying ---------------------------------------------------------------------------

    def verify(self, token: str, scope: str | None = None, audience: str | None = None,
               leeway: float = 0) -> dict:
        """The claims of a valid token, or a TokenError subclass naming why not.
        StoreError when revocation could not be checked; ValueError for a leeway above
        ``max_leeway`` (or negative)."""
        if not _is_num(leeway) or leeway < 0:
            raise ValueError("leeway must be a non-negative number of seconds")
        if leeway > self.max_leeway:
            raise ValueError(f"leeway {leeway} exceeds this issuer's max_leeway {self.max_leeway:g}")
        if scope is not None and not isinstance(scope, str):
            raise ValueError("scope must be a string")
        if audience is not None and not isinstance(audience, str):
            raise ValueError("audience must be a string")
        claims = self._verify_signed(token)
        now = self._clock()
        if now >= claims["exp"] + leeway:
            raise Expired(f"token expired at {claims['exp']}")
        if now + leeway < claims["nbf"]:
            raise NotYetValid(f"token not valid before {claims['nbf']}")
        if self.store is not None:
            status = self.store.token_status(claims["jti"], claims.get("task"))
            if status == "revoked":
                raise Revoked(f"token {claims['jti']} was revoked"
                              + (f" (or its task {claims['task']})" if "task" in claims else ""))
            if status != "live":
                raise NotIssued(f"token {claims['jti']} is not known to the store as issued")
        if scope is not None and scope not in claims["scope"].split(" "):
            raise ScopeNotGranted(f"scope {scope!r} was not granted (granted: {claims['scope']})")
        if audience is not None and claims["aud"] != audience:
            raise ScopeNotGranted(f"token is for audience {claims['aud']!r}, not {audience!r}")
        return claims

    def _verify_signed(self, token: Any) -> dict:
        """Signature, header and claim shapes: everything that needs no clock or store."""
        if isinstance(token, bytes):
            try:
                token = token.decode("ascii")
            except UnicodeDecodeError:
                raise Malformed("not a JWT") from None
        if not isinstance(token, str) or token.count(".") != 2:
            raise Malformed("not a JWT (expected three dot-separated parts)")
        try:
            header = pyjwt.get_unverified_header(token)
        except pyjwt.PyJWTError as e:
            raise Malformed(f"not a JWT: {e}") from None
        if header.get("alg") != ALG:
            raise BadSignature(f"algorithm {header.get('alg')!r} is not accepted (only {ALG})")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise BadSignature("token has no kid")
        self._maybe_reload_keys()
        pub = self.keys.verification_key(kid, self._clock(), self.max_leeway)
        if pub is None:
            raise BadSignature(f"unknown or retired key {kid!r}")
        try:
            payload = pyjwt.PyJWS().decode_complete(token, key=pub, algorithms=[ALG])["payload"]
        except pyjwt.InvalidSignatureError:
            raise BadSignature("signature does not verify") from None
        except pyjwt.InvalidAlgorithmError as e:
            raise BadSignature(str(e)) from None
        except pyjwt.PyJWTError as e:
            raise Malformed(f"not a JWT: {e}") from None
        try:
            claims = json.loads(payload)
        except (ValueError, RecursionError):
            raise Malformed("payload is not JSON") from None
        if not isinstance(claims, dict):
            raise Malformed("payload is not a JSON object")
        _check_claims(claims)
        if claims["iss"] != self.issuer:
            raise BadSignature(f"issued by {claims['iss']!r}, not {self.issuer!r}")
        return claims

    # -- refreshing and revoking ---------------------------------------------------------

    def refresh(self, token: str, engine: Any, request: Any) -> Token:
        """Decide ``request`` again now and, if it is still allowed with grants, mint a
        replacement for ``token`` (same sub, act, aud and task; the new decision's
        scopes) and revoke the old one. Every refusal is NotAllowed."""
        try:
            old = self.verify(token)
        except TokenError as e:
            raise NotAllowed(f"the old token does not verify ({e.reason}: {e})") from e
        subject = _Subject.of(request)
        for name, have, want in (("sub", old["sub"], subject.sub), ("act", old.get("act"), subject.act),
                                 ("aud", old["aud"], subject.aud), ("task", old.get("task"), subject.task)):
            if have != want:
                raise NotAllowed(f"refresh for another {name}: the token has {have!r}, "
                                 f"the request {want!r}")
        try:
            decision = engine.decide(request)
        except (StoreError, NotAllowed):
            raise
        except ValueError as e:  # policylang.RequestError
            raise NotAllowed(f"the request is rejected: {e}") from e
        d = _decision_dict(decision)
        if d.get("decision") != "allow":
            raise NotAllowed(f"no longer allowed: the decision is now {d.get('decision')!r}"
                             + (f" ({'; '.join(d['reasons'])})" if d.get("reasons") else ""))
        scopes, ttl = _grants(d)
        subject = self._subject_for(d, request)
        # Compare-and-revoke: the old token is revoked in one atomic step that first checks
        # it is still live, and only the caller that revoked it gets a new token. A revoke
        # (of the token or its task) that lands before this step refuses the refresh; two
        # concurrent refreshes of one token get one new token between them.
        now = self._clock()
        if not self.store.revoke_if_live(old["jti"], old.get("task"), old["exp"] + self.max_leeway, now):
            raise NotAllowed(f"token {old['jti']} was revoked or already refreshed")
        new = self._mint(subject, scopes, ttl, d)
        self._record("refresh", new, request=request, decision=decision, tokens=[new.jti],
                     revoked=[old["jti"]])
        return new

    def open_task(self, task_id: str, principal: str, root: str | None = None, *, opened_by: str,
                  ttl: float | None = None) -> Any:
        """Open a task for ``principal`` (the agent that will get its tokens) under the
        delegation root ``root`` (the principal itself when None), on behalf of
        ``opened_by`` (the authenticated delegator; not the agent). Returns its
        :class:`~policylang.store.TaskState`. NotAllowed when the id was ever used
        (a revoked or closed task id is never reused) or the agent opens its own task.
        ``ttl``: the task's lifetime (at most ``max_task_lifetime``)."""
        for name, value in (("task id", task_id), ("principal", principal), ("opened_by", opened_by)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
        if root is not None and (not isinstance(root, str) or not root):
            raise ValueError("root must be a non-empty string")
        if ttl is not None and (not _is_num(ttl) or ttl <= 0):
            raise ValueError("ttl must be a positive number of seconds")
        if opened_by == principal:
            raise NotAllowed(f"{principal} cannot open its own task: a delegator opens it")
        store = self._need_store()
        now = self._clock()
        life = self.max_task_lifetime if ttl is None else min(float(ttl), self.max_task_lifetime)
        state = store.open_task(task_id, now, now + life, principal=principal, root=root or principal,
                                opened_by=opened_by)
        if state is None:
            raise TaskIdInUse(f"task id {task_id} is already in use (a task id is never reused)")
        self._record("open_task", None, task=task_id, principal=principal, root=root or principal,
                     opened_by=opened_by)
        return state

    def revoke(self, jti: str) -> None:
        """Revoke one token by its ``jti``; kept until that token's expiry plus
        ``max_leeway`` (a jti this store never saw is kept for ``max_task_lifetime``)."""
        if not isinstance(jti, str) or not _JTI.match(jti):
            raise ValueError(f"not a token id (lowercase hex): {jti!r}")
        store = self._need_store()
        now = self._clock()
        keep = store.token_keep_until(jti)
        if keep is None:
            keep = now + self.max_task_lifetime + self.max_leeway
        store.revoke_token(jti, keep, now)
        self._record("revoke", None, jti=jti)

    def revoke_task(self, task_id: str) -> list[str]:
        """Revoke every token of a task and refuse later issues for it. Returns the
        jtis revoked."""
        if not isinstance(task_id, str) or not task_id:
            raise ValueError("task id must be a non-empty string")
        store = self._need_store()
        jtis = store.revoke_task(task_id, self._clock())
        self._record("revoke_task", None, task=task_id, revoked=jtis)
        return jtis

    def jwks(self) -> dict:
        """The public keys that may verify live tokens, as a JWKS document."""
        self._maybe_reload_keys()
        return self.keys.public_jwks(self._clock(), self.max_leeway)

    # -- key file reload ---------------------------------------------------------------

    def _key_file_signature(self) -> tuple | None:
        try:
            st = os.stat(self.keys_path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _maybe_reload_keys(self) -> None:
        if self.keys_path is not None and self._key_file_signature() != self._keys_sig:
            self.reload_keys(force=False)

    def reload_keys(self, force: bool = True) -> bool:
        """Re-read the key file (``keys`` given as a path): the file's keys replace the
        ones in memory, so a key that ``token rotate`` retired stops signing at once and
        verifies only as long as the file says. Returns True when the keys were
        replaced. A file that cannot be read or parsed leaves the previous keys in use
        and is logged (``keys_error``); the next change or call tries again."""
        if self.keys_path is None:
            return False
        with self._keys_lock:
            sig = self._key_file_signature()
            if not force and sig == self._keys_sig:
                return False
            try:
                keys = KeySet.load(self.keys_path)
            except (OSError, ValueError) as e:
                self._keys_sig = sig
                self.keys_error = str(e)
                log.warning("key file %s not reloaded (keeping the previous keys): %s", self.keys_path, e)
                return False
            old = self.keys
            self.keys, self._keys_sig, self.keys_error = keys, sig, None
            if old.kid != keys.kid:
                log.info("key file %s reloaded: signing with kid %s", self.keys_path, keys.kid)
            return True

    def _need_store(self) -> Store:
        if self.store is None:
            raise ValueError("this issuer has no store: it can only verify signatures")
        return self.store
