"""Device tokens (JWT). The token is the only source of identity: ``sub`` is the user,
``dev`` the device, ``app`` the app. Production deployments mint tokens in their own backend
with the configured key; embedded mode can mint them through the dev registration endpoint."""

import re
import time
from pathlib import Path

import jwt
import msgspec

from runtime.config import AuthConfig, ConfigError
from schemas.errors import ErrorCode, ProtocolError
from schemas.ids import ID_PATTERN

_ID_RE = re.compile(ID_PATTERN)


class Identity(msgspec.Struct, frozen=True):
    """Who a connection or REST call is, as the token proves it."""

    user: str
    device: str
    app: str
    expires_at: float


class _Claims(msgspec.Struct):
    sub: str
    dev: str
    exp: float
    app: str | None = None


class TokenVerifier:
    """Verifies device tokens: signature, expiry, issuer and audience when configured."""

    def __init__(self, config: AuthConfig, default_app: str) -> None:
        self._config = config
        self._default_app = default_app
        self._key = (
            Path(config.public_key_file).read_text() if config.public_key_file else config.secret
        )
        if not self._key:
            raise ConfigError("COURIER_AUTH_SECRET: a gateway needs it (or "
                              "COURIER_AUTH_PUBLIC_KEY_FILE) to verify device tokens")

    def verify(self, token: str) -> Identity:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self._config.algorithm],
                issuer=self._config.issuer or None,
                audience=self._config.audience or None,
                options={"require": ["exp", "sub"]},
            )
            parsed = msgspec.convert(claims, _Claims)
        except jwt.ExpiredSignatureError:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "token expired") from None
        except (jwt.InvalidTokenError, msgspec.ValidationError) as exc:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"invalid token: {exc}") from None
        app = parsed.app or self._default_app
        _check_id("sub", parsed.sub)
        _check_id("dev", parsed.dev)
        _check_id("app", app)
        return Identity(user=parsed.sub, device=parsed.dev, app=app, expires_at=parsed.exp)


class TokenIssuer:
    """Mints HS256 device tokens (dev registration and tests)."""

    def __init__(self, config: AuthConfig) -> None:
        if config.algorithm != "HS256" or not config.secret:
            raise ConfigError("COURIER_AUTH_DEV_REGISTRATION: minting tokens needs "
                              "COURIER_AUTH_ALGORITHM=HS256 and COURIER_AUTH_SECRET")
        self._config = config

    def issue(self, user: str, device: str, app: str, ttl_s: int | None = None) -> tuple[str, int]:
        expires_at = int(time.time()) + (ttl_s or self._config.token_ttl_s)
        claims: dict[str, object] = {"sub": user, "dev": device, "app": app, "exp": expires_at}
        if self._config.issuer:
            claims["iss"] = self._config.issuer
        if self._config.audience:
            claims["aud"] = self._config.audience
        return jwt.encode(claims, self._config.secret, algorithm="HS256"), expires_at


def _check_id(claim: str, value: str) -> None:
    if not _ID_RE.match(value):
        raise ProtocolError(ErrorCode.UNAUTHORIZED, f"invalid token: bad {claim!r} claim")
