"""Pure logic of the gateway: tokens and the rate limiter."""

import time

import jwt
import pytest

from gateway.auth import TokenIssuer, TokenVerifier
from gateway.handlers.ratelimit import TokenBucket
from runtime.config import AuthConfig, ConfigError
from schemas.errors import ErrorCode, ProtocolError

SECRET = "s" * 32


def test_token_round_trip() -> None:
    config = AuthConfig(secret=SECRET)
    token, _ = TokenIssuer(config).issue("alice", "phone", "app")
    identity = TokenVerifier(config, "default").verify(token)
    assert (identity.user, identity.device, identity.app) == ("alice", "phone", "app")


@pytest.mark.parametrize("claims", [
    {"sub": "alice", "dev": "d", "exp": time.time() - 5},
    {"sub": "alice", "exp": time.time() + 60},
    {"dev": "d", "exp": time.time() + 60},
    {"sub": "a.b", "dev": "d", "exp": time.time() + 60},
    {"sub": "alice", "dev": "d"},
])
def test_bad_claims_are_unauthorized(claims: dict[str, object]) -> None:
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(ProtocolError) as info:
        TokenVerifier(AuthConfig(secret=SECRET), "default").verify(token)
    assert info.value.code == ErrorCode.UNAUTHORIZED


def test_issuer_and_audience_are_checked() -> None:
    strict = AuthConfig(secret=SECRET, issuer="me", audience="chat")
    token, _ = TokenIssuer(AuthConfig(secret=SECRET)).issue("alice", "d", "app")
    with pytest.raises(ProtocolError):
        TokenVerifier(strict, "default").verify(token)
    good, _ = TokenIssuer(strict).issue("alice", "d", "app")
    assert TokenVerifier(strict, "default").verify(good).user == "alice"


def test_verifier_needs_a_key() -> None:
    with pytest.raises(ConfigError, match="COURIER_AUTH_SECRET"):
        TokenVerifier(AuthConfig(), "default")


def test_token_bucket() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] = 0.5
    assert bucket.take() is True and bucket.take() is False
