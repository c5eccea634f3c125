"""Publishing dead letters to the ``DLQ`` stream (``schemas.dead_letters``).

``DeadLetters.bury`` stores the envelope with its ``Courier-*`` headers in ``DLQ``, waits for
JetStream's acknowledgement, then terms the envelope on its own stream: nothing is termed that
is not stored. The publish carries ``Nats-Msg-Id: <worker>.<stream>.<seq>``, so an envelope
buried twice (the term was lost, the envelope redelivered and buried again within the stream's
duplicate window) is kept once.
"""

import time
from dataclasses import dataclass

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter

from runtime.config import Config
from runtime.natsconn import ensure_stream
from schemas import dead_letters as dl
from schemas.subjects import dead_letter

log = structlog.get_logger(__name__)

DEAD_LETTERED = Counter("courier_dead_letters_total", "Envelopes dead-lettered and termed",
                        ["worker", "reason"])


def describe(exc: BaseException) -> str:
    """``<type>: <message>``, cut to fit the ``Courier-Error`` header: one line of ASCII."""
    text = f"{type(exc).__name__}: {exc}".replace("\r", " ").replace("\n", " ")
    return text.encode("ascii", "backslashreplace").decode()[:dl.MAX_ERROR]


DAY_S = 86_400


@dataclass(frozen=True)
class RetryPolicy:
    """How long failures are retried (``runtime.consumer``). ``attempts``/``retry_s``: an
    envelope failing alone; ``outage_backoff_s`` up to ``max_backoff_s``: transient failures
    (forever)."""

    attempts: int = 3
    retry_s: float = 0.2
    outage_backoff_s: float = 0.05
    max_backoff_s: float = 5.0


async def ensure_dlq(js: JetStreamContext, config: Config, *, owner: bool) -> None:
    """Create the ``DLQ`` stream with the configured retention if it is missing; its owner
    (the storage worker, ``schemas.nats_permissions``) also applies configuration changes."""
    await ensure_stream(js, msgspec.structs.replace(
        dl.DLQ, max_age_s=config.dlq.max_age_days * DAY_S), config.nats, update=owner)


class DeadLetters:
    """Where one worker buries what it gave up on, and after how many tries."""

    def __init__(self, js: JetStreamContext, worker: str, policy: RetryPolicy) -> None:
        self._js = js
        self._worker = worker
        self._subject = dead_letter(worker)
        self.policy = policy

    @classmethod
    async def open(cls, js: JetStreamContext, config: Config, worker: str, *,
                   owner: bool = False) -> "DeadLetters":
        """The dead letters of ``worker``, once the ``DLQ`` stream exists."""
        await ensure_dlq(js, config, owner=owner)
        return cls(js, worker, RetryPolicy(attempts=config.dlq.attempts,
                                           retry_s=config.dlq.retry_s))

    async def bury(self, msg: Msg, exc: BaseException, attempts: int) -> None:
        """Store ``msg`` in ``DLQ``, then term it. Raises what the publish raised (NATS
        trouble: the caller retries); ``attempts`` 0 means the envelope was never decoded."""
        meta = msg.metadata
        headers = {
            dl.WORKER: self._worker,
            dl.ERROR: describe(exc),
            dl.SUBJECT: msg.subject,
            dl.STREAM: meta.stream,
            dl.STREAM_SEQ: str(meta.sequence.stream),
            dl.ATTEMPTS: str(attempts),
            dl.DEAD_AT: str(int(time.time() * 1000)),
            "Nats-Msg-Id": f"{self._worker}.{meta.stream}.{meta.sequence.stream}",
        }
        ack = await self._js.publish(self._subject, msg.data, stream=dl.DLQ_STREAM,
                                     headers=headers, timeout=5.0)
        await msg.term()
        DEAD_LETTERED.labels(self._worker, "undecodable" if attempts == 0 else "failed").inc()
        log.error("dead_lettered", worker=self._worker, subject=msg.subject,
                  stream_seq=meta.sequence.stream, attempts=attempts, dlq_seq=ack.seq,
                  error=headers[dl.ERROR])
