"""From push jobs to provider calls: coalesce, limit, send, then ack, retry or dead-letter.

``PushPipeline`` is the pull loop's batch handler (it only files jobs into bursts and never
acks there) and owns the flusher task that sends due bursts, at most ``concurrency`` at once.
See the package docstring for the ack policy.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

import msgspec
import structlog
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram

from push_worker.coalesce import Burst, Coalescer, summarize
from push_worker.limiter import UserLimiter
from push_worker.providers.base import Outcome, PushTarget, SendResult
from push_worker.providers.routing import ProviderRouter
from push_worker.tokens import Registration, TokenRegistry
from push_worker.wakeups import WakeUps
from runtime.config import PushConfig
from runtime.tasks import TaskGroup
from schemas.ids import scoped
from schemas.push import PUSH_DEAD, PUSH_STREAM, DeadPush, decode_job

log = structlog.get_logger(__name__)

JOBS = Counter("courier_push_jobs_total", "Push jobs by what became of them", ["result"])
SENT = Counter("courier_push_sends_total", "Provider calls by outcome", ["provider", "outcome"])
SEND_SECONDS = Histogram("courier_push_send_seconds", "Provider call duration", ["provider"],
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DEFERRED = Counter("courier_push_deferred_total", "Bursts held back by the per-user limit")
DEAD = Counter("courier_push_dead_total", "Wake-ups dead-lettered", ["provider"])
DISABLED = Counter("courier_push_tokens_disabled_total", "Tokens disabled after a rejection",
                   ["provider"])
PRUNE_EVERY_S = 60.0

_dead_encoder = msgspec.json.Encoder()


def wall_ms() -> int:
    return int(time.time() * 1000)


class PushPipeline:
    """Batch handler plus flusher."""

    def __init__(self, js: JetStreamContext, tokens: TokenRegistry, wakeups: WakeUps,
                 providers: ProviderRouter, config: PushConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._js = js
        self._tokens = tokens
        self._wakeups = wakeups
        self._providers = providers
        self._config = config
        self._clock = clock
        self._coalescer: Coalescer[Msg] = Coalescer(config.collapse_window_s)
        self._limiter = UserLimiter(config.user_per_minute, config.user_burst)
        self._slots = asyncio.Semaphore(config.concurrency)
        #: The flusher and one task per burst being sent.
        self._tasks = TaskGroup("push")
        self._changed = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        #: Held jobs get ``in_progress`` this often, well inside the consumer's ack wait.
        self._progress_every_s = config.ack_wait_s / 3

    def start(self) -> None:
        self._flusher = self._tasks.spawn(self._flush_forever(), name="flusher")

    async def drain(self) -> None:
        """Send every pending burst now (the pull loop has stopped) and wait for the sends."""
        await self._stop_flusher()
        for burst in self._coalescer.pop_all():
            await self._launch(burst)
        await self._tasks.drain()

    async def stop(self) -> None:
        """Abandon what is left (JetStream redelivers the unacknowledged jobs)."""
        await self._stop_flusher()
        await self._tasks.stop()

    # ------------------------------------------------------------------ intake

    async def __call__(self, msgs: list[Msg]) -> None:
        """File each job into its burst. Never raises once a job is filed: the filed jobs
        belong to the flusher, so the pull loop must not nak the batch."""
        now = self._clock()
        for msg in msgs:
            try:
                job = decode_job(msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                await self._poison(msg, str(exc))
                continue
            if job.expires_at is not None and job.expires_at <= wall_ms():
                JOBS.labels("expired").inc()
                await _quietly([msg], lambda m: m.ack())
                continue
            self._coalescer.add(job, msg, now)
        self._changed.set()

    async def _poison(self, msg: Msg, error: str) -> None:
        """Dead-letter and term a job that can never be decoded."""
        JOBS.labels("poison").inc()
        log.error("poison_push_job", seq=msg.metadata.sequence.stream, error=error)
        try:
            await self._js.publish(PUSH_DEAD, msg.data, stream=PUSH_STREAM, timeout=5.0,
                                   headers={"Courier-Error": error[:200]})
        except NatsError:
            log.exception("poison_not_dead_lettered", seq=msg.metadata.sequence.stream)
        await _quietly([msg], lambda m: m.term())

    # ------------------------------------------------------------------ flushing

    async def _flush_forever(self) -> None:
        pruned = self._clock()
        while not self._closing:
            self._changed.clear()
            now = self._clock()
            try:
                await self._flush_pass(now)
            except Exception:  # a bug: report it, keep flushing the other bursts
                log.exception("flush_pass_failed")
            if now - pruned >= PRUNE_EVERY_S:
                self._limiter.prune(now)
                pruned = now
            due = self._coalescer.next_due()
            timeout = self._progress_every_s if due is None else min(
                max(due - self._clock(), 0.0), self._progress_every_s)
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def _flush_pass(self, now: float) -> None:
        """Extend the ack deadline of long-held jobs; launch the sends of due bursts."""
        for burst in self._coalescer.stale(now, self._progress_every_s):
            await _quietly(burst.handles, lambda m: m.in_progress())
        for burst in self._coalescer.pop_due(now):
            await self._launch(burst)

    async def _launch(self, burst: Burst[Msg]) -> None:
        await self._tasks.spawn_bounded(lambda: self._send(burst), name="send",
                                        slots=self._slots)

    async def _send(self, burst: Burst[Msg]) -> None:
        """Deliver one burst; an unexpected failure is logged and the jobs come back later."""
        try:
            await self._deliver(burst)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("push_burst_failed", device=burst.device, jobs=len(burst.jobs))
            await _quietly(burst.handles, lambda m: m.nak(delay=self._backoff(burst)))

    async def _deliver(self, burst: Burst[Msg]) -> None:
        registration = await self._tokens.get(burst.app, burst.device)
        if registration is None or registration.value.disabled:
            JOBS.labels("no_token").inc(len(burst.jobs))
            await _all(burst.handles, lambda m: m.ack())
            return
        now = self._clock()
        wait_s = self._limiter.wait_s(scoped(burst.app, burst.user), now)
        if wait_s > 0:
            DEFERRED.inc()
            self._coalescer.requeue(burst, now + wait_s)
            self._changed.set()
            return
        value = registration.value
        provider = self._providers.for_platform(value.platform)
        target = PushTarget(device=value.device, user=value.user, app=value.app,
                            platform=value.platform, token=value.token,
                            registered_at=value.updated_at)
        wake = await self._wakeups.record(value, summarize(burst.jobs, self._config.max_ids))
        started = time.perf_counter()
        try:
            result = await provider.send(target, wake)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("provider_raised", provider=provider.name, device=burst.device)
            result = SendResult(Outcome.RETRY, f"provider raised {exc!r}")
        SEND_SECONDS.labels(provider.name).observe(time.perf_counter() - started)
        SENT.labels(provider.name, result.outcome).inc()
        await self._settle(burst, registration, provider.name, result)

    async def _settle(self, burst: Burst[Msg], registration: Registration, provider: str,
                      result: SendResult) -> None:
        """Ack, disable, retry or dead-letter according to the provider's answer."""
        if result.outcome is Outcome.SENT:
            JOBS.labels("sent").inc(len(burst.jobs))
            await _all(burst.handles, lambda m: m.ack())
            return
        log.info("push_not_sent", provider=provider, device=burst.device,
                 outcome=result.outcome, detail=result.detail)
        if result.outcome is Outcome.REJECTED:
            if await self._tokens.disable(registration, result.detail):
                DISABLED.labels(provider).inc()
            JOBS.labels("rejected").inc(len(burst.jobs))
            await _all(burst.handles, lambda m: m.ack())
            return
        attempts = _attempts(burst)
        if result.outcome is Outcome.RETRY and attempts < self._config.max_attempts:
            JOBS.labels("retried").inc(len(burst.jobs))
            await _all(burst.handles, lambda m: m.nak(delay=self._backoff(burst)))
            return
        await self._dead_letter(burst, provider, attempts, result.detail)

    async def _dead_letter(self, burst: Burst[Msg], provider: str, attempts: int,
                           error: str) -> None:
        summary = summarize(burst.jobs, self._config.max_ids)
        dead = DeadPush(device=burst.device, user=burst.user, conversation=summary.conversation,
                        message_ids=summary.message_ids, provider=provider, attempts=attempts,
                        error=error[:500], ts=wall_ms())
        await self._js.publish(PUSH_DEAD, _dead_encoder.encode(dead), stream=PUSH_STREAM,
                               timeout=5.0)
        DEAD.labels(provider).inc()
        JOBS.labels("dead").inc(len(burst.jobs))
        log.warning("push_dead_lettered", provider=provider, device=burst.device,
                    attempts=attempts, error=error)
        await _all(burst.handles, lambda m: m.term())

    def _backoff(self, burst: Burst[Msg]) -> float:
        attempts = _attempts(burst)
        return float(min(self._config.retry_base_s * 2 ** (attempts - 1),
                         self._config.retry_max_s))

    async def _stop_flusher(self) -> None:
        """Let the flusher finish its pass (no cancellation in the middle of a launch)."""
        self._closing = True
        self._changed.set()
        if self._flusher is not None:
            await self._flusher
            self._flusher = None


def _attempts(burst: Burst[Msg]) -> int:
    """Sends tried so far for this burst, counting this one (JetStream delivery count)."""
    return max(m.metadata.num_delivered or 1 for m in burst.handles)


async def _all(msgs: list[Msg], action: Callable[[Msg], Awaitable[object]]) -> None:
    """Ack/nak/term every job; a failure raises (the caller naks, redelivery follows)."""
    for msg in msgs:
        await action(msg)


async def _quietly(msgs: list[Msg], action: Callable[[Msg], Awaitable[object]]) -> None:
    """Best effort: when NATS is down, the ack wait expires and JetStream redelivers."""
    for msg in msgs:
        try:
            await action(msg)
        except Exception as exc:
            log.debug("job_ack_failed", error=repr(exc))
