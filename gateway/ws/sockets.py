"""The WebSocket endpoint and the device hub ((app, device) -> its socket and NATS subscription).

A gateway subscribes ``dlv.<app>.<device>`` only for devices connected to it (interest-based), so
routers publish to device subjects without knowing which gateway holds which socket.
"""

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Iterable

import structlog
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from prometheus_client import Counter, Gauge

from gateway.auth import Identity, Tickets, TokenVerifier
from gateway.handlers.callbacks import CallbackRelay
from gateway.handlers.control import ControlGuard
from gateway.handlers.limits import Limits
from gateway.handlers.messaging import Messaging
from gateway.handlers.peer import SocialFrames
from gateway.ws.connection import Connection
from gateway.ws.websocket import LingeringWebSocket
from presence.registry import PresenceWriter
from runtime.config import GatewayConfig
from schemas.errors import CloseCode, ErrorCode, ProtocolError
from schemas.frames import Welcome
from schemas.subjects import DEVICE_CONNECTED_PREFIX, deliver_subject, device_connected
from schemas.version import PROTOCOL_VERSION

log = structlog.get_logger(__name__)

CONNECTIONS = Gauge("courier_gateway_connections", "Open WebSocket connections")
RESYNCS = Counter("courier_gateway_resyncs_total",
                  "Server-side backlog re-reads of sockets after a NATS reconnect")
CLEANUP_FAILURES = Counter("courier_gateway_socket_cleanup_failures_total",
                           "Steps of a socket's cleanup that raised (the others still ran)",
                           ["step"])


class DeviceHub:
    """Which device is connected here, through which socket."""

    def __init__(self, nc: Client, presence: PresenceWriter) -> None:
        self._nc = nc
        self._presence = presence
        #: (app, device) -> its socket here: device ids are per app.
        self._devices: dict[tuple[str, str], tuple[Connection, Subscription]] = {}
        self._connected_sub: Subscription | None = None

    async def start(self) -> None:
        """Listen for the same devices connecting on other gateways."""
        self._connected_sub = await self._nc.subscribe(f"{DEVICE_CONNECTED_PREFIX}.*.*",
                                                       cb=self._on_connected_elsewhere)

    async def _on_connected_elsewhere(self, msg: Msg) -> None:
        app, device = msg.subject.split(".")[-2:]
        entry = self._devices.get((app, device))
        if entry is not None and entry[0].session != msg.data.decode():
            entry[0].close_soon(CloseCode.REPLACED, "device connected again")

    def __len__(self) -> int:
        return len(self._devices)

    async def attach(self, conn: Connection) -> None:
        """Subscribe the device's live subject; a previous socket of the device is replaced."""
        app, user, device = conn.identity.app, conn.identity.user, conn.identity.device
        previous = self._devices.pop((app, device), None)
        if previous is not None:
            previous[0].close_soon(CloseCode.REPLACED, "device connected again")
            await previous[1].unsubscribe()

        async def on_delivery(msg: Msg) -> None:
            conn.deliver(msg.data)

        subscription = await self._nc.subscribe(deliver_subject(app, device), cb=on_delivery)
        self._devices[(app, device)] = (conn, subscription)
        await self._nc.publish(device_connected(app, device), conn.session.encode())
        await self._presence.device_online(app, user, device)

    async def detach(self, conn: Connection) -> None:
        """Unsubscribe the device's live subject and mark it offline (both, even if the first
        fails), unless another socket of the device replaced this one."""
        identity = conn.identity
        key = (identity.app, identity.device)
        entry = self._devices.get(key)
        if entry is None or entry[0] is not conn:
            return
        del self._devices[key]
        await run_all(conn.log, [
            ("unsubscribe", entry[1].unsubscribe),
            ("presence_offline", lambda: self._presence.device_offline(
                identity.app, identity.user, identity.device)),
        ])

    def connections(self) -> list[Connection]:
        return [conn for conn, _ in self._devices.values()]

    def resync_all(self) -> None:
        """After a NATS reconnect: every socket re-reads what it may have missed live."""
        connections = self.connections()
        RESYNCS.inc(len(connections))
        log.info("resyncing_sockets", sockets=len(connections))
        for conn in connections:
            conn.resync()


class SocketServer:
    """``GET /v1/ws`` (routed by ``gateway.http.upgrade``): authenticate, upgrade, serve
    frames until the socket closes. A refused upgrade raises ``ProtocolError``, which the
    HTTP server's problem middleware answers."""

    def __init__(self, config: GatewayConfig, gateway_id: str, verifier: TokenVerifier,
                 messaging: Messaging, hub: DeviceHub, *, guard: ControlGuard,
                 callbacks: CallbackRelay, social: SocialFrames, limits: Limits,
                 tickets: Tickets | None = None) -> None:
        self._config = config
        self._tickets = tickets
        self._gateway_id = gateway_id
        self._verifier = verifier
        self._messaging = messaging
        self._hub = hub
        self._guard = guard
        self._callbacks = callbacks
        self._social = social
        self._limits = limits
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._handlers = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.accepting = True

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self.accepting:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "gateway is draining: ask the balancer "
                                "again, or connect to another gateway")
        asked = request.query.get("protocol", str(PROTOCOL_VERSION))
        if asked != str(PROTOCOL_VERSION):
            raise ProtocolError(ErrorCode.UNSUPPORTED_VERSION,
                                f"protocol {asked!r} not spoken here; this gateway speaks "
                                f"{PROTOCOL_VERSION}")
        self._limits.check_upgrade(self._limits.address(request.headers, request.remote))
        identity = self._authenticate(request)
        self._guard.check_connect(identity)
        self._limits.check_connect(identity)
        keys_left = await self._messaging.register(identity)
        ws = LingeringWebSocket(heartbeat=self._config.heartbeat_s,
                                timeout=self._config.close_timeout_s,
                                # aiohttp refuses a frame of exactly max_msg_size
                                max_msg_size=self._config.max_frame_bytes + 1)
        await ws.prepare(request)
        await self._serve(ws, identity, keys_left)
        return ws

    def _authenticate(self, request: web.Request) -> Identity:
        """A balancer's ``ticket`` query (for this gateway only), else the device token."""
        ticket = request.query.get("ticket")
        if ticket is None:
            return self._verifier.verify(_token(request))
        if self._tickets is None:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "tickets are off on this gateway "
                                "(COURIER_AUTH_TICKET_SECRET)")
        return self._tickets.verify(ticket, self._gateway_id)

    async def _serve(self, ws: LingeringWebSocket, identity: Identity,
                     keys_left: int | None) -> None:
        conn = Connection(ws, identity, self._messaging, self._config, guard=self._guard,
                          callbacks=self._callbacks, social=self._social, limits=self._limits)
        conn.start()
        self._connections.add(conn)
        CONNECTIONS.inc()
        self._handlers += 1
        self._idle.clear()
        try:
            conn.send(Welcome(user=identity.user, device=identity.device, app=identity.app,
                              protocol=PROTOCOL_VERSION, heartbeat_s=self._config.heartbeat_s,
                              max_frame_bytes=self._config.max_frame_bytes,
                              gateway=self._gateway_id, one_time_keys_left=keys_left))
            await self._hub.attach(conn)  # after welcome: live frames follow it
            await self._social.attach(conn)
            self._guard.recheck(conn)  # disabled while the socket was being set up
            await conn.read_forever()
        finally:
            CONNECTIONS.dec()
            self._connections.discard(conn)
            try:
                await run_all(conn.log, [("hub_detach", lambda: self._hub.detach(conn)),
                                         ("social_detach", lambda: self._social.detach(conn)),
                                         ("socket_shutdown", conn.shutdown)])
            finally:
                self._handlers -= 1
                if not self._handlers:
                    self._idle.set()

    async def wait_idle(self) -> None:
        """Until every socket handler has finished."""
        await self._idle.wait()

    def open_connections(self) -> list[Connection]:
        return list(self._connections)

    def close_all(self, code: CloseCode, reason: str) -> None:
        """Close every socket (shutdown): clients reconnect to another gateway. Each socket's
        handler ends once its close is done; ``wait_idle`` waits for them."""
        self.accepting = False
        for conn in list(self._connections):
            conn.close_soon(code, reason)


async def run_all(logger: structlog.typing.FilteringBoundLogger,
                  steps: Iterable[tuple[str, Callable[[], Awaitable[None]]]]) -> None:
    """Run every cleanup step, in order, even after one fails (logged with the step's name).
    A cancellation during a step is re-raised once every step has run."""
    cancelled: asyncio.CancelledError | None = None
    for name, step in steps:
        try:
            await step()
        except asyncio.CancelledError as exc:
            cancelled = exc
        except Exception:
            CLEANUP_FAILURES.labels(name).inc()
            logger.exception("socket_cleanup_failed", step=name)
    if cancelled is not None:
        raise cancelled


def _token(request: web.Request) -> str:
    """The bearer token of an upgrade request: ``Authorization`` header or ``token`` query."""
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth.removeprefix("Bearer ").strip()
    token = request.query.get("token", "")
    if not token:
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "missing token")
    return token
