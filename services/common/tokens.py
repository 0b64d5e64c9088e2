"""Signed join tokens: EdDSA (Ed25519) JWTs issued by the registry, verified by public key."""

import time
import uuid
from enum import StrEnum

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

ALGORITHM = "EdDSA"
AUDIENCE = "webinar-join"


class Role(StrEnum):
    HOST = "host"
    COHOST = "cohost"
    PANELIST = "panelist"
    ATTENDEE = "attendee"


class JoinClaims(BaseModel):
    webinar_id: str
    participant_id: str
    name: str
    role: Role
    jti: str
    exp: int


class TokenError(Exception):
    """The token is malformed, forged, expired or for another webinar."""


def generate_keypair() -> tuple[str, str]:
    """A fresh Ed25519 key pair as (private PEM, public PEM)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private.decode(), public.decode()


class TokenIssuer:
    def __init__(self, private_key_pem: str) -> None:
        self._key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)

    def issue(
        self, webinar_id: str, participant_id: str, name: str, role: Role, expires_at: int
    ) -> str:
        payload = {
            "aud": AUDIENCE,
            "sub": participant_id,
            "webinar_id": webinar_id,
            "participant_id": participant_id,
            "name": name,
            "role": role.value,
            "jti": uuid.uuid4().hex,
            "iat": int(time.time()),
            "exp": expires_at,
        }
        return jwt.encode(payload, self._key, algorithm=ALGORITHM)  # type: ignore[arg-type]


class TokenVerifier:
    def __init__(self, public_key_pem: str) -> None:
        self._key = serialization.load_pem_public_key(public_key_pem.encode())

    def verify(self, token: str, webinar_id: str | None = None) -> JoinClaims:
        try:
            payload = jwt.decode(
                token,
                self._key,  # type: ignore[arg-type]
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                options={"require": ["exp", "aud", "jti"]},
            )
            claims = JoinClaims.model_validate(payload)
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("token expired") from exc
        except (jwt.InvalidTokenError, ValueError) as exc:
            raise TokenError("invalid token") from exc
        if webinar_id is not None and claims.webinar_id != webinar_id:
            raise TokenError("token is for another webinar")
        return claims
