"""Operators' view of the ``DLQ`` stream: list, inspect, replay and delete dead letters.

Served by the gateways' admin API (``/v1/admin/dead-letters``); ``python -m control
dead-letters`` is its command line. Replay republishes the envelope's bytes to the subject and
stream it came from (a new stream sequence: a replayed message takes a new ``seq`` in its
conversation), then deletes the dead letter. The publish is de-duplicated per dead letter
(``Nats-Msg-Id: replay.<dlq seq>.<dead at>``), so a replay retried after a lost answer does
not enqueue the envelope twice.
"""

import msgspec
import structlog
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from schemas import dead_letters as dl
from schemas.errors import ErrorCode, ProtocolError

log = structlog.get_logger(__name__)


def _int(headers: dict[str, str], name: str) -> int:
    try:
        return int(headers.get(name, "0"))
    except ValueError:
        return 0


def _summary(raw: RawStreamMsg) -> dl.DeadLetter:
    headers = raw.headers or {}
    return dl.DeadLetter(
        seq=raw.seq or 0, dlq_subject=raw.subject or "", worker=headers.get(dl.WORKER, ""),
        error=headers.get(dl.ERROR, ""), subject=headers.get(dl.SUBJECT, ""),
        stream=headers.get(dl.STREAM, ""), stream_seq=_int(headers, dl.STREAM_SEQ),
        attempts=_int(headers, dl.ATTEMPTS), dead_at=_int(headers, dl.DEAD_AT),
        size=len(raw.data or b""))


class DeadLetterAdmin:
    """Reads and changes the ``DLQ`` stream; NATS trouble is ``unavailable``."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def page(self, after: int, limit: int) -> dl.DeadLetterPage:
        """Up to ``limit`` dead letters with a position above ``after``, oldest first."""
        found: list[dl.DeadLetter] = []
        seq = after + 1
        try:
            while len(found) < limit:
                try:
                    raw = await self._js.get_msg(dl.DLQ_STREAM, seq=seq,
                                                 subject=dl.DLQ_SUBJECTS, next=True)
                except NotFoundError:
                    break
                if raw.seq is None:
                    break
                found.append(_summary(raw))
                seq = raw.seq + 1
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"dead letters unavailable: {exc!r}"
                                ) from None
        full = len(found) == limit
        return dl.DeadLetterPage(dead_letters=found, next_after=found[-1].seq if full else None)

    async def show(self, seq: int) -> dl.DeadLetterDetail:
        raw = await self._get(seq)
        summary = _summary(raw)
        return dl.DeadLetterDetail(**msgspec.structs.asdict(summary),
                                   headers=dict(raw.headers or {}), payload=raw.data or b"")

    async def replay(self, seq: int) -> dl.ReplayResult:
        """Republish dead letter ``seq`` where it came from, then delete it."""
        raw = await self._get(seq)
        letter = _summary(raw)
        if not letter.subject or not letter.stream:
            raise ProtocolError(ErrorCode.CONFLICT,
                                f"dead letter {seq} names no original subject and stream")
        headers = {"Nats-Msg-Id": f"replay.{seq}.{letter.dead_at}", dl.REPLAYED_FROM: str(seq)}
        try:
            ack = await self._js.publish(letter.subject, raw.data or b"", stream=letter.stream,
                                         headers=headers, timeout=5.0)
            await self._js.delete_msg(dl.DLQ_STREAM, seq)
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"replay failed; retry: {exc!r}") from None
        log.info("dead_letter_replayed", seq=seq, subject=letter.subject, stream=letter.stream,
                 stream_seq=ack.seq, worker=letter.worker)
        return dl.ReplayResult(seq=seq, subject=letter.subject, stream=letter.stream,
                               stream_seq=ack.seq)

    async def delete(self, seq: int) -> None:
        await self._get(seq)
        try:
            await self._js.delete_msg(dl.DLQ_STREAM, seq)
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"delete failed; retry: {exc!r}") from None
        log.info("dead_letter_deleted", seq=seq)

    async def _get(self, seq: int) -> RawStreamMsg:
        try:
            return await self._js.get_msg(dl.DLQ_STREAM, seq=seq)
        except NotFoundError:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no dead letter {seq}") from None
        except NatsError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"dead letters unavailable: {exc!r}"
                                ) from None
