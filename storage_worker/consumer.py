"""Applies batches of a partition's envelopes to the store; attach markers (for routers)
are acknowledged with their batch, nothing stored."""

import functools
import time
from collections import defaultdict

import msgspec
from nats.aio.msg import Msg
from prometheus_client import Counter, Histogram

from runtime.consumer import BatchHandler
from runtime.deadletter import DeadLetters
from runtime.partitions import Lease
from schemas.envelopes import (
    AttachEnvelope,
    DeviceAcks,
    Envelope,
    MessageEnvelope,
    ReceiptBatch,
    ReceiptEnvelope,
    decode_envelope,
)
from schemas.frames import AckItem
from schemas.ids import group_of
from schemas.partitions import position
from storage_worker.group_apply import GroupApplier
from storage_worker.recipients import inbox_users
from storage_worker.store.base import MessageStore, StoredMessage

STORED = Counter("courier_storage_messages_total", "Messages stored (including duplicates)")
RECEIPTS = Counter("courier_storage_receipts_total", "Receipts applied", ["status"])
BATCH_SECONDS = Histogram("courier_storage_batch_seconds", "Time to apply one batch")
ATTACH_MARKERS = Counter("courier_storage_attach_markers_total",
                         "Attach markers acknowledged without storing anything")


class EnvelopeApplier:
    """The batch handler of the storage worker's pull loop."""

    def __init__(self, store: MessageStore, dead_letters: DeadLetters,
                 groups: GroupApplier, partitions: int) -> None:
        self._store = store
        self._dead_letters = dead_letters
        self._groups = groups
        self._partitions = partitions

    def for_partition(self, lease: Lease) -> BatchHandler:
        """The batch handler of one partition's pull loop."""
        return functools.partial(self.handle, lease)

    async def handle(self, lease: Lease, msgs: list[Msg]) -> None:
        """Apply a batch of ``lease.partition``; each write to the store first checks the
        lease (``LeaseLapsed``: the rest waits for the next holder)."""
        partition = lease.partition
        with BATCH_SECONDS.time():
            pending: list[StoredMessage] = []
            receipts: list[ReceiptEnvelope | ReceiptBatch] = []
            for msg in msgs:
                envelope = await self._decode_or_term(msg)
                if envelope is None:
                    continue
                seq = position(msg.metadata.sequence.stream, partition, self._partitions)
                if isinstance(envelope, MessageEnvelope):
                    recipients = await self._recipients(envelope)
                    if recipients is not None:
                        pending.append(StoredMessage(seq, envelope, recipients))
                elif isinstance(envelope, ReceiptEnvelope | ReceiptBatch):
                    receipts.append(envelope)  # refers to earlier messages only: may wait
                elif isinstance(envelope, AttachEnvelope):
                    ATTACH_MARKERS.inc()  # for routers: nothing to store, acked with the batch
                else:  # a group write is ordered with the messages around it
                    await self._flush(pending, receipts, lease)
                    lease.check()
                    await self._groups.apply(envelope, seq)
            await self._flush(pending, receipts, lease)
        for msg in msgs:
            if not msg.is_acked:
                await msg.ack()

    async def _recipients(self, envelope: MessageEnvelope) -> list[str] | None:
        """Whose inbox the message enters; None: drop it (see ``GroupApplier.recipients``)."""
        if group_of(envelope.conversation) is None:
            return inbox_users(envelope)
        return await self._groups.recipients(envelope)

    async def _flush(self, pending: list[StoredMessage],
                     receipts: list[ReceiptEnvelope | ReceiptBatch], lease: Lease) -> None:
        """Store the pending messages, then apply the receipts held since the last flush:
        the acks of one device in one call."""
        if pending or receipts:
            lease.check()
        if pending:
            await self._store.append(pending)
            await self._groups.record_messages(pending)
            STORED.inc(len(pending))
            pending.clear()
        if not receipts:
            return
        now = int(time.time() * 1000)
        acks: dict[tuple[str, str, str], list[AckItem]] = defaultdict(list)
        for receipt in receipts:
            if isinstance(receipt, ReceiptBatch):
                for entry in receipt.entries:
                    acks[(entry.app, entry.user, entry.device)].extend(entry.items)
                    await self._groups.on_delivered(entry.app, entry.user, entry.items)
                RECEIPTS.labels("delivered").inc(len(receipt.entries))
                continue
            if receipt.status == "delivered":
                acks[(receipt.app, receipt.by_user, receipt.by_device)].extend(receipt.items)
            elif receipt.conversation is not None and receipt.seq is not None:
                await self._store.mark_read(receipt.app, receipt.by_user, receipt.conversation,
                                            receipt.seq)
            await self._groups.on_receipt(receipt)
            RECEIPTS.labels(receipt.status).inc()
        await self._store.record_acks_of(
            [DeviceAcks(app=app, user=user, device=device, items=items)
             for (app, user, device), items in acks.items()], now)
        receipts.clear()

    async def _decode_or_term(self, msg: Msg) -> Envelope | None:
        """Decode, or dead-letter and term an envelope that can never be processed."""
        try:
            envelope = decode_envelope(msg.data)
            if isinstance(envelope, MessageEnvelope) and group_of(envelope.conversation) is None:
                inbox_users(envelope)  # raises for conversations the store cannot place
            return envelope
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            await self._dead_letters.bury(msg, exc, attempts=0)
            return None
