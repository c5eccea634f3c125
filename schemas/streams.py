"""JetStream stream definitions, as plain data (``runtime.jetstream`` applies them)."""

import msgspec

from schemas.subjects import msgs_stream, msgs_subject


class StreamSpec(msgspec.Struct, frozen=True):
    """A stream the system needs; sizes and replication come from configuration."""

    name: str
    subjects: tuple[str, ...]
    description: str
    #: Work-queue retention (a message is removed once acknowledged) instead of limits.
    work_queue: bool = False
    #: Overrides the configured ``max_age_s`` for this stream.
    max_age_s: int | None = None


def partition_stream(partition: int) -> StreamSpec:
    """The stream of one partition: its accepted messages, receipts and group writes,
    consumed by the router and the storage worker that hold its lease."""
    return StreamSpec(
        name=msgs_stream(partition),
        subjects=(msgs_subject(partition, ">"),),
        description=f"Partition {partition}: accepted messages, receipts and group writes.",
    )
