"""NATS KV buckets: create (idempotently) and open the buckets named in ``schemas.buckets``."""

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.kv import KeyValue

from schemas.buckets import BucketSpec


async def ensure_bucket(js: JetStreamContext, spec: BucketSpec, replicas: int) -> KeyValue:
    """Create the bucket if it does not exist (file storage, ``replicas`` copies) and open it."""
    return await js.create_key_value(KeyValueConfig(
        bucket=spec.name, description=spec.description, history=spec.history,
        ttl=float(spec.ttl_s) if spec.ttl_s else None, storage=StorageType.FILE,
        replicas=replicas))
