"""Composition root of a gateway process: HTTP server, NATS connection, sockets."""

import asyncio
import secrets

import structlog
from aiohttp import web
from nats.aio.client import Client

from gateway.auth import TokenIssuer, TokenVerifier
from gateway.features import GatewayFeatures
from gateway.limits import Limits
from gateway.messaging import Messaging
from gateway.openapi import ApiDocs
from gateway.permissions import Permissions
from gateway.problems import problem_middleware
from gateway.rest import RestApi
from gateway.routes import ROUTES
from gateway.routing import Admission, serve
from gateway.social import GatewaySocial
from gateway.sockets import DeviceHub, SocketEndpoint
from presence.registry import PresenceWriter
from runtime.config import Config
from runtime.natsconn import close, connect, ensure_stream
from runtime.rpc import RpcClient
from schemas.errors import CloseCode
from schemas.nats_permissions import GATEWAY
from schemas.streams import MSGS

log = structlog.get_logger(__name__)


class Gateway:
    """WebSocket + REST front door; stateless apart from its sockets."""

    def __init__(self, config: Config) -> None:
        self._config = config
        gw = config.gateway
        self.gateway_id = gw.id or f"gw-{gw.port}-{secrets.token_hex(3)}"
        self._nc: Client | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._sockets: SocketEndpoint | None = None
        self._presence: PresenceWriter | None = None
        self._features: GatewayFeatures | None = None
        self._social: GatewaySocial | None = None
        self._hub: DeviceHub | None = None
        self.port = gw.port

    def _on_nats_reconnected(self) -> None:
        """Live frames routed while this gateway was away from NATS never arrived: every
        socket re-reads its backlog (``Connection.resync``)."""
        if self._hub is not None:
            self._hub.resync_all()

    async def start(self) -> None:
        config = self._config
        verifier = TokenVerifier(config.auth, config.app)
        issuer = TokenIssuer(config.auth) if config.auth.dev_registration else None
        self._nc = nc = await connect(config.nats, f"gateway-{self.gateway_id}", GATEWAY,
                                      on_reconnected=self._on_nats_reconnected)
        js = nc.jetstream()
        await ensure_stream(js, MSGS, config.nats, update=False)
        rpc_client = RpcClient(nc)
        permissions = Permissions(nc, rpc_client, config.contacts)
        await permissions.start()
        messaging = Messaging(js, rpc_client, self.gateway_id, permissions,
                              cache_ttl_s=config.gateway.recipient_cache_s)
        self._presence = PresenceWriter(js, self.gateway_id,
                                        gateway_ttl_s=config.gateway.presence_ttl_s,
                                        replicas=config.nats.replicas)
        await self._presence.start()
        self._hub = hub = DeviceHub(nc, self._presence)
        await hub.start()
        limits = Limits(config.gateway, config.limits)
        self._features = features = await GatewayFeatures.start(
            config, self.gateway_id, nc, rpc_client, hub.connections)
        self._social = social = await GatewaySocial.start(config, nc, rpc_client, messaging,
                                                          permissions)
        self._sockets = SocketEndpoint(config.gateway, self.gateway_id, verifier, messaging, hub,
                                       guard=features.guard, callbacks=features.callbacks,
                                       social=social, limits=limits)
        rest = RestApi(self.gateway_id, verifier, issuer, messaging, rpc_client, hub,
                       config.app, lambda: nc.is_connected)
        app = web.Application(middlewares=[problem_middleware],
                              client_max_size=config.gateway.max_frame_bytes)
        admission = Admission(verifier, features.guard, limits, config.auth)
        app.add_routes(serve(ROUTES, [rest, self._sockets, ApiDocs(ROUTES), *features.handlers,
                                      *social.handlers], admission, config))
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, config.gateway.host, config.gateway.port)
        await self._site.start()
        for address in self._runner.addresses:  # resolve port 0
            self.port = int(address[1])
        log.info("gateway_listening", url=f"http://{config.gateway.host}:{self.port}",
                 websocket=f"ws://{config.gateway.host}:{self.port}/v1/ws")

    async def drain(self) -> None:
        """Refuse new sockets, close open ones with GOING_AWAY, let handlers finish."""
        if self._features is not None:
            await self._features.drain()
        if self._sockets is None:
            return
        self._sockets.close_all(CloseCode.GOING_AWAY, "gateway shutting down")
        try:
            async with asyncio.timeout(self._config.gateway.drain_timeout_s):
                await self._sockets.wait_idle()
        except TimeoutError:
            log.warning("drain_timeout", timeout_s=self._config.gateway.drain_timeout_s)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._presence is not None:
            await self._presence.stop()
        if self._features is not None:
            await self._features.stop()
        if self._social is not None:
            await self._social.stop()
        if self._nc is not None:
            await close(self._nc)
