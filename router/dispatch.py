"""Turns envelopes into per-device frames on ``dlv.<app>.<device>``. Every lookup (members,
devices, disabled state) is made in the envelope's app, so one app's message never reaches
another app's devices, whatever ids they share."""

import functools
import time
from collections import defaultdict

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import Counter

from control.view import ControlView
from router.directory import DeviceDirectory
from router.membership import GroupMembership
from router.push_jobs import PushJobs
from runtime.consumer import BatchHandler
from runtime.deadletter import DeadLetters
from runtime.partitions import Lease
from schemas.codec import encode_frame
from schemas.envelopes import (
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
from schemas.subjects import deliver_subject

DELIVERIES = Counter("courier_router_deliveries_total", "Frames published to devices", ["type"])
DROPPED = Counter("courier_router_dropped_total", "Envelopes not delivered", ["reason"])
MESSAGES_OUT = DELIVERIES.labels("message")  # bound once: labels() per delivery costs
RECEIPTS_OUT = DELIVERIES.labels("receipt")


class Dispatcher:
    """The batch handler of the router's pull loop."""

    def __init__(self, nc: Client, directory: DeviceDirectory, push: PushJobs,
                 control: ControlView, groups: GroupMembership,
                 dead_letters: DeadLetters, partitions: int) -> None:
        self._nc = nc
        self._partitions = partitions
        self._directory = directory
        self._push = push
        self._control = control
        self._groups = groups
        self._dead_letters = dead_letters

    def for_partition(self, lease: Lease) -> BatchHandler:
        """The batch handler of one partition's pull loop."""
        return functools.partial(self.handle, lease)

    async def handle(self, lease: Lease, msgs: list[Msg]) -> None:
        """Deliver a batch of ``lease.partition`` in order, while the lease holds (else
        ``LeaseLapsed``). Raises what delivery raised (RPC, NATS, ...): the pull loop
        retries or isolates it; only an envelope that cannot be decoded is buried here."""
        handled: list[Msg] = []
        for msg in msgs:
            lease.check()
            envelope = await self._decode_or_bury(msg)
            if envelope is None:
                continue
            seq = position(msg.metadata.sequence.stream, lease.partition, self._partitions)
            if isinstance(envelope, MessageEnvelope):
                await self._deliver_message(envelope, seq)
            elif isinstance(envelope, GroupEnvelope):
                await self._deliver_group_write(envelope, seq)
            elif isinstance(envelope, ReceiptBatch):
                await self._deliver_receipt_batch(envelope)
            else:
                await self._deliver_receipt(envelope)
            handled.append(msg)
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

    async def _deliver_group_write(self, envelope: GroupEnvelope, seq: int) -> None:
        """The system message of an applied group write goes to the members before and after
        it (a removed member learns of its removal, a new one of its addition)."""
        outcome = await self._groups.apply(envelope, seq)
        if not outcome.applied or outcome.message is None:
            DROPPED.labels("group_write_refused").inc()
            return
        frame = encode_frame(outcome.message)
        app = envelope.app
        for user in outcome.recipients:
            for device in await self._directory.devices(app, user):
                if not self._control.blocks(app, user, device.device):
                    await self._nc.publish(deliver_subject(app, device.device), frame)
                    MESSAGES_OUT.inc()

    async def _deliver_message(self, envelope: MessageEnvelope, seq: int) -> None:
        if envelope.expires_at is not None and envelope.expires_at <= int(time.time() * 1000):
            DROPPED.labels("expired").inc()
            return
        if self._control.module_disabled(envelope.app, envelope.module):
            DROPPED.labels("disabled").inc()
            return
        shared: bytes | None = None
        app = envelope.app  # every lookup in the message's app: its users, their devices
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
                if envelope.body is None:
                    data = encode_frame(message_frame(envelope, seq, body))
                else:
                    shared = shared or encode_frame(message_frame(envelope, seq, body))
                    data = shared
                await self._nc.publish(deliver_subject(app, device.device), data)
                MESSAGES_OUT.inc()
                await self._push.after_delivery(envelope, seq, user, device.device)

    async def _deliver_receipt(self, receipt: ReceiptEnvelope) -> None:
        if receipt.status == "delivered":
            await self._deliver_delivered(receipt)
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
                await self._publish_to_user(receipt.app, user, frame,
                                            skip_device=receipt.by_device)

    async def _deliver_delivered(self, receipt: ReceiptEnvelope) -> None:
        """Tell each sender which of its messages reached a device of ``by_user``."""
        delivered: _Delivered = defaultdict(dict)
        _collect_delivered(delivered, receipt.app, receipt.by_user, receipt.items)
        await self._publish_delivered(delivered)

    async def _deliver_receipt_batch(self, batch: ReceiptBatch) -> None:
        """The acks of many devices: one ``delivered`` receipt per (conversation, sender,
        reader) for the whole batch, however many devices and frames acked."""
        delivered: _Delivered = defaultdict(dict)
        for entry in batch.entries:
            _collect_delivered(delivered, entry.app, entry.user, entry.items)
        await self._publish_delivered(delivered)

    async def _publish_delivered(self, delivered: "_Delivered") -> None:
        for (app, conversation, sender, reader), ids in delivered.items():
            frame = encode_frame(Receipt(status="delivered", conversation=conversation,
                                         by=reader, message_ids=list(ids)))
            await self._publish_to_user(app, sender, frame)

    async def _publish_to_user(self, app: str, user: str, frame: bytes,
                               skip_device: str = "") -> None:
        for device in await self._directory.devices(app, user):
            if (device.device != skip_device
                    and not self._control.blocks(app, user, device.device)):
                await self._nc.publish(deliver_subject(app, device.device), frame)
                RECEIPTS_OUT.inc()


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
