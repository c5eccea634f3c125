"""Composition root of the storage worker process."""

import asyncio
import time

import structlog
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from archive_worker.reader import ArchiveReader, history_page
from blobs.factory import create_blob_store
from blobs.records import BlobRecords
from runtime.backoff import Backoff
from runtime.config import Config
from runtime.deadletter import DeadLetters
from runtime.natsconn import close, connect
from runtime.partitions import (
    PartitionOwnership,
    PartitionStreams,
    ensure_partition_streams,
)
from runtime.rpc import RpcServer
from runtime.tasks import TaskGroup
from schemas import rpc
from schemas.envelopes import message_frame
from schemas.errors import ErrorCode, ProtocolError
from schemas.ids import direct_members, group_of, notification_members
from schemas.nats_permissions import STORAGE
from schemas.partitions import partition_of_position, stream_seq_of
from schemas.subjects import STORAGE_CONSUMER, STORE_QUEUE, msgs_stream
from storage_worker.consumer import EnvelopeApplier
from storage_worker.contacts import ContactService
from storage_worker.group_apply import GroupApplier
from storage_worker.group_service import GroupService
from storage_worker.key_audience import KeyAudienceService
from storage_worker.keys import KeyService
from storage_worker.listing import app_users_handler
from storage_worker.media_sweeper import MediaSweeper
from storage_worker.registration import Registrar
from storage_worker.store.base import ArchivingStore, cursor_before, retention_policy
from storage_worker.store.keys_factory import create_key_store
from storage_worker.store.social_factory import create_social_store

log = structlog.get_logger(__name__)

#: Byte budget of one page of sync, history or conversations: a reply must fit NATS's
#: max_payload (1 MiB by default), and bodies grow by a third in base64 on the way out.
PAGE_BYTES = 512 * 1024
ENVELOPE_OVERHEAD = 256


def _fit_page(body_sizes: list[int], *, newest_first: bool) -> int:
    """How many items of a page fit the byte budget (at least one), counting from the
    newest end for backward pages and from the oldest end otherwise."""
    size = 0
    order = reversed(body_sizes) if newest_first else iter(body_sizes)
    for count, body in enumerate(order):
        size += body + ENVELOPE_OVERHEAD
        if size > PAGE_BYTES and count > 0:
            return count
    return len(body_sizes)


def now_ms() -> int:
    return int(time.time() * 1000)


class StorageWorker:
    """Consumes the partitions it holds into the store, serves the storage RPC (for every
    partition: the store is shared), applies retention."""

    def __init__(self, config: Config, store: ArchivingStore) -> None:
        self._config = config
        self._store = store
        self._social = create_social_store(store)
        self._keys = create_key_store(store)
        self._groups: GroupService | None = None
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._ownership: PartitionOwnership | None = None
        self._streams: PartitionStreams | None = None
        self._rpc: RpcServer | None = None
        self._registrar: Registrar | None = None
        self._tasks = TaskGroup("storage")
        self._partitions = config.partitions.count
        #: Highest acknowledged floor seen per partition (stream sequences).
        self._ack_floors = [0] * self._partitions
        self._policy = retention_policy(config.retention)
        self._blobs = create_blob_store(config)
        self._sweeper: MediaSweeper | None = None
        #: Archived history, read through by ``history`` (docs/archive.md).
        self._archive = ArchiveReader(self._blobs, config.archive.cache_chunks)

    async def start(self) -> None:
        await self._store.open()
        await self._social.open()
        await self._keys.open()
        self._nc = await connect(self._config.nats, "storage_worker", STORAGE)
        self._js = self._nc.jetstream()
        await ensure_partition_streams(self._js, self._config, owner=True)
        dead_letters = await DeadLetters.open(self._js, self._config, STORAGE_CONSUMER,
                                              owner=True)
        applier = EnvelopeApplier(self._store, dead_letters, GroupApplier(
            self._social, self._store, self._nc, self._config.groups.max_members),
            self._partitions)
        self._ownership = PartitionOwnership(
            self._js, self._config, service="storage", durable=STORAGE_CONSUMER,
            handler_for=applier.for_partition, batch=self._config.store.batch,
            dead_letters=dead_letters, linger_s=self._config.store.linger_ms / 1000)
        await self._ownership.start()
        self._streams = PartitionStreams(self._js, self._partitions)
        self._groups = GroupService(self._social, self._store, self._streams,
                                    self.wait_position, self._wait_stored,
                                    self._config.groups.max_members)
        self._key_service = KeyService(self._keys)
        self._registrar = Registrar(self._store, self._keys, self._nc, self._stream_positions,
                                    self._partitions)
        self._rpc = RpcServer(self._nc, STORE_QUEUE, {
            "register_device": self._register_device,
            "get_user": self._get_user,
            "device_owner": self._device_owner,
            "sync": self._sync,
            "history": self._history,
            "message": self._message,
            "conversations": self._conversations,
            "app_users": app_users_handler(self._store),
            **self._groups.handlers(),
            **ContactService(self._social, self._store, self._nc).handlers(),
            **self._key_service.handlers(),
            **KeyAudienceService(self._store, self._social).handlers(),
        }, concurrency=self._config.store.rpc_concurrency)
        await self._rpc.start()
        self._tasks.watch(self._purge_forever, name="purge",
                          backoff=Backoff(1.0, self._config.retention.purge_interval_s))
        await self._blobs.open()
        self._sweeper = MediaSweeper(self._blobs, await BlobRecords.open(
            self._js, self._config.nats.replicas))
        self._tasks.watch(self._sweep_forever, name="media_sweep",
                          backoff=Backoff(min(1.0, self._config.media.sweep_interval_s),
                                          self._config.media.sweep_interval_s))

    async def drain(self) -> None:
        await self._tasks.drain()  # the purge and sweep loops: cancelled and awaited
        if self._rpc is not None:
            await self._rpc.drain()
        if self._ownership is not None:
            await self._ownership.drain()  # each partition drained, then handed over

    async def stop(self) -> None:
        await self._tasks.stop()
        if self._rpc is not None:
            await self._rpc.stop()
        if self._ownership is not None:
            await self._ownership.stop()
        if self._nc is not None:
            await close(self._nc)
        await self._keys.close()
        await self._social.close()
        await self._store.close()
        await self._blobs.close()

    # ------------------------------------------------------------------ RPC handlers

    async def _register_device(self, request: rpc.RegisterDevice) -> rpc.DeviceInfo:
        assert self._registrar is not None
        return await self._registrar.register(request)

    async def _get_user(self, request: rpc.GetUser) -> rpc.UserDevices:
        exists, devices = await self._store.user_devices(request.app, request.user)
        return rpc.UserDevices(exists=exists, devices=devices)

    async def _device_owner(self, request: rpc.DeviceOwner) -> rpc.Owner:
        return rpc.Owner(user=await self._store.device_owner(request.app, request.device))

    async def _sync(self, request: rpc.SyncRequest) -> rpc.SyncPage:
        await self._wait_stored(request.barrier)
        messages, cursor = await self._store.backlog(
            request.app, request.user, request.device, request.after, request.limit, now_ms()
        )
        more = len(messages) == request.limit
        keep = _fit_page([len(m.body) for m in messages], newest_first=False)
        if keep < len(messages):
            cursor = cursor_before(cursor, messages[keep:], self._partitions)
            messages, more = messages[:keep], True
        return rpc.SyncPage(
            messages=[message_frame(m.envelope, m.seq, m.body) for m in messages],
            cursor=cursor,
            more=more,
        )

    async def _history(self, request: rpc.HistoryRequest) -> rpc.HistoryPage:
        if group_of(request.conversation) is not None:
            assert self._groups is not None
            await self._groups.check_reader(request.app, request.user, request.conversation)
        else:
            self._check_member(request.user, request.conversation)
        await self._wait_stored(request.barrier)
        before = request.seq if request.direction == "backward" else None
        after = request.seq if request.direction == "forward" else None
        if request.direction == "forward" and after is None:
            after = 0
        items = await history_page(self._store, self._archive, request.app, request.user,
                                   request.device, request.conversation, before, after,
                                   request.limit, now_ms())
        full = len(items) == request.limit
        keep = _fit_page([len(i.message.body) for i in items],
                         newest_first=request.direction == "backward")
        if keep < len(items):
            items = items[-keep:] if request.direction == "backward" else items[:keep]
            full = True
        first = items[0].message.seq if items else None
        last = items[-1].message.seq if items else None
        if request.direction == "backward":
            return rpc.HistoryPage(items=items, next_before=first if full else None,
                                   next_after=last)
        return rpc.HistoryPage(items=items, next_before=first,
                               next_after=last if full else None)

    async def _message(self, request: rpc.MessageRequest) -> rpc.HistoryItem:
        await self._wait_stored(request.barrier)
        item = await self._store.message(request.app, request.user, request.device,
                                         request.message_id, now_ms())
        if item is None:  # unknown, or not for this user: the same answer
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no message {request.message_id!r}")
        return item

    async def _conversations(self, request: rpc.ConversationsRequest) -> rpc.Conversations:
        await self._wait_stored(request.barrier)
        summaries = await self._store.conversations(request.app, request.user, request.device,
                                                    request.limit)
        size = 0
        for summary in summaries:  # past the page budget, summaries go without last message
            if summary.last_message is not None:
                size += len(summary.last_message.body) + ENVELOPE_OVERHEAD
                if size > PAGE_BYTES:
                    summary.last_message = None
        return rpc.Conversations(conversations=summaries)

    @staticmethod
    def _check_member(user: str, conversation: str) -> None:
        members = direct_members(conversation) or notification_members(conversation)
        if members is None or user not in members:
            raise ProtocolError(ErrorCode.NOT_MEMBER, f"not a member of {conversation}")

    async def _stream_positions(self) -> list[int]:
        """The last stream sequence of every partition."""
        assert self._js is not None
        try:
            assert self._streams is not None
            return await self._streams.last_sequences()
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, "stream unavailable") from exc

    async def wait_position(self, seq: int, inclusive: bool) -> None:
        """Return once the envelope at position ``seq`` (``inclusive``) or every envelope
        before it in its partition has been applied."""
        barrier = [0] * self._partitions
        stream_seq = stream_seq_of(seq, self._partitions)
        barrier[partition_of_position(seq, self._partitions)] = (
            stream_seq if inclusive else stream_seq - 1)
        await self._wait_stored(barrier)

    async def _wait_stored(self, barrier: list[int]) -> None:
        """Return once every envelope up to ``barrier[p]`` (a stream sequence) of each
        partition p has been applied (the partition consumer's ack floor covers it), or fail
        with ``unavailable``. Any storage worker answers: the floors are read from NATS."""
        assert self._js is not None
        if len(barrier) > self._partitions:
            raise ProtocolError(ErrorCode.INVALID, "a barrier of another partition count")
        deadline = time.monotonic() + self._config.store.barrier_timeout_s
        delay = 0.002
        while behind := [p for p, seq in enumerate(barrier) if self._ack_floors[p] < seq]:
            infos = await asyncio.gather(*(self._js.consumer_info(msgs_stream(p),
                                                                  STORAGE_CONSUMER)
                                           for p in behind), return_exceptions=True)
            for partition, info in zip(behind, infos, strict=True):
                if isinstance(info, BaseException):
                    if not isinstance(info, NatsError):
                        raise info
                    continue  # no consumer yet (nobody took the partition) or NATS trouble
                self._ack_floors[partition] = max(self._ack_floors[partition],
                                                  info.ack_floor.stream_seq or 0)
            if all(self._ack_floors[p] >= seq for p, seq in enumerate(barrier)):
                return
            if time.monotonic() > deadline:
                raise ProtocolError(ErrorCode.UNAVAILABLE, "storage is catching up; retry")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _sweep_forever(self) -> None:
        """Delete expired blobs every ``media.sweep_interval_s`` (``media_sweeper``); a
        failed sweep raises, and the task group runs the loop again after a back-off."""
        assert self._sweeper is not None
        while True:
            await asyncio.sleep(self._config.media.sweep_interval_s)
            await self._sweeper.sweep()

    async def _purge_forever(self) -> None:
        """Apply retention every ``purge_interval_s``; a failed purge raises, and the task
        group logs it and runs the loop again after a back-off."""
        while True:
            await asyncio.sleep(self._config.retention.purge_interval_s)
            removed = await self._store.purge(self._policy, now_ms())
            if removed:
                log.info("purged", messages=removed)
