"""The balancer's REST routes, declared once (``gateway.http.routing``): served by
``balancer.service``, documented at ``/openapi.json`` (``gateway.http.openapi``)."""

from collections.abc import Callable
from typing import Final

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest

from balancer.loads import GatewayLoads
from gateway.auth import Tickets, TokenVerifier
from gateway.handlers.limits import Limits
from gateway.http.credentials import bearer
from gateway.http.openapi import ApiDocs
from gateway.http.responses import json_response
from gateway.http.routing import Principal, Reply, Route, RouteError
from runtime.config import BalancerConfig
from schemas.errors import ErrorCode, ProtocolError
from schemas.rest import BalancerHealth, ConnectReply

log = structlog.get_logger(__name__)

TICKETS = Counter("courier_balancer_tickets_total", "Connection tickets handed out, per gateway",
                  ["gateway"])
NO_GATEWAY = Counter("courier_balancer_unavailable_total",
                     "Connects answered 503: no healthy, non-draining gateway beats")


class BalancerApi:
    """``/v1/connect``, health and metrics."""

    def __init__(self, config: BalancerConfig, verifier: TokenVerifier, tickets: Tickets,
                 limits: Limits, loads: GatewayLoads,
                 nats_connected: Callable[[], bool]) -> None:
        self._config = config
        self._verifier = verifier
        self._tickets = tickets
        self._limits = limits
        self._loads = loads
        self._nats_connected = nats_connected

    async def healthz(self, request: web.Request) -> web.Response:
        nats, gateways = self._nats_connected(), self._loads.healthy_count()
        ok = nats and gateways > 0
        return json_response(BalancerHealth(status="ok" if ok else "degraded", nats=nats,
                                            gateways=gateways, known=self._loads.snapshot()),
                             200 if ok else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def connect(self, request: web.Request) -> web.Response:
        """Spend the source address's and the device's connection budgets (those of the
        gateway's upgrade), verify the device token, choose a gateway, mint its ticket."""
        self._limits.check_upgrade(self._limits.address(request.headers, request.remote))
        identity = self._verifier.verify(bearer(request))
        self._limits.check_connect(identity)
        beat = self._loads.choose()
        if beat is None:
            NO_GATEWAY.inc()
            raise ProtocolError(ErrorCode.UNAVAILABLE, "no gateway can take a socket now; "
                                "retry", retry_after_s=self._config.retry_after_s)
        ticket, expires_at = self._tickets.issue(identity, beat.gateway)
        TICKETS.labels(beat.gateway).inc()
        log.debug("ticket_issued", gateway=beat.gateway, app=identity.app,
                  device=identity.device)
        return json_response(ConnectReply(url=beat.url, ticket=ticket, gateway=beat.gateway,
                                          expires_at=expires_at))


class OpenRoutes:
    """The balancer's admission: its routes are all open at the table level (``connect``
    verifies the device token itself, after the per-address budget)."""

    def admit(self, route: Route, request: web.Request) -> Principal | None:
        if route.credential != "none":
            raise RouteError(f"{route.method} {route.path}: the balancer serves open routes")
        return None


BALANCER_ROUTES: Final[tuple[Route, ...]] = (
    Route(method="GET", path="/healthz", handler=BalancerApi.healthz, credential="none",
          summary="NATS connectivity and gateways that can take a socket",
          replies=(Reply(200, "NATS connected and at least one healthy gateway",
                         BalancerHealth),
                   Reply(503, "NATS unreachable or no healthy gateway", BalancerHealth))),
    Route(method="GET", path="/metrics", handler=BalancerApi.metrics, credential="none",
          summary="Prometheus metrics",
          replies=(Reply(200, "Text exposition", str, media="text/plain"),)),
    Route(method="POST", path="/v1/connect", handler=BalancerApi.connect, credential="none",
          summary="Choose a gateway and get a connection ticket for it",
          description="Takes `Authorization: Bearer <device token>` (a body, if any, is "
                      "ignored). Answers the WebSocket URL of the least-loaded healthy, "
                      "non-draining gateway and a ticket only that gateway accepts "
                      "(`GET <url>?ticket=<ticket>`), valid until `expires_at` "
                      "(`COURIER_AUTH_TICKET_TTL_S`, never past the token's expiry). Spends "
                      "the source address's upgrade budget and the device's and user's "
                      "connection budgets (`COURIER_LIMITS_ADDRESS_UPGRADES_*`, "
                      "`COURIER_LIMITS_DEVICE_CONNECTS_*`, `COURIER_LIMITS_USER_CONNECTS_*`); "
                      "503 `unavailable` with `Retry-After` when no gateway can take a "
                      "socket.",
          replies=(Reply(200, "The gateway chosen and its ticket", ConnectReply),),
          problems=(401, 429, 503)),
    Route(method="GET", path="/openapi.json", handler=ApiDocs.document, credential="none",
          summary="This OpenAPI document",
          replies=(Reply(200, "OpenAPI 3.1", dict),)),
)

BALANCER_INFO: Final = ("Courier balancer", "Which gateway a client opens its WebSocket on, "
                        "and its connection ticket (docs/protocol.md, \"Connecting through "
                        "the balancer\").")
