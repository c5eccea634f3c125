"""NATS KV bucket definitions, as plain data (``runtime.kv`` applies them)."""

import msgspec


class BucketSpec(msgspec.Struct, frozen=True):
    """A key-value bucket the system needs; replication comes from configuration."""

    name: str
    description: str
    #: Revisions kept per key (1: only the current value).
    history: int = 1
    #: Seconds a key lives after its last write (0: for ever).
    ttl_s: int = 0
