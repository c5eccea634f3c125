"""Turns envelopes into frames for devices, sent to the gateways holding them: one
``EdgeBatch`` per gateway per batch (``router.edge``). Every lookup (members, devices, disabled
state) is made in the envelope's app, so one app's message never reaches another app's
devices, whatever ids they share."""

import functools
import time
from collections import defaultdict

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import Counter

from control.view import ControlView
from router.directory import DeviceDirectory
from router.edge import EdgeOutbox, EdgeRoutes
from router.membership import GroupMembership
from router.push_jobs import PushJobs
from runtime.consumer import BatchHandler
from runtime.deadletter import DeadLetters
from runtime.partitions import Lease
from schemas.codec import encode_frame
from schemas.envelopes import (
    AttachEnvelope,
    Envelope,
    MessageEnvelope,
    ReceiptBatch,
    ReceiptEnvelope,
    decode_envelope,
    message_frame,
)
from schemas.frames import AckItem, Receipt
from schemas.groups import GroupEnvelope
from schemas.ids import direct_members, group_of, notification_members
from schemas.partitions import position

DELIVERIES = Counter("courier_router_deliveries_total",
                     "Frames sent to devices that are online (each device counted)", ["type"])
DROPPED = Counter("courier_router_dropped_total", "Envelopes not delivered", ["reason"])
MESSAGES_OUT = DELIVERIES.labels("message")  # bound once: labels() per delivery costs
RECEIPTS_OUT = DELIVERIES.labels("receipt")


class Dispatcher:
    """The batch handler of the router's pull loop."""

    def __init__(self, nc: Client, directory: DeviceDirectory, push: PushJobs,
                 control: ControlView, groups: GroupMembership,
                 dead_letters: DeadLetters, partitions: int, *, routes: EdgeRoutes,
                 edge_bytes: int) -> None:
        self._nc = nc
        self._partitions = partitions
        self._routes = routes
        self._edge_bytes = edge_bytes
        self._directory = directory
        self._push = push
        self._control = control
        self._groups = groups
        self._dead_letters = dead_letters

    def for_partition(self, lease: Lease) -> BatchHandler:
        """The batch handler of one partition's pull loop, made each time the partition is
        taken: its routes start empty (markers handled by another holder meanwhile were
        never seen here)."""
        self._routes.reset(lease.partition)
        return functools.partial(self.handle, lease)

    async def handle(self, lease: Lease, msgs: list[Msg]) -> None:
        """Deliver a batch of ``lease.partition`` in order, while the lease holds (else
        ``LeaseLapsed``). Raises what delivery raised (RPC, NATS, ...): the pull loop
        retries or isolates it; only an envelope that cannot be decoded is buried here."""
        handled: list[Msg] = []
        out = _Out(lease.partition, self._routes,
                   EdgeOutbox(min(self._edge_bytes, self._nc.max_payload)))
        for msg in msgs:
            lease.check()
            envelope = await self._decode_or_bury(msg)
            if envelope is None:
                continue
            seq = position(msg.metadata.sequence.stream, lease.partition, self._partitions)
            if isinstance(envelope, MessageEnvelope):
                await self._deliver_message(envelope, seq, out)
            elif isinstance(envelope, GroupEnvelope):
                await self._deliver_group_write(envelope, seq, out)
            elif isinstance(envelope, AttachEnvelope):
                self._routes.attached(lease.partition, envelope)
            elif isinstance(envelope, ReceiptBatch):
                await self._deliver_receipt_batch(envelope, out)
            else:
                await self._deliver_receipt(envelope, out)
            handled.append(msg)
        await out.outbox.flush(self._nc)  # one publish per gateway (or a few: the byte bound)
        await self._push.flush()  # the batch's push jobs are stored before its acks
        for msg in handled:
            await msg.ack()

    async def _decode_or_bury(self, msg: Msg) -> Envelope | None:
        """Decode, or dead-letter and term an envelope that can never be delivered (not an
        envelope, or a message to a conversation nobody can be placed in)."""
        try:
            envelope = decode_envelope(msg.data)
            if isinstance(envelope, MessageEnvelope) and group_of(envelope.conversation) is None:
                _members(envelope.conversation)
            return envelope
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            DROPPED.labels("poison").inc()
            await self._dead_letters.bury(msg, exc, attempts=0)
            return None

    async def _recipients(self, envelope: MessageEnvelope, seq: int) -> tuple[str, ...]:
        """The conversation's members; for a group, its members at ``seq`` (nobody when the
        sender was no longer one: it was removed after the gateway let the send through)."""
        group = group_of(envelope.conversation)
        if group is None:
            return _members(envelope.conversation)
        members = await self._groups.members_at(envelope.app, group, seq)
        if envelope.sender.user is not None and envelope.sender.user not in members:
            DROPPED.labels("not_member").inc()
            return ()
        return members

    async def _deliver_group_write(self, envelope: GroupEnvelope, seq: int,
                                   out: "_Out") -> None:
        """The system message of an applied group write goes to the members before and after
        it (a removed member learns of its removal, a new one of its addition)."""
        outcome = await self._groups.apply(envelope, seq)
        if not outcome.applied or outcome.message is None:
            DROPPED.labels("group_write_refused").inc()
            return
        app = envelope.app
        devices = [device.device for user in outcome.recipients
                   for device in await self._directory.devices(app, user)
                   if not self._control.blocks(app, user, device.device)]
        MESSAGES_OUT.inc(out.send(app, devices, encode_frame(outcome.message)))

    async def _deliver_message(self, envelope: MessageEnvelope, seq: int, out: "_Out") -> None:
        if envelope.expires_at is not None and envelope.expires_at <= int(time.time() * 1000):
            DROPPED.labels("expired").inc()
            return
        if self._control.module_disabled(envelope.app, envelope.module):
            DROPPED.labels("disabled").inc()
            return
        app = envelope.app  # every lookup in the message's app: its users, their devices
        shared: list[str] = []  # devices that get the shared body: one frame for them all
        for user in await self._recipients(envelope, seq):
            for device in await self._directory.devices(app, user):
                if device.device == envelope.sender.device:
                    continue
                if self._control.blocks(app, user, device.device):
                    DROPPED.labels("disabled").inc()
                    continue
                body = envelope.body_for(device.device)
                if body is None:
                    continue
                if envelope.body is not None:
                    shared.append(device.device)
                elif (gateway := out.gateway_of(app, device.device)) is not None:
                    # its own payload: its own frame, encoded only for a device online
                    out.outbox.add(gateway, app, [device.device],
                                   encode_frame(message_frame(envelope, seq, body)))
                    MESSAGES_OUT.inc()
                await self._push.after_delivery(envelope, seq, user, device.device)
        if shared and envelope.body is not None:
            MESSAGES_OUT.inc(out.send(app, shared, encode_frame(
                message_frame(envelope, seq, envelope.body))))

    async def _deliver_receipt(self, receipt: ReceiptEnvelope, out: "_Out") -> None:
        if receipt.status == "delivered":
            await self._deliver_delivered(receipt, out)
        elif receipt.conversation is not None and receipt.seq is not None:
            # Group read markers are counted (GET .../receipts), not broadcast to every member:
            # only the reader's other devices hear of them.
            members = ((receipt.by_user,) if group_of(receipt.conversation) is not None
                       else _members(receipt.conversation))
            if receipt.by_user not in members:
                DROPPED.labels("not_member").inc()
                return
            frame = encode_frame(Receipt(status="read", conversation=receipt.conversation,
                                         by=receipt.by_user, seq=receipt.seq))
            for user in members:
                await self._send_to_user(out, receipt.app, user, frame,
                                         skip_device=receipt.by_device)

    async def _deliver_delivered(self, receipt: ReceiptEnvelope, out: "_Out") -> None:
        """Tell each sender which of its messages reached a device of ``by_user``."""
        delivered: _Delivered = defaultdict(dict)
        _collect_delivered(delivered, receipt.app, receipt.by_user, receipt.items)
        await self._send_delivered(delivered, out)

    async def _deliver_receipt_batch(self, batch: ReceiptBatch, out: "_Out") -> None:
        """The acks of many devices: one ``delivered`` receipt per (conversation, sender,
        reader) for the whole batch, however many devices and frames acked."""
        delivered: _Delivered = defaultdict(dict)
        for entry in batch.entries:
            _collect_delivered(delivered, entry.app, entry.user, entry.items)
        await self._send_delivered(delivered, out)

    async def _send_delivered(self, delivered: "_Delivered", out: "_Out") -> None:
        for (app, conversation, sender, reader), ids in delivered.items():
            frame = encode_frame(Receipt(status="delivered", conversation=conversation,
                                         by=reader, message_ids=list(ids)))
            await self._send_to_user(out, app, sender, frame)

    async def _send_to_user(self, out: "_Out", app: str, user: str, frame: bytes,
                            skip_device: str = "") -> None:
        devices = [device.device for device in await self._directory.devices(app, user)
                   if device.device != skip_device
                   and not self._control.blocks(app, user, device.device)]
        RECEIPTS_OUT.inc(out.send(app, devices, frame))


class _Out:
    """Where one batch's frames go: each device looked up in the partition's routes, the
    frame added once per gateway to the batch's outbox."""

    def __init__(self, partition: int, routes: EdgeRoutes, outbox: EdgeOutbox) -> None:
        self._partition = partition
        self._routes = routes
        self.outbox = outbox

    def send(self, app: str, devices: list[str], frame: bytes) -> int:
        """Add ``frame`` for the devices that are online; returns how many are."""
        by_gateway = self._routes.route(self._partition, app, devices)
        for gateway, here in by_gateway.items():
            self.outbox.add(gateway, app, here, frame)
        return sum(len(here) for here in by_gateway.values())

    def gateway_of(self, app: str, device: str) -> str | None:
        return self._routes.gateway_of(self._partition, app, device)


#: (app, conversation, sender, reader) -> the sender's message ids the reader received, in
#: order and without repeats (a dict used as an ordered set).
_Delivered = defaultdict[tuple[str, str, str, str], dict[str, None]]


def _collect_delivered(delivered: _Delivered, app: str, reader: str,
                       items: list[AckItem]) -> None:
    """Add the acks of one device of ``reader`` that owe their senders a receipt."""
    for item in items:
        if item.sender is None or item.sender == reader:
            continue
        if group_of(item.conversation) is not None:
            continue  # group deliveries are counted (GET .../receipts), not forwarded
        members = _members(item.conversation)
        if reader not in members or item.sender not in members:
            DROPPED.labels("not_member").inc()
            continue
        delivered[(app, item.conversation, item.sender, reader)][item.id] = None


def _members(conversation: str) -> tuple[str, ...]:
    """The users of a direct or notification conversation; ValueError for any other id."""
    members = direct_members(conversation) or notification_members(conversation)
    if members is None:
        raise ValueError(f"no members known for conversation {conversation!r}")
    return tuple(sorted(set(members)))
