"""Bodies of the REST API served by the gateway (documented in ``/openapi.json``)."""

from typing import Annotated

import msgspec

from schemas.ids import UserId


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details, with the protocol's error ``code``."""

    title: str
    status: int
    code: str
    detail: str
    retry: bool = False
    type: str = "about:blank"
    #: ``rate_limited`` only: seconds until the request can succeed (also ``Retry-After``).
    retry_after_s: float | None = None


class Health(msgspec.Struct):
    """``GET /healthz``."""

    status: str
    gateway: str
    nats: bool
    connections: int


class DevDeviceRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Register a device for a user (created if new) and get its token. Embedded mode only."""

    user: UserId
    device: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_\-]{1,64}$")] | None = None


class DevDeviceResponse(msgspec.Struct):
    """The device and the token it connects with."""

    user: str
    device: str
    app: str
    token: str
    expires_at: int


class ConnectReply(msgspec.Struct):
    """``POST /v1/connect`` on the balancer: open the WebSocket at ``url`` with
    ``?ticket=<ticket>`` before ``expires_at`` (unix seconds); ``gateway`` is its id."""

    url: str
    ticket: str
    gateway: str
    expires_at: int


class GatewayLoad(msgspec.Struct):
    """One gateway as the balancer sees it: its last beat's load, ``sockets`` counting the
    tickets handed out for it since that beat; ``healthy``: it may be chosen."""

    gateway: str
    url: str
    sockets: int
    cpu: float
    draining: bool
    healthy: bool
    beat_age_ms: int


class BalancerHealth(msgspec.Struct):
    """``GET /healthz`` of the balancer: ``gateways`` that can take a socket now, and every
    gateway it knows of (``known``)."""

    status: str
    nats: bool
    gateways: int
    known: list[GatewayLoad] = []
