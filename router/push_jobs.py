"""Push jobs for recipient devices that are offline when a message reaches the router.

One ``PushJob`` per (message, offline device) on ``push.jobs`` (stream ``PUSH``), with
``Nats-Msg-Id`` ``<message id>.<device>`` so that a redelivered router batch does not make a
second job. "Offline" comes from the presence view (no socket on any live gateway); a device
that connects a moment later gets the message from its backlog and, possibly, a needless
wake-up. The sender's own devices get no push for the sender's own messages.

Jobs are published without waiting for each JetStream ack (the router must not slow down per
offline device); ``flush`` waits for all of them, and the router acks its batch only after
that, so a job is never lost to a router crash: the batch is redelivered instead.
"""

import asyncio
from typing import Final

import structlog
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from prometheus_client import Counter

from presence.registry import PresenceView
from schemas.envelopes import MessageEnvelope
from schemas.push import PUSH_JOBS, PUSH_STREAM, PushJob, encode_job, job_dedup_id

log = structlog.get_logger(__name__)

JOBS = Counter("courier_router_push_jobs_total", "Push jobs published for offline devices")
#: How long ``flush`` (and a publish waiting for room) waits for JetStream.
ACK_TIMEOUT_S: Final = 5.0


class PushJobsNotStored(NatsError):
    """JetStream did not confirm every push job of a batch (the batch is retried)."""


class PushJobs:
    """Publishes the push job of a delivery when its device is offline."""

    def __init__(self, js: JetStreamContext, presence: PresenceView) -> None:
        self._js = js
        self._presence = presence
        self._pending: list[asyncio.Future[PubAck]] = []

    async def after_delivery(self, envelope: MessageEnvelope, seq: int, user: str,
                             device: str) -> None:
        """Called once per recipient device of ``envelope``."""
        if user == envelope.sender.user or self._presence.is_online(envelope.app, device):
            return
        job = PushJob(device=device, user=user, app=envelope.app,
                      conversation=envelope.conversation, message_id=envelope.id, seq=seq,
                      kind=envelope.kind, module=envelope.module, ts=envelope.ts,
                      expires_at=envelope.expires_at)
        self._pending.append(await self._js.publish_async(
            PUSH_JOBS, encode_job(job), wait_stall=ACK_TIMEOUT_S, stream=PUSH_STREAM,
            headers={"Nats-Msg-Id": job_dedup_id(envelope.id, device)}))
        JOBS.inc()

    async def flush(self) -> None:
        """Wait until JetStream stored every job published since the last flush; raises
        ``PushJobsNotStored`` if it did not confirm them all in time."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        done, late = await asyncio.wait(pending, timeout=ACK_TIMEOUT_S)
        for future in late:
            future.cancel()
        failed = [f.exception() for f in done if f.exception() is not None]
        if late or failed:
            log.warning("push_jobs_not_stored", late=len(late), failed=len(failed),
                        error=repr(failed[0]) if failed else "timeout")
            raise PushJobsNotStored(f"{len(late) + len(failed)} of {len(pending)} push jobs")
