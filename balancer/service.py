"""The composition root of a balancer process: NATS (its own credential: the gateways bucket,
read only), the gateways' loads, the HTTP server of ``balancer.http``."""

from contextlib import AsyncExitStack

import structlog
from aiohttp import web

from balancer.http import BALANCER_INFO, BALANCER_ROUTES, BalancerApi, OpenRoutes
from balancer.loads import GatewayLoads
from gateway.auth import Tickets, TokenVerifier
from gateway.handlers.limits import Limits
from gateway.http.openapi import ApiDocs
from gateway.http.problems import problem_middleware
from gateway.http.routing import serve
from runtime.config import Config
from runtime.natsconn import close, connect
from schemas.nats_permissions import BALANCER

log = structlog.get_logger(__name__)

#: Largest request line and header field: a device token is well under it; longer ones are
#: refused with 400 before any handler runs.
MAX_LINE_BYTES = 4096
MAX_FIELD_BYTES = 8192
#: The balancer reads no body; one that is sent is not read past this (413 if declared larger).
MAX_BODY_BYTES = 1024


class Balancer:
    """``POST /v1/connect``: the least-loaded healthy gateway and a ticket for it."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._started = AsyncExitStack()
        self.port = config.balancer.port

    async def start(self) -> None:
        config, started = self._config, self._started
        verifier = TokenVerifier(config.auth, config.app)
        tickets = Tickets(config.auth)
        nc = await connect(config.nats, "balancer", BALANCER)
        started.push_async_callback(close, nc)
        loads = GatewayLoads(nc, gateway_ttl_s=config.gateway.presence_ttl_s,
                             replicas=config.nats.replicas)
        await loads.start()
        started.push_async_callback(loads.stop)
        api = BalancerApi(config.balancer, verifier, tickets,
                          Limits(config.gateway, config.limits), loads,
                          lambda: nc.is_connected)
        app = web.Application(middlewares=[problem_middleware], client_max_size=MAX_BODY_BYTES)
        app.add_routes(serve(BALANCER_ROUTES, [api, ApiDocs(BALANCER_ROUTES, BALANCER_INFO)],
                             OpenRoutes(), config))
        runner = web.AppRunner(app, handle_signals=False, access_log=None,
                               max_line_size=MAX_LINE_BYTES, max_field_size=MAX_FIELD_BYTES)
        await runner.setup()
        started.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, config.balancer.host, config.balancer.port)
        await site.start()
        for address in runner.addresses:  # resolve port 0
            self.port = int(address[1])
        log.info("balancer_listening", url=f"http://{config.balancer.host}:{self.port}")

    async def drain(self) -> None:
        """Nothing in flight outlives a request: stop closes the server, which finishes
        the requests it is serving."""

    async def stop(self) -> None:
        await self._started.aclose()
