"""Composition root of a router replica."""

from nats.aio.client import Client

from control.view import ControlView
from presence.registry import PresenceView
from router.directory import DeviceDirectory
from router.dispatch import Dispatcher
from router.membership import GroupMembership
from router.push_jobs import PushJobs
from runtime.config import Config
from runtime.deadletter import DeadLetters
from runtime.natsconn import close, connect, ensure_stream
from runtime.partitions import (
    LeaseHolder,
    PartitionConsumers,
    check_partition_count,
    open_leases,
)
from runtime.rpc import RpcClient
from runtime.tasks import TaskGroup
from schemas.nats_permissions import ROUTER
from schemas.push import push_stream
from schemas.streams import partition_stream
from schemas.subjects import ROUTER_CONSUMER


class Router:
    """Consumes the partitions it holds and publishes frames to device subjects."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._nc: Client | None = None
        self._consumers: PartitionConsumers | None = None
        self._leases: LeaseHolder | None = None
        self._tasks = TaskGroup("router")
        self._presence: PresenceView | None = None
        self._control: ControlView | None = None

    async def start(self) -> None:
        self._nc = await connect(self._config.nats, "router", ROUTER)
        js = self._nc.jetstream()
        partitions = self._config.partitions
        await check_partition_count(js, partitions.count, self._config.nats.replicas)
        for partition in range(partitions.count):
            await ensure_stream(js, partition_stream(partition), self._config.nats,
                                update=False)
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
        dispatcher = Dispatcher(self._nc, directory, PushJobs(js, self._presence), self._control,
                                groups, dead_letters, partitions.count)
        self._consumers = PartitionConsumers(
            js, ROUTER_CONSUMER, dispatcher.for_partition, batch=256, dead_letters=dead_letters,
            ack_wait_s=self._config.nats.ack_wait_s, max_ack_pending=20_000)
        self._leases = LeaseHolder(
            js, await open_leases(js, partitions.lease_ttl_s, self._config.nats.replicas),
            service="router", count=partitions.count, ttl_s=partitions.lease_ttl_s,
            work=self._consumers)
        self._consumers.holds = self._leases.holds
        await self._leases.tick()
        self._tasks.watch(self._leases.run, name="leases")

    async def drain(self) -> None:
        await self._tasks.drain()
        if self._leases is not None:
            await self._leases.release_all()

    async def stop(self) -> None:
        await self._tasks.stop()
        if self._consumers is not None:
            await self._consumers.stop_all()
        if self._control is not None:
            await self._control.stop()
        if self._presence is not None:
            await self._presence.stop()
        if self._nc is not None:
            await close(self._nc)
