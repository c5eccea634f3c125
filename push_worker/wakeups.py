"""The push worker's side of ``courier_push_wakeups``: before a wake-up is sent, what it stands
for is recorded under a fresh random id, and only that id (and a count) goes to the push
service. The device trades the id for the record over the authenticated API
(``gateway.http.push_rest``); the record expires with the bucket's TTL.

Why a KV bucket, as for registrations (``push_worker.tokens``): records are small, written
once per push, read at most once by one device soon after, and must outlive neither a day nor
the message store's backends; the bucket is durable and replicated like the streams and needs
no storage RPC hop. A retried push writes a new record under a new id; the old one expires.
"""

import time
from collections.abc import Callable

import msgspec
from nats.js.kv import KeyValue
from prometheus_client import Counter

from schemas.push import (
    WAKEUP_TTL_S,
    PushRegistration,
    WakeUp,
    WakeUpConversation,
    WakeUpDetails,
    WakeUpRecord,
    collapse_key,
    new_wakeup_id,
)

_encoder = msgspec.json.Encoder()
RECORDED = Counter("courier_push_wakeups_recorded_total",
                   "Wake-up records written (one per push sent or retried)")


def wall_ms() -> int:
    return int(time.time() * 1000)


class WakeUps:
    """Records wake-ups; raises ``nats.errors.Error`` when the bucket does not take one (the
    caller retries the burst later)."""

    def __init__(self, kv: KeyValue, clock_ms: Callable[[], int] = wall_ms) -> None:
        self._kv = kv
        self._clock_ms = clock_ms

    async def record(self, registration: PushRegistration,
                     conversation: WakeUpConversation) -> WakeUp:
        """Store what the wake-up of ``conversation`` for ``registration``'s device stands
        for; return the wake-up that may be sent: its id, its count, a per-device collapse
        key."""
        now = self._clock_ms()
        details = WakeUpDetails(id=new_wakeup_id(), count=conversation.count,
                                conversations=[conversation], created_at=now,
                                expires_at=now + WAKEUP_TTL_S * 1000)
        record = WakeUpRecord(app=registration.app, user=registration.user,
                              device=registration.device, details=details)
        await self._kv.put(details.id, _encoder.encode(record))
        RECORDED.inc()
        return WakeUp(id=details.id, count=details.count,
                      collapse_key=collapse_key(registration.device, conversation.conversation))
