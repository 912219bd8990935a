"""Proven workload identity: the decision's principal proven by a SPIFFE SVID (docs/server.md#workload-identity).

A request to a decision route (``POST /access/v1/evaluation``, ``/access/v1/evaluations``,
``/access/v1/search/{resource,action,subject}`` and ``/v1/decide``) may prove who its
principal is instead of asserting it in the body:

* a **JWT-SVID** in the ``X-Workload-SVID`` header (the whole header value is the JWT;
  ``Bearer `` before it is tolerated). ``Authorization`` stays the *caller's* credential
  (the PEP, on the guarded routes): the SVID names the *subject* of the decision, which
  is often another workload than the one that calls. It is verified with the ``spiffe``
  package (``JwtSvid.parse_and_validate``, over PyJWT): ``alg`` one of RS/PS/ES 256/384/512
  (never ``none`` nor ``HS*``), a ``kid`` that names a key of the bundle **of the trust
  domain in ``sub``** (a key of another trust domain's bundle never verifies it), ``sub``
  a SPIFFE id of an allowed trust domain, ``aud`` containing ``--svid-audience``, ``exp``
  not passed.
* an **X.509-SVID** as the mutual-TLS client certificate: when the certificate's one URI
  SAN is a SPIFFE id whose trust domain has X.509 authorities in the bundle, the leaf must
  chain to those authorities (``cryptography``'s X.509 verifier, at the present time) and
  be an X.509-SVID leaf (not a CA). The TLS layer (``--client-ca``) has already checked it
  against the CA file; this check binds it to *its own* trust domain's bundle.

The JWT-SVID header wins over the certificate (a PEP with its own certificate forwards
an agent's SVID). Any presented proof that does not verify is 401, in every mode.

With a proof, the body's principal (``subject.id`` / ``principal.id``) must be the proven
SPIFFE id or absent/empty (then it is filled in); any other id is 403. ``principal.attrs``
/ ``subject.properties`` get ``proven_by`` = ``"jwt-svid"`` or ``"x509-svid"``; without a
proof a body's own ``proven_by`` is removed, so a policy may rely on it. Without a proof a
request is decided as its body says, unless ``--require-proven-principal``: then it is
401, and ``/access/v1/search/subject`` (which decides for principals other than the
proven one) is 403.

Trust bundles (``--svid-bundle PATH``): a directory holding one bundle per trust domain,
named after it: ``example.org.json`` (a SPIFFE bundle, the JWKS that ``spire-server bundle
show -format spiffe`` writes: keys with ``"use": "jwt-svid"`` are JWT authorities, keys
with ``"use": "x509-svid"`` carry their CA certificate in ``x5c``) and/or
``example.org.pem`` (X.509 authorities, PEM); or one such file with ``--trust-domain``
naming its trust domain. The files are re-read when they change (checked at most every
``recheck`` seconds, and at once for an unknown kid or trust domain); a file that cannot be
re-read keeps its last good keys. ``--trust-domain`` (repeatable) limits the accepted
trust domains; by default every trust domain with a bundle is accepted.

Routes call :func:`proving` (``ctx = identity.proving(ctx)`` in ``register``): it returns
the route context itself when no bundle is configured, else a copy whose ``read_body``
proves and binds the principal for the decision paths above (other paths pass through).
"""

from __future__ import annotations

import base64
import copy
import datetime
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Mapping

log = logging.getLogger("policylang.server")

__all__ = ["Proof", "ProofError", "TrustBundles", "WorkloadVerifier", "SVID_HEADER", "PROVEN_ATTR",
           "verifier_for", "proving", "bind_body"]

#: the header that carries a JWT-SVID on the decision routes
SVID_HEADER = b"x-workload-svid"

#: the principal attribute that says how the principal was proven
PROVEN_ATTR = "proven_by"

#: the JWT-SVID algorithms (the SPIFFE JWT-SVID spec's list, as the spiffe package checks it)
JWT_SVID_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512")

_MAX_BUNDLE = 4 << 20


class ProofError(Exception):
    """A proof that is missing (when required), invalid (401) or does not match the body (403)."""

    def __init__(self, message: str, status: int = 401):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Proof:
    """A verified SVID: the SPIFFE id, its trust domain, how (``jwt-svid``/``x509-svid``)."""

    spiffe_id: str
    trust_domain: str
    method: str
    expires: float | None = None


# ---------------------------------------------------------------------------- bundles

def _spiffe():
    try:
        import spiffe  # noqa: F401
    except ImportError:
        raise ValueError("proven workload identity needs the spiffe package: pip install 'policylang[identity]'") \
            from None
    from spiffe import JwtBundle, SpiffeId, TrustDomain
    return JwtBundle, SpiffeId, TrustDomain


def _trust_domain_name(name: str) -> str:
    """A trust domain name checked by the spiffe package (``example.org``; ``spiffe://example.org`` too)."""
    _, _, TrustDomain = _spiffe()
    try:
        return TrustDomain(name).name
    except Exception as e:  # TrustDomainError
        raise ValueError(f"{name!r} is not a SPIFFE trust domain name: {e}") from None


@dataclass(frozen=True)
class _Domain:
    jwt: Any  # a spiffe JwtBundle, or None
    x509: tuple  # CA certificates (cryptography)


def _parse_spiffe_bundle(td: str, raw: bytes, where: str) -> _Domain:
    """A SPIFFE bundle (JWKS): ``use`` jwt-svid -> JWT authorities, x509-svid -> CA certs from x5c."""
    JwtBundle, _, TrustDomain = _spiffe()
    from cryptography import x509
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{where}: not JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError(f"{where}: not a JWKS (expected {{\"keys\": [...]}})")
    jwt_keys, cas = [], []
    for i, key in enumerate(doc["keys"]):
        if not isinstance(key, dict):
            raise ValueError(f"{where}: keys[{i}] is not an object")
        use = key.get("use")
        if use == "x509-svid":
            chain = key.get("x5c")
            if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
                raise ValueError(f"{where}: keys[{i}] (x509-svid) has no x5c certificate")
            try:
                cas.append(x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True)))
            except ValueError as e:
                raise ValueError(f"{where}: keys[{i}].x5c[0] is not a certificate: {e}") from None
        elif use in ("jwt-svid", "sig", None):
            jwt_keys.append(key)
        # other uses: not an SVID authority; ignored
    jwt_bundle = None
    if jwt_keys:
        try:
            jwt_bundle = JwtBundle.parse(TrustDomain(td), json.dumps({"keys": jwt_keys}).encode())
        except Exception as e:  # ParseJWTBundleError, ArgumentError
            raise ValueError(f"{where}: the JWT authorities cannot be read: {e}") from None
    return _Domain(jwt_bundle, tuple(cas))


def _parse_pem_bundle(raw: bytes, where: str) -> tuple:
    from cryptography import x509
    try:
        certs = x509.load_pem_x509_certificates(raw)
    except ValueError as e:
        raise ValueError(f"{where}: no PEM certificate in it: {e}") from None
    return tuple(certs)


class TrustBundles:
    """The trust domains' bundles from ``path`` (a directory of ``<td>.json`` / ``<td>.pem``
    files, or one file for ``trust_domain``); re-read when the files change."""

    def __init__(self, path: str, trust_domain: str | None = None, *, recheck: float = 1.0):
        self.path = path
        self.single = not os.path.isdir(path)
        if self.single and not trust_domain:
            raise ValueError(f"--svid-bundle {path} is a file: name its trust domain with --trust-domain")
        self.file_domain = _trust_domain_name(trust_domain) if trust_domain else None
        self.recheck = recheck
        self._lock = threading.Lock()
        self._sig: tuple | None = None
        self._checked = 0.0
        self._domains: dict[str, _Domain] = {}
        self._reload(force=True)
        if not self._domains:
            raise ValueError(f"--svid-bundle {path}: no trust bundle in it (expected <trust-domain>.json or .pem)")

    def _files(self) -> list[tuple[str, str]]:
        """(trust domain, file path) of every bundle file."""
        if self.single:
            return [(self.file_domain, self.path)]
        out = []
        for name in sorted(os.listdir(self.path)):
            stem, dot, ext = name.rpartition(".")
            if dot and ext.lower() in ("json", "pem", "crt") and not name.startswith("."):
                out.append((stem, os.path.join(self.path, name)))
        return out

    def _signature(self) -> tuple:
        sig = []
        for td, p in self._files():
            st = os.stat(p)
            sig.append((td, p, st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(sig)

    def _reload(self, force: bool = False) -> None:
        try:
            sig = self._signature()
        except OSError as e:
            if force:
                raise ValueError(f"cannot read the SVID bundle {self.path}: {e.strerror or e}") from None
            log.warning("the SVID bundle %s cannot be read (%s); keeping the old bundles", self.path, e)
            return
        if not force and sig == self._sig:
            return
        domains: dict[str, dict] = {}
        try:
            for td, p, *_ in sig:
                name = _trust_domain_name(td)
                with open(p, "rb") as f:
                    raw = f.read(_MAX_BUNDLE + 1)
                if len(raw) > _MAX_BUNDLE:
                    raise ValueError(f"{p}: larger than {_MAX_BUNDLE} bytes")
                slot = domains.setdefault(name, {"jwt": None, "x509": []})
                if raw.lstrip().startswith(b"{"):
                    parsed = _parse_spiffe_bundle(name, raw, p)
                    if parsed.jwt is not None:
                        if slot["jwt"] is not None:
                            raise ValueError(f"{p}: a second JWT bundle for trust domain {name}")
                        slot["jwt"] = parsed.jwt
                    slot["x509"].extend(parsed.x509)
                else:
                    slot["x509"].extend(_parse_pem_bundle(raw, p))
        except (OSError, ValueError) as e:
            if force:
                raise ValueError(str(e)) from None
            log.warning("the SVID bundle %s could not be re-read (%s); keeping the old bundles", self.path, e)
            self._sig = sig  # not again until it changes
            return
        self._domains = {td: _Domain(v["jwt"], tuple(v["x509"])) for td, v in domains.items()}
        self._sig = sig

    def domain(self, trust_domain: str, *, refresh: bool = False) -> _Domain | None:
        """The bundle of ``trust_domain`` (None when there is none). ``refresh``: look at
        the files now (an unknown kid), else at most every ``recheck`` seconds."""
        with self._lock:
            now = time.monotonic()
            if refresh or now - self._checked >= self.recheck:
                self._checked = now
                self._reload()
            return self._domains.get(trust_domain)

    @property
    def trust_domains(self) -> list[str]:
        return sorted(self._domains)


# --------------------------------------------------------------------------- verifier

class WorkloadVerifier:
    """Verifies JWT-SVIDs and X.509-SVIDs against :class:`TrustBundles`."""

    def __init__(self, bundles: TrustBundles, *, audience: str | None = None,
                 trust_domains: tuple[str, ...] = (), require: bool = False,
                 kinds: tuple[tuple[str, str], ...] = ()):
        from ..language.globs import Glob
        self.bundles = bundles
        self.audience = audience
        self.allowed = frozenset(_trust_domain_name(t) for t in trust_domains) if trust_domains else None
        self.require = require
        #: (compiled glob, kind) in the order given (docs/server.md#proven-kinds)
        self.kinds = tuple((Glob(pattern), kind) for pattern, kind in kinds)

    def kind_of(self, spiffe_id: str) -> str | None:
        """The kind of a proven principal: the kind of the first ``--svid-kind`` pattern its
        SPIFFE id matches; None when none is configured (the body names the kind). With
        patterns, an id that matches none is a 403: nothing says what it is."""
        if not self.kinds:
            return None
        for glob, kind in self.kinds:
            if glob.match(spiffe_id):
                return kind
        raise ProofError(f"the proven principal {spiffe_id} matches no --svid-kind pattern, so its kind "
                         "is unknown", 403)

    def _spiffe_id(self, value: Any, what: str) -> tuple[str, str]:
        """(SPIFFE id, trust domain) of ``value``, parsed by the spiffe package."""
        _, SpiffeId, _ = _spiffe()
        if not isinstance(value, str) or not value:
            raise ProofError(f"the {what} names no SPIFFE id")
        try:
            sid = SpiffeId(value)
        except Exception as e:  # SpiffeIdError
            raise ProofError(f"the {what} is not a SPIFFE id: {e}") from None
        td = sid.trust_domain.name
        if self.allowed is not None and td not in self.allowed:
            raise ProofError(f"the {what}'s trust domain {td} is not accepted")
        return str(sid), td

    # -- JWT-SVID ------------------------------------------------------------------

    def verify_jwt_svid(self, token: str) -> Proof:
        import jwt
        from spiffe import JwtSvid
        if not self.audience:
            raise ProofError("JWT-SVIDs are not accepted here (no --svid-audience is configured)")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise ProofError(f"the JWT-SVID is not a JWT: {e}") from None
        alg = header.get("alg")
        if alg not in JWT_SVID_ALGORITHMS:
            raise ProofError(f"JWT-SVID algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise ProofError("the JWT-SVID has no kid")
        _, td = self._spiffe_id(unverified.get("sub"), "JWT-SVID's sub")
        # only the subject's own trust domain's bundle may verify it
        domain = self.bundles.domain(td)
        if domain is None or domain.jwt is None or domain.jwt.get_jwt_authority(kid) is None:
            domain = self.bundles.domain(td, refresh=True)
        if domain is None or domain.jwt is None:
            raise ProofError(f"no JWT bundle for trust domain {td}")
        if domain.jwt.get_jwt_authority(kid) is None:
            raise ProofError(f"no key {kid!r} in the JWT bundle of trust domain {td}")
        try:
            svid = JwtSvid.parse_and_validate(token, domain.jwt, {self.audience})
        except Exception as e:  # spiffe's JwtSvidError / ArgumentError / AuthorityNotFoundError
            raise ProofError(f"the JWT-SVID is not valid: {e}") from None
        sid = str(svid.spiffe_id)
        if svid.spiffe_id.trust_domain.name != td:  # parse_and_validate checks it too
            raise ProofError("the JWT-SVID's trust domain does not match its bundle")
        return Proof(sid, td, "jwt-svid", float(svid.expiry))

    # -- X.509-SVID ----------------------------------------------------------------

    def x509_trust_domain(self, pem: str) -> tuple[Any, str | None, str | None]:
        """(certificate, URI SAN, trust domain) of a client certificate; the trust domain
        is None when the certificate is no SPIFFE X.509-SVID candidate."""
        from cryptography import x509
        try:
            cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
        except ValueError as e:
            raise ProofError(f"the client certificate cannot be read: {e}") from None
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            uris = []
        spiffe_uris = [u for u in uris if u.lower().startswith("spiffe://")]
        if not spiffe_uris:
            return cert, None, None
        if len(uris) != 1:
            raise ProofError(f"an X.509-SVID carries exactly one URI SAN (this one has {len(uris)})")
        _, SpiffeId, _ = _spiffe()
        try:
            td = SpiffeId(uris[0]).trust_domain.name
        except Exception as e:
            raise ProofError(f"the client certificate's URI SAN is not a SPIFFE id: {e}") from None
        return cert, uris[0], td

    def verify_x509_svid(self, cert, uri: str) -> Proof:
        from cryptography import x509
        from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
        sid, td = self._spiffe_id(uri, "client certificate's URI SAN")
        domain = self.bundles.domain(td)
        if domain is None or not domain.x509:
            raise ProofError(f"no X.509 bundle for trust domain {td}")
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            if bc.ca:
                raise ProofError("an X.509-SVID leaf must not be a CA certificate")
        except x509.ExtensionNotFound:
            pass
        now = datetime.datetime.now(datetime.timezone.utc)
        try:
            verifier = PolicyBuilder().store(Store(list(domain.x509))).time(now).build_client_verifier()
            verifier.verify(cert, [])
        except VerificationError as e:
            raise ProofError(f"the client certificate does not chain to the X.509 bundle of {td}: {e}") from None
        except ValueError as e:
            raise ProofError(f"the client certificate cannot be verified: {e}") from None
        return Proof(sid, td, "x509-svid", cert.not_valid_after_utc.timestamp())

    # -- a request -----------------------------------------------------------------

    def prove(self, scope: Mapping) -> Proof | None:
        """The request's proof: the ``X-Workload-SVID`` JWT, else an X.509-SVID client
        certificate of a trust domain with X.509 authorities; None when it presents
        neither. :class:`ProofError` (401) for a proof that does not verify."""
        token = None
        for key, value in scope.get("headers", ()):
            if key == SVID_HEADER:
                if token is not None:
                    raise ProofError("more than one X-Workload-SVID header")
                token = value.decode("latin-1").strip()
                if token[:7].lower() == "bearer ":
                    token = token[7:].strip()
                if not token:
                    raise ProofError("the X-Workload-SVID header is empty")
        if token is not None:
            return self.verify_jwt_svid(token)
        tls = (scope.get("extensions") or {}).get("tls") or {}
        chain = tls.get("client_cert_chain") or []
        if not chain:
            return None
        cert, uri, td = self.x509_trust_domain(chain[0])
        if td is None:
            return None
        if self.allowed is not None and td not in self.allowed:
            return None  # a certificate of a trust domain that is no workload identity here
        domain = self.bundles.domain(td)
        if domain is None or not domain.x509:
            return None
        return self.verify_x509_svid(cert, uri)


# -------------------------------------------------------------------- the route hook

_VERIFIERS: dict = {}
_VERIFIERS_LOCK = threading.Lock()


def verifier_for(config) -> WorkloadVerifier | None:
    """The verifier of a :class:`~policylang.server.service.ServiceConfig` (one per
    configuration, built on first use), or None when it names no ``svid_bundle``."""
    path = getattr(config, "svid_bundle", None)
    if not path:
        return None
    key = (path, getattr(config, "svid_audience", None), tuple(getattr(config, "svid_trust_domains", ()) or ()),
           bool(getattr(config, "require_proven_principal", False)),
           tuple(tuple(pair) for pair in getattr(config, "svid_kinds", ()) or ()))
    with _VERIFIERS_LOCK:
        v = _VERIFIERS.get(key)
        if v is None:
            tds = key[2]
            bundles = TrustBundles(path, tds[0] if len(tds) == 1 else None)
            v = _VERIFIERS[key] = WorkloadVerifier(bundles, audience=key[1], trust_domains=tds, require=key[3],
                                                   kinds=key[4])
        return v


def _bind_entity(entity: Any, proof: Proof | None, id_key: str, attrs_key: str, where: str,
                 kind_key: str = "type", kind: str | None = None) -> Any:
    """``entity`` (a body's subject/principal object) bound to ``proof``: a copy. ``kind``:
    the proven principal's kind (:meth:`WorkloadVerifier.kind_of`), bound like the id."""
    if entity.__class__ is not dict:
        return entity  # the parser answers 400
    out = dict(entity)
    attrs = out.get(attrs_key)
    if proof is None:
        if attrs.__class__ is dict and PROVEN_ATTR in attrs:
            out[attrs_key] = {k: v for k, v in attrs.items() if k != PROVEN_ATTR}
        return out
    named = out.get(id_key)
    if named not in (None, "") and named != proof.spiffe_id:
        raise ProofError(f"{where}.{id_key} names {str(named)[:200]!r} but the proven principal is "
                         f"{proof.spiffe_id}", 403)
    out[id_key] = proof.spiffe_id
    if kind is not None:
        named = out.get(kind_key)
        if named not in (None, "") and named != kind:
            raise ProofError(f"{where}.{kind_key} names {str(named)[:200]!r} but the proven principal "
                             f"{proof.spiffe_id} is a {kind!r} (--svid-kind)", 403)
        out[kind_key] = kind
    if attrs is None:
        attrs = {}
    if attrs.__class__ is dict:
        out[attrs_key] = {**attrs, PROVEN_ATTR: proof.method}
    return out


#: path -> how its body names the principal
_SHAPES = {
    "/v1/decide": "principal",
    "/access/v1/evaluation": "subject",
    "/access/v1/evaluations": "batch",
    "/access/v1/search/resource": "subject",
    "/access/v1/search/action": "subject",
    "/access/v1/search/subject": "search-subject",
}


def bind_body(verifier: WorkloadVerifier, path: str, scope: Mapping, body: dict) -> dict:
    """The body of a decision request on ``path`` with its principal bound to the proof
    the request presents. :class:`ProofError` 401 (no proof when required, an invalid
    one) or 403 (the body names another principal)."""
    shape = _SHAPES.get(path.rstrip("/") or path)
    if shape is None:
        return body
    proof = verifier.prove(scope)
    if proof is None and verifier.require:
        raise ProofError("this service requires a proven principal: present a JWT-SVID in X-Workload-SVID "
                         "or an X.509-SVID client certificate")
    body = dict(body)
    kind = verifier.kind_of(proof.spiffe_id) if proof is not None else None
    if shape == "principal":
        body["principal"] = _bind_entity(body.get("principal"), proof, "id", "attrs", "principal", "kind", kind)
    elif shape == "subject":
        body["subject"] = _bind_entity(body.get("subject"), proof, "id", "properties", "subject", "type", kind)
    elif shape == "batch":
        if body.get("subject") is not None:
            body["subject"] = _bind_entity(body.get("subject"), proof, "id", "properties", "subject", "type", kind)
        items = body.get("evaluations")
        if items.__class__ is list:
            bound = []
            for i, item in enumerate(items):
                if item.__class__ is dict and item.get("subject") is not None:
                    item = {**item, "subject": _bind_entity(item["subject"], proof, "id", "properties",
                                                            f"evaluations[{i}].subject", "type", kind)}
                bound.append(item)
            body["evaluations"] = bound
    elif shape == "search-subject":
        if verifier.require:
            raise ProofError("a subject search decides for other principals than the proven one: "
                             "not allowed when a proven principal is required", 403)
        if body.get("subject").__class__ is dict:
            body["subject"] = _bind_entity(body["subject"], None, "id", "properties", "subject")
    return body


def proving(ctx):
    """``ctx`` itself when its configuration has no SVID bundle; else a copy whose
    ``read_body`` proves and binds the principal (:func:`bind_body`). A proof problem is
    a ``BadRequest`` with status 401 or 403, which the routes' ``failure`` answers."""
    verifier = verifier_for(ctx.config)
    if verifier is None:
        return ctx
    from .authzen import BadRequest
    inner = ctx.read_body

    async def read_body(request):
        body = await inner(request)
        try:
            return bind_body(verifier, request.scope.get("path", ""), request.scope, body)
        except ProofError as e:
            raise BadRequest(e.message, e.status) from None
        except Exception as e:  # a bundle that cannot be read, a bug: fail closed
            log.warning("the workload identity could not be verified: %s", e)
            raise BadRequest(f"the workload identity could not be verified: {e}", 401) from None

    out = copy.copy(ctx)
    out.read_body = read_body
    return out
