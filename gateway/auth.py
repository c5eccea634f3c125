"""Device tokens and connection tickets (JWT). The token is the only source of identity:
``sub`` is the user, ``dev`` the device, ``app`` the app. Production deployments mint tokens in
their own backend with the configured key; embedded mode can mint them through the dev
registration endpoint.

A connection ticket (``Tickets``) is what the balancer hands a client for one gateway: the
identity of a verified device token, plus ``gw`` (the gateway chosen) and ``tex`` (the token's
own expiry, which the socket keeps: it is closed with 4010 then, not when the ticket expires),
audience ``courier-ticket``, expiring ``auth.ticket_ttl_s`` after it was minted (never after
the token),
signed HS256 with ``auth.ticket_secret`` (which configuration keeps apart from the token key, so
neither passes for the other). A gateway accepts a ticket only when ``gw`` is its own id."""

import re
import time
from collections.abc import Callable
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


TICKET_AUDIENCE = "courier-ticket"


class _TicketClaims(msgspec.Struct):
    sub: str
    dev: str
    app: str
    exp: float
    gw: str
    tex: float


class Tickets:
    """Mints (balancer) and verifies (gateway) connection tickets."""

    def __init__(self, config: AuthConfig, clock: Callable[[], float] = time.time) -> None:
        if not config.ticket_secret:
            raise ConfigError("COURIER_AUTH_TICKET_SECRET: the balancer needs it to mint "
                              "connection tickets (the same value on every gateway)")
        self._secret = config.ticket_secret
        self._ttl_s = config.ticket_ttl_s
        self._clock = clock

    def issue(self, identity: Identity, gateway: str) -> tuple[str, int]:
        """A ticket for ``identity`` on ``gateway`` and when it expires (unix s)."""
        expires_at = min(int(self._clock()) + self._ttl_s, int(identity.expires_at))
        claims = {"sub": identity.user, "dev": identity.device, "app": identity.app,
                  "gw": gateway, "exp": expires_at, "tex": identity.expires_at,
                  "aud": TICKET_AUDIENCE}
        return jwt.encode(claims, self._secret, algorithm="HS256"), expires_at

    def verify(self, ticket: str, gateway: str) -> Identity:
        """The identity of a ticket minted for ``gateway``, expiring with its device token;
        ``unauthorized`` when it is forged, expired, malformed or for another gateway."""
        try:
            claims = jwt.decode(ticket, self._secret, algorithms=["HS256"],
                                audience=TICKET_AUDIENCE,
                                options={"require": ["exp", "sub", "aud"]})
            parsed = msgspec.convert(claims, _TicketClaims)
        except jwt.ExpiredSignatureError:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "ticket expired") from None
        except (jwt.InvalidTokenError, msgspec.ValidationError) as exc:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"invalid ticket: {exc}") from None
        if parsed.gw != gateway:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, f"ticket is for gateway {parsed.gw!r}, "
                                "not this one: ask the balancer again")
        for claim, value in (("sub", parsed.sub), ("dev", parsed.dev), ("app", parsed.app)):
            _check_id(claim, value, "ticket")
        return Identity(user=parsed.sub, device=parsed.dev, app=parsed.app,
                        expires_at=parsed.tex)


def _check_id(claim: str, value: str, what: str = "token") -> None:
    if not _ID_RE.match(value):
        raise ProtocolError(ErrorCode.UNAUTHORIZED, f"invalid {what}: bad {claim!r} claim")
