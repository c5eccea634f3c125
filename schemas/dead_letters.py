"""Dead letters: envelopes a worker gave up on, kept in the JetStream stream ``DLQ``.

A worker (router, storage worker) publishes on ``dlq.<worker>`` the original envelope bytes,
unchanged, with headers naming the worker, the error, the original subject, stream and stream
sequence, and how many times the envelope was tried; then it terms the envelope on its partition
stream so the rest of the stream moves on. What lands here: envelopes that cannot be decoded, and
envelopes whose handler failed alone ``COURIER_DLQ_ATTEMPTS`` times with an error that is not
an outage (``runtime.transient``).

Operators list, inspect, replay and delete dead letters with the admin API
(``/v1/admin/dead-letters``) or ``python -m control dead-letters``. Replay republishes the
envelope to its original subject (a new position in its partition: a replayed message gets a new
``seq``) and deletes the dead letter.
"""

from typing import Final

import msgspec

from schemas.streams import StreamSpec

DLQ_STREAM: Final = "DLQ"
#: ``dlq.<worker>``: the subjects of the ``DLQ`` stream.
DLQ_SUBJECTS: Final = "dlq.>"

DLQ: Final = StreamSpec(
    name=DLQ_STREAM,
    subjects=(DLQ_SUBJECTS,),
    description="Envelopes the router and the storage worker gave up on (original bytes, "
                "Courier-* headers); listed and replayed through /v1/admin/dead-letters.",
)

#: Header: the worker that gave up (``router``, ``storage``).
WORKER: Final = "Courier-Worker"
#: Header: the error, as ``<exception type>: <message>`` (at most ``MAX_ERROR`` characters).
ERROR: Final = "Courier-Error"
#: Header: the envelope's subject on its stream (where a replay publishes it).
SUBJECT: Final = "Courier-Subject"
#: Header: the envelope's stream.
STREAM: Final = "Courier-Stream"
#: Header: the envelope's sequence in that stream (its ``seq``, for a message).
STREAM_SEQ: Final = "Courier-Stream-Seq"
#: Header: how many times the worker tried the envelope on its own (0: never decoded).
ATTEMPTS: Final = "Courier-Attempts"
#: Header: when the worker gave up (ms since the epoch).
DEAD_AT: Final = "Courier-Dead-At"
#: Header of a replayed envelope: the dead letter it came from.
REPLAYED_FROM: Final = "Courier-Replayed-From"

MAX_ERROR: Final = 500
#: Dead letters in one page of ``GET /v1/admin/dead-letters``.
MAX_PAGE: Final = 200


class DeadLetter(msgspec.Struct, omit_defaults=True):
    """One dead letter as the admin API lists it. Fields come from its headers; a message
    published on ``dlq.>`` without them (by hand) shows empty values."""

    #: Position in the ``DLQ`` stream: names the dead letter in the routes.
    seq: int
    #: ``dlq.<worker>``.
    dlq_subject: str
    worker: str
    error: str
    #: Original subject, stream and stream sequence of the envelope.
    subject: str
    stream: str
    stream_seq: int
    attempts: int
    dead_at: int
    #: Size of the envelope in bytes.
    size: int


class DeadLetterDetail(DeadLetter, omit_defaults=True):
    """``GET /v1/admin/dead-letters/{seq}``: the dead letter with every header and the
    envelope's bytes (base64; MessagePack, see ``docs/schema/envelopes.schema.json``)."""

    headers: dict[str, str] = {}
    payload: bytes = b""


class DeadLetterPage(msgspec.Struct):
    """``GET /v1/admin/dead-letters``: oldest first; ``next_after`` continues (None: no more)."""

    dead_letters: list[DeadLetter]
    next_after: int | None


class ReplayResult(msgspec.Struct):
    """``POST /v1/admin/dead-letters/{seq}/replay``: the envelope is back on ``subject`` at
    ``stream_seq`` of ``stream``, and dead letter ``seq`` is deleted."""

    seq: int
    subject: str
    stream: str
    stream_seq: int
