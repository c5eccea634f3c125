"""What the gateway does with a validated frame, independent of the transport.

Sends become ``MessageEnvelope``s published to JetStream (the client is acknowledged with the
stream sequence once JetStream stored it): ``prepare_send`` checks and builds the envelope,
``start_publish`` stores it, so a socket can keep several publishes in flight
(``gateway.ws.connection``). Acks go to the gateway's ``AckBatcher`` (one ``ReceiptBatch`` per
partition per tick); read markers become ``ReceiptEnvelope``s; sync pages come from the
storage worker behind a barrier.
"""

import asyncio
import time
from dataclasses import dataclass
from typing import Final

import structlog
from nats.errors import Error as NatsError
from prometheus_client import Counter, Histogram

from gateway.auth import Identity
from gateway.handlers.acks import AckBatcher
from gateway.handlers.media import MediaService
from gateway.handlers.permissions import Permissions
from runtime.cache import LruCache
from runtime.partitions import PartitionStreams
from runtime.rpc import RpcClient
from schemas import rpc
from schemas.envelopes import DeviceAcks, MessageEnvelope, ReceiptEnvelope, encode_envelope
from schemas.errors import ErrorCode, ProtocolError
from schemas.frames import Accepted, Ack, AckItem, Read, Send, Sender
from schemas.ids import (
    direct_conversation,
    message_id,
)
from schemas.subjects import CHAT, RECEIPT

log = structlog.get_logger(__name__)

ACCEPTED = Counter("courier_gateway_accepted_total", "Sends stored by JetStream")
PUBLISH_WINDOW_FULL = Counter(
    "courier_gateway_publish_window_full_total",
    "Sends that waited for a slot of the gateway's publish window (publish_window)")
PUBLISH_SECONDS = Histogram(
    "courier_gateway_publish_seconds", "JetStream publish round trip",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
)


#: Users known to exist and device owners, each cached per gateway (least recently used go
#: first); users are re-checked after ``cache_ttl_s``, a device never changes owner.
MAX_CACHED: Final = 100_000


#: How long a send waits for storage to confirm a recipient it already knew (users are never
#: deleted, so the stale answer is safe when storage is away).
STALE_CHECK_TIMEOUT_S = 0.5


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class PreparedSend:
    """A checked send, its envelope encoded, ready to publish."""

    frame: Send
    envelope: MessageEnvelope
    partition: int
    data: bytes


class Messaging:
    """Accepts sends, receipts and read markers; reads backlogs."""

    def __init__(self, streams: PartitionStreams, rpc_client: RpcClient, gateway_id: str,
                 permissions: Permissions, *, acks: AckBatcher, cache_ttl_s: float = 30.0,
                 max_cached: int = MAX_CACHED, media: MediaService | None = None,
                 publish_window: int = 1024) -> None:
        self._streams = streams
        self._acks = acks
        #: Publishes of sends in flight on this gateway, all sockets together.
        self._publishing = asyncio.Semaphore(publish_window)
        self._media = media
        self._rpc = rpc_client
        self._gateway_id = gateway_id
        self._permissions = permissions
        self._cache_ttl_s = cache_ttl_s
        #: (app, user) -> until when it counts as known (kept past that: a stale "exists"
        #: serves while the storage worker is unavailable).
        self._known_users: LruCache[tuple[str, str], float] = LruCache(max_cached)
        #: (app, device) -> its user.
        self._device_owners: LruCache[tuple[str, str], str] = LruCache(max_cached)

    async def register(self, identity: Identity) -> int | None:
        """Make sure the token's user and device exist in the registry; returns the count of
        one-time keys the key directory holds for the device."""
        info = await self._rpc.call(
            "register_device",
            rpc.RegisterDevice(user=identity.user, device=identity.device, app=identity.app),
            rpc.DeviceInfo,
        )
        self._known_users.put((identity.app, identity.user),
                              time.monotonic() + self._cache_ttl_s)
        return info.one_time_keys_left

    async def prepare_send(self, identity: Identity, frame: Send) -> PreparedSend:
        """Check a send (recipient, permissions, attachments) and build its envelope."""
        if (frame.body is None) == (frame.payloads is None):
            raise ProtocolError(ErrorCode.INVALID, "exactly one of 'body' or 'payloads'")
        conversation, payloads = await self._resolve(identity, frame)
        ts = now_ms()
        expires_at = ts + frame.ttl * 1000 if frame.ttl else None
        if frame.blobs:
            if self._media is None:
                raise ProtocolError(ErrorCode.INVALID, "this gateway takes no attachments")
            await self._media.attach(identity, frame.blobs, conversation,
                                     self._media.retained_until(identity.app, ts, expires_at))
        envelope = MessageEnvelope(
            id=message_id(identity.app, identity.user, frame.client_id),
            kind="chat",
            app=identity.app,
            module=frame.module,
            sender=Sender(user=identity.user, device=identity.device),
            to=frame.to,
            conversation=conversation,
            ts=ts,
            receipt=frame.receipt,
            body=None if payloads is not None else frame.body,
            payloads=payloads,
            client_id=frame.client_id,
            expires_at=expires_at,
            gateway=self._gateway_id,
        )
        return PreparedSend(frame, envelope, self._streams.of(identity.app, conversation),
                            encode_envelope(envelope))

    async def start_publish(self, send: PreparedSend) -> "asyncio.Task[Accepted]":
        """Start storing a prepared send once the gateway's publish window has a slot; the
        task's result is the ``accepted`` reply (``unavailable`` if JetStream did not store
        it). Publishes started in order are written to NATS in that order."""
        if self._publishing.locked():
            PUBLISH_WINDOW_FULL.inc()
        await self._publishing.acquire()
        task = asyncio.get_running_loop().create_task(self._publish_send(send),
                                                      name=f"publish-{send.envelope.id}")
        task.add_done_callback(lambda _: self._publishing.release())
        return task

    async def _publish_send(self, send: PreparedSend) -> Accepted:
        envelope = send.envelope
        seq = await self._publish(send.partition, CHAT, send.data, msg_id=envelope.id)
        ACCEPTED.inc()
        return Accepted(client_id=send.frame.client_id,
                        message_id=envelope.id, seq=seq, conversation=envelope.conversation,
                        ts=envelope.ts, id=send.frame.id)

    async def ack(self, identity: Identity, frame: Ack) -> None:
        """Hand the acks to the gateway's batcher, per partition the acknowledged messages are
        in: each partition's storage worker records its own (a device's cursor is one position
        per partition). Membership is checked here, before anything is queued."""
        by_partition: dict[int, list[AckItem]] = {}
        partition_of: dict[str, int] = {}  # a hash per conversation, not per item
        for conversation in {item.conversation for item in frame.messages}:
            await self._permissions.check_member(identity.app, identity.user, conversation)
            partition_of[conversation] = self._streams.of(identity.app, conversation)
        for item in frame.messages:
            by_partition.setdefault(partition_of[item.conversation], []).append(item)
        for partition, items in by_partition.items():
            self._acks.add(partition, DeviceAcks(app=identity.app, user=identity.user,
                                                 device=identity.device, items=items))

    async def read(self, identity: Identity, frame: Read) -> None:
        await self._permissions.check_member(identity.app, identity.user,
                                              frame.conversation)
        await self._publish(
            self._streams.of(identity.app, frame.conversation), RECEIPT,
            encode_envelope(ReceiptEnvelope(
                status="read", app=identity.app, by_user=identity.user,
                by_device=identity.device, ts=now_ms(), conversation=frame.conversation,
                seq=frame.seq)))

    @property
    def partitions(self) -> int:
        return self._streams.count

    async def stream_position(self) -> list[int]:
        """Each partition's last sequence: the subscribe-before-fetch barrier (after the
        acks this gateway holds are published: a sync does not re-send what was acked)."""
        await self._acks.settle()
        try:
            return await self._streams.last_sequences()
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"stream unavailable: {exc!r}") from None

    async def sync_page(self, identity: Identity, after: list[int], limit: int,
                        barrier: list[int]) -> rpc.SyncPage:
        return await self._rpc.call("sync", rpc.SyncRequest(
            app=identity.app, user=identity.user, device=identity.device, after=after, limit=limit,
            barrier=barrier), rpc.SyncPage)

    async def _resolve(self, identity: Identity,
                       frame: Send) -> tuple[str, dict[str, bytes] | None]:
        """The conversation of a send, and the payloads it carries."""
        to = frame.to
        if to.kind == "user":
            await self._require_user(identity.app, to.id)
            await self._permissions.check_direct(identity, to.id)
            return direct_conversation(identity.user, to.id), frame.payloads
        if to.kind == "device":
            owner = await self._device_owner(identity.app, to.id)
            if frame.payloads is not None:
                raise ProtocolError(ErrorCode.INVALID, "a send to a device carries 'body'")
            assert frame.body is not None
            await self._permissions.check_direct(identity, owner)
            return direct_conversation(identity.user, owner), {to.id: frame.body}
        return (await self._permissions.group_sender(identity.app, identity.user, to.id),
                frame.payloads)

    async def _require_user(self, app: str, user: str) -> None:
        """The recipient must be a user of the sender's app: ids are per app, so a user of
        another app with the same id is, for this sender, nobody."""
        known_until = self._known_users.get((app, user))
        if known_until is not None and known_until > time.monotonic():
            return
        try:
            # With a stale "exists" to fall back on, a storage outage costs a send at most
            # STALE_CHECK_TIMEOUT_S, not the RPC deadline.
            reply = await self._rpc.call(
                "get_user", rpc.GetUser(app=app, user=user), rpc.UserDevices,
                timeout_s=STALE_CHECK_TIMEOUT_S if known_until is not None else None)
        except ProtocolError as exc:
            if exc.code == ErrorCode.UNAVAILABLE and known_until is not None:
                return  # users are never deleted: a stale "exists" keeps sends flowing
            raise
        if not reply.exists:
            raise ProtocolError(ErrorCode.UNKNOWN_RECIPIENT, f"no user {user!r}")
        self._known_users.put((app, user), time.monotonic() + self._cache_ttl_s)

    async def _device_owner(self, app: str, device: str) -> str:
        owner = self._device_owners.get((app, device))
        if owner is None:
            reply = await self._rpc.call("device_owner",
                                         rpc.DeviceOwner(app=app, device=device), rpc.Owner)
            if reply.user is None:
                raise ProtocolError(ErrorCode.UNKNOWN_RECIPIENT, f"no device {device!r}")
            owner = reply.user
            self._device_owners.put((app, device), owner)
        return owner

    async def _publish(self, partition: int, kind: str, data: bytes,
                       msg_id: str | None = None) -> int:
        """Publish into a partition; returns the envelope's position."""
        started = time.perf_counter()
        try:
            return await self._streams.publish(partition, kind, data, msg_id=msg_id)
        except NatsError as exc:
            log.warning("publish_failed", partition=partition, kind=kind, error=repr(exc))
            raise ProtocolError(ErrorCode.UNAVAILABLE, "message not stored; retry") from None
        finally:
            PUBLISH_SECONDS.observe(time.perf_counter() - started)
