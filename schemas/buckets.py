"""NATS KV bucket definitions, as plain data (``runtime.kv`` applies them)."""

import msgspec


class BucketSpec(msgspec.Struct, frozen=True):
    """A key-value bucket the system needs; replication comes from configuration."""

    name: str
    description: str
    #: Revisions kept per key (1: only the current value).
    history: int = 1
    #: Seconds a key lives after its last write (0: for ever).
    ttl_s: float = 0


#: Partition leases (``lease.<service>.<p>``: the holder's member id) and the live members of
#: each service (``member.<service>.<id>``), ``runtime.partitions``. Keys live
#: ``partitions.lease_ttl_s`` after their last renewal (the bucket's TTL comes from there).
LEASES = BucketSpec(name="leases", description="Partition leases of routers and storage "
                    "workers, and their live members.")

#: Facts every process of a deployment must agree on, written once by the first process that
#: starts (``deployment.partitions``: ``partitions.count``). No TTL.
DEPLOYMENT = BucketSpec(name="deployment", description="Facts every process of the "
                        "deployment must agree on (the partition count).")
