"""Composition of the gateway's system features: push registration, business notifications,
system control and callbacks. Built once by ``gateway.service.Gateway`` after its device hub;
hands the socket endpoint its ``guard`` and ``callbacks`` and the route table its handlers."""

from collections.abc import Callable, Iterable

import msgspec
from nats.aio.client import Client

from control.admin import ControlAdmin
from control.dead_letters import DeadLetterAdmin
from control.view import ControlView
from gateway.admin_rest import AdminApi
from gateway.callbacks import CallbackRelay
from gateway.control import ControlGuard, Socket
from gateway.keys_rest import KeysRest
from gateway.notifications import Notifier
from gateway.notify_rest import NotifyApi
from gateway.push_rest import PushRegistrationApi
from gateway.service_subjects import ServiceSubjects
from gateway.user_channel import UserChannel
from runtime.config import Config
from runtime.deadletter import ensure_dlq
from runtime.kv import ensure_bucket
from runtime.natsconn import ensure_stream
from runtime.rpc import RpcClient
from schemas.callbacks import CALLBACKS
from schemas.control import AUDIT, CONTROL
from schemas.push import PUSH_TOKENS, PUSH_WAKEUPS

DAY_S = 86_400


class GatewayFeatures:
    """What the features hold for the gateway's lifetime."""

    def __init__(self, view: ControlView, guard: ControlGuard, callbacks: CallbackRelay,
                 subjects: ServiceSubjects, handlers: list[object]) -> None:
        self.guard = guard
        self.callbacks = callbacks
        self.handlers = handlers
        self._view = view
        self._subjects = subjects

    @classmethod
    async def start(cls, config: Config, gateway_id: str, nc: Client, rpc_client: RpcClient,
                    sockets: Callable[[], Iterable[Socket]]) -> "GatewayFeatures":
        js = nc.jetstream()
        replicas = config.nats.replicas
        await ensure_stream(js, msgspec.structs.replace(
            AUDIT, max_age_s=config.control.audit_max_age_days * DAY_S), config.nats)
        await ensure_stream(js, msgspec.structs.replace(
            CALLBACKS, max_age_s=config.callbacks.max_age_s), config.nats)
        await ensure_dlq(js, config, owner=False)
        view = ControlView(nc, replicas=replicas)
        await view.start()
        guard = ControlGuard(view, sockets)
        notifier = Notifier(js, rpc_client, view, config.notify, default_app=config.app,
                            gateway_id=gateway_id)
        admin = ControlAdmin(js, await ensure_bucket(js, CONTROL, replicas), rpc_client, view,
                             default_app=config.app, gateway_id=gateway_id)
        await admin.migrate()  # keys written before they carried the app
        subjects = ServiceSubjects(nc, notifier, admin, config.notify)
        await subjects.start()
        tokens = await ensure_bucket(js, PUSH_TOKENS, replicas)
        wakeups = await ensure_bucket(js, PUSH_WAKEUPS, replicas)
        handlers: list[object] = [PushRegistrationApi(tokens, wakeups), NotifyApi(notifier),
                                  AdminApi(admin, DeadLetterAdmin(js)),
                                  KeysRest(rpc_client, admin, UserChannel(nc),
                                           config.keys.low_water)]
        return cls(view, guard, CallbackRelay(js, config.callbacks, gateway_id), subjects,
                   handlers)

    async def drain(self) -> None:
        """Stop serving the service subjects; finish requests in flight."""
        await self._subjects.drain()

    async def stop(self) -> None:
        await self._subjects.stop()
        await self._view.stop()
