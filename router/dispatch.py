"""Turns envelopes into per-device frames on ``dlv.<device>``."""

import time
from collections import defaultdict

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import Counter

from router.directory import DeviceDirectory
from schemas.codec import encode_frame
from schemas.envelopes import MessageEnvelope, ReceiptEnvelope, decode_envelope, message_frame
from schemas.frames import Receipt
from schemas.ids import direct_members
from schemas.subjects import dead_letter, deliver_subject

log = structlog.get_logger(__name__)

DELIVERIES = Counter("courier_router_deliveries_total", "Frames published to devices", ["type"])
DROPPED = Counter("courier_router_dropped_total", "Envelopes not delivered", ["reason"])


class Dispatcher:
    """The batch handler of the router's pull loop."""

    def __init__(self, nc: Client, directory: DeviceDirectory) -> None:
        self._nc = nc
        self._directory = directory

    async def __call__(self, msgs: list[Msg]) -> None:
        for msg in msgs:
            try:
                envelope = decode_envelope(msg.data)
                if isinstance(envelope, MessageEnvelope):
                    await self._deliver_message(envelope, msg.metadata.sequence.stream)
                else:
                    await self._deliver_receipt(envelope)
            except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                DROPPED.labels("poison").inc()
                log.error("poison_envelope", subject=msg.subject,
                          seq=msg.metadata.sequence.stream, error=str(exc))
                await self._nc.publish(dead_letter("router"), msg.data,
                                       headers={"Courier-Error": str(exc)[:200]})
                await msg.term()
                continue
            await msg.ack()

    async def _members(self, conversation: str) -> tuple[str, ...]:
        members = direct_members(conversation)
        if members is None:
            raise ValueError(f"no members known for conversation {conversation!r}")
        return tuple(sorted(set(members)))

    async def _deliver_message(self, envelope: MessageEnvelope, seq: int) -> None:
        if envelope.expires_at is not None and envelope.expires_at <= int(time.time() * 1000):
            DROPPED.labels("expired").inc()
            return
        headers = {"Courier-Seq": str(seq), "Courier-Id": envelope.id}
        shared: bytes | None = None
        for user in await self._members(envelope.conversation):
            for device in await self._directory.devices(user):
                if device.device == envelope.sender.device:
                    continue
                body = envelope.body_for(device.device)
                if body is None:
                    continue
                if envelope.body is None:
                    data = encode_frame(message_frame(envelope, seq, body))
                else:
                    shared = shared or encode_frame(message_frame(envelope, seq, body))
                    data = shared
                await self._nc.publish(deliver_subject(device.device), data, headers=headers)
                DELIVERIES.labels("message").inc()

    async def _deliver_receipt(self, receipt: ReceiptEnvelope) -> None:
        if receipt.status == "delivered":
            await self._deliver_delivered(receipt)
        elif receipt.conversation is not None and receipt.seq is not None:
            members = await self._members(receipt.conversation)
            if receipt.by_user not in members:
                DROPPED.labels("not_member").inc()
                return
            frame = encode_frame(Receipt(status="read", conversation=receipt.conversation,
                                         by=receipt.by_user, seq=receipt.seq))
            for user in members:
                await self._publish_to_user(user, frame, skip_device=receipt.by_device)

    async def _deliver_delivered(self, receipt: ReceiptEnvelope) -> None:
        """Tell each sender which of its messages reached a device of ``by_user``."""
        by_sender: dict[tuple[str, str], list[str]] = defaultdict(list)
        for item in receipt.items:
            if item.sender is None or item.sender == receipt.by_user:
                continue
            members = await self._members(item.conversation)
            if receipt.by_user not in members or item.sender not in members:
                DROPPED.labels("not_member").inc()
                continue
            by_sender[(item.conversation, item.sender)].append(item.id)
        for (conversation, sender), ids in by_sender.items():
            frame = encode_frame(Receipt(status="delivered", conversation=conversation,
                                         by=receipt.by_user, message_ids=ids))
            await self._publish_to_user(sender, frame)

    async def _publish_to_user(self, user: str, frame: bytes, skip_device: str = "") -> None:
        for device in await self._directory.devices(user):
            if device.device != skip_device:
                await self._nc.publish(deliver_subject(device.device), frame)
                DELIVERIES.labels("receipt").inc()
