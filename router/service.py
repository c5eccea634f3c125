"""Composition root of a router replica."""

from nats.aio.client import Client

from control.view import ControlView
from presence.registry import PresenceView
from router.directory import DeviceDirectory
from router.dispatch import Dispatcher
from router.edge import EdgeRoutes
from router.membership import GroupMembership
from router.push_jobs import PushJobs
from runtime.config import Config
from runtime.deadletter import DeadLetters
from runtime.natsconn import close, connect, ensure_stream
from runtime.partitions import PartitionOwnership, ensure_partition_streams
from runtime.rpc import RpcClient
from schemas.nats_permissions import ROUTER
from schemas.push import push_stream
from schemas.subjects import ROUTER_CONSUMER


class Router:
    """Consumes the partitions it holds and publishes frames to the gateways of devices."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._nc: Client | None = None
        self._partitions: PartitionOwnership | None = None
        self._presence: PresenceView | None = None
        self._control: ControlView | None = None

    async def start(self) -> None:
        self._nc = await connect(self._config.nats, "router", ROUTER)
        js = self._nc.jetstream()
        await ensure_partition_streams(js, self._config, owner=False)
        directory = DeviceDirectory(self._nc, RpcClient(self._nc))
        await directory.start()
        groups = GroupMembership(self._nc, RpcClient(self._nc))
        await groups.start()
        await ensure_stream(js, push_stream(self._config.push.job_max_age_s), self._config.nats,
                            update=False)
        self._presence = PresenceView(self._nc, gateway_ttl_s=self._config.gateway.presence_ttl_s,
                                      replicas=self._config.nats.replicas)
        await self._presence.start()
        self._control = ControlView(self._nc, replicas=self._config.nats.replicas)
        await self._control.start()
        dead_letters = await DeadLetters.open(js, self._config, ROUTER_CONSUMER)
        routes = EdgeRoutes(self._config.partitions.count,
                            self._config.router.routes_per_partition, self._presence.gateway_of)
        dispatcher = Dispatcher(self._nc, directory, PushJobs(js, self._presence), self._control,
                                groups, dead_letters, self._config.partitions.count,
                                routes=routes, edge_bytes=self._config.router.edge_batch_bytes)
        self._partitions = PartitionOwnership(
            js, self._config, service="router", durable=ROUTER_CONSUMER,
            handler_for=dispatcher.for_partition, batch=256, dead_letters=dead_letters)
        await self._partitions.start()

    async def drain(self) -> None:
        if self._partitions is not None:
            await self._partitions.drain()

    async def stop(self) -> None:
        if self._partitions is not None:
            await self._partitions.stop()
        if self._control is not None:
            await self._control.stop()
        if self._presence is not None:
            await self._presence.stop()
        if self._nc is not None:
            await close(self._nc)
