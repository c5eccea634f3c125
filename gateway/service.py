"""The composition root of a gateway process, and its only one: builds the handlers
(``gateway.handlers``), hands them to the transports (``gateway.ws``, ``gateway.http``,
``gateway.nats_api``) and owns the lifecycle of everything it started."""

import asyncio
import secrets
from contextlib import AsyncExitStack

import msgspec
import structlog
from aiohttp import web
from nats.js import JetStreamContext

from blobs.factory import create_blob_store
from blobs.local import LocalBlobStore
from blobs.records import BlobRecords
from control.admin import ControlAdmin
from control.dead_letters import DeadLetterAdmin
from control.view import ControlView
from gateway.auth import Tickets, TokenIssuer, TokenVerifier
from gateway.handlers.acks import AckBatcher
from gateway.handlers.callbacks import CallbackRelay
from gateway.handlers.contacts import Contacts
from gateway.handlers.control import ControlGuard
from gateway.handlers.drain import Drainer
from gateway.handlers.keys import KeyDirectory
from gateway.handlers.limits import Limits
from gateway.handlers.media import MediaService
from gateway.handlers.messaging import Messaging
from gateway.handlers.notifications import Notifier
from gateway.handlers.permissions import Permissions
from gateway.handlers.presence_hub import PresenceHub
from gateway.handlers.social_frames import SocialSockets
from gateway.handlers.typing_relay import TypingRelay
from gateway.handlers.user_channel import UserChannel
from gateway.http.admin_rest import AdminApi
from gateway.http.archive_rest import ArchiveApi
from gateway.http.drain_rest import DrainApi
from gateway.http.keys_rest import KeysRest
from gateway.http.media_rest import LocalBlobRoutes, MediaApi
from gateway.http.notify_rest import NotifyApi
from gateway.http.openapi import ApiDocs
from gateway.http.problems import problem_middleware
from gateway.http.push_rest import PushRegistrationApi
from gateway.http.rest import RestApi
from gateway.http.routes import ROUTES
from gateway.http.routing import Admission, serve
from gateway.http.social_rest import SocialRest
from gateway.http.upgrade import SocketEndpoint
from gateway.nats_api.drain_subject import DrainSubject
from gateway.nats_api.service_subjects import ServiceSubjects
from gateway.ws.hub import DeviceHub
from gateway.ws.sockets import SocketServer
from presence.registry import PresenceView, PresenceWriter
from runtime.config import Config, ConfigError
from runtime.deadletter import ensure_dlq
from runtime.kv import ensure_bucket
from runtime.natsconn import close, connect, ensure_stream
from runtime.partitions import PartitionStreams, ensure_partition_streams
from runtime.rpc import RpcClient
from schemas.callbacks import CALLBACKS
from schemas.control import AUDIT, CONTROL
from schemas.errors import CloseCode
from schemas.nats_permissions import GATEWAY
from schemas.push import PUSH_TOKENS, PUSH_WAKEUPS

log = structlog.get_logger(__name__)

DAY_S = 86_400


class Gateway:
    """WebSocket + REST front door; stateless apart from its sockets."""

    def __init__(self, config: Config) -> None:
        self._config = config
        gw = config.gateway
        self.gateway_id = gw.id or f"gw-{gw.port}-{secrets.token_hex(3)}"
        #: What ``start`` started, stopped in reverse order by ``stop`` (also after a start
        #: that failed half-way).
        self._started = AsyncExitStack()
        self._sockets: SocketServer | None = None
        self._subjects: ServiceSubjects | None = None
        self._hub: DeviceHub | None = None
        self._acks: AckBatcher | None = None
        self._drainer: Drainer | None = None
        self.port = gw.port

    def _on_nats_reconnected(self) -> None:
        """Live frames routed while this gateway was away from NATS never arrived: every
        socket re-reads its backlog (``Connection.resync``)."""
        if self._hub is not None:
            self._hub.resync_all()

    async def start(self) -> None:
        config = self._config
        started = self._started
        if config.gateway.drain_s >= config.process.shutdown_timeout_s:
            raise ConfigError("COURIER_GATEWAY_DRAIN_S: must be below "
                              "COURIER_PROCESS_SHUTDOWN_TIMEOUT_S (a gateway's drain would be "
                              "cut short)")
        replicas = config.nats.replicas
        verifier = TokenVerifier(config.auth, config.app)
        issuer = TokenIssuer(config.auth) if config.auth.dev_registration else None
        nc = await connect(config.nats, f"gateway-{self.gateway_id}", GATEWAY,
                           on_reconnected=self._on_nats_reconnected)
        started.push_async_callback(close, nc)
        js = nc.jetstream()
        await ensure_partition_streams(js, config, owner=False)
        streams = PartitionStreams(js, config.partitions.count)
        await _ensure_feature_streams(js, config)
        rpc_client = RpcClient(nc)

        # ------------------------------------------------------------ handlers
        permissions = Permissions(nc, rpc_client, config.contacts)
        await permissions.start()
        blobs = create_blob_store(config)
        await blobs.open()
        started.push_async_callback(blobs.close)
        media = MediaService(config.media, config.retention, blobs,
                             await BlobRecords.open(js, replicas), permissions)
        self._acks = acks = AckBatcher(streams, self.gateway_id,
                                       flush_ms=config.gateway.ack_flush_ms,
                                       batch_max=config.gateway.ack_batch_max)
        acks.start()
        started.push_async_callback(acks.stop)
        messaging = Messaging(streams, rpc_client, self.gateway_id, permissions, acks=acks,
                              cache_ttl_s=config.gateway.recipient_cache_s, media=media,
                              publish_window=config.gateway.publish_window)
        presence = PresenceWriter(
            js, self.gateway_id, gateway_ttl_s=config.gateway.presence_ttl_s,
            replicas=replicas, url=self._public_url(),
            sockets=lambda: len(self._hub) if self._hub is not None else 0)
        started.push_async_callback(presence.stop)
        await presence.start()
        self._hub = hub = DeviceHub(nc, presence, streams, self.gateway_id)
        await hub.start()
        started.push_async_callback(hub.stop)
        limits = Limits(config.gateway, config.limits)
        control_view = ControlView(nc, replicas=replicas)
        await control_view.start()
        started.push_async_callback(control_view.stop)
        guard = ControlGuard(control_view, hub.connections)
        notifier = Notifier(streams, rpc_client, control_view, config.notify,
                            default_app=config.app,
                            gateway_id=self.gateway_id)
        admin = ControlAdmin(js, await ensure_bucket(js, CONTROL, replicas), rpc_client,
                             control_view, default_app=config.app, gateway_id=self.gateway_id)
        await admin.migrate()  # keys written before they carried the app
        callbacks = CallbackRelay(js, config.callbacks, self.gateway_id)
        presence_view = PresenceView(nc, gateway_ttl_s=config.gateway.presence_ttl_s,
                                     replicas=replicas)
        presence_hub = PresenceHub(presence_view, permissions,
                                   config.presence.max_watched)  # listens first
        await presence_view.start()
        started.push_async_callback(presence_view.stop)
        presence_hub.start()
        started.push_async_callback(presence_hub.stop)
        channel = UserChannel(nc, presence_view, self.gateway_id)
        await channel.start()
        started.push_async_callback(channel.stop)
        social = SocialSockets(presence_hub, channel,
                               TypingRelay(permissions, channel, config.presence))

        # ------------------------------------------------------------ transports
        self._subjects = subjects = ServiceSubjects(nc, notifier, admin, config.notify)
        await subjects.start()
        started.push_async_callback(subjects.stop)
        self._sockets = sockets = SocketServer(config.gateway, self.gateway_id, verifier,
                                               messaging, hub, guard=guard,
                                               callbacks=callbacks, social=social,
                                               limits=limits,
                                               tickets=Tickets(config.auth)
                                               if config.auth.ticket_secret else None)
        self._drainer = drainer = Drainer(presence, sockets, config.gateway.drain_s)
        started.push_async_callback(drainer.stop)
        drain_subject = DrainSubject(nc, self.gateway_id, drainer, config.gateway.drain_s)
        await drain_subject.start()
        started.push_async_callback(drain_subject.stop)
        endpoints: list[object] = [
            RestApi(self.gateway_id, verifier, issuer, messaging, rpc_client, hub.__len__,
                    config.app, lambda: nc.is_connected),
            SocketEndpoint(sockets.handle), ApiDocs(ROUTES),
            PushRegistrationApi(await ensure_bucket(js, PUSH_TOKENS, replicas),
                                await ensure_bucket(js, PUSH_WAKEUPS, replicas)),
            NotifyApi(notifier), AdminApi(admin, DeadLetterAdmin(js)), ArchiveApi(nc),
            DrainApi(nc),
            SocialRest(rpc_client, messaging, permissions,
                       Contacts(rpc_client, permissions, channel), presence_hub),
            MediaApi(media),
            KeysRest(KeyDirectory(rpc_client, admin, channel, config.keys.low_water)),
            LocalBlobRoutes(blobs if isinstance(blobs, LocalBlobStore) else None)]
        app = web.Application(middlewares=[problem_middleware],
                              client_max_size=config.gateway.max_frame_bytes)
        admission = Admission(verifier, guard, limits, config.auth)
        app.add_routes(serve(ROUTES, endpoints, admission, config))
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        started.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, config.gateway.host, config.gateway.port)
        await site.start()
        for address in runner.addresses:  # resolve port 0
            self.port = int(address[1])
        if isinstance(blobs, LocalBlobStore) and not config.media.public_url:
            blobs.base_url = f"http://{config.gateway.host}:{self.port}"
        await presence.announce(self._public_url())  # port 0 is resolved now
        log.info("gateway_listening", url=f"http://{config.gateway.host}:{self.port}",
                 websocket=self._public_url())

    def _public_url(self) -> str:
        """Where clients reach this gateway's WebSocket (``gateway.public_url``)."""
        gw = self._config.gateway
        return gw.public_url or f"ws://{gw.host}:{self.port}/v1/ws"

    async def drain(self) -> None:
        """Stop serving the service subjects (finishing requests in flight), then drain
        (``gateway.handlers.drain``: ``draining`` beaten, new sockets refused, open ones
        closed with 4012 over ``drain_s``), close what is left with GOING_AWAY, let handlers
        finish, publish the acks they left pending."""
        if self._subjects is not None:
            await self._subjects.drain()
        if self._drainer is not None:
            await self._drainer.drain()
        timeout_s = self._config.gateway.drain_timeout_s
        if self._sockets is not None:
            self._sockets.close_all(CloseCode.GOING_AWAY, "gateway shutting down")
            try:
                async with asyncio.timeout(timeout_s):
                    await self._sockets.wait_idle()
            except TimeoutError:
                log.warning("drain_timeout", timeout_s=timeout_s)
        if self._acks is not None:
            await self._acks.drain(timeout_s)

    async def stop(self) -> None:
        """Stop what ``start`` started, last first: the HTTP server, the service subjects,
        presence and control views, the presence writer, the ack flush task, NATS."""
        await self._started.aclose()


async def _ensure_feature_streams(js: JetStreamContext, config: Config) -> None:
    """The streams the gateway writes besides the partitions: the control audit, callbacks and the
    dead-letter queue (owned elsewhere)."""
    await ensure_stream(js, msgspec.structs.replace(
        AUDIT, max_age_s=config.control.audit_max_age_days * DAY_S), config.nats)
    await ensure_stream(js, msgspec.structs.replace(
        CALLBACKS, max_age_s=config.callbacks.max_age_s), config.nats)
    await ensure_dlq(js, config, owner=False)
