"""Composition root of the archive worker process: the store and blob store of the
configuration, an ``Archiver``, its interval loop, and the ``archive.run`` subject (request/
reply, JSON, queue group ``archive``) for runs on request."""

import asyncio
import time
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from archive_worker.archiver import Archiver
from blobs.factory import create_blob_store
from runtime.backoff import Backoff
from runtime.config import Config
from runtime.natsconn import close, connect
from runtime.rpc import internal_failure
from runtime.tasks import TaskGroup
from runtime.transient import is_transient
from schemas.archive import ARCHIVE_QUEUE, ARCHIVE_RUN, MAX_REQUEST_BYTES, ArchiveRunRequest
from schemas.codec import decode_document
from schemas.errors import ErrorCode, ProtocolError
from schemas.nats_permissions import ARCHIVE
from schemas.rpc import Failed, Ok
from storage_worker.store.base import ArchivingStore, retention_policy
from storage_worker.store.factory import create_store

log = structlog.get_logger(__name__)

_encoder = msgspec.json.Encoder()


def now_ms() -> int:
    return int(time.time() * 1000)


class ArchiveWorker:
    """Archives on the interval (``archive.enabled``) and on request."""

    def __init__(self, config: Config) -> None:
        self._config = config
        policy = retention_policy(config.retention)
        self._store: ArchivingStore = create_store(config.store, policy, default_app=config.app,
                                                   partitions=config.partitions.count)
        self._blobs = create_blob_store(config)
        self._archiver = Archiver(self._store, self._blobs, config.archive, policy)
        self._nc: Client | None = None
        self._subscription: Subscription | None = None
        self._tasks = TaskGroup("archive")

    async def start(self) -> None:
        await self._store.open()
        await self._blobs.open()
        self._nc = await connect(self._config.nats, "archive_worker", ARCHIVE)
        self._subscription = await self._nc.subscribe(ARCHIVE_RUN, queue=ARCHIVE_QUEUE,
                                                      cb=self._on_request)
        if self._config.archive.enabled:
            interval = self._config.archive.interval_s
            self._tasks.watch(self._run_forever, name="interval",
                              backoff=Backoff(min(1.0, interval), interval))

    async def drain(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        await self._tasks.drain()

    async def stop(self) -> None:
        await self._tasks.stop()
        if self._nc is not None:
            await close(self._nc)
        await self._blobs.close()
        await self._store.close()

    async def _run_forever(self) -> None:
        """A run every ``interval_s``; a failed run raises, and the task group logs it and
        starts the loop again after a back-off."""
        while True:
            await asyncio.sleep(self._config.archive.interval_s)
            await self._archiver.run(now_ms())

    async def _on_request(self, msg: Msg) -> None:
        self._tasks.spawn(self._answer(msg), name="run_request")

    async def _answer(self, msg: Msg) -> None:
        reply: Ok[Any] | Failed
        try:
            if len(msg.data) > MAX_REQUEST_BYTES:
                raise ProtocolError(ErrorCode.TOO_LARGE,
                                    f"request over {MAX_REQUEST_BYTES} bytes")
            request = decode_document(msg.data or b"{}", ArchiveRunRequest)
            reply = Ok(await self._archiver.run(now_ms(), app=request.app,
                                                before_ts=request.before_ts,
                                                trigger="request"))
        except ProtocolError as exc:
            reply = Failed(code=exc.code, message=exc.message)
        except Exception as exc:
            if not is_transient(exc):
                reply = internal_failure("archive_request_failed")
            else:
                log.warning("archive_request_unavailable", error=repr(exc))
                reply = Failed(code=ErrorCode.UNAVAILABLE, message="store unavailable; retry")
        if msg.reply and self._nc is not None:
            await self._nc.publish(msg.reply, _encoder.encode(reply))
