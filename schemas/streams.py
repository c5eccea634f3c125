"""JetStream stream definitions, as plain data (``runtime.jetstream`` applies them)."""

from typing import Final

import msgspec

from schemas.subjects import MSGS_STREAM, MSGS_SUBJECTS


class StreamSpec(msgspec.Struct, frozen=True):
    """A stream the system needs; sizes and replication come from configuration."""

    name: str
    subjects: tuple[str, ...]
    description: str
    #: Work-queue retention (a message is removed once acknowledged) instead of limits.
    work_queue: bool = False
    #: Overrides the configured ``max_age_s`` for this stream.
    max_age_s: int | None = None


MSGS: Final = StreamSpec(
    name=MSGS_STREAM,
    subjects=(MSGS_SUBJECTS,),
    description="Accepted messages and receipts; consumed by the router and the storage worker.",
)
