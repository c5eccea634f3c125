"""NATS KV buckets: create (idempotently) and open the buckets named in ``schemas.buckets``,
and follow a bucket into a local copy that survives nats-server restarts."""

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final

import structlog
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from runtime.backoff import Backoff
from runtime.tasks import TaskGroup
from schemas.buckets import BucketSpec

log = structlog.get_logger(__name__)

#: How often a quiet watcher checks whether the NATS connection was re-established. A KV
#: watcher is an ephemeral consumer: a restarted nats-server has forgotten it and the watcher
#: would wait forever without a word, so after a reconnect it is replaced.
RECONNECT_CHECK_S: Final = 1.0
#: How long a local copy may take to load when its owner starts.
READY_TIMEOUT_S: Final = 10.0


async def ensure_bucket(js: JetStreamContext, spec: BucketSpec, replicas: int) -> KeyValue:
    """Create the bucket if it does not exist (file storage, ``replicas`` copies) and open it."""
    return await js.create_key_value(KeyValueConfig(
        bucket=spec.name, description=spec.description, history=spec.history,
        ttl=float(spec.ttl_s) if spec.ttl_s else None, storage=StorageType.FILE,
        replicas=replicas))


class BucketFollower:
    """Feeds every change of one bucket to ``apply(key, value or None when deleted)``.

    ``follow`` runs one watcher: it opens the bucket with ``open_bucket`` (which may create
    it: a memory bucket is gone after a nats-server restart), replays the current values,
    then calls ``apply(key, None)`` for each key of ``known()`` that is no longer there (it
    vanished while no watcher ran), calls ``on_ready`` and follows changes. After a
    reconnect it starts a new watcher the same way. Run it under ``TaskGroup.watch``, which
    starts it again when it raises (the bucket could not be opened, NATS is down).
    """

    def __init__(self, nc: Client, open_bucket: Callable[[], Awaitable[KeyValue]],
                 apply: Callable[[str, bytes | None], None], known: Callable[[], Iterable[str]],
                 on_ready: Callable[[], None]) -> None:
        self._nc = nc
        self._open_bucket = open_bucket
        self._apply = apply
        self._known = known
        self._on_ready = on_ready

    async def follow(self) -> None:
        while True:
            await self._follow_once()
            log.info("kv_watch_renewed", reason="NATS reconnected")

    async def _follow_once(self) -> None:
        """One watcher, until NATS reconnects."""
        reconnects = self._nc.stats["reconnects"]
        watcher = await (await self._open_bucket()).watchall()
        seen: set[str] | None = set()
        try:
            while True:
                try:
                    entry = await watcher.updates(  # type: ignore[no-untyped-call]
                        timeout=RECONNECT_CHECK_S)
                except NatsTimeoutError:
                    if self._nc.stats["reconnects"] != reconnects:
                        return
                    continue
                if entry is None:  # the current values have all been delivered
                    for key in set(self._known()) - (seen or set()):
                        self._apply(key, None)
                    seen = None
                    self._on_ready()
                    continue
                deleted = entry.operation is not None or not entry.value
                if seen is not None and not deleted:
                    seen.add(entry.key)
                self._apply(entry.key, None if deleted else entry.value)
        finally:
            try:
                await watcher.stop()  # type: ignore[no-untyped-call]
            except Exception:  # the connection is gone; so is the subscription
                pass


async def follow_until_loaded(tasks: TaskGroup, followers: Mapping[str, BucketFollower],
                              loaded: Iterable[asyncio.Event], *,
                              backoff: tuple[float, float]) -> None:
    """Run each follower under ``tasks`` (started again with ``backoff`` when it fails) and
    return once every ``loaded`` event is set (the followers' ``on_ready``); if that takes
    longer than ``READY_TIMEOUT_S``, or is cancelled, stop the tasks and raise."""
    for name, follower in followers.items():
        tasks.watch(follower.follow, name=name, backoff=Backoff(*backoff))
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await asyncio.gather(*(event.wait() for event in loaded))
    except BaseException:
        await tasks.stop()
        raise
