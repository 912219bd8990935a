"""A stand-in identity provider for the example and its tests: one ES256 key, its JWK set
on disk, and signed access tokens (RFC 9068 style: ``sub`` the person, ``client_id`` the
agent, ``aud`` the resource, optionally an RFC 8693 ``act`` chain)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "https://idp.example"
AGENT = "https://agents.example/assistant"


class LocalIdP:
    def __init__(self, issuer: str = ISSUER, kid: str = "idp-1"):
        self.issuer = issuer
        self.kid = kid
        self.key = ec.generate_private_key(ec.SECP256R1())

    def jwks(self) -> dict:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.key.public_key()))
        jwk.update(kid=self.kid, alg="ES256", use="sig")
        return {"keys": [jwk]}

    def write_jwks(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(self.jwks()))
        return Path(path)

    def token(self, sub: str, aud: str, *, client_id: str | None = AGENT, ttl: int = 600, **claims) -> str:
        now = int(time.time())
        body = {"iss": self.issuer, "sub": sub, "aud": aud, "iat": now, "exp": now + ttl, **claims}
        if client_id is not None:
            body["client_id"] = client_id
        return jwt.encode(body, self.key, algorithm="ES256", headers={"kid": self.kid})
