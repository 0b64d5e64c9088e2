"""Join token signature, expiry and webinar checks."""

import time

import jwt
import pytest

from services.common.tokens import (
    Role,
    TokenError,
    TokenIssuer,
    TokenVerifier,
    generate_keypair,
)


def issue(private: str, expires_in: int = 60, webinar: str = "w1") -> str:
    return TokenIssuer(private).issue(
        webinar, "p1", "Ada", Role.ATTENDEE, int(time.time()) + expires_in
    )


def test_valid_token_round_trips(keypair):
    claims = TokenVerifier(keypair[1]).verify(issue(keypair[0]), "w1")
    assert (claims.webinar_id, claims.participant_id, claims.role) == ("w1", "p1", Role.ATTENDEE)


def test_token_signed_by_another_key_is_rejected(keypair):
    other_private, _ = generate_keypair()
    with pytest.raises(TokenError, match="invalid"):
        TokenVerifier(keypair[1]).verify(issue(other_private))


def test_expired_token_is_rejected(keypair):
    with pytest.raises(TokenError, match="expired"):
        TokenVerifier(keypair[1]).verify(issue(keypair[0], expires_in=-5))


def test_token_for_another_webinar_is_rejected(keypair):
    with pytest.raises(TokenError, match="another webinar"):
        TokenVerifier(keypair[1]).verify(issue(keypair[0], webinar="w2"), "w1")


def test_tampered_role_is_rejected(keypair):
    token = issue(keypair[0])
    header, _payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["role"] = "host"
    forged_payload = jwt.utils.base64url_encode(jwt.api_jws.json.dumps(claims).encode()).decode()
    with pytest.raises(TokenError):
        TokenVerifier(keypair[1]).verify(f"{header}.{forged_payload}.{signature}")


def test_unsigned_token_is_rejected(keypair):
    token = jwt.encode({"webinar_id": "w1", "exp": time.time() + 60}, key=None, algorithm="none")
    with pytest.raises(TokenError):
        TokenVerifier(keypair[1]).verify(token)
    with pytest.raises(TokenError):
        TokenVerifier(keypair[1]).verify("garbage")
